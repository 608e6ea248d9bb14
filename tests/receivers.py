"""Webhook receivers for the tests: what real receivers got, verified.

Shared by the tests of webhooks per project (``test_webhooks_projects``) and
of projects kept apart (``test_projects_isolation``): a fresh ``whsec_``
secret, and the events a receiver (a real HTTP server the test starts,
:class:`~batchfsm.emulator._receiver.WebhookReceiver`) answered 2xx, each
verified by the official client's ``webhooks.unwrap``, optionally only those
POSTed to one path (several projects' endpoints on one receiver).
"""

from __future__ import annotations

import base64
import collections
import os
from typing import Any

import openai

from batchfsm.emulator._receiver import WebhookReceiver

__all__ = ["delivered", "new_secret", "verified"]


def new_secret() -> str:
    """A fresh random webhook secret, ``whsec_`` and base64."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def verified(receiver: WebhookReceiver, path: str | None = None) -> list[Any]:
    """The events ``receiver`` answered 2xx (at ``path``, if given), verified.

    Each is the official client's ``webhooks.unwrap`` of its body and headers
    with the receiver's secret: a signature that does not verify raises.
    """
    assert receiver.secret is not None
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    return [
        client.webhooks.unwrap(r.body, r.headers, secret=receiver.secret)
        for r in list(receiver.received)
        if 200 <= r.answered < 300 and (path is None or r.path == path)
    ]


def delivered(receiver: WebhookReceiver) -> dict[str, set[str]]:
    """Batch id -> the ``webhook-id`` s its verified events came with."""
    got: dict[str, set[str]] = collections.defaultdict(set)
    answered = [r for r in list(receiver.received) if 200 <= r.answered < 300]
    for r, event in zip(answered, verified(receiver), strict=True):
        got[event.data.id].add(r.headers["webhook-id"])
    return got
