"""An emulator of the Batch API: deterministic, in-process, built on the lifecycle.

- :class:`Emulator`: files and batches, a worker that validates input files
  like the live service, runs each request through a handler, writes output and
  error files, and honours cancel and expiry (and, if asked, a model's
  enqueued token limit); every move goes through :func:`batchfsm.advance`.
- :class:`VirtualClock` (time moves when told) and :class:`SystemClock`.
- :func:`validate_input` and :data:`CODES`: the ``validating`` phase on its own;
  :func:`make_input_file` writes a chat input file to test with.
- The handler seam, what answers each request line: :data:`AsyncHandler`
  (one :class:`RequestLine` in, one :class:`Reply` out), :func:`fake_handler`
  and :func:`default_handler` (the deterministic fake), and
  :class:`UpstreamHandler` (an OpenAI-compatible server answers; needs the
  ``server`` extra).
- The stores, where all state lives: :class:`BatchStore` (batches, their
  :class:`Work` in progress, result lines, the due index), :class:`FileStore`
  and :class:`IdSource`, with memory implementations (:class:`MemoryBatchStore`,
  :class:`MemoryFileStore`, :class:`MemoryIds`) and durable ones
  (:class:`SQLiteStore`, :class:`PostgresStore`, :func:`open_store`; see
  "Persisting batches in your own server"), with :class:`AnchoredClock`.
- Webhooks: each batch's end writes a :class:`WebhookEvent` to the store's
  outbox in the same write; :class:`Webhooks` delivers them to
  :class:`WebhookEndpoint` s, signed, at least once, each :class:`Delivery`
  with its :class:`Attempt` s recorded.
- :func:`create_app` (the ASGI app; needs the ``server`` extra) and
  :class:`EmulatorTransport` (and :func:`legacy_transport` for a legacy
  ``httpx.Client``), for the ``openai`` client in-process, and
  :class:`AsyncEmulatorTransport` for ``openai.AsyncOpenAI``.
- For tests: the emulator logs the requests it receives
  (:attr:`Emulator.requests`, :meth:`Emulator.assert_called`, each a
  :class:`Call`), fails or stalls the next calls of a route on command
  (:meth:`Emulator.fail_next`, :meth:`Emulator.stall_next`), ends a batch on
  command (:meth:`Emulator.fail_batch`, :meth:`Emulator.expire_batch`) and
  starts afresh (:meth:`Emulator.reset`); see "Recipes" in the docs.

Example:
    >>> from batchfsm.emulator import Emulator
    >>> emu = Emulator()
    >>> upload = emu.create_file(b"{oops", "in.jsonl", "batch")
    >>> batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/embeddings")
    >>> emu.clock.advance(5)
    >>> failed = emu.retrieve_batch(batch.id)
    >>> failed.status, failed.errors.data[0].code, failed.errors.data[0].line
    (<BatchStatus.FAILED: 'failed'>, 'invalid_json_line', 1)
"""

from typing import TYPE_CHECKING

from .._extras import missing_extra
from ._api_error import ApiError
from ._clock import AnchoredClock, Clock, SystemClock, VirtualClock
from ._doubles import Call
from ._engine import Emulator
from ._events import Attempt, Delivery, WebhookEvent
from ._handlers import (
    AsyncHandler,
    Handler,
    Reply,
    RequestLine,
    default_handler,
    fake_handler,
)
from ._open import open_store
from ._postgres import PostgresStore
from ._sql import SQLStore
from ._sqlite import SQLiteStore
from ._store_errors import SchemaVersionError, StoreError, StoreUnavailable
from ._stores import (
    BatchStore,
    FileObject,
    FileStore,
    HeldWrite,
    IdSource,
    MemoryBatchStore,
    MemoryFileStore,
    MemoryIds,
    ResultLines,
    StorageFull,
    Work,
)
from ._validate import (
    CODES,
    DEFAULT_MODELS,
    Request,
    make_input_file,
    validate_input,
)
from ._webhooks import WebhookEndpoint, Webhooks

if TYPE_CHECKING:
    from ._app import create_app
    from ._transport import (
        AsyncEmulatorTransport,
        EmulatorTransport,
        legacy_transport,
    )
    from ._upstream import UpstreamHandler


def __getattr__(name: str) -> object:
    # The HTTP parts need the server extra (Starlette, httpx2); import them on use.
    try:
        if name == "create_app":
            from ._app import create_app

            return create_app
        if name in ("AsyncEmulatorTransport", "EmulatorTransport", "legacy_transport"):
            from . import _transport

            return getattr(_transport, name)
        if name == "UpstreamHandler":
            from ._upstream import UpstreamHandler

            return UpstreamHandler
    except ImportError as exc:
        # One line naming the extra, not "No module named 'anyio'".
        raise ModuleNotFoundError(missing_extra(exc, "server"), name=exc.name) from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CODES",
    "DEFAULT_MODELS",
    "AnchoredClock",
    "ApiError",
    "AsyncEmulatorTransport",
    "AsyncHandler",
    "Attempt",
    "BatchStore",
    "Call",
    "Clock",
    "Delivery",
    "Emulator",
    "EmulatorTransport",
    "FileObject",
    "FileStore",
    "Handler",
    "HeldWrite",
    "IdSource",
    "MemoryBatchStore",
    "MemoryFileStore",
    "MemoryIds",
    "PostgresStore",
    "Reply",
    "Request",
    "RequestLine",
    "ResultLines",
    "SQLStore",
    "SQLiteStore",
    "SchemaVersionError",
    "StorageFull",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "UpstreamHandler",
    "VirtualClock",
    "WebhookEndpoint",
    "WebhookEvent",
    "Webhooks",
    "Work",
    "create_app",
    "default_handler",
    "fake_handler",
    "legacy_transport",
    "make_input_file",
    "open_store",
    "validate_input",
]
