"""Run the declared checks against a server and report, check by check.

Each check has a stable id, a one-line description, a level, an outcome and
evidence (the request and the offending snapshot or field) or, for a skip, the
reason. Outcomes: ``pass``; ``fail``; ``warn`` (an observed-level part
failed in a run that is not strict); ``skip`` (nothing could be judged).

The levels are applied here, once for every check (``_registry`` says what
each level holds): a failure is at the check's own level unless it was raised
at the required level (``require``, and the session's building blocks); an
answer the check's code could not read is a required failure; and a 5xx
answered while a check ran fails it at the required level, whatever else it
found, and fails the run, the report naming the call.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs

from . import _checks  # noqa: F401 - declares the checks
from ._registry import CHECKS, Check, Level, with_needs
from ._session import FailedError, Session, SkippedError

if TYPE_CHECKING:  # the HTTP client is an extra; the registry needs none
    import httpx2

    from ..emulator._receiver import WebhookReceiver

__all__ = ["Outcome", "Report", "Result", "run"]

Outcome = Literal["pass", "fail", "warn", "skip"]


@attrs.frozen
class Result:
    """The outcome of one check, with what shows it (or why it was skipped)."""

    id: str
    outcome: Outcome
    evidence: str = ""
    #: The level of the failure (a failure of an observed check's required part
    #: is ``required``); else the check's own level.
    level: Level = attrs.field(
        default=attrs.Factory(lambda self: CHECKS[self.id].level, takes_self=True)
    )

    @property
    def description(self) -> str:
        """What the check demands."""
        return CHECKS[self.id].description


@attrs.frozen
class Report:
    """Every check's result, and what was noticed on the way.

    ``refused`` is one line when the server refused every request;
    ``server_errors`` names every call answered 5xx (``METHOD PATH -> STATUS
    (during CHECK)``), each of which fails the run. ``not_judged`` is one
    line when the server is not a Batch API at all (its first answers were
    not the API's JSON: an HTML error page, say): the run stopped there,
    every check is a skip saying so, and nothing was judged.
    """

    results: tuple[Result, ...]
    notes: tuple[str, ...] = ()
    refused: str | None = None
    server_errors: tuple[str, ...] = ()
    not_judged: str | None = None

    @property
    def passed(self) -> bool:
        """No check failed, no 5xx, one check passed, not every request refused."""
        outcomes = {r.outcome for r in self.results}
        return (
            "fail" not in outcomes
            and "pass" in outcomes
            and not self.refused
            and not self.server_errors
            and not self.not_judged
        )

    @property
    def judged(self) -> bool:
        """Whether any check was judged (passed, failed or warned).

        Example:
            >>> Report((Result("trace.legal", "skip", "nothing"),)).judged
            False
        """
        return not self.not_judged and any(r.outcome != "skip" for r in self.results)

    def count(self, outcome: Outcome) -> int:
        """How many checks had this outcome."""
        return sum(r.outcome == outcome for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "passed": self.passed,
            "refused": self.refused,
            "not_judged": self.not_judged,
            "server_errors": list(self.server_errors),
            "results": [
                {"id": r.id, "description": r.description, "level": r.level,
                 "outcome": r.outcome, "evidence": r.evidence}
                for r in self.results
            ],
            "notes": list(self.notes),
        }  # fmt: skip


def _verdict(session: Session, declared: Check, result: Result, strict: bool) -> Result:
    """The result with the levels applied: any 5xx during the check, then strict."""
    calls = [call for at, call in session.server_errors if at == declared.id]
    if calls:  # never right, whatever the check found
        found = f"\n{result.evidence}" if result.outcome == "fail" else ""
        evidence = f"the server answered 5xx: {'; '.join(calls)}{found}"
        return Result(declared.id, "fail", evidence, "required")
    if result.outcome == "fail" and result.level == "observed" and not strict:
        return attrs.evolve(result, outcome="warn")
    return result


def _step(
    session: Session, declared: Check, running: Generator[Any, None, Any] | None
) -> tuple[Generator[Any, None, Any] | None, Result | None]:
    """Run the check (or go on with it) to its next wait or its end.

    Returns the check still under way (parked at a wait), or its result, a
    failure at the level it was raised at.
    """
    import httpx2

    session.current = declared.id
    try:
        if running is None:
            value = declared.body(session)
            if not inspect.isgenerator(value):
                session.keep(declared.id, value)
                return None, Result(declared.id, "pass")
            running = cast("Generator[Any, None, Any]", value)
        next(running)
        return running, None
    except StopIteration as done:
        session.keep(declared.id, done.value)
        return None, Result(declared.id, "pass")
    except FailedError as exc:
        result = Result(declared.id, "fail", str(exc), exc.level or declared.level)
    except SkippedError as exc:
        result = Result(declared.id, "skip", str(exc))
    except httpx2.HTTPError as exc:
        result = Result(declared.id, "fail", f"HTTP error: {exc!r}", "required")
    except Exception as exc:  # noqa: BLE001 - a broken answer fails this check only
        evidence = f"the server's answers broke the check: {exc!r}"
        result = Result(declared.id, "fail", evidence, "required")
    return None, result


class _Schedule:
    """Which checks have ended, which wait, and what may start next."""

    def __init__(self, session: Session, wanted: set[str], strict: bool) -> None:
        self.session, self.wanted, self.strict = session, wanted, strict
        self.results: dict[str, Result] = {}
        self.parked: dict[str, Generator[Any, None, Any]] = {}

    def start_ready(self) -> None:
        """Start, in declaration order, every check whose needs have ended."""
        for declared in CHECKS.values():
            if declared.id in self.results or declared.id in self.parked:
                continue
            before = list(CHECKS)[: list(CHECKS).index(declared.id)]
            if any(n not in self.results for n in declared.needs) or (
                declared.last and any(b not in self.results for b in before)
            ):
                continue
            missing = [n for n in declared.needs if self.results[n].outcome != "pass"]
            if declared.id not in self.wanted:
                self.results[declared.id] = Result(declared.id, "skip", "not selected")
            elif missing:
                why = ", ".join(
                    f"{n}, which ended {self.results[n].outcome}" for n in missing
                )
                self.results[declared.id] = Result(declared.id, "skip", f"needs {why}")
            else:
                self.go_on(declared, None)

    def go_on(self, declared: Check, running: Generator[Any, None, Any] | None) -> None:
        """Run the check to its next wait (parked) or its end (its result kept)."""
        running, result = _step(self.session, declared, running)
        if running is not None:
            self.parked[declared.id] = running
        else:
            assert result is not None
            self.results[declared.id] = _verdict(
                self.session, declared, result, self.strict
            )

    def resume_first(self) -> bool:
        """Go on with the first check parked (in declaration order), if any."""
        waiting = [i for i in CHECKS if i in self.parked]
        if not waiting:
            return False
        self.go_on(CHECKS[waiting[0]], self.parked.pop(waiting[0]))
        return True


def run(
    http: httpx2.Client,
    *,
    wait: Callable[[float], None] = time.sleep,
    only: set[str] | None = None,
    strict: bool = False,
    endpoint: str = "/v1/chat/completions",
    model: str = "gpt-4o-mini",
    timeout: float = 600.0,
    progress: Callable[[Result], None] | None = None,
    other_http: httpx2.Client | None = None,
    webhooks: WebhookReceiver | None = None,
    waiting: Callable[[str, str], None] | None = None,
) -> Report:
    """Run the checks against the server ``http`` talks to.

    Args:
        http: a client whose ``base_url`` is the server's root (``/v1/...`` is
            appended) and which carries any auth header.
        wait: how to let ``seconds`` of server time pass (sleep, or move a
            virtual clock).
        only: run only these check ids and what they need first; every other
            check is reported as skipped.
        strict: a failed ``observed`` check fails the run (else it warns).
        endpoint: the batch endpoint to use.
        model: the model the requests name.
        timeout: server seconds to poll a batch before giving up.
        progress: called with each result, in the report's order, as it is known.
        other_http: a client with a key of another project (``projects.*``).
        webhooks: a receiver (with its secret) the server delivers its batch
            events to; the webhook checks skip without one.
        waiting: called with a check's id and what it waits for (e.g.
            ``waiting for batch_1 to end (in_progress 12/20, 41 s)``) before
            each wait.

    Raises:
        ValueError: ``only`` names an unknown check.

    Example:
        >>> from batchfsm.conformance import emulator_client
        >>> http, wait = emulator_client()
        >>> with http:
        ...     report = run(http, wait=wait, only={"happy.files"})
        >>> [(r.id, r.outcome) for r in report.results if r.outcome != "skip"]
        [('create.echo', 'pass'), ('happy.terminal', 'pass'), ('happy.files', 'pass')]
    """
    unknown = (only or set()) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check ids: {', '.join(sorted(unknown))}; see CHECKS")
    session = Session(
        http, wait, endpoint=endpoint, model=model, timeout=timeout, webhooks=webhooks
    )
    session.other_http = other_http  # the projects.* checks skip without one
    session.waiting = waiting
    schedule = _Schedule(session, with_needs(only) if only else set(CHECKS), strict)
    told = 0
    while True:
        schedule.start_ready()
        ended = list(itertools.takewhile(schedule.results.__contains__, CHECKS))
        for check_id in ended[told:] if progress else ():
            progress(schedule.results[check_id])  # type: ignore[misc]
        told = len(ended)
        if not schedule.resume_first():
            break
    if session.not_judged is not None:
        return _not_judged(session.not_judged)
    results = {i: schedule.results[i] for i in CHECKS}
    server_errors = tuple(
        f"{call} (during {check_id})" for check_id, call in session.server_errors
    )
    return Report(
        tuple(results.values()),
        tuple(session.notes),
        session.refused_everything(),
        server_errors,
    )


def _not_judged(why: str) -> Report:
    """The report of a run against a server that is not a Batch API.

    What the checks found before it showed (its error pages) is no verdict:
    every check is a skip, and the one line says why.
    """
    skipped = tuple(
        Result(i, "skip", "not judged: the server is not a Batch API") for i in CHECKS
    )
    return Report(skipped, not_judged=why)
