"""What to tell a user whose install lacks an optional dependency.

Every command and pytest fixture that needs an extra says the same one line,
naming the exact ``pip install`` to run, instead of a traceback or a skip.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(error: ImportError, extra: str) -> str:
    """The one line to show when ``error`` stops code that needs ``extra``.

    Example:
        >>> error = ModuleNotFoundError("No module named 'httpx2'", name="httpx2")
        >>> print(missing_extra(error, "server"))
        httpx2 is not installed; install it with: pip install 'batchfsm[server]'
    """
    what = error.name or str(error)
    return f"{what} is not installed; install it with: pip install 'batchfsm[{extra}]'"
