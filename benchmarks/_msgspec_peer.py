"""The floor beside pydantic-core: the Batch object as ``msgspec`` structs.

msgspec (C) is the fastest Python library for typed JSON; it is reported beside
pydantic-core's figures for ``from_dict``/``to_dict``/``loads``/``dumps`` as
what a Python library can reach, never as a target. The structs check what
msgspec can declare of ours (types, the statuses, non-negative counts and
stamps within int64, metadata's limits of length); they reject the same wrong
types, with msgspec's own messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = ["Decoder", "MsgBatch", "decode_json", "encode_json", "from_dict", "to_dict"]

Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Key = Annotated[str, msgspec.Meta(max_length=64)]
Value = Annotated[str, msgspec.Meta(max_length=512)]
Status = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class MsgBatchError(msgspec.Struct, omit_defaults=False):
    code: str | None = None
    line: Count | None = None
    message: str | None = None
    param: str | None = None


class MsgBatchErrors(msgspec.Struct):
    data: list[MsgBatchError] | None = None
    object: str | None = None


class MsgRequestCounts(msgspec.Struct):
    total: Count
    completed: Count
    failed: Count


class MsgInputDetails(msgspec.Struct):
    cached_tokens: Count


class MsgOutputDetails(msgspec.Struct):
    reasoning_tokens: Count


class MsgUsage(msgspec.Struct):
    input_tokens: Count
    input_tokens_details: MsgInputDetails
    output_tokens: Count
    output_tokens_details: MsgOutputDetails
    total_tokens: Count


class MsgBatch(msgspec.Struct):
    id: str
    object: Literal["batch"]
    endpoint: str
    input_file_id: str
    completion_window: str
    status: Status
    created_at: Count
    model: str | None = None
    errors: MsgBatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: Count | None = None
    expires_at: Count | None = None
    finalizing_at: Count | None = None
    completed_at: Count | None = None
    failed_at: Count | None = None
    expired_at: Count | None = None
    cancelling_at: Count | None = None
    cancelled_at: Count | None = None
    request_counts: MsgRequestCounts | None = None
    usage: MsgUsage | None = None
    metadata: Annotated[dict[Key, Value], msgspec.Meta(max_length=16)] | None = None


Decoder = msgspec.json.Decoder(MsgBatch)
_encoder = msgspec.json.Encoder()
decode_json = Decoder.decode
encode_json = _encoder.encode


def from_dict(data: dict[str, Any]) -> MsgBatch:
    """The struct of a decoded Batch document (msgspec's ``convert``)."""
    return msgspec.convert(data, MsgBatch)


def to_dict(batch: MsgBatch) -> Any:
    """The struct as plain Python objects (msgspec's ``to_builtins``)."""
    return msgspec.to_builtins(batch)
