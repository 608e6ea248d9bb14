"""The docs' reference tables say what the code does."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._report import page, results

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_JSON = ROOT / "docs" / "_data" / "benchmarks.json"


def documented_fixtures() -> dict[str, str]:
    text = (ROOT / "docs" / "testing.rst").read_text(encoding="utf-8")
    reference = text.split("pytest fixtures reference")[1]
    rows = re.findall(r"   \* - ``(\w+)``\n     - (\w+)\n", reference)
    return dict(rows)


def test_the_fixtures_reference_lists_every_fixture_with_its_scope(
    pytester: pytest.Pytester,
):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    listed = dict(
        re.findall(
            r"^(batch_emulator\w*)(?: \[(\w+) scope\])? -- ", result.stdout.str(), re.M
        )
    )
    actual = {name: scope or "function" for name, scope in listed.items()}
    assert actual and documented_fixtures() == actual


def test_the_benchmarks_page_shows_the_committed_run():
    data = json.loads(BENCHMARKS_JSON.read_text(encoding="utf-8"))
    text = page(data)
    machine = data["machine"]
    assert f"{machine['python']}, {machine['arch']}, {machine['cpus']} CPUs" in text
    assert data["date"] in text
    for result in results(data):
        row = next(
            line for line in text.splitlines() if line.startswith(f"    {result.name} ")
        )
        assert f"{result.ours:.2f}" in row and f"{result.ratio:.2f}" in row
        if result.ratios:  # its spread beside it: the quartiles, the extremes
            s = result.spread
            assert f"{s['q1']:.2f}-{s['q3']:.2f}" in row
            assert f"{s['min']:.2f}-{s['max']:.2f}" in row
        assert row.endswith("yes" if result.met else "NO")
    assert data.get("method", "") in text
    assert all(f"    {extra}" in text for extra in data["extras"])
    # The page says so when the run holds no engine figures, never implies them.
    assert ("has no engine or store figures" in text) == (not data.get("engine"))


def test_a_benchmark_run_writes_what_the_page_reads(tmp_path):
    out = tmp_path / "run.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "to_dict",
         "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [r.name for r in results(data)] == ["to_dict"]
    assert "to_dict" in page(data)
    (written,) = data["results"]
    # Every round's ratio, their median and spread; msgspec's floor beside.
    assert data["mode"] == "quick" and len(written["ratios"]) == data["rounds"]
    assert written["ratio"] == results(data)[0].ratio
    assert written["spread"]["min"] <= written["ratio"] <= written["spread"]["max"]
    assert written["clock"] == "cpu" and len(written["floor_ratios"]) == data["rounds"]
