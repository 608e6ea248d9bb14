"""The benchmark cases, each beside the peer DESIGN §6 names."""

from __future__ import annotations

from typing import Any

import openai.types

import batchfsm as bf

from ._harness import Case

#: A completed batch as the API answers it: every field, usage and metadata set.
COMPLETED: dict[str, Any] = {
    "id": "batch_6925a0c4e5f08190b1b1c1a37c9c6a2e",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-4o-mini-2024-07-18",
    "errors": None,
    "input_file_id": "file-7Yq1hGQm2WcDx9sPZt4kLn",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": "file-cvaTdGq8uA1bS6mKd0PzR",
    "error_file_id": "file-HOWS94Hn3c2oFq8uA1bS6m",
    "created_at": 1764073668,
    "in_progress_at": 1764073702,
    "expires_at": 1764160068,
    "finalizing_at": 1764095268,
    "completed_at": 1764095298,
    "failed_at": None,
    "expired_at": None,
    "cancelling_at": None,
    "cancelled_at": None,
    "request_counts": {"total": 100, "completed": 95, "failed": 5},
    "usage": {
        "input_tokens": 20213,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 9120,
        "output_tokens_details": {"reasoning_tokens": 300},
        "total_tokens": 29333,
    },
    "metadata": {"customer_id": "user_123456789", "batch_description": "Nightly"},
}


def convert_cases() -> list[Case]:
    batch = bf.from_dict(COMPLETED)
    theirs = openai.types.Batch.model_validate(COMPLETED)
    text = bf.dumps(batch)
    validate = openai.types.Batch.model_validate
    validate_json = openai.types.Batch.model_validate_json
    return [
        Case(
            "from_dict",
            lambda: bf.from_dict(COMPLETED),
            "openai Batch.model_validate",
            lambda: validate(COMPLETED),
            1.0,
        ),
        Case(
            "to_dict",
            lambda: bf.to_dict(batch),
            "openai Batch.model_dump",
            theirs.model_dump,
            0.75,
        ),
        Case(
            "loads",
            lambda: bf.loads(text),
            "openai Batch.model_validate_json",
            lambda: validate_json(text),
            1.0,
        ),
        Case(
            "dumps",
            lambda: bf.dumps(batch),
            "openai Batch.model_dump_json",
            theirs.model_dump_json,
            1.0,
        ),
    ]


def all_cases() -> list[Case]:
    return convert_cases()
