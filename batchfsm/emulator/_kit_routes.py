"""The routes for people testing their code: health, models, uploads, admin.

- ``GET /health``: ``{"status": "ok", "time": <the emulator's clock>}``,
  without a key (for a container's health check).
- ``GET /v1/models``, ``GET /v1/models/{model}``: the model catalogue.
- The Uploads API (:mod:`._uploads`).
- With ``admin`` (``serve --admin``; off by default), behind the API key as
  every route: ``POST /_admin/faults`` (``{"path", "status", "times",
  "method", "retry_after"}``, or ``"stall_seconds"`` instead of ``status``),
  ``DELETE /_admin/faults``, ``GET``/``DELETE /_admin/requests``,
  ``POST /_admin/clock/advance`` (``{"seconds"}``), ``POST /_admin/reset``,
  ``POST /_admin/batches/{id}/fail`` (``{"code", "message"}``, optional) and
  ``POST /_admin/batches/{id}/expire``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._api_error import ApiError
from ._doubles import ADMIN_PREFIX
from ._endpoint import project_of
from ._engine import Emulator
from ._http import JSONResponse
from ._http import declared_length as _declared
from ._http import json_body as _json
from ._uploads import MAX_PART_BYTES, uploads_of

__all__ = ["kit_routes"]

Guard = Callable[[Callable[[Request], Any]], Callable[[Request], Awaitable[Response]]]
Call = Callable[..., Awaitable[Any]]

#: The ``created`` of every catalogue model (the catalogue does not know it).
MODEL_CREATED = 1_700_000_000


def _model(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": "system",
    }


def _catalogue(emu: Emulator) -> list[str]:
    return sorted(set().union(*emu.models.values()))


def _model_routes(emu: Emulator, guarded: Guard) -> list[Route]:
    def list_models(request: Request) -> Response:
        data = [_model(name) for name in _catalogue(emu)]
        return JSONResponse({"object": "list", "data": data})

    def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        if not emu.any_model and name not in _catalogue(emu):
            raise ApiError(
                404,
                f"The model '{name}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return JSONResponse(_model(name))

    return [
        Route("/v1/models", guarded(list_models), methods=["GET"]),
        Route("/v1/models/{model:path}", guarded(get_model), methods=["GET"]),
    ]


def _upload_routes(emu: Emulator, guarded: Guard, in_thread: Call) -> list[Route]:
    uploads = uploads_of(emu)

    async def create(request: Request) -> Response:
        data = await _json(request)
        return JSONResponse(uploads.create(data, project=project_of(request)))

    async def add_part(request: Request) -> Response:
        _declared(request, MAX_PART_BYTES + 64 * 1024)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except (HTTPException, ValueError, AssertionError) as exc:
            detail = getattr(exc, "detail", exc)
            raise ApiError(
                400, f"Could not parse the multipart form: {detail}"
            ) from None
        try:
            data = form.get("data")
            if not isinstance(data, UploadFile):
                raise ApiError(
                    400,
                    "Missing required parameter: 'data'.",
                    param="data",
                    code="missing_required_parameter",
                )
            upload_id = request.path_params["upload_id"]
            part = await in_thread(
                uploads.add_part, upload_id, data.file, project=project_of(request)
            )
        finally:
            await form.close()
        return JSONResponse(part)

    async def complete(request: Request) -> Response:
        data = await _json(request)
        upload_id = request.path_params["upload_id"]
        # Another project's upload is unknown; the completed file the project's.
        completed = await in_thread(
            uploads.complete, upload_id, data, project=project_of(request)
        )
        return JSONResponse(completed)

    def cancel(request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        return JSONResponse(uploads.cancel(upload_id, project=project_of(request)))

    base = "/v1/uploads/{upload_id}"
    return [
        Route("/v1/uploads", guarded(create), methods=["POST"]),
        Route(f"{base}/parts", guarded(add_part), methods=["POST"]),
        Route(f"{base}/complete", guarded(complete), methods=["POST"]),
        Route(f"{base}/cancel", guarded(cancel), methods=["POST"]),
    ]


async def _optional_json(request: Request) -> dict[str, Any]:
    if not request.headers.get("content-length", "0").strip("0"):
        return {}
    return await _json(request)


def _add_fault(emu: Emulator, data: dict[str, Any]) -> None:
    known = {"path", "status", "times", "method", "retry_after", "stall_seconds"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ApiError(400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
    if "path" not in data:
        raise ApiError(400, "Missing required parameter: 'path'.", param="path")
    options = {"times": data.get("times", 1), "method": data.get("method")}
    try:
        if "stall_seconds" in data:
            emu.stall_next(data["path"], data["stall_seconds"], **options)
        else:
            status = data.get("status", 500)
            emu.fail_next(
                data["path"], status=status, retry_after=data.get("retry_after"),
                **options,
            )  # fmt: skip
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _admin_routes(emu: Emulator, guarded: Guard) -> list[Route]:
    async def add_fault(request: Request) -> Response:
        _add_fault(emu, await _json(request))
        return JSONResponse({"ok": True})

    def clear_faults(request: Request) -> Response:
        emu.clear_faults()
        return JSONResponse({"ok": True})

    def requests(request: Request) -> Response:
        data = [call.to_dict() for call in emu.requests]
        return JSONResponse({"object": "list", "data": data})

    def clear_requests(request: Request) -> Response:
        emu.clear_requests()
        return JSONResponse({"ok": True})

    async def advance_clock(request: Request) -> Response:
        seconds = (await _json(request)).get("seconds")
        move = getattr(emu.clock, "advance", None)
        if move is None:
            raise ApiError(409, "This emulator's clock cannot be moved.")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ApiError(400, "seconds must be a number.", param="seconds")
        try:
            move(seconds)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="seconds") from None
        return JSONResponse({"time": emu.clock.now()})

    def reset(request: Request) -> Response:
        emu.reset()
        return JSONResponse({"ok": True})

    async def fail_batch(request: Request) -> Response:
        data = await _optional_json(request)
        options = {k: str(data[k]) for k in ("code", "message") if k in data}
        emu.fail_batch(request.path_params["batch_id"], **options)
        return JSONResponse({"ok": True})

    def expire_batch(request: Request) -> Response:
        emu.expire_batch(request.path_params["batch_id"])
        return JSONResponse({"ok": True})

    admin, batch = ADMIN_PREFIX, ADMIN_PREFIX + "batches/{batch_id}"
    return [
        Route(f"{admin}faults", guarded(add_fault), methods=["POST"]),
        Route(f"{admin}faults", guarded(clear_faults), methods=["DELETE"]),
        Route(f"{admin}requests", guarded(requests), methods=["GET"]),
        Route(f"{admin}requests", guarded(clear_requests), methods=["DELETE"]),
        Route(f"{admin}clock/advance", guarded(advance_clock), methods=["POST"]),
        Route(f"{admin}reset", guarded(reset), methods=["POST"]),
        Route(f"{batch}/fail", guarded(fail_batch), methods=["POST"]),
        Route(f"{batch}/expire", guarded(expire_batch), methods=["POST"]),
    ]


def kit_routes(
    emu: Emulator, guarded: Guard, in_thread: Call, *, admin: bool
) -> list[Route]:
    """The routes of this module for ``emu`` (the admin ones only if ``admin``)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "time": emu.clock.now()})

    routes = [Route("/health", health, methods=["GET"])]
    routes += _model_routes(emu, guarded) + _upload_routes(emu, guarded, in_thread)
    return routes + (_admin_routes(emu, guarded) if admin else [])
