"""Hypothesis strategies for API dicts that are well-*shaped* but not necessarily
lifecycle-consistent: exactly what from_dict must accept and round-trip, since
judging consistency is check()'s job, not the parser's."""

from typing import Any

from hypothesis import strategies as st

from batchfsm import BatchStatus

uints = st.integers(min_value=0, max_value=2**63 - 1)
# Any text JSON can carry: every code point but the lone surrogates.
characters = st.characters(codec="utf-8")
texts = st.text(characters, max_size=20)


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


batch_errors = st.fixed_dictionaries(
    {
        "code": nullable(texts),
        "line": nullable(uints),
        "message": nullable(texts),
        "param": nullable(texts),
    }
)
metadata = st.dictionaries(
    st.text(characters, max_size=64), st.text(characters, max_size=512), max_size=16
)
request_counts = st.fixed_dictionaries(
    {"total": uints, "completed": uints, "failed": uints}
)
usage = st.fixed_dictionaries(
    {
        "input_tokens": uints,
        "input_tokens_details": st.fixed_dictionaries({"cached_tokens": uints}),
        "output_tokens": uints,
        "output_tokens_details": st.fixed_dictionaries({"reasoning_tokens": uints}),
        "total_tokens": uints,
    }
)


def shaped_dicts() -> st.SearchStrategy[dict[str, Any]]:
    """Every key present, in API order, nulls where unset, like the API answers."""
    return st.fixed_dictionaries(
        {
            "id": texts,
            "object": st.just("batch"),
            "endpoint": texts,
            "model": nullable(texts),
            "errors": nullable(
                st.fixed_dictionaries(
                    {
                        "object": nullable(st.just("list")),
                        "data": nullable(st.lists(batch_errors, max_size=3)),
                    }
                )
            ),
            "input_file_id": texts,
            "completion_window": texts,
            "status": st.sampled_from([s.value for s in BatchStatus]),
            "output_file_id": nullable(texts),
            "error_file_id": nullable(texts),
            "created_at": uints,
            "in_progress_at": nullable(uints),
            "expires_at": nullable(uints),
            "finalizing_at": nullable(uints),
            "completed_at": nullable(uints),
            "failed_at": nullable(uints),
            "expired_at": nullable(uints),
            "cancelling_at": nullable(uints),
            "cancelled_at": nullable(uints),
            "request_counts": nullable(request_counts),
            "usage": nullable(usage),
            "metadata": nullable(metadata),
        }
    )
