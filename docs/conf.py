"""Sphinx configuration for batchfsm's docs."""

import batchfsm

project = "batchfsm"
author = "The batchfsm developers"
copyright = "2026, The batchfsm developers"
release = batchfsm.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"batchfsm {release}"


def _list_table(heading: str, rows: dict[str, str]) -> str:
    body = "".join(f"   * - ``{code}``\n     - {text}\n" for code, text in rows.items())
    return (
        ".. list-table::\n   :header-rows: 1\n   :widths: 1 3\n\n"
        f"   * - {heading}\n     - what it demands\n" + body
    )


def _generate() -> None:
    """Write the pictures and tables derived from the transition table.

    They are made anew at every build, so the docs cannot drift from the code.
    """
    from pathlib import Path

    from batchfsm._diagram import render, transition_table_rst
    from batchfsm.conformance import CHECKS

    out = Path(__file__).parent / "_generated"
    out.mkdir(exist_ok=True)
    (out / "lifecycle.svg").write_text(render("svg"))
    (out / "lifecycle.mmd").write_text(render("mermaid"))
    (out / "transitions.rst").write_text(transition_table_rst())
    (out / "rules.rst").write_text(_list_table("rule", batchfsm.RULES))
    checks = {c.id: f"{c.description} ({c.level})" for c in CHECKS.values()}
    (out / "checks.rst").write_text(_list_table("check", checks))
    (out / "emulator_options.rst").write_text(_emulator_options())
    (out / "benchmarks.rst").write_text(_benchmarks())


def _emulator_options() -> str:
    import inspect

    from batchfsm.emulator import Emulator

    def shown(default: object) -> str:
        if callable(default):
            return f"``{default.__name__}``"
        if hasattr(default, "keys"):
            return "the built-in model catalogue"
        return f"``{default!r}``"

    rows = "".join(
        f"   * - ``{name}``\n     - {shown(parameter.default)}\n"
        for name, parameter in inspect.signature(Emulator).parameters.items()
    )
    header = "   * - option\n     - default\n"
    return ".. list-table::\n   :header-rows: 1\n\n" + header + rows


def _benchmarks() -> str:
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from benchmarks._report import page

    data = json.loads((root / "docs" / "_data" / "benchmarks.json").read_text("utf-8"))
    return page(data)


_generate()
