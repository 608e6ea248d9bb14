"""Compact JSON text written in pieces, so that no one call holds the GIL long.

:func:`json.dumps` runs in C and holds the GIL for the whole value: one result
line of 2,048 embeddings of 3,072 floats takes seconds, during which the
server answers nobody. :func:`pieces` gives the same text, splitting big
lists into their items so that the event loop gets its turn between them.
A value may also write its own text in pieces (:class:`Streamed`): the
default handler's embeddings do, so that no answer is ever held as Python
floats.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["ROW_CHARS", "SPLIT", "Streamed", "dumps", "pieces", "rows"]

#: Lists longer than this are written this many items at a time.
SPLIT = 1024

_CONTAINERS = (dict, list, tuple)


class Streamed(Sequence[Any], abc.ABC):
    """A JSON array that writes its own text in pieces, made as they are read.

    Its items are made on demand too (``value[0]``), so code that reads an
    answer's body sees an ordinary sequence; :func:`pieces` and
    :func:`dumps` write it through :meth:`json_pieces`, whose pieces joined
    are ``json.dumps(list(value), separators=(",", ":"))``.
    """

    @abc.abstractmethod
    def json_pieces(self) -> Iterator[str]:
        """The array's compact JSON text, in pieces of bounded size."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a sequence of dicts


_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def pieces(value: Any) -> Iterator[str]:
    """The text of ``json.dumps(value, separators=(",", ":"), allow_nan=False)``.

    Example:
        >>> "".join(pieces({"data": list(range(100)), "ok": True})) == json.dumps(
        ...     {"data": list(range(100)), "ok": True}, separators=(",", ":"))
        True
    """
    kind = type(value)
    if isinstance(value, Streamed):
        yield from value.json_pieces()
    elif kind is dict and all(type(key) is str for key in value):
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
        if isinstance(item, Streamed):
            return True
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


#: The most characters of result lines a stored piece holds (one row).
ROW_CHARS = 1 << 20


def rows(lines: Iterable[str], most: int = ROW_CHARS) -> Iterator[str]:
    r"""``lines``, each followed by a newline, in pieces of at most ``most``.

    Short lines go together; a long line is cut (its pieces joined again
    give it back), so no piece, and no copy of the lines, is ever big.

    Example:
        >>> list(rows(["ab", "cdefg", "h"], most=4))
        ['ab\nc', 'defg', '\nh\n']
    """
    held: list[str] = []
    size = 0
    for line in lines:
        start = 0
        while len(line) - start + 1 + size > most:
            cut = start + most - size
            held.append(line[start:cut])
            yield "".join(held)
            held, size, start = [], 0, cut
        held += (line[start:], "\n")  # the whole line: no copy
        size += len(line) - start + 1
    if held:
        yield "".join(held)
