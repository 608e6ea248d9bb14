"""The ``postgres`` marker: ``-m "not postgres"`` runs the suite without a server."""

import re
import subprocess
import sys
from pathlib import Path


def test_the_postgres_marker_selects_exactly_the_tests_that_need_the_server():
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q"]
    collect += ["-p", "no:cacheprovider", "tests"]

    def collected(expression: str) -> set[str]:
        out = subprocess.run(
            [*collect, "-m", expression],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[1],
        ).stdout
        return {line for line in out.splitlines() if "::" in line}

    postgres, others = collected("postgres"), collected("not postgres")
    assert not postgres & others
    for test in (
        "test_sql_stores.py::test_a_newer_postgres_database_is_refused",
        "test_stores.py::test_a_batch_and_its_work_come_back_as_values[postgres]",
        "test_sql_stores.py::test_any_batch_and_work_come_back_equal[postgres]",
        "test_cancel_race.py::test_a_cancel_racing_a_progress_write_loses_nothing[postgres-get]",
    ):
        assert f"tests/{test}" in postgres
    # A test that only starts a fresh interpreter without a server is no such test.
    assert not [t for t in others if re.search(r"[\[-]postgres[\]-]", t)]
    assert {test.split("[")[0] for test in others} & {
        "tests/test_sql_stores.py::test_without_a_server_the_postgres_tests_"
        "skip_saying_why_but_not_under_ci"
    }
