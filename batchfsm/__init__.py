"""batchfsm: the OpenAI-style Batch lifecycle, exact and typed.

The public API, by layer (see the docs for each):

- model: :class:`Batch`, :class:`BatchStatus`, :class:`BatchErrors`,
  :class:`BatchError`, :class:`BatchRequestCounts`, :class:`BatchUsage`,
  :class:`InputTokensDetails`, :class:`OutputTokensDetails`,
  :data:`TERMINAL_STATUSES`;
- JSON: :func:`from_dict`, :func:`to_dict`, :func:`loads`, :func:`dumps`,
  :func:`dumps_bytes`, :data:`converter` (cattrs), :func:`register_hooks`
  (for your own cattrs converter);
- lifecycle: :class:`Event`, :func:`new_batch`, :func:`advance`,
  :func:`progress`, :func:`allowed_events`, :func:`can`, :class:`BatchMachine`,
  :data:`machine` (the ``transitions`` Machine), :func:`to_mermaid`;
- invariants: :func:`check`, :func:`check_step`, :func:`check_trace`,
  :class:`Violation`, :data:`RULES`;
- errors: :class:`BatchFSMError`, :class:`SchemaError`, :class:`InvalidTransition`,
  :class:`InvalidProgress`.

Example:
    >>> import batchfsm as bf
    >>> b = bf.loads('''{"id": "batch_1", "object": "batch", "status": "validating",
    ...   "endpoint": "/v1/embeddings", "input_file_id": "file-1",
    ...   "completion_window": "24h", "created_at": 1700000000}''')
    >>> bf.to_dict(b)["status"]
    'validating'
"""

from ._converter import register_hooks
from ._diagram import to_mermaid
from ._errors import BatchFSMError, InvalidProgress, InvalidTransition, SchemaError
from ._invariants import RULES, Violation, check, check_step, check_trace
from ._json_io import converter, dumps, dumps_bytes, from_dict, loads, to_dict
from ._lifecycle import (
    BatchMachine,
    advance,
    allowed_events,
    can,
    machine,
    new_batch,
    progress,
)
from ._model import (
    TERMINAL_STATUSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from ._table import Event

__version__ = "0.1.0.dev0"

__all__ = [
    "RULES",
    "TERMINAL_STATUSES",
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchFSMError",
    "BatchMachine",
    "BatchRequestCounts",
    "BatchStatus",
    "BatchUsage",
    "Event",
    "InputTokensDetails",
    "InvalidProgress",
    "InvalidTransition",
    "OutputTokensDetails",
    "SchemaError",
    "Violation",
    "advance",
    "allowed_events",
    "can",
    "check",
    "check_step",
    "check_trace",
    "converter",
    "dumps",
    "dumps_bytes",
    "from_dict",
    "loads",
    "machine",
    "new_batch",
    "progress",
    "register_hooks",
    "to_dict",
    "to_mermaid",
]


def _present_as_public() -> None:
    # Tracebacks, reprs and the docs say ``batchfsm.SchemaError``, not the
    # private module it happens to live in (httpx does the same).
    from types import FunctionType

    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, (type, FunctionType)):
            obj.__module__ = __name__


_present_as_public()
