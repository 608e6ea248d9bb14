"""The generated code, written out for review: ``python -m tests.generated_sources``.

The converter generates its fast hooks at first use (``batchfsm._json_parse``,
``batchfsm._json_write``), as ``loads`` does its parse of text
(``batchfsm._json_text``). Their source is kept under
``tests/data/generated/`` so that a change to the generator shows in review as
a change to the code it makes; ``tests/test_generated_sources.py`` fails while
the committed copy is stale. Run this module to write it afresh.
"""

from __future__ import annotations

import sys
from pathlib import Path

from batchfsm._json_parse import parser_source
from batchfsm._json_text import text_parser_source
from batchfsm._json_write import writer_source
from batchfsm._model import Batch, BatchError

DIRECTORY = Path(__file__).parent / "data" / "generated"


def sources() -> dict[str, str]:
    """File name -> the source the converter generates, as it is compiled."""
    found = {
        "write_Batch.py.txt": writer_source(Batch),
        "parse_Batch_from_text.py.txt": text_parser_source(Batch),
    }
    for strict in (False, True):
        for engine in (False, True):
            for cls in (Batch, BatchError):
                lines = parser_source(cls, strict, engine)
                name = lines[0].removeprefix("def ").partition("(")[0]
                found[f"{name}.py.txt"] = lines
    return {name: "\n".join(lines) + "\n" for name, lines in found.items()}


def main() -> int:
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    for stale in DIRECTORY.glob("*.py.txt"):
        stale.unlink()
    for name, text in sources().items():
        (DIRECTORY / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(sources())} files to {DIRECTORY}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
