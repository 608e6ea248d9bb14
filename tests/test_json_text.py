"""loads straight from text (msgspec structs) agrees with the converter's way.

``bf.loads`` first tries :mod:`batchfsm._json_text`; whatever that refuses goes
the converter's way (:func:`batchfsm._json_io.converter_loads`: orjson, then the
cattrs hooks). These tests hold the two to the same answers: the same Batch,
or the same SchemaError with the same problems, for any text.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._json_io import converter_loads
from batchfsm._json_text import _struct_type, _value_lines, make_text_parser
from batchfsm._model import BatchError, BatchErrors
from batchfsm.strategies import api_dicts, broken_dicts

from .conftest import BATCH_KEYS
from .shapes import shaped_dicts
from .test_convert import ODD_VALUES, _Checked, _Converted, full, paths, replaced

parse_text = make_text_parser(bf.Batch)


def answer(call: Any) -> tuple[str, Any]:
    """What ``call()`` answers: its Batch, or its SchemaError's problems."""
    try:
        return "batch", call()
    except bf.SchemaError as exc:
        return "refused", exc.errors


def agree(text: str | bytes) -> None:
    """loads answers as the converter's way does, strict or not, and the
    straight parse, where it answers, gives the very same Batch."""
    for strict in (False, True):
        expected = answer(lambda strict=strict: converter_loads(text, strict=strict))
        assert answer(lambda strict=strict: bf.loads(text, strict=strict)) == expected
    straight = parse_text(text)
    if straight is None:  # refused: the converter's way answered, above
        return
    # Accepted straight: the converter's way accepts it too, even strict, and
    # the very same values (a status member, not its str; tuples, not lists).
    assert expected == ("batch", straight)
    assert repr(straight) == repr(expected[1])
    assert type(straight.status) is bf.BatchStatus
    assert straight.metadata is None or isinstance(straight.metadata, MappingProxyType)


def test_a_well_formed_document_goes_straight_into_the_classes(reference_example):
    # Without this the speed would be lost quietly: every answer of the API
    # takes the straight way, and gives what the converter's way gives.
    for encode in (orjson.dumps, json.dumps, lambda d: json.dumps(d, indent=2)):
        text = encode(reference_example)
        assert parse_text(text) == bf.from_dict(reference_example)
        agree(text)


@given(shaped_dicts())
def test_every_well_shaped_document_goes_straight(data):
    for text in (orjson.dumps(data), json.dumps(data, ensure_ascii=True)):
        batch = parse_text(text)
        assert batch == bf.from_dict(data)
        assert bf.to_dict(batch) == data
        agree(text)


#: Raw JSON (or not) put where a value goes: what msgspec skips more laxly
#: than the engine reads (invalid UTF-8, numbers beyond a double, depth), the
#: numbers the two read differently, lone surrogates, and ordinary values.
RAW: list[bytes] = [
    b"1e400",
    b"-1e400",
    b"2e308",
    b'"\\ud800"',
    b'"x\\udc00"',
    b'"\xff"',
    b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"',
    b"[" * 1100 + b"]" * 1100,
    b"[" * 200 + b"]" * 200,
    b"18446744073709551616",
    b"18446744073709551615",
    b"9223372036854775808",
    b"9223372036854775807",
    b"-0",
    b"-1",
    b"1.0",
    b"1E2",
    b"NaN",
    b"0.5",
    b'"\\u0000"',
    b'{"a": 1, "a": 2}',
    b"true",
    b"null",
    b'"batch"',
    b'"completed"',
    b'"caf\xc3\xa9"',
    b"{}",
    b"[]",
    b"[{}]",
    b"7",
]
_MARK = "\x00mark\x00"
_KEY = "\x00key\x00"


def with_raw(document: Any, path: tuple[Any, ...], raw: bytes) -> bytes:
    """The text of ``document`` with ``raw`` put as the value at ``path``."""
    text = json.dumps(replaced(document, path, _MARK)).encode()
    return text.replace(json.dumps(_MARK).encode(), raw)


def with_key(document: Any, owner: tuple[Any, ...], key: str, raw: bytes, first: bool):
    """The text of ``document`` whose object at ``owner`` has ``key`` (perhaps
    again: a key given twice) with the value ``raw``, first or last."""
    target = document
    for step in owner:
        target = target[step]
    added = {_KEY: _MARK}
    changed = {**added, **target} if first else {**target, **added}
    text = with_raw(replaced(document, owner, changed), (*owner, _KEY), raw)
    return text.replace(json.dumps(_KEY).encode(), json.dumps(key).encode())


documents = st.one_of(api_dicts(), broken_dicts().map(lambda case: case[1]))


@given(documents, st.data())
def test_loads_agrees_with_the_converters_way_on_any_text(document, data):
    encode = data.draw(
        st.sampled_from(
            [orjson.dumps, json.dumps, lambda d: json.dumps(d, ensure_ascii=False)]
        )
    )
    try:
        agree(encode(document))
    except (TypeError, ValueError):  # orjson will not write a lone surrogate
        agree(json.dumps(document))
    if not isinstance(document, dict) or not document:
        return
    where = data.draw(st.sampled_from(paths(document)))
    odd = data.draw(st.sampled_from(ODD_VALUES))
    agree(json.dumps(replaced(document, where, odd)))
    raw = data.draw(st.sampled_from(RAW))
    agree(with_raw(document, where, raw))
    owners = [p for p in paths(document) if _value_at(document, p).__class__ is dict]
    owner = data.draw(st.sampled_from(owners))
    known = list(_value_at(document, owner))
    key = data.draw(st.sampled_from(["extra", *known]) if known else st.just("extra"))
    agree(with_key(document, owner, key, raw, data.draw(st.booleans())))


