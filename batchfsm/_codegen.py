"""Compile generated Python source, registered in :mod:`linecache`.

The few paths measured to need it (the JSON parse and write hooks, the copies
a move makes) are generated from the model's and the table's declarations. As
in cattrs (``gen/_lc.py``), the source is registered in :mod:`linecache` under
a ``<batchfsm generated …>`` file name, so that a traceback through generated
code shows its lines and ``inspect.getsource`` works on it.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from typing import Any

__all__ = ["compile_function"]


def compile_function(
    name: str, lines: list[str], namespace: dict[str, Any], *, label: str = ""
) -> Callable[..., Any]:
    """Compile the source ``lines`` defining function ``name``, and return it.

    Args:
        name: the name the source defines; also names the generated file.
        lines: the source, one line per item, without newlines.
        namespace: the globals of the generated code (constants it reads).
        label: names the generated file instead of ``name``, when one name is
            generated in several variants.

    Example:
        >>> source = ["def double(x):", "    return 2 * x"]
        >>> double = compile_function("double", source, {})
        >>> double(21), double.__code__.co_filename
        (42, '<batchfsm generated double>')
    """
    source = "\n".join(lines) + "\n"
    filename = f"<batchfsm generated {label or name}>"
    # A name generated twice (a reload) overwrites its entry: the newest source
    # is the one that runs.
    linecache.cache[filename] = (
        len(source),
        None,  # no mtime: linecache.checkcache leaves the entry alone
        source.splitlines(keepends=True),
        filename,
    )
    globs = dict(namespace)
    exec(compile(source, filename, "exec"), globs)  # our own source, from the table
    function: Callable[..., Any] = globs[name]
    return function
