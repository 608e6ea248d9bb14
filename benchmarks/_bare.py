"""The peer of ``batchfsm serve``: a bare Starlette app answering fixed bytes.

Run by uvicorn as any app is (``python -m uvicorn benchmarks._bare:app``); its
one route, ``GET /v1/batches/{batch_id}``, answers the bytes given in the
environment as hex (``BATCHFSM_BENCH_BODY``) as ``application/json``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["app"]

BODY = bytes.fromhex(os.environ.get("BATCHFSM_BENCH_BODY", ""))


async def _answer(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/v1/batches/{batch_id}", _answer)])
