"""The Batch object and its parts, as frozen, slotted attrs classes.

Field names, order, types and nullability mirror the Batch object of the API
reference and of the official ``openai`` client (``openai.types.Batch``). The
order of the fields is the key order of the API's JSON, which is the order
:func:`batchfsm.to_dict` writes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from ._errors import SchemaError

__all__ = [
    "COMPLETION_WINDOWS",
    "METADATA_MAX_KEY_LENGTH",
    "METADATA_MAX_PAIRS",
    "METADATA_MAX_VALUE_LENGTH",
    "MODEL_CLASSES",
    "TERMINAL_STATUSES",
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchRequestCounts",
    "BatchStatus",
    "BatchUsage",
    "InputTokensDetails",
    "OutputTokensDetails",
    "is_text",
    "metadata_problems",
]


class BatchStatus(str, enum.Enum):
    """The eight statuses of a batch; each member is equal to its API string.

    Example:
        >>> import batchfsm as bf
        >>> bf.BatchStatus("in_progress") is bf.BatchStatus.IN_PROGRESS
        True
        >>> bf.BatchStatus.IN_PROGRESS == "in_progress"
        True
    """

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: The statuses a batch never leaves.
TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {
        BatchStatus.FAILED,
        BatchStatus.COMPLETED,
        BatchStatus.EXPIRED,
        BatchStatus.CANCELLED,
    }
)

#: The completion windows the API accepts, in seconds.
COMPLETION_WINDOWS: dict[str, int] = {"24h": 86_400}

#: Metadata limits of the API: pairs, and characters per key and per value.
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY_LENGTH = 64
METADATA_MAX_VALUE_LENGTH = 512


def is_text(value: str) -> bool:
    r"""Whether the str ``value`` is text JSON can carry: no lone surrogate.

    A lone surrogate (``"\ud800"``) is half of a character; it has no UTF-8
    form, so no API sends one and no JSON engine writes one.

    Example:
        >>> is_text("café"), is_text("\ud800")
        (True, False)
    """
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def metadata_problems(metadata: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """Every way ``metadata`` breaks the API's limits, as ``(key, message)`` pairs.

    The key is ``""`` for a problem of the whole mapping.

    Example:
        >>> metadata_problems({"k": "v"})
        []
        >>> metadata_problems({"k": 1})
        [('k', 'expected str, got 1')]
    """
    problems = []
    if len(metadata) > METADATA_MAX_PAIRS:
        problems.append(
            ("", f"at most {METADATA_MAX_PAIRS} pairs allowed, got {len(metadata)}")
        )
    for key, value in metadata.items():
        if key.__class__ is not str:
            problems.append(("", f"keys must be str, got {key!r}"))
            continue
        if not (key.isascii() or is_text(key)):  # the call only when needed
            problems.append(("", f"key {key!r} holds a lone surrogate"))
            continue
        if len(key) > METADATA_MAX_KEY_LENGTH:
            problems.append(
                (key, f"key longer than {METADATA_MAX_KEY_LENGTH} characters")
            )
        if value.__class__ is not str:
            problems.append((key, f"expected str, got {value!r}"))
        elif not (value.isascii() or is_text(value)):
            problems.append((key, "holds a lone surrogate"))
        elif len(value) > METADATA_MAX_VALUE_LENGTH:
            problems.append(
                (key, f"value longer than {METADATA_MAX_VALUE_LENGTH} characters")
            )
    return problems


def _freeze_metadata(value: Mapping[str, str] | None) -> Mapping[str, str] | None:
    # A frozen Batch must not hand out a dict its holder can change under it,
    # so metadata is copied once and exposed read-only.
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"metadata: expected a mapping, got {value!r}")
    problems = metadata_problems(value)
    if problems:
        raise SchemaError(
            (f"metadata{'.' if key else ''}{key}", message) for key, message in problems
        )
    return MappingProxyType(dict(value))


def _metadata_repr(value: Mapping[str, str] | None) -> str:
    return repr(None if value is None else dict(value))


def _as_status(value: BatchStatus | str) -> BatchStatus:
    # A plain "completed" would compare equal but fail identity checks downstream.
    return value if value.__class__ is BatchStatus else BatchStatus(value)


def _is_batch(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value != "batch":
        raise SchemaError([("object", f"expected 'batch', got {value!r}")])


@attrs.frozen(weakref_slot=False)
class BatchError:
    """One error of a batch: a problem with its input file, or why it failed.

    Example:
        >>> BatchError(code="invalid_json_line", line=3, message="bad JSON")
        BatchError(code='invalid_json_line', line=3, message='bad JSON', param=None)
    """

    code: str | None = None
    line: int | None = None
    message: str | None = None
    param: str | None = None


def _tuple_or_none(
    value: Iterable[BatchError] | None,
) -> tuple[BatchError, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(weakref_slot=False)
class BatchErrors:
    """The ``errors`` object of a batch: ``{"object": "list", "data": [...]}``.

    Example:
        >>> BatchErrors(data=(BatchError(code="token_limit_exceeded"),)).object
        'list'
    """

    object: str | None = "list"
    data: tuple[BatchError, ...] | None = attrs.field(
        default=None, converter=_tuple_or_none
    )


@attrs.frozen(weakref_slot=False)
class BatchRequestCounts:
    """How many requests a batch holds, and how many ended each way.

    Example:
        >>> BatchRequestCounts(total=100, completed=95, failed=5)
        BatchRequestCounts(total=100, completed=95, failed=5)
    """

    total: int
    completed: int
    failed: int


@attrs.frozen(weakref_slot=False)
class InputTokensDetails:
    """A breakdown of the input tokens.

    Example:
        >>> InputTokensDetails(cached_tokens=1024).cached_tokens
        1024
    """

    cached_tokens: int


@attrs.frozen(weakref_slot=False)
class OutputTokensDetails:
    """A breakdown of the output tokens.

    Example:
        >>> OutputTokensDetails(reasoning_tokens=300).reasoning_tokens
        300
    """

    reasoning_tokens: int


@attrs.frozen(weakref_slot=False)
class BatchUsage:
    """Token usage of a batch (populated on batches created after 2025-09-07).

    Example:
        >>> BatchUsage(
        ...     input_tokens=1500,
        ...     input_tokens_details=InputTokensDetails(cached_tokens=1024),
        ...     output_tokens=500,
        ...     output_tokens_details=OutputTokensDetails(reasoning_tokens=300),
        ...     total_tokens=2000,
        ... ).total_tokens
        2000
    """

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


@attrs.frozen(kw_only=True, weakref_slot=False)
class Batch:
    """A batch, field for field the API's Batch object.

    Build one with :func:`batchfsm.new_batch` or :func:`batchfsm.from_dict`, move
    it with :func:`batchfsm.advance`. Instances are immutable; ``metadata`` is a
    read-only mapping checked against the API's limits (16 pairs, keys of at most
    64 characters, values of at most 512).

    Example:
        >>> b = Batch(
        ...     id="batch_abc123",
        ...     endpoint="/v1/chat/completions",
        ...     input_file_id="file-abc123",
        ...     completion_window="24h",
        ...     status=BatchStatus.VALIDATING,
        ...     created_at=1711471533,
        ...     expires_at=1711557933,
        ...     metadata={"customer_id": "user_123456789"},
        ... )
        >>> b.status, b.metadata["customer_id"]
        (<BatchStatus.VALIDATING: 'validating'>, 'user_123456789')
    """

    id: str
    object: Literal["batch"] = attrs.field(default="batch", validator=_is_batch)
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus = attrs.field(converter=_as_status)
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts | None = None
    usage: BatchUsage | None = None
    # Left out of the hash (a mapping has none); equality still compares it.
    metadata: Mapping[str, str] | None = attrs.field(
        default=None, converter=_freeze_metadata, hash=False, repr=_metadata_repr
    )


#: Every model class, each before the classes of its fields.
MODEL_CLASSES: tuple[type, ...] = (
    Batch,
    BatchErrors,
    BatchError,
    BatchRequestCounts,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