def _value_at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


@pytest.mark.parametrize("raw", RAW)
@pytest.mark.parametrize("owner", [(), ("request_counts",), ("errors", "data", 0)])
def test_an_unknown_key_is_judged_as_the_engine_judges_it(raw, owner):
    # msgspec skips an unknown key's value without reading all of it (it takes
    # 1e400, invalid UTF-8, any depth); the engine refuses those: so must loads.
    document = full(
        request_counts={"total": 1, "completed": 1, "failed": 0},
        errors={"object": "list", "data": [{"code": "c", "line": 1}]},
    )
    agree(with_key(document, owner, "extra", raw, first=False))
    agree(with_key(document, owner, "extra", raw, first=True))


@pytest.mark.parametrize("raw", RAW)
@pytest.mark.parametrize(
    "key", [*sorted(BATCH_KEYS), "request_counts.total", "metadata.k"]
)
def test_a_key_given_twice_is_judged_as_the_engine_judges_it(raw, key):
    # The engine keeps the last of a key given twice; loads answers the same.
    document = full(
        request_counts={"total": 1, "completed": 1, "failed": 0}, metadata={"k": "v"}
    )
    owner = tuple(key.split(".")[:-1])
    name = key.split(".")[-1]
    for first in (False, True):
        agree(with_key(document, owner, name, raw, first))
        agree(with_raw(document, (*owner, name), raw))


@pytest.mark.parametrize(
    "metadata",
    [
        {str(i): "v" for i in range(16)},
        {str(i): "v" for i in range(17)},
        {"é" * 64: "é" * 512},
        {"é" * 65: "v"},
        {"k": "é" * 513},
        {"k": "\U0001f600" * 512},
        {},
    ],
)
def test_metadata_limits_count_characters_both_ways(metadata):
    for text in (
        orjson.dumps(full(metadata=metadata)),
        json.dumps(full(metadata=metadata)),
    ):
        agree(text)


def test_metadata_with_seventeen_keys_one_given_twice_has_sixteen():
    pairs = ", ".join(f'"{i % 16}": "v"' for i in range(17))
    text = json.dumps(full(metadata=_MARK)).replace(
        json.dumps(_MARK), "{" + pairs + "}"
    )
    agree(text)
    assert len(bf.loads(text).metadata or {}) == 16


@pytest.mark.parametrize("key", sorted(BATCH_KEYS))
def test_a_key_left_out_is_judged_as_the_converter_judges_it(key):
    # The Batch's object tag is required of a document, whatever its default.
    document = {k: v for k, v in full().items() if k != key}
    agree(json.dumps(document))


def test_errors_object_left_out_stays_missing_the_straight_way():
    document = full(errors={"data": [{"code": "c"}]})
    batch = parse_text(json.dumps(document))
    assert batch is not None
    assert batch.errors == bf.BatchErrors(object=None, data=(bf.BatchError(code="c"),))
    agree(json.dumps(document))


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b"\xef\xbb\xbf" + json.dumps(full()).encode(),
        json.dumps(full()).encode() + b" x",
        json.dumps(full()).replace('"batch_abc123"', '"batch_\\ud800"'),
        json.dumps(full(), ensure_ascii=False).replace("batch_abc123", "batch_\ud800"),
        bytearray(json.dumps(full()).encode()),
        memoryview(json.dumps(full()).encode()),
    ],
)
def test_odd_texts_get_the_converters_answer(text):
    agree(text)


def test_the_openai_clients_object_is_still_read():
    import openai.types

    theirs = openai.types.Batch.model_validate(full())
    assert bf.loads(theirs) == bf.from_dict(full())  # type: ignore[arg-type]
    assert parse_text(theirs) is None  # type: ignore[arg-type]


def test_the_straight_parse_is_generated_code_whose_source_is_viewable():
    filename = parse_text.__code__.co_filename
    assert filename == "<batchfsm generated parse_Batch_from_text>"
    assert inspect.getsource(parse_text).startswith("def parse_Batch_from_text(text):")


@pytest.mark.parametrize("cls", [_Checked, _Converted])
def test_no_straight_parse_is_generated_that_would_skip_a_fields_own_hook(cls):
    with pytest.raises(TypeError, match=f"{cls.__name__}.n has a hook the parse skips"):
        make_text_parser(cls)


# -- the text rules know each shape of the model, and refuse any other -------


@pytest.mark.parametrize(
    ("t", "owner"),
    [
        (Mapping[str, str], BatchErrors),  # metadata is the Batch's alone
        (tuple[BatchError, ...], bf.Batch),  # the error list is BatchErrors' alone
        (tuple[BatchError], BatchErrors),  # a list of any length, not of one
        (tuple[BatchError, int, int], BatchErrors),
    ],
)
def test_a_shape_the_text_rules_do_not_know_is_refused_by_name(
    t: Any, owner: type
) -> None:
    # A field the model gains in a shape the straight parse has no rule for
    # stops the import loudly, instead of a parse that checks less.
    with pytest.raises(TypeError, match=f"no text rule for {owner.__name__}"):
        _struct_type(t, owner)
    assert _value_lines(t, owner, "", "") == []  # and no build of it either


def test_the_error_list_parses_straight_on_its_own() -> None:
    text = b'{"object": "list", "data": [{"code": "c", "message": "m", "line": 2}]}'
    parsed = make_text_parser(BatchErrors)(text)
    assert parsed == BatchErrors(data=(BatchError(code="c", message="m", line=2),))
