"""What running requests makes: result lines, result files, counts and usage.

One request's answer becomes one line of the output file (a 2xx reply) or of
the error file; a request that never ran (the batch was cancelled or expired
first) becomes an error line too. A handler's failure (an exception, a wrong
answer, an answer that cannot be written) is that request's 500, never the
batch's. When a batch ends, its lines become File objects of purpose
``batch_output``.
"""

from __future__ import annotations

from typing import Any

from .. import _json
from .._model import (
    Batch,
    BatchRequestCounts,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from .._nesting import MAX_DEPTH, deeper_than
from ._files import expires_at
from ._handlers import Handler, Reply
from ._pieces import dumps
from ._stores import FileObject, IdSource, NewFile, ResultKind, ResultLines, Work

__all__ = [
    "UNFINISHED",
    "answer",
    "checked",
    "counts",
    "parse",
    "result_file",
    "result_line",
    "server_error",
    "total",
    "usage",
    "written",
]

#: The error line of a request that never ran, by why: code -> message.
UNFINISHED = {
    "batch_cancelled": "The batch was cancelled before this request ran.",
    "batch_expired": "The batch expired before this request ran.",
}


def _describe(exc: BaseException) -> str:
    try:
        return repr(exc)[:300]
    except Exception:  # noqa: BLE001 - a repr that fails still names its type
        return type(exc).__name__


def server_error(exc: BaseException) -> Reply:
    return Reply(
        500,
        {
            "error": {
                "message": f"The model failed to answer: {_describe(exc)}",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )


def result_line(
    ids: IdSource,
    custom_id: str | None,
    reply: Reply | None,
    error: tuple[str, str] | None,
) -> str:
    """One line of a result file: a reply, or an ``(code, message)`` error."""
    response = None
    if reply is not None:
        response = {
            "status_code": reply.status_code,
            "request_id": ids.new_id("req_", 32),
            "body": reply.body,
        }
    # In pieces: a big answer must not hold the GIL (and the server) long.
    # NaN is not JSON: such an answer fails its request.
    return dumps(
        {
            "id": ids.new_id("batch_req_", 32),
            "custom_id": custom_id,
            "response": response,
            "error": None if error is None else {"code": error[0], "message": error[1]},
        }
    )


def parse(raw: bytes) -> tuple[str | None, Any]:
    """A request line's ``custom_id`` and ``body`` (``body`` None if unreadable)."""
    try:
        item = _json.decode(raw)
        return item["custom_id"], item["body"]
    except Exception:  # noqa: BLE001 - validated already; nested too deep, say
        return None, None


def checked(reply: object) -> Reply:
    """``reply`` if a handler's answer is a :class:`Reply` with sane token counts."""
    if not isinstance(reply, Reply):
        raise TypeError(f"the handler answered {type(reply).__name__}")
    for tokens in (reply.input_tokens, reply.output_tokens):
        if type(tokens) is not int or tokens < 0:
            raise TypeError(f"the handler counted {tokens!r} tokens")
    # Decided here, not by how deep this Python's JSON writer goes.
    if deeper_than(reply.body, MAX_DEPTH):
        raise ValueError(f"the handler's answer nests deeper than {MAX_DEPTH} levels")
    return reply


def answer(
    handler: Handler, ids: IdSource, endpoint: str, raw: bytes, at: int
) -> tuple[str, Reply]:
    """One request's result line and reply; never raises for the request's sake."""
    custom_id: str | None = None
    try:
        item = _json.decode(raw)
        custom_id, body = item["custom_id"], item["body"]
        reply = checked(handler(endpoint, body, custom_id, at))
    except Exception as exc:  # noqa: BLE001 - one request fails, not the batch
        reply = server_error(exc)
    return written(ids, custom_id, reply)


def written(ids: IdSource, custom_id: str | None, reply: Reply) -> tuple[str, Reply]:
    """The result line of ``reply``; a reply that cannot be written is a 500."""
    try:
        return result_line(ids, custom_id, reply, None), reply
    except Exception as exc:  # noqa: BLE001 - e.g. nested too deep to write
        reply = server_error(exc)
        return result_line(ids, custom_id, reply, None), reply


def result_file(
    ids: IdSource, batch: Batch, work: Work, size: int, kind: ResultKind, at: int
) -> NewFile:
    """The output or error file of ``batch`` (``size`` bytes), created at ``at``.

    Its content is the batch's result lines of ``kind`` as the store holds
    them (:class:`ResultLines`), moved into the file by the write that ends
    the batch; ``size`` counts them (:meth:`BatchStore.result_size`).
    """
    expires_after = work.output_expires_after
    file = FileObject(
        id=ids.new_id("file-", 22),
        bytes=size,
        created_at=at,
        filename=f"{batch.id}_{kind}.jsonl",
        purpose="batch_output",
        # Anchored at the output file's own creation, not the batch's.
        expires_at=expires_at("batch_output", at, expires_after),
    )
    return file, ResultLines(batch.id, kind)


def total(batch: Batch) -> int:
    """How many requests the batch holds (0 before validation counted them)."""
    return batch.request_counts.total if batch.request_counts else 0


def counts(batch: Batch, work: Work) -> BatchRequestCounts:
    """The batch's request counts, as far as ``work`` got."""
    return BatchRequestCounts(
        total=total(batch), completed=work.completed, failed=work.failed
    )


def usage(work: Work) -> BatchUsage:
    """The batch's token usage, as far as ``work`` got."""
    return BatchUsage(
        input_tokens=work.input_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=0),
        output_tokens=work.output_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        total_tokens=work.input_tokens + work.output_tokens,
    )
