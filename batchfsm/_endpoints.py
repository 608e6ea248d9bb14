"""The endpoints the Batch API accepts: one :class:`Endpoint` record each.

One catalogue for the strategies (realistic batches), the emulator (which
endpoints a create accepts, which models validation knows, each line's main
input) and the conformance checks; every table keyed by endpoint is derived
from it, or attached to it by an upper layer with :func:`one_each`. The model ids are
data, copied from the literal types of the official ``openai`` Python client
(:data:`SOURCE` says which release); ``tests/test_endpoints.py`` compares them
with the installed client's types and names every id missing on either side.
Dated snapshots are included: the live API accepts them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

import attrs

__all__ = [
    "CATALOGUE",
    "ENDPOINTS",
    "ENDPOINT_MODELS",
    "SOURCE",
    "Endpoint",
    "one_each",
]

#: The client release the model ids below were taken from.
SOURCE = "openai 3.57.0"

#: ``openai.types.shared.ChatModel``
CHAT_MODELS: tuple[str, ...] = (
    "gpt-6-astra",
    "gpt-6.2-astra",
    "gpt-6.1-sol",
    "gpt-6.2-sol",
    "gpt-6.1-terra",
    "gpt-6-sol",
    "gpt-6-luna",
    "gpt-5.6-sol",
    "gpt-5.6-terra",
    "gpt-5.6-luna",
    "gpt-5.5",
    "gpt-5.5-2026-04-23",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.4-nano",
    "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano-2026-03-17",
    "gpt-5.3-chat-latest",
    "gpt-5.2",
    "gpt-5.2-2025-12-11",
    "gpt-5.2-chat-latest",
    "gpt-5.2-pro",
    "gpt-5.2-pro-2025-12-11",
    "gpt-5.1",
    "gpt-5.1-2025-11-13",
    "gpt-5.1-codex",
    "gpt-5.1-mini",
    "gpt-5.1-chat-latest",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5-2025-08-07",
    "gpt-5-mini-2025-08-07",
    "gpt-5-nano-2025-08-07",
    "gpt-5-chat-latest",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "o4-mini",
    "o4-mini-2025-04-16",
    "o3",
    "o3-2025-04-16",
    "o3-mini",
    "o3-mini-2025-01-31",
    "o1",
    "o1-2024-12-17",
    "o1-preview",
    "o1-preview-2024-09-12",
    "o1-mini",
    "o1-mini-2024-09-12",
    "gpt-4o",
    "gpt-4o-2024-11-20",
    "gpt-4o-2024-08-06",
    "gpt-4o-2024-05-13",
    "gpt-audio-mini",
    "gpt-audio-mini-2025-12-15",
    "gpt-4o-audio-preview",
    "gpt-4o-audio-preview-2024-10-01",
    "gpt-4o-audio-preview-2024-12-17",
    "gpt-4o-audio-preview-2025-06-03",
    "gpt-4o-mini-audio-preview",
    "gpt-4o-mini-audio-preview-2024-12-17",
    "gpt-4o-search-preview",
    "gpt-4o-mini-search-preview",
    "gpt-4o-search-preview-2025-03-11",
    "gpt-4o-mini-search-preview-2025-03-11",
    "chatgpt-4o-latest",
    "codex-mini-latest",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "gpt-4-turbo",
    "gpt-4-turbo-2024-04-09",
    "gpt-4-0125-preview",
    "gpt-4-turbo-preview",
    "gpt-4-1106-preview",
    "gpt-4-vision-preview",
    "gpt-4",
    "gpt-4-0314",
    "gpt-4-0613",
    "gpt-4-32k",
    "gpt-4-32k-0314",
    "gpt-4-32k-0613",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-16k",
    "gpt-3.5-turbo-0301",
    "gpt-3.5-turbo-0613",
    "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-16k-0613",
)

#: ``openai.types.shared.ResponsesModel``, less the chat models
RESPONSES_ONLY_MODELS: tuple[str, ...] = (
    "o1-pro",
    "o1-pro-2025-03-19",
    "o3-pro",
    "o3-pro-2025-06-10",
    "o3-deep-research",
    "o3-deep-research-2025-06-26",
    "o4-mini-deep-research",
    "o4-mini-deep-research-2025-06-26",
    "computer-use-preview",
    "computer-use-preview-2025-03-11",
    "gpt-5.5-pro",
    "gpt-5.5-pro-2026-04-23",
    "gpt-5-codex",
    "gpt-5-pro",
    "gpt-5-pro-2025-10-06",
    "gpt-5.1-codex-max",
    "gpt-daybreak-blue-latest",
    "gpt-daybreak-red-latest",
    "gpt-5.6-cyber",
    "gpt-6-cyber",
    "gpt-rosalind-research",
    "gpt-6-rosalind",
    "gpt-6.2-astra-law",
)

#: ``openai.types.EmbeddingModel``
EMBEDDING_MODELS: tuple[str, ...] = (
    "text-embedding-ada-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
)

#: ``openai.types.CompletionCreateParams['model']``: the instruct/legacy models
COMPLETIONS_MODELS: tuple[str, ...] = (
    "gpt-3.5-turbo-instruct",
    "davinci-002",
    "babbage-002",
)

#: ``openai.types.ModerationModel``
MODERATION_MODELS: tuple[str, ...] = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)

#: ``openai.types.ImageModel`` (generations and edits)
IMAGE_MODELS: tuple[str, ...] = (
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "gpt-image-1",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "dall-e-2",
    "dall-e-3",
)

#: ``openai.types.VideoModel``
VIDEO_MODELS: tuple[str, ...] = (
    "sora-2",
    "sora-2-pro",
    "sora-2-2025-10-06",
    "sora-2-pro-2025-10-06",
    "sora-2-2025-12-08",
)


@attrs.frozen
class Endpoint:
    """One batch endpoint: what every layer knows of it, declared once.

    The layers above the core attach their own part by :attr:`path` with
    :func:`one_each` (the emulator's handlers), checked on import.

    Attributes:
        path: the URL path a batch and each of its lines name.
        api_name: what ``X: Streaming is not supported in the Batch API.``
            calls it (the live API's words are known for chat completions;
            the others follow them).
        input_field: the body field every request must carry besides
            ``model`` (its main input).
        models: the models that serve it.

    Example:
        >>> CATALOGUE["/v1/embeddings"].input_field
        'input'
    """

    path: str
    api_name: str
    input_field: str
    models: frozenset[str]


_DECLARED = (
    Endpoint(
        "/v1/chat/completions", "Chat Completions", "messages", frozenset(CHAT_MODELS)
    ),
    Endpoint("/v1/completions", "Completions", "prompt", frozenset(COMPLETIONS_MODELS)),
    Endpoint("/v1/embeddings", "Embeddings", "input", frozenset(EMBEDDING_MODELS)),
    Endpoint(
        "/v1/responses",
        "Responses",
        "input",
        frozenset(CHAT_MODELS + RESPONSES_ONLY_MODELS),
    ),
    Endpoint("/v1/moderations", "Moderations", "input", frozenset(MODERATION_MODELS)),
    Endpoint("/v1/images/generations", "Images", "prompt", frozenset(IMAGE_MODELS)),
    Endpoint("/v1/images/edits", "Images", "prompt", frozenset(IMAGE_MODELS)),
    Endpoint("/v1/videos", "Videos", "prompt", frozenset(VIDEO_MODELS)),
)

#: path -> the endpoint, in the order the live API lists them in its
#: ``Supported values are: ...`` message (the first five as observed, then the
#: endpoints added later, in the client's order).
CATALOGUE: Mapping[str, Endpoint] = {e.path: e for e in _DECLARED}
assert len(CATALOGUE) == len(_DECLARED), "an endpoint declared twice"

#: The batch endpoints' paths, in the catalogue's order.
ENDPOINTS: tuple[str, ...] = tuple(CATALOGUE)

#: endpoint -> the models that serve it.
ENDPOINT_MODELS: dict[str, frozenset[str]] = {
    e.path: e.models for e in CATALOGUE.values()
}

T = TypeVar("T")


def one_each(
    what: str, parts: Iterable[tuple[str, T]], keys: Collection[str] = ENDPOINTS
) -> dict[str, T]:
    """An upper layer's parts by key (endpoint by default): exactly one each.

    Raises:
        ValueError: naming the keys with no part, with two, or not known.

    Example:
        >>> one_each("size", [("a", 1), ("b", 2)], keys=("a", "b"))
        {'a': 1, 'b': 2}
        >>> one_each("size", [("a", 1), ("a", 2)], keys=("a", "b"))
        Traceback (most recent call last):
        ...
        ValueError: one size each: two for 'a'; none for 'b'
    """
    table: dict[str, T] = {}
    problems: list[str] = []
    for key, part in parts:
        if key not in keys:
            problems.append(f"{key!r} is not known")
        elif key in table:
            problems.append(f"two for {key!r}")
        else:
            table[key] = part
    problems += [f"none for {key!r}" for key in sorted(keys) if key not in table]
    if problems:
        raise ValueError(f"one {what} each: {'; '.join(problems)}")
    return table
