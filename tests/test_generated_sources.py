"""The committed copy of the generated hooks is what the generator makes now."""

import inspect

import batchfsm as bf
from batchfsm._json_parse import make_parser
from batchfsm._json_text import make_text_parser

from .generated_sources import DIRECTORY, sources


def test_the_committed_generated_sources_are_current():
    expected = sources()
    committed = {
        path.name: path.read_text("utf-8") for path in DIRECTORY.glob("*.py.txt")
    }
    assert set(committed) == set(expected), "run: python -m tests.generated_sources"
    for name, text in expected.items():
        assert committed[name] == text, (
            f"{name} is stale: python -m tests.generated_sources"
        )


def test_the_committed_sources_are_the_code_that_runs():
    writer = bf.converter.get_unstructure_hook(bf.Batch)
    assert inspect.getsource(writer) == (DIRECTORY / "write_Batch.py.txt").read_text()
    parser = make_parser(bf.Batch, strict=True, engine=True)
    assert (
        inspect.getsource(parser)
        == (DIRECTORY / "parse_Batch_strict_text.py.txt").read_text()
    )
    text_parser = make_text_parser(bf.Batch)
    assert (
        inspect.getsource(text_parser)
        == (DIRECTORY / "parse_Batch_from_text.py.txt").read_text()
    )
