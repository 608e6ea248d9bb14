"""The one declaration of every conformance check.

A check is a function of the :class:`~._session.Session`, declared with
:func:`check`; its first docstring line is what it demands. The run order is
the order of declaration, :data:`CHECKS` is the registry itself, and a check's
``needs`` (checks that must pass first, whose return values it reads with
``session.result_of(id)``) must be declared before it, so the order is always a
valid one.

A check that waits for a batch is a generator: it starts its batch, yields
once, then polls. The runner starts every check it can before it waits on
any, so the server runs their batches side by side and the run waits about as
long as its slowest batch, not as long as all of them in turn. A check
declared ``last`` starts only once every check declared before it has ended
(it judges what they recorded).

Levels, the same split for every check:

- ``"required"``: documented API behaviour; a failure fails the run. Every
  check, whatever its level, holds a required part: the status class of each
  answer (a Batch object where one is due, a 4xx where a refusal is), the
  API's error body on every refusal, a legal lifecycle, and no 5xx anywhere
  (a 5xx answered during any check fails it, and the run, naming the call).
- ``"observed"``: behaviour only observed on the live API: the exact status,
  code, param and wording of an answer, a header, what it was seen accepting
  (a malformed line at upload). A check declared
  ``observed`` judges only that exact part at this level; a failure of it is
  a warning unless the run is strict.

A check's ``level`` is the level of what it compares exactly; its required
part is judged by the session's building blocks and the runner, so no check
states it for itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["CHECKS", "LEVELS", "Check", "Level", "check", "with_needs"]

Level = Literal["required", "observed"]
#: The levels a check may have.
LEVELS: tuple[Level, ...] = ("required", "observed")

Body = Callable[["Session"], Any]
_B = TypeVar("_B", bound=Body)


@attrs.frozen
class Check:
    """One declared check: its id, what it demands, and what it needs first."""

    id: str
    description: str
    needs: tuple[str, ...]
    level: Level
    body: Body = attrs.field(repr=False)
    last: bool = False


#: Every check by id, in run order (the order of declaration).
CHECKS: dict[str, Check] = {}


def check(
    id: str,
    *,
    needs: Iterable[str] = (),
    level: Level = "required",
    last: bool = False,
) -> Callable[[_B], _B]:
    """Declare a conformance check; its docstring's first line says what it demands.

    The decorated function takes the run's session: it fails with
    ``expect(condition, evidence)``, skips by raising ``SkippedError(reason)``
    (both in ``batchfsm.conformance._session``) when there is nothing to judge,
    and may return a value that the checks needing it read with
    ``session.result_of(id)``. A check runs only if every check it ``needs``
    passed; otherwise it is skipped, naming them. A check that waits for a
    batch is a generator that yields once, after starting the batch and
    before polling it, so that the others start theirs meanwhile.

    Args:
        id: the stable id, ``area.name``.
        needs: ids of checks declared before this one.
        level: ``"required"`` (documented behaviour) or ``"observed"`` (seen on
            the live API only: a failure of its exact part warns unless the
            run is strict; its required part still fails the run).
        last: start only once every check declared before it has ended.

    Raises:
        ValueError: the id is taken, a need is not declared yet, the level is
            unknown or the function has no docstring.

    Example:
        >>> from batchfsm.conformance import CHECKS
        >>> CHECKS["cancel.retry"].needs, CHECKS["cancel.retry"].level
        (('cancel.accepted',), 'observed')
    """
    needs = tuple(needs)

    def register(body: _B) -> _B:
        doc = (body.__doc__ or "").strip()
        problem = (
            f"{id!r} is declared twice" if id in CHECKS
            else f"level {level!r} is not one of {LEVELS}" if level not in LEVELS
            else f"{id!r} has no docstring to say what it demands" if not doc
            else None
        )  # fmt: skip
        undeclared = [n for n in needs if n not in CHECKS]
        if undeclared:
            problem = f"{id!r} needs {', '.join(undeclared)}, not declared before it"
        if problem:
            raise ValueError(f"conformance check: {problem}")
        first = doc.splitlines()[0].rstrip(".")
        CHECKS[id] = Check(id, first, needs, level, body, last)
        return body

    return register


def with_needs(ids: Iterable[str]) -> set[str]:
    """The ids and, transitively, every check they need.

    Example:
        >>> sorted(with_needs(iter(["happy.files"])))
        ['create.echo', 'happy.files', 'happy.terminal']
    """
    wanted = set(ids)
    todo = list(wanted)
    while todo:
        for need in CHECKS[todo.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                todo.append(need)
    return wanted
