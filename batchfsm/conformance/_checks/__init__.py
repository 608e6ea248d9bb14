"""The checks, declared in run order.

Each module declares its checks with :func:`~.._registry.check` when imported;
the import order below is the run order. ``_recording`` judges every Batch
object the others were answered, so it comes last.
"""

from . import _lifecycle, _api, _fidelity, _webhooks  # noqa: I001 - the import order is the run order
from . import _projects
from . import _recording  # last: it judges what the checks above recorded

__all__ = ["_api", "_fidelity", "_lifecycle", "_projects", "_recording", "_webhooks"]
