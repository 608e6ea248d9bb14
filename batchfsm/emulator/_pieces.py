"""Compact JSON text written in pieces, so that no one call holds the GIL long.

:func:`json.dumps` runs in C and holds the GIL for the whole value: one result
line of 2,048 embeddings of 3,072 floats takes seconds, during which the
server answers nobody. :func:`pieces` gives the same text, splitting big
lists into their items so that the event loop gets its turn between them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["SPLIT", "dumps", "pieces"]

#: Lists longer than this are written this many items at a time.
SPLIT = 1024

_CONTAINERS = (dict, list, tuple)

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def pieces(value: Any) -> Iterator[str]:
    """The text of ``json.dumps(value, separators=(",", ":"), allow_nan=False)``.

    Example:
        >>> "".join(pieces({"data": list(range(100)), "ok": True})) == json.dumps(
        ...     {"data": list(range(100)), "ok": True}, separators=(",", ":"))
        True
    """
    kind = type(value)
    if kind is dict and all(type(key) is str for key in value):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield f"{',' if index else ''}{_encode(key)}:"
            yield from pieces(item)
        yield "}"
    elif (kind is list or kind is tuple) and len(value) > SPLIT:
        yield "["
        for start in range(0, len(value), SPLIT):
            run = value[start : start + SPLIT]
            if start:
                yield ","
            if any(type(item) in _CONTAINERS for item in run):
                for index, item in enumerate(run):
                    if index:
                        yield ","
                    yield from pieces(item)
            else:  # plain values: one call for the lot
                yield _encode(run)[1:-1]
        yield "]"
    else:
        yield _encode(value)


def _long_list_within(value: Any, depth: int) -> bool:
    # Big answers are big lists near the top (a body's "data"): look only there.
    for item in value.values():
        kind = type(item)
        if kind is list or kind is tuple:
            if len(item) > SPLIT:
                return True
        elif kind is dict and depth and _long_list_within(item, depth - 1):
            return True
    return False


def dumps(value: Any) -> str:
    """Compact JSON text, NaN refused; in pieces if it holds a long list near the top.

    Example:
        >>> dumps({"a": [1, 2.5, None]})
        '{"a":[1,2.5,null]}'
    """
    if type(value) is dict and _long_list_within(value, 3):
        return "".join(pieces(value))
    return _encode(value)
