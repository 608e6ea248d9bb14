"""The Batches API's routes: create, list, retrieve and cancel a batch."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from .._json import encode
from .._json_io import to_dict
from ._api_error import ApiError
from ._endpoint import AppContext, context_of, endpoint, project_of
from ._http import JSONResponse, json_body
from ._store_errors import WouldWait

__all__ = ["Poll", "batch_routes", "poll_lane"]

#: A lane answering a request's scope with the JSON bytes of a 200, or None.
Poll = Callable[[Scope], bytes | None]

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


def poll_lane(context: AppContext, route: BaseRoute) -> Poll | None:
    """``GET /v1/batches/{batch_id}``'s answer in a lane of its own, or None.

    The route clients poll, answered without Starlette's request and response
    objects (:class:`._layer.HttpLayer` calls it): the batch's JSON, exactly
    the bytes :func:`get_batch` answers, when the route matches, the key is
    good and the batch is there to read now; else None, and the app's route
    answers (a refusal, an outage, a read that must wait for a thread). A
    read only, so that trying it costs a refusal nothing but the try.
    ``route`` must be the app's first (a request tries them in order).
    """
    if not isinstance(route, Route) or route.endpoint is not _GET_BATCH:
        return None
    emulator = context.emulator

    def poll(scope: Scope) -> bytes | None:
        try:
            return answer(scope)
        except Exception:  # noqa: BLE001 - the route answers it, as it answers any
            return None  # (a refusal, an outage, WouldWait, a bug: logged there)

    def answer(scope: Scope) -> bytes | None:
        if scope["method"] != "GET":
            return None  # (HEAD too is the route's)
        match, child = route.matches(scope)
        if match is not Match.FULL:
            return None
        project = context.project_in(scope["headers"])
        if project is None:
            return None  # the route answers the refusal
        # Looked up each time, as the route does (a test may patch them).
        read = (
            emulator.retrieve_batch
            if context.in_memory
            else emulator._retrieve_batch_now
        )
        batch = read(child["path_params"]["batch_id"], project=project)
        content = encode(to_dict(batch))
        scope["route"] = route  # as the router says which route answered
        scope.update(child)
        emulator.outage.ok()
        return content

    return poll


def cancel_batch(request: Request) -> Response:
    """``POST /v1/batches/{batch_id}/cancel``: the batch, cancelling."""
    emulator = context_of(request).emulator
    batch_id = request.path_params["batch_id"]
    batch = emulator.cancel_batch(batch_id, project=project_of(request))
    return JSONResponse(to_dict(batch))


#: The endpoint of the route clients poll (:func:`poll_lane` answers it too).
_GET_BATCH = endpoint(get_batch)


def batch_routes() -> list[BaseRoute]:
    """The Batches API's routes, the one clients poll first."""
    return [
        # First the route clients poll: a request tries the routes in order.
        Route("/v1/batches/{batch_id}", _GET_BATCH, methods=["GET"]),
        Route("/v1/batches", endpoint(create_batch), methods=["POST"]),
        Route("/v1/batches", endpoint(list_batches), methods=["GET"]),
        Route(
            "/v1/batches/{batch_id}/cancel", endpoint(cancel_batch), methods=["POST"]
        ),
    ]
