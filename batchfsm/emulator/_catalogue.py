"""The model catalogue the emulator serves: the installed ``openai`` client's.

The pinned list (:data:`batchfsm.emulator.DEFAULT_MODELS`, copied from the
client release :data:`batchfsm._endpoints.SOURCE`) is the floor; the model
literals of the client installed beside batchfsm are read at run time and
added, so a model that client knows is never ``model_not_found`` here. Each
type is read on its own: one a future client moves or renames is left out
(its models stay those of the floor), never an error.
"""

from __future__ import annotations

import functools
import importlib
import logging
import typing
from collections.abc import Callable, Mapping

from .._endpoints import ENDPOINT_MODELS

__all__ = ["client_models", "installed_models"]

log = logging.getLogger("batchfsm.emulator")


def _literals(annotation: object, depth: int = 0) -> set[str]:
    """Every string in the Literal types inside ``annotation``."""
    if depth > 20:  # a self-referring alias: nothing more to find
        return set()
    value = getattr(annotation, "__value__", None)  # a `type X = ...` alias
    if value is not None:
        return _literals(value, depth + 1)
    if typing.get_origin(annotation) is typing.Literal:
        return {a for a in typing.get_args(annotation) if isinstance(a, str)}
    found: set[str] = set()
    for argument in typing.get_args(annotation):
        found |= _literals(argument, depth + 1)
    return found


def _attribute(module: str, name: str) -> Callable[[], object]:
    return lambda: getattr(importlib.import_module(module), name)


def _completions_model() -> object:
    params = importlib.import_module("openai.types.completion_create_params")
    hints = typing.get_type_hints(
        params.CompletionCreateParamsBase, include_extras=True
    )
    return hints["model"]


_IMAGES = _attribute("openai.types", "ImageModel")
#: endpoint -> where its models are declared in the client.
_SOURCES: Mapping[str, Callable[[], object]] = {
    "/v1/chat/completions": _attribute("openai.types.shared", "ChatModel"),
    "/v1/completions": _completions_model,
    "/v1/embeddings": _attribute("openai.types", "EmbeddingModel"),
    "/v1/responses": _attribute("openai.types.shared", "ResponsesModel"),
    "/v1/moderations": _attribute("openai.types", "ModerationModel"),
    "/v1/images/generations": _IMAGES,
    "/v1/images/edits": _IMAGES,
    "/v1/videos": _attribute("openai.types", "VideoModel"),
}


@functools.cache
def client_models() -> Mapping[str, frozenset[str]]:
    """Endpoint -> the model literals of the installed ``openai`` client.

    Empty when the client is not installed; an endpoint whose type cannot be
    read is left out.

    Example:
        >>> "gpt-4o" in client_models().get("/v1/chat/completions", {"gpt-4o"})
        True
    """
    found: dict[str, frozenset[str]] = {}
    for endpoint, source in _SOURCES.items():
        try:
            found[endpoint] = frozenset(_literals(source()))
        except Exception as exc:  # noqa: BLE001 - any client, any shape
            log.debug("no models of the openai client for %s: %r", endpoint, exc)
    return found


def installed_models() -> dict[str, frozenset[str]]:
    """Endpoint -> the models served: the pinned floor and the client's own.

    Example:
        >>> from batchfsm.emulator import DEFAULT_MODELS
        >>> all(DEFAULT_MODELS[e] <= m for e, m in installed_models().items())
        True
    """
    client = client_models()
    return {
        endpoint: floor | client.get(endpoint, frozenset())
        for endpoint, floor in ENDPOINT_MODELS.items()
    }
