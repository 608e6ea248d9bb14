"""An emulator of the Batch API: deterministic, in-process, built on the lifecycle.

- :class:`Emulator`: files and batches, a worker that validates input files
  like the live service, runs each request through a handler, writes output and
  error files, and honours cancel and expiry (and, if asked, a model's
  enqueued token limit); every move goes through :func:`batchfsm.advance`.
- :class:`VirtualClock` (time moves when told) and :class:`SystemClock`.
- :func:`validate_input` and :data:`CODES`: the ``validating`` phase on its own;
  :func:`make_input_file` writes a chat input file to test with.
- :func:`default_handler`, :class:`Reply`: what answers each request.
- The stores, where all state lives: :class:`BatchStore` (batches, their
  :class:`Work` in progress, result lines, the due index), :class:`FileStore`
  and :class:`IdSource`, with memory implementations (:class:`MemoryBatchStore`,
  :class:`MemoryFileStore`, :class:`MemoryIds`) and durable ones
  (:class:`SQLiteStore`, :class:`PostgresStore`, :func:`open_store`; see
  "Persisting batches in your own server"), with :class:`AnchoredClock`.
- :func:`create_app` (the ASGI app; needs the ``server`` extra) and
  :class:`EmulatorTransport` (and :func:`legacy_transport` for a legacy
  ``httpx.Client``), for the ``openai`` client in-process.

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

from ._api_error import ApiError
from ._clock import AnchoredClock, Clock, SystemClock, VirtualClock
from ._engine import Emulator
from ._handlers import Handler, Reply, default_handler
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
    Work,
)
from ._validate import (
    CODES,
    DEFAULT_MODELS,
    Request,
    make_input_file,
    validate_input,
)

if TYPE_CHECKING:
    from ._app import create_app
    from ._transport import EmulatorTransport, legacy_transport


def __getattr__(name: str) -> object:
    # The HTTP parts need the server extra (Starlette, httpx2); import them on use.
    if name == "create_app":
        from ._app import create_app

        return create_app
    if name in ("EmulatorTransport", "legacy_transport"):
        from . import _transport

        return getattr(_transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CODES",
    "DEFAULT_MODELS",
    "AnchoredClock",
    "ApiError",
    "BatchStore",
    "Clock",
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
    "ResultLines",
    "SQLStore",
    "SQLiteStore",
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "VirtualClock",
    "Work",
    "create_app",
    "default_handler",
    "legacy_transport",
    "make_input_file",
    "open_store",
    "validate_input",
]
