"""The enqueued token limit: how many prompt tokens a model's batches hold at once.

The live API limits, per model and organization, the prompt tokens of the
batches enqueued at once ("Enqueued prompt tokens per model", the Batch
guide; "there are no limits for output tokens"). A batch that would pass the
limit fails validation: status ``failed``, one error, code
``token_limit_exceeded``, line and param null, "Enqueued token limit reached
for MODEL in organization ORG. Limit: N enqueued tokens. Please try again once
some in_progress batches have been completed." (observed: openai-python issue
#2084). Its tokens are freed once it ends.

The emulator emulates it only when asked (``Emulator(enqueued_token_limit=...)``,
``batchfsm serve --enqueued-token-limit``). Its choices, where the live API is
not documented:

- A batch's tokens are the sum of :func:`~._handlers.prompt_tokens` over its
  requests: about four characters a token of each prompt, the count the
  default handler reports as ``usage.input_tokens`` (not a tokenizer; output
  tokens and ``max_tokens`` are not counted, as the guide says).
- A batch holds its tokens from the moment it passes validation
  (``in_progress``) until it ends (``completed``, ``expired``, ``cancelled``):
  ``in_progress``, ``finalizing`` and ``cancelling`` batches are enqueued;
  ``validating`` ones are not yet counted.
- A batch fails when the tokens its model's enqueued batches hold, plus its
  own, would be more than the limit; exactly the limit passes.

The check and the hold are one conditional write of the store
(:meth:`~._stores.BatchStore.enqueue`), so the batches enqueued never hold
more than the limit, however many workers or processes validate at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._model import BatchError
from ._validate import ORGANIZATION

__all__ = [
    "EVERY_MODEL",
    "MAX_LIMIT",
    "limit_for",
    "parse_limit",
    "token_limit_error",
    "token_limits",
]

#: The key of the limit for every model that has none of its own.
EVERY_MODEL = "*"
#: The largest limit: what the stores' 64-bit columns hold.
MAX_LIMIT = 2**63 - 1
_FIELD = "enqueued_token_limit"
_POSITIVE = f"a positive integer (at most {MAX_LIMIT})"


def _count(value: object, where: str) -> int:
    if type(value) is not int:
        raise TypeError(f"{where} must be {_POSITIVE}, got {type(value).__name__}")
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"{where} must be {_POSITIVE}, got {value}")
    return value


def token_limits(value: int | Mapping[str, int] | None) -> dict[str, int]:
    """The limits per model: ``None`` none, an int every model's, or a mapping.

    A mapping's keys are model names, and ``"*"`` (:data:`EVERY_MODEL`) for
    every model without a limit of its own.

    Raises:
        TypeError, ValueError: naming the field, for anything but positive
            integers under non-empty names.

    Example:
        >>> token_limits(90_000)
        {'*': 90000}
        >>> token_limits({"gpt-4o-mini": 2_000_000, "*": 90_000})["gpt-4o-mini"]
        2000000
        >>> token_limits({"gpt-4o": 0})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: enqueued_token_limit['gpt-4o'] must be a positive integer ...
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return {EVERY_MODEL: _count(value, _FIELD)}
    limits = {}
    for model, limit in value.items():
        if not isinstance(model, str) or not model:
            raise TypeError(f"{_FIELD} keys must be model names, got {model!r}")
        limits[model] = _count(limit, f"{_FIELD}[{model!r}]")
    return limits


def limit_for(limits: Mapping[str, int], model: str) -> int | None:
    """The limit of ``model``'s enqueued tokens, or None if it has none.

    Example:
        >>> limit_for({"gpt-4o": 90_000, "*": 1_000}, "gpt-4o-mini")
        1000
    """
    own = limits.get(model)
    return own if own is not None else limits.get(EVERY_MODEL)


def parse_limit(text: str) -> tuple[str, int]:
    """One ``--enqueued-token-limit`` value: ``N`` (every model) or ``MODEL=N``.

    Raises:
        ValueError: one line naming the option.

    Example:
        >>> parse_limit("gpt-4o-mini=2000000"), parse_limit("90000")
        (('gpt-4o-mini', 2000000), ('*', 90000))
    """
    model, equals, number = text.rpartition("=")
    if (
        (equals and not model)
        or not (number.isascii() and number.isdigit())
        or len(number) > len(str(MAX_LIMIT))
        or not 1 <= int(number) <= MAX_LIMIT
    ):
        raise ValueError(
            f"--enqueued-token-limit must be N or MODEL=N, N {_POSITIVE}, got {text!r}"
        )
    return (model if equals else EVERY_MODEL), int(number)


def token_limit_error(model: str, limit: int) -> BatchError:
    """Why a batch fails that would pass its model's enqueued token limit.

    Example:
        >>> print(token_limit_error("gpt-4o-mini", 2_000_000).message)
        Enqueued token limit reached for gpt-4o-mini in organization org-batchfsm-emulator. Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have been completed.
    """  # noqa: E501
    return BatchError(
        code="token_limit_exceeded",
        line=None,
        message=(
            f"Enqueued token limit reached for {model} in organization "
            f"{ORGANIZATION}. Limit: {limit:,} enqueued tokens. Please try again "
            "once some in_progress batches have been completed."
        ),
        param=None,
    )
