"""Nested values measured without recursion, so the answer is every Python's.

How deep Python's own recursive code may go depends on the interpreter:
``str()`` or :func:`json.dumps` of a list nested 2,000 deep raises
:class:`RecursionError` on Python 3.11 (its recursion limit, 1,000 frames,
less those in use) and succeeds on 3.13 (a C stack limit of its own). What
batchfsm answers must not change with the interpreter, so it decides with an
explicit limit, :data:`MAX_DEPTH`, and measures with loops, never recursion.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_DEPTH", "deeper_than", "str_length"]

#: The deepest nesting of a handler's answer body that is written as a result
#: line (the line adds its own levels around it); a deeper answer is that
#: request's 500 line. Well under what Python 3.11 writes from inside a worker
#: or a server (its recursion limit less the frames in use), and above the
#: depth of any answer of the API.
MAX_DEPTH = 512

_CONTAINERS = (list, tuple, dict)
_CONTAINERS_SET = frozenset(_CONTAINERS)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether lists, tuples and dicts in ``value`` nest more than ``limit`` deep.

    A scalar is depth 0, ``[]`` and ``{}`` depth 1, ``[[1]]`` depth 2. A value
    that holds itself is infinitely deep.

    Example:
        >>> deeper_than([[1], {"a": [2]}], 2), deeper_than([[1], {"a": [2]}], 3)
        (True, False)
    """
    if type(value) not in _CONTAINERS:
        return False
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if depth > limit:
            return True
        items = item.values() if type(item) is dict else item
        # The types of a container's items in one C-speed pass: a list of
        # 3,072 floats (an embedding) costs tens of microseconds.
        if not _CONTAINERS_SET.isdisjoint(set(map(type, items))):
            todo.extend(
                (child, depth + 1) for child in items if type(child) in _CONTAINERS
            )
    return False


class _Leave:
    """Marks the end of a container on :func:`str_length`'s stack."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key


def str_length(value: Any) -> int:
    """``len(str(value))``, at any depth: lists, tuples and dicts are walked.

    Their items are measured by ``repr()``, as ``str()`` writes them; a
    container met again inside itself is written ``[...]``, as ``str()`` does.

    Example:
        >>> deep = "x"
        >>> for _ in range(100_000):
        ...     deep = [deep]
        >>> str_length(deep)
        200003
    """
    if type(value) not in _CONTAINERS:
        return len(str(value))
    length = 0
    inside: set[int] = set()  # the containers being written, as str() tracks them
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is _Leave:
            inside.discard(item.key)
        elif kind not in _CONTAINERS:
            length += len(repr(item))
        elif id(item) in inside:
            length += 5  # "[...]", "(...)" or "{...}"
        else:
            inside.add(id(item))
            todo.append(_Leave(id(item)))
            length += _frame_length(item)
            todo.extend(item.values() if kind is dict else item)
    return length


def _frame_length(container: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> int:
    # The brackets and separators around the items; for a dict, its keys too.
    count = len(container)
    length = 2 + 2 * max(count - 1, 0)  # "[" "]" and ", " between items
    if type(container) is tuple and count == 1:
        length += 1  # "(x,)"
    elif type(container) is dict:
        length += sum(len(repr(key)) + 2 for key in container)  # "key: "
    return length
