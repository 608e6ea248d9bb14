"""The Batches API's routes: create, list, retrieve and cancel a batch."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._json_io import to_dict
from ._api_error import ApiError
from ._endpoint import context_of, endpoint, project_of
from ._http import JSONResponse, json_body
from ._store_errors import WouldWait

__all__ = ["batch_routes"]

_REQUIRED = ("input_file_id", "endpoint", "completion_window")


async def create_batch(request: Request) -> Response:
    """``POST /v1/batches``: a new batch from a JSON body."""
    data = await json_body(request)
    for name in _REQUIRED:
        if name not in data:
            raise ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
    context = context_of(request)
    batch = await context.call(
        context.emulator.create_batch,
        input_file_id=data["input_file_id"],
        endpoint=data["endpoint"],
        completion_window=data["completion_window"],
        metadata=data.get("metadata"),
        output_expires_after=data.get("output_expires_after"),
        project=project_of(request),
    )
    return JSONResponse(to_dict(batch))


def list_batches(request: Request) -> Response:
    """``GET /v1/batches``: a page of batches, newest first."""
    query = request.query_params
    emulator = context_of(request).emulator
    page = emulator.list_batches(
        after=query.get("after"), limit=query.get("limit"), project=project_of(request)
    )
    return JSONResponse(page)


async def get_batch(request: Request) -> Response:
    """``GET /v1/batches/{batch_id}``: one batch.

    The route clients poll: on the event loop where the store can read without
    waiting (its hop to a store thread would cost ten times the read), else
    in a store thread.
    """
    context = context_of(request)
    emulator = context.emulator
    batch_id, project = request.path_params["batch_id"], project_of(request)
    if context.in_memory:
        batch = emulator.retrieve_batch(batch_id, project=project)
    else:
        try:
            batch = emulator._retrieve_batch_now(batch_id, project=project)
        except WouldWait:
            batch = await context.in_thread(
                emulator.retrieve_batch, batch_id, project=project
            )
    return JSONResponse(to_dict(batch))


def cancel_batch(request: Request) -> Response:
    """``POST /v1/batches/{batch_id}/cancel``: the batch, cancelling."""
    emulator = context_of(request).emulator
    batch_id = request.path_params["batch_id"]
    batch = emulator.cancel_batch(batch_id, project=project_of(request))
    return JSONResponse(to_dict(batch))


def batch_routes() -> list[BaseRoute]:
    """The Batches API's routes, the one clients poll first."""
    return [
        # First the route clients poll: a request tries the routes in order.
        Route("/v1/batches/{batch_id}", endpoint(get_batch), methods=["GET"]),
        Route("/v1/batches", endpoint(create_batch), methods=["POST"]),
        Route("/v1/batches", endpoint(list_batches), methods=["GET"]),
        Route(
            "/v1/batches/{batch_id}/cancel", endpoint(cancel_batch), methods=["POST"]
        ),
    ]
