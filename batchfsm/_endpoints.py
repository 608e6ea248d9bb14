"""The endpoints the Batch API accepts, each with models that serve it.

One list for the strategies (realistic batches) and the emulator (which
endpoints a create accepts, which models validation knows).
"""

from __future__ import annotations

__all__ = ["ENDPOINT_MODELS"]

#: endpoint -> models that serve it.
ENDPOINT_MODELS: dict[str, frozenset[str]] = {
    "/v1/chat/completions": frozenset(
        {"gpt-4o", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06",
         "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini", "gpt-3.5-turbo"}
    ),
    "/v1/responses": frozenset(
        {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini-2025-04-14", "gpt-5",
         "gpt-5-2025-08-07", "gpt-5-mini", "o3"}
    ),
    "/v1/embeddings": frozenset(
        {"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"}
    ),
    "/v1/completions": frozenset({"gpt-3.5-turbo-instruct"}),
    "/v1/moderations": frozenset({"omni-moderation-latest", "text-moderation-latest"}),
    "/v1/images/generations": frozenset({"gpt-image-1", "dall-e-3"}),
    "/v1/images/edits": frozenset({"gpt-image-1"}),
    "/v1/videos": frozenset({"sora-2"}),
}  # fmt: skip
