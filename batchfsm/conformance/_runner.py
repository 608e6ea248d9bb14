"""Run the declared checks against a server and report, check by check.

Each check has a stable id, a one-line description, a level, an outcome and
evidence (the request and the offending snapshot or field) or, for a skip, the
reason. Outcomes: ``pass``; ``fail``; ``warn`` (an observed-level check failed
in a run that is not strict); ``skip`` (nothing could be judged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs

from . import _checks  # noqa: F401 - declares the checks
from ._registry import CHECKS, Check, with_needs
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

    @property
    def description(self) -> str:
        """What the check demands."""
        return CHECKS[self.id].description

    @property
    def level(self) -> str:
        """``required`` or ``observed``."""
        return CHECKS[self.id].level


@attrs.frozen
class Report:
    """Every check's result, and what was noticed on the way.

    ``refused`` is one line when the server refused every request.
    """

    results: tuple[Result, ...]
    notes: tuple[str, ...] = ()
    refused: str | None = None

    @property
    def passed(self) -> bool:
        """No check failed, at least one passed, and not every request was refused."""
        outcomes = {r.outcome for r in self.results}
        return "fail" not in outcomes and "pass" in outcomes and not self.refused

    def count(self, outcome: Outcome) -> int:
        """How many checks had this outcome."""
        return sum(r.outcome == outcome for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "passed": self.passed,
            "refused": self.refused,
            "results": [
                {"id": r.id, "description": r.description, "level": r.level,
                 "outcome": r.outcome, "evidence": r.evidence}
                for r in self.results
            ],
            "notes": list(self.notes),
        }  # fmt: skip


def _run_one(session: Session, declared: Check, strict: bool) -> Result:
    import httpx2

    failed: Outcome = "fail" if strict or declared.level == "required" else "warn"
    try:
        session.keep(declared.id, declared.body(session))
    except FailedError as exc:
        return Result(declared.id, failed, str(exc))
    except SkippedError as exc:
        return Result(declared.id, "skip", str(exc))
    except httpx2.HTTPError as exc:
        return Result(declared.id, failed, f"HTTP error: {exc!r}")
    except Exception as exc:  # noqa: BLE001 - a broken answer fails this check only
        return Result(
            declared.id, failed, f"the server's answers broke the check: {exc!r}"
        )
    return Result(declared.id, "pass")


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
    webhooks: WebhookReceiver | None = None,
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
        webhooks: a receiver (with its secret) the server delivers its batch
            events to; the webhook checks skip without one.

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
    wanted = with_needs(only) if only else set(CHECKS)
    results: dict[str, Result] = {}
    for declared in CHECKS.values():
        missing = [n for n in declared.needs if results[n].outcome != "pass"]
        if declared.id not in wanted:
            result = Result(declared.id, "skip", "not selected")
        elif missing:
            why = ", ".join(f"{n}, which ended {results[n].outcome}" for n in missing)
            result = Result(declared.id, "skip", f"needs {why}")
        else:
            result = _run_one(session, declared, strict)
        results[declared.id] = result
        if progress:
            progress(result)
    return Report(tuple(results.values()), tuple(session.notes), session.refusal())
