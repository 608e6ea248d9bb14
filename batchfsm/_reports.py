"""``conform``'s report for CI: JUnit XML, one test case per check.

The XML follows the JUnit schema of Apache Ant's JUnit task, the one Jenkins,
GitLab and GitHub's test reporters read (``tests/data/junit/JUnit.xsd``): one
``<testsuite>`` holding one ``<testcase>`` per check. A failed check holds a
``<failure>`` with its reason; a skipped one a ``<skipped>`` with its reason;
a warned one (an *observed*-level check that failed without ``--strict``) a
``<skipped>`` whose message starts ``warning:`` — the schema has no warning,
and a warning must not fail the CI job, yet its reason must show. A run
that fails with no failed check (every request refused, nothing judged)
adds one failed test case, ``conform.verdict``, saying why: a CI system that
reads only the XML fails the job as the exit status does.

:class:`Progress` is what ``conform`` shows on standard error while it runs:
on a terminal, a line per check as it ends and, while a check waits, one
line refreshed in place saying what it waits for; into a pipe or a CI log, no
line per check, and what a check waits for at most every
:data:`WAIT_LINE_SECONDS`. Both read only a result's ``id`` and ``outcome``
and the text a check gives, so new checks and evidence need nothing here.
"""

from __future__ import annotations

import datetime
import json
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO
from xml.etree import ElementTree as ET

if TYPE_CHECKING:
    from .conformance import Report, Result

__all__ = ["FORMATS", "WAIT_LINE_SECONDS", "Progress", "junit", "render"]

#: ``conform --format``'s choices.
FORMATS = ("text", "json", "junit")
#: Into a pipe, what a check waits for is told at most this often (seconds).
WAIT_LINE_SECONDS = 30.0
#: On a terminal, the waiting line is redrawn at most this often (seconds).
REDRAW_SECONDS = 0.1
_CLEAR = "\r\x1b[K"  # to the line's start, and erase it


def _verdict(report: Report) -> str | None:
    """Why the run failed though no check did; None if a check says it."""
    if report.passed or report.count("fail"):
        return None
    if report.refused:
        return report.refused
    if report.server_errors:
        return "the server answered 5xx: " + "; ".join(report.server_errors)
    return "nothing was judged: no check passed"


def junit(report: Report, *, seconds: float = 0.0, target: str = "") -> str:
    """``report`` as JUnit XML (one test case per check).

    Example:
        >>> from batchfsm.conformance import Report, Result
        >>> xml = junit(Report((Result("trace.legal", "skip", "nothing"),)))
        >>> '<skipped message="nothing"' in xml
        True
    """
    results = report.results
    verdict = _verdict(report)
    suite = ET.Element(
        "testsuite",
        name="batchfsm conform",
        timestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        hostname=socket.gethostname() or "localhost",
        tests=str(len(results) + (verdict is not None)),
        failures=str(report.count("fail") + (verdict is not None)),
        errors="0",
        skipped=str(report.count("skip") + report.count("warn")),
        time=f"{seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="target", value=target)
    ET.SubElement(properties, "property", name="passed", value=str(report.passed))
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            name=result.id,
            classname=f"conform.{result.level}",
            time="0",
        )
        reason = result.evidence or result.description
        if result.outcome == "fail":
            failure = ET.SubElement(
                case, "failure", message=reason.splitlines()[0], type=result.level
            )
            failure.text = f"{result.description}\n{result.evidence}"
        elif result.outcome == "skip":
            ET.SubElement(case, "skipped", message=reason)
        elif result.outcome == "warn":
            ET.SubElement(case, "skipped", message=f"warning: {reason}")
    if verdict is not None:
        case = ET.SubElement(
            suite, "testcase", name="conform.verdict", classname="conform", time="0"
        )
        failure = ET.SubElement(
            case, "failure", message=verdict.splitlines()[0], type="verdict"
        )
        failure.text = verdict
    out = ET.SubElement(suite, "system-out")
    out.text = "\n".join(
        [*report.server_errors, *report.notes, *([report.refused or ""])]
    ).strip()
    ET.SubElement(suite, "system-err").text = ""
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        suite, encoding="unicode"
    )


def render(
    report: Report,
    format: str,
    *,
    seconds: float = 0.0,
    target: str = "",
    text: Callable[[Report], str] | None = None,
) -> str:
    """``report`` in ``format`` (one of :data:`FORMATS`).

    ``text`` renders the table (``conform``'s ``summary``); JSON is
    ``Report.to_dict()``, whatever it holds.

    Example:
        >>> from batchfsm.conformance import Report, Result
        >>> report = Report((Result("trace.legal", "pass"),))
        >>> json.loads(render(report, "json"))["passed"]
        True
    """
    if format == "json":
        return json.dumps(report.to_dict(), indent=2)
    if format == "junit":
        return junit(report, seconds=seconds, target=target)
    if format == "text" and text is not None:
        return text(report)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


class Progress:
    """What ``conform`` shows while it runs (see the module's docs).

    Args:
        stream: where to write (standard error).
        tty: whether ``stream`` is a terminal (asked of it if None).
        clock: seconds, for the rates (``time.monotonic``).

    Example:
        >>> import io
        >>> from batchfsm.conformance import Result
        >>> out = io.StringIO()
        >>> shown = Progress(out, tty=True)
        >>> shown.waiting("happy.terminal", "waiting for batch_1 to end")
        >>> shown.ended(Result("happy.terminal", "pass"))
        >>> out.getvalue().splitlines()[-1].split("[K")[-1]
        '  pass  happy.terminal'
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.clock = stream, clock
        self.tty = stream.isatty() if tty is None else tty
        self._open = False  # a waiting line is on the terminal, unfinished
        self._last = clock()

    def ended(self, result: Result) -> None:
        """A check ended: its line, on a terminal."""
        if self.tty:
            self._clear()
            self._write(f"  {result.outcome:<4}  {result.id}\n")

    def waiting(self, check_id: str, what: str) -> None:
        """A check waits for ``what``: redrawn on a terminal, seldom into a pipe."""
        now = self.clock()
        if self.tty:
            if self._open and now - self._last < REDRAW_SECONDS:
                return
            self._write(f"{_CLEAR}  ....  {check_id}: {what}")
            self._open = True
        elif now - self._last >= WAIT_LINE_SECONDS:
            self._write(f"batchfsm conform: {check_id}: {what}\n")
        else:
            return
        self._last = now

    def close(self) -> None:
        """The run is over: no waiting line is left on the terminal."""
        self._clear()

    def _clear(self) -> None:
        if self._open:
            self._write(_CLEAR)
            self._open = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
