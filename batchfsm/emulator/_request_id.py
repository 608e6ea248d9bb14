"""Every answer carries ``x-request-id: req_…``, as the live API's do.

The official client exposes the header as ``_request_id`` on what it returns
(observed of the live API; the ``openai`` client exposes it as ``_request_id``).
The app's one ASGI layer (:mod:`._layer`) adds it to each answer.
"""

from __future__ import annotations

import os
import random

__all__ = ["request_id_header"]

#: The header's name, as ASGI carries it.
_REQUEST_ID = b"x-request-id"


def request_id_header() -> tuple[bytes, bytes]:
    """A fresh ``x-request-id`` header, as ASGI carries it: 16 random bytes in hex.

    Example:
        >>> name, value = request_id_header()
        >>> name, value[:4], len(value)
        (b'x-request-id', b'req_', 36)
    """
    return _REQUEST_ID, b"req_%032x" % _ids.getrandbits(128)


# An id needs to be unique, not secret: a generator of our own (seeded by the
# system, not by whoever seeds the random module), not a system call an answer.
_ids = random.Random()
# A forked process (a server's workers) draws its own ids, not its parent's.
os.register_at_fork(after_in_child=_ids.seed)
