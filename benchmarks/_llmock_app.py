"""The peer of the fast lane: llmock's OpenAI app, its batches done at once.

Run by uvicorn as any app is (``python -m uvicorn benchmarks._llmock_app:app``).
llmock (PyPI ``llmock``, "chaos engineering for LLM apps": mock providers,
break them on demand) emulates the Batch API too; its batches finish at the
first retrieve once ``_BATCH_DELAY`` (3 s by default, a module constant with
no setting) has passed, so it is set to 0 here: the same promise as
``serve --finish-on-retrieve``.
"""

from __future__ import annotations

import llmock.routers.batch as _batch
from llmock.main import create_app

__all__ = ["app"]

_batch._BATCH_DELAY = 0.0
app = create_app()
