"""The model endpoints, served directly: ``POST /v1/chat/completions`` and the rest.

Each endpoint a batch may name (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/responses``, ``/v1/moderations``, the image and
video routes) is answered at once by the default fake handler
(:func:`~._handlers.default_handler`), with the live API's error bodies: so
any OpenAI client can call ``serve`` directly, and one ``serve`` can be
another's upstream (``serve --upstream``). A model the endpoint does not
serve is 404 ``model_not_found``. ``stream: true`` is refused (400
``unsupported_value``, param ``stream``) with the wording the live API uses
for a model that does not stream: the emulator does not stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._endpoints import CATALOGUE
from ._api_error import ApiError
from ._handlers import default_handler, sized
from ._pieces import dumps

__all__ = ["model_routes"]

Guard = Callable[[Callable[[Request], Awaitable[Response]]], Any]
ReadJson = Callable[[Request], Awaitable[dict[str, Any]]]
Models = Callable[[], tuple[dict[str, frozenset[str]], bool]]

#: The live API's words for ``stream: true`` where it does not stream.
STREAM_REFUSED = (
    "Unsupported value: 'stream' does not support true with this model. "
    "Only the default (false) value is supported."
)


def _check(endpoint: str, data: dict[str, Any], models: Models) -> None:
    model = data.get("model")
    if model is None:
        raise ApiError(400, "You must provide a model parameter.")
    known, any_model = models()
    if not isinstance(model, str) or (
        not any_model and model not in known.get(endpoint, frozenset())
    ):
        raise ApiError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if data.get("stream") is True:
        raise ApiError(400, STREAM_REFUSED, param="stream", code="unsupported_value")


def _custom_id(data: dict[str, Any]) -> str:
    # The fake's answers are a function of the request: the same body, the
    # same text (its id and `created` name the time, as the live API's do).
    return (
        "direct-" + hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:16]
    )


def model_routes(
    guarded: Guard,
    read_json: ReadJson,
    models: Models,
    now: Callable[[], int],
    dimensions: Callable[[], int | None] = lambda: None,
) -> list[Route]:
    """``POST`` routes for every endpoint of the catalogue, answered by the fake.

    ``dimensions``: those of an embedding whose request names none (None:
    the model's size; see :func:`._handlers.sized`).
    """

    def endpoint(path: str) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            data = await read_json(request)
            _check(path, data, models)
            fake = sized(default_handler, dimensions())
            reply = fake(path, data, _custom_id(data), now())
            return Response(
                dumps(dict(reply.body)),
                status_code=reply.status_code,
                media_type="application/json",
            )

        return answer

    return [
        Route(path, guarded(endpoint(path)), methods=["POST"]) for path in CATALOGUE
    ]
