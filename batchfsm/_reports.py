"""``conform``'s report for CI: JUnit XML, one test case per check.

The XML follows the JUnit schema of Apache Ant's JUnit task, the one Jenkins,
GitLab and GitHub's test reporters read (``tests/data/junit/JUnit.xsd``): one
``<testsuite>`` holding one ``<testcase>`` per check. A failed check holds a
``<failure>`` with its reason; a skipped one a ``<skipped>`` with its reason;
a warned one (an *observed*-level check that failed without ``--strict``) a
``<skipped>`` whose message starts ``warning:`` — the schema has no warning,
and a warning must not fail the CI job, yet its reason must show.
"""

from __future__ import annotations

import datetime
import socket
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

if TYPE_CHECKING:
    from .conformance import Report

__all__ = ["junit"]


def junit(report: Report, *, seconds: float = 0.0, target: str = "") -> str:
    """``report`` as JUnit XML (one test case per check).

    Example:
        >>> from batchfsm.conformance import Report, Result
        >>> xml = junit(Report((Result("trace.legal", "skip", "nothing"),)))
        >>> '<skipped message="nothing"' in xml
        True
    """
    results = report.results
    suite = ET.Element(
        "testsuite",
        name="batchfsm conform",
        timestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        hostname=socket.gethostname() or "localhost",
        tests=str(len(results)),
        failures=str(report.count("fail")),
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
    out = ET.SubElement(suite, "system-out")
    out.text = "\n".join(
        [*report.server_errors, *report.notes, *([report.refused or ""])]
    ).strip()
    ET.SubElement(suite, "system-err").text = ""
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        suite, encoding="unicode"
    )
