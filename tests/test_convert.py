import cProfile
import inspect
import json
import linecache
import pickle
import pstats
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import cattrs
import jsonschema
import openai.types
import pytest
from cattrs.errors import ClassValidationError
from hypothesis import given
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm import _json as bf_json
from batchfsm._converter import _detailed
from batchfsm._json_parse import make_parser
from batchfsm.strategies import api_dicts, batches, broken_dicts

from .conftest import BATCH_KEYS
from .shapes import shaped_dicts

MINIMAL: dict[str, Any] = {
    "id": "batch_abc123",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "input_file_id": "file-abc123",
    "completion_window": "24h",
    "status": "validating",
    "created_at": 1711471533,
}


def full(**changes: Any) -> dict[str, Any]:
    return bf.to_dict(bf.from_dict(MINIMAL)) | changes


# -- round trips -----------------------------------------------------------------


def test_reference_examples_round_trip_exactly(reference_example: dict[str, Any]):
    batch = bf.from_dict(reference_example)
    assert bf.to_dict(batch) == reference_example
    assert list(bf.to_dict(batch)) == list(reference_example)  # API key order
    assert bf.loads(bf.dumps(batch)) == batch


@given(shaped_dicts())
def test_round_trip_of_every_well_shaped_dict(data: dict[str, Any]):
    assert bf.to_dict(bf.from_dict(data)) == data
    assert bf.to_dict(bf.from_dict(data, strict=True)) == data
    assert json.loads(bf.dumps(bf.from_dict(data))) == data


@given(shaped_dicts())
def test_to_dict_validates_against_the_official_schema(data: dict[str, Any]):
    # The schema is generated from openai.types.Batch (see tests/data/README.md).
    from .conftest import SCHEMA_PATH, load_json

    schema = load_json(SCHEMA_PATH)
    jsonschema.validate(bf.to_dict(bf.from_dict(data)), schema)


@given(shaped_dicts())
def test_openai_client_reads_what_we_write_and_we_read_what_it_writes(
    data: dict[str, Any],
):
    batch = bf.from_dict(data)
    theirs = openai.types.Batch.model_validate(bf.to_dict(batch))
    assert theirs.model_dump() == bf.to_dict(batch)
    assert bf.from_dict(theirs.model_dump()) == batch


def test_missing_optional_fields_are_null_in_to_dict():
    data = bf.to_dict(bf.from_dict(MINIMAL))
    assert data["model"] is None
    assert data["request_counts"] is None
    assert data["metadata"] is None
    assert data.keys() == BATCH_KEYS


def test_unknown_keys_are_ignored_by_default_and_rejected_when_strict():
    data = full(new_field=1, usage=None) | {
        "request_counts": {"total": 1, "completed": 0, "failed": 0, "extra": 2}
    }
    assert bf.to_dict(bf.from_dict(data))["request_counts"] == {
        "total": 1,
        "completed": 0,
        "failed": 0,
    }
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(data, strict=True)
    assert info.value.errors == [
        ("request_counts.extra", "unknown field (strict mode)"),
        ("new_field", "unknown field (strict mode)"),
    ]


def test_loads_is_lenient_about_unknown_keys_unless_strict():
    text = json.dumps(full(new_field=1))
    assert bf.loads(text) == bf.from_dict(full())
    with pytest.raises(bf.SchemaError) as info:
        bf.loads(text, strict=True)
    assert info.value.errors == [("new_field", "unknown field (strict mode)")]
    assert bf.loads(json.dumps(full()), strict=True) == bf.from_dict(full())


def test_loads_accepts_bytes():
    assert bf.loads(json.dumps(MINIMAL).encode()) == bf.from_dict(MINIMAL)


# -- bad input: every problem, with its JSON path ---------------------------------

MALFORMED: list[tuple[str, Any, list[str]]] = [
    ("not an object", [MINIMAL], [""]),
    ("null document", None, [""]),
    ("missing id", {k: v for k, v in MINIMAL.items() if k != "id"}, ["id"]),
    ("missing object", {k: v for k, v in MINIMAL.items() if k != "object"}, ["object"]),
    (
        "missing everything",
        {},
        [
            "object",
            "id",
            "endpoint",
            "input_file_id",
            "completion_window",
            "status",
            "created_at",
        ],
    ),
    ("wrong object tag", full(object="file"), ["object"]),
    ("object tag sorting before batch", full(object="Batch"), ["object"]),
    ("id not a string", full(id=123), ["id"]),
    ("status unknown", full(status="running"), ["status"]),
    ("status wrong case", full(status="COMPLETED"), ["status"]),
    ("status not a string", full(status=3), ["status"]),
    ("created_at as string", full(created_at="1711471533"), ["created_at"]),
    ("created_at as float", full(created_at=1711471533.0), ["created_at"]),
    ("stamp as bool", full(in_progress_at=True), ["in_progress_at"]),
    ("negative stamp", full(expires_at=-1), ["expires_at"]),
    ("model not a string", full(model=["gpt-4o"]), ["model"]),
    ("counts not an object", full(request_counts=[1, 2, 3]), ["request_counts"]),
    (
        "count as text",
        full(request_counts={"total": "ten", "completed": 0, "failed": 0}),
        ["request_counts.total"],
    ),
    (
        "negative count",
        full(request_counts={"total": 1, "completed": -1, "failed": 0}),
        ["request_counts.completed"],
    ),
    (
        "count missing",
        full(request_counts={"total": 1, "completed": 0}),
        ["request_counts.failed"],
    ),
    (
        "usage details wrong",
        full(
            usage={
                "input_tokens": 1,
                "input_tokens_details": {"cached_tokens": None},
                "output_tokens": 1,
                "output_tokens_details": {},
                "total_tokens": 2,
            }
        ),
        [
            "usage.input_tokens_details.cached_tokens",
            "usage.output_tokens_details.reasoning_tokens",
        ],
    ),
    (
        "errors.data not a list",
        full(errors={"object": "list", "data": {"code": "x"}}),
        ["errors.data"],
    ),
    (
        "errors.data items wrong",
        full(
            errors={"object": "list", "data": [{"code": "ok"}, {"line": "3"}, "oops"]}
        ),
        ["errors.data[1].line", "errors.data[2]"],
    ),
    ("metadata not an object", full(metadata=["a", "b"]), ["metadata"]),
    ("metadata value not a string", full(metadata={"k": 1}), ["metadata.k"]),
    (
        "metadata too many pairs",
        full(metadata={str(i): "v" for i in range(17)}),
        ["metadata"],
    ),
    ("metadata key too long", full(metadata={"k" * 65: "v"}), ["metadata." + "k" * 65]),
    ("metadata value too long", full(metadata={"k": "v" * 513}), ["metadata.k"]),
    (
        "several at once",
        full(
            id=None,
            status="done",
            request_counts={"total": 1.5, "completed": 0, "failed": 0},
        ),
        ["id", "status", "request_counts.total"],
    ),
]


@pytest.mark.parametrize(
    ("document", "paths"),
    [pytest.param(doc, paths, id=name) for name, doc, paths in MALFORMED],
)
def test_malformed_documents_name_every_bad_path(document: Any, paths: list[str]):
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(document)
    assert [path for path, _ in info.value.errors] == paths
    for path in paths:
        assert (path or "<document>") in str(info.value)


@pytest.mark.parametrize(
    "text", ["", "{", "not json", b"\xff\xfe", "[1, 2]", '"batch"', "null"]
)
def test_loads_rejects_non_object_text_with_schema_error(text: str | bytes):
    with pytest.raises(bf.SchemaError) as info:
        bf.loads(text)
    assert [path for path, _ in info.value.errors] == [""]


def test_exact_messages():
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(full(request_counts={"total": "ten", "completed": 0, "failed": 0}))
    assert str(info.value) == (
        "invalid Batch: request_counts.total: expected int, got 'ten'"
    )
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(full(status="running", created_at=None))
    assert str(info.value) == (
        "invalid Batch, 2 problems:\n"
        "  status: expected one of validating, failed, in_progress, finalizing, "
        "completed, expired, cancelling, cancelled; got 'running'\n"
        "  created_at: expected int, got None"
    )


def test_schema_error_is_a_value_error_and_pickles():
    with pytest.raises(ValueError, match="request_counts") as info:
        bf.from_dict(full(request_counts=1))
    error = info.value
    assert isinstance(error, bf.SchemaError)
    assert isinstance(error, bf.BatchFSMError)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.errors == error.errors
    assert str(copy) == str(error)


def test_the_public_converter_is_the_one_from_dict_uses():
    batch = bf.converter.structure(MINIMAL, bf.Batch)
    assert batch == bf.from_dict(MINIMAL)
    assert bf.converter.unstructure(batch) == bf.to_dict(batch)


def _files_run(call: Any) -> set[str]:
    """The source files of the functions a profile of ``call()`` saw run.

    The call is made once first, so hooks made lazily are made outside the profile.
    """
    call()
    profile = cProfile.Profile()
    profile.runcall(call)
    return {Path(file).as_posix() for file, _, _ in pstats.Stats(profile).stats}  # type: ignore[attr-defined]


def test_a_profile_shows_cattrs_running_from_dict_and_to_dict():
    document = full()
    batch = bf.from_dict(document)
    converters = Path(cattrs.converters.__file__).as_posix()
    assert converters in _files_run(lambda: bf.from_dict(document))
    assert converters in _files_run(lambda: bf.to_dict(batch))


def test_the_public_converter_validates_in_detail():
    # converter.structure(d, Batch) is from_dict: one SchemaError, every problem.
    with pytest.raises(bf.SchemaError) as info:
        bf.converter.structure(full(id=7, created_at="x"), bf.Batch)
    assert [path for path, _ in info.value.errors] == ["id", "created_at"]
    # ... and it ignores unknown keys, as from_dict does by default.
    assert bf.converter.structure(full(extra=1), bf.Batch) == bf.from_dict(full())


def test_the_public_converter_reads_and_writes_text_through_orjson():
    batch = bf.from_dict(full(metadata={"note": "café"}))
    assert bf.converter.dumps(batch) == bf.dumps_bytes(batch)
    assert bf.converter.loads(bf.dumps(batch), bf.Batch) == batch


@attrs.frozen
class Job:
    """A user's class holding a batch."""

    name: str
    batch: bf.Batch
    previous: bf.Batch | None = None


@pytest.mark.parametrize(
    "conv",
    [bf.converter, bf.register_hooks(cattrs.Converter())],
    ids=["bf.converter", "register_hooks(Converter())"],
)
def test_a_class_holding_a_batch_round_trips_through_one_converter(conv):
    batch = bf.from_dict(full(metadata={"k": "v"}))
    job = Job("nightly", batch)
    data = conv.unstructure(job)
    assert data == {"name": "nightly", "batch": bf.to_dict(batch), "previous": None}
    assert conv.structure(data, Job) == job
    with pytest.raises(ClassValidationError) as info:
        conv.structure({"name": "x", "batch": full(request_counts=1)}, Job)
    (problem,) = info.value.exceptions
    assert isinstance(problem, bf.SchemaError)
    assert problem.errors == [
        ("request_counts", "expected object (BatchRequestCounts), got 1")
    ]


@pytest.mark.parametrize("first", ["dumps", "dumps_bytes", "loads"])
def test_each_text_function_works_as_the_first_call_of_a_process(first):
    # The text hooks are fetched from the converter on first use; in a process
    # where another function came first they are already there.
    make = (
        "bf.new_batch(id='batch_1', input_file_id='file-1',"
        " endpoint='/v1/embeddings', created_at=1700000000)"
    )
    text = bf.dumps(
        bf.new_batch(
            id="batch_1",
            input_file_id="file-1",
            endpoint="/v1/embeddings",
            created_at=1700000000,
        )
    )
    call = f"bf.loads({text!r}) == b" if first == "loads" else f"bf.{first}(b)"
    script = f"import batchfsm as bf\nb = {make}\nprint(repr({call}))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    expected = {"dumps": text, "dumps_bytes": text.encode(), "loads": True}[first]
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{expected!r}\n", "")


@pytest.mark.parametrize("strict", [False, True])
def test_from_dict_refuses_a_lone_surrogate_strict_or_not(strict):
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(full(id="batch_\ud800"), strict=strict)
    assert info.value.errors == [("id", "a lone surrogate in 'batch_\\ud800'")]


def test_a_users_converter_ignores_unknown_keys_unless_strict():
    assert bf.register_hooks(cattrs.Converter()).structure(
        full(new_field=1), bf.Batch
    ) == bf.from_dict(full())
    strict = bf.register_hooks(cattrs.Converter(), strict=True)
    with pytest.raises(bf.SchemaError) as info:
        strict.structure(full(new_field=1), bf.Batch)
    assert info.value.errors == [("new_field", "unknown field (strict mode)")]


def test_a_users_converter_refuses_a_lone_surrogate_in_a_batch():
    # A user's converter structures Python objects, not text the JSON engine
    # read: a str may hold a lone surrogate, which no JSON text can carry.
    conv = bf.register_hooks(cattrs.Converter())
    with pytest.raises(bf.SchemaError) as info:
        conv.structure(full(id="batch_\ud800"), bf.Batch)
    assert info.value.errors == [("id", "a lone surrogate in 'batch_\\ud800'")]


def test_register_hooks_leaves_the_converters_other_hooks_alone():
    conv = bf.register_hooks(cattrs.Converter())
    assert conv.structure("10", int) == 10  # cattrs' own coercion, for the user's ints
    with pytest.raises(bf.SchemaError):  # ... while a Batch's int stays exact
        conv.structure(full(created_at="10"), bf.Batch)
    strict = bf.register_hooks(cattrs.Converter(), strict=True)
    with pytest.raises(bf.SchemaError) as info:
        strict.structure(full(extra=1), bf.Batch)
    assert info.value.errors == [("extra", "unknown field (strict mode)")]


def test_the_hooks_are_generated_code_whose_source_is_viewable():
    for hook in (
        bf.converter.get_unstructure_hook(bf.Batch),
        make_parser(bf.Batch, strict=False, engine=False),
    ):
        filename = hook.__code__.co_filename
        assert filename.startswith("<batchfsm generated ")
        assert inspect.getsource(hook).startswith(f"def {hook.__name__}(")
        assert linecache.getline(filename, 1).startswith("def ")


class _Document(Mapping[str, Any]):
    """A read-only mapping that is not a dict (from_dict takes any Mapping)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _as_mappings(value: Any) -> Any:
    if isinstance(value, dict):
        return _Document({k: _as_mappings(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_as_mappings(item) for item in value]
    return value


@pytest.mark.parametrize("strict", [False, True])
def test_any_mapping_is_a_document_at_every_level(strict):
    errors = {"object": "list", "data": [{"code": "c", "line": 1}]}
    usage = {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 1},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 5,
    }
    document = full(errors=errors, usage=usage, metadata={"k": "v"})
    expected = bf.from_dict(document, strict=strict)
    for wrapped in (_as_mappings(document), MappingProxyType(document)):
        assert bf.from_dict(wrapped, strict=strict) == expected


def test_a_mapping_that_is_not_a_dict_has_its_problems_listed():
    document = _as_mappings(full(request_counts={"total": -1, "completed": 0}))
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(document)
    assert info.value.errors == [
        ("request_counts.total", "expected a non-negative int, got -1"),
        ("request_counts.failed", "required field missing"),
    ]
    left_out = _Document({k: v for k, v in MINIMAL.items() if k != "object"})
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(left_out)
    assert info.value.errors == [("object", "required field missing")]


@pytest.mark.parametrize("wrap", [dict, _Document], ids=["dict", "Mapping"])
def test_the_batch_keeps_its_own_copy_of_the_callers_metadata(wrap):
    metadata = {"k": "v"}
    batch = bf.from_dict(wrap(full(metadata=metadata)))
    metadata["k"] = "changed"
    metadata["new"] = "pair"
    assert batch.metadata == {"k": "v"}
    assert bf.to_dict(batch)["metadata"] == {"k": "v"}


def test_missing_errors_object_stays_missing_like_the_official_client():
    data = full(errors={"data": [{"code": "x"}]})
    ours = bf.to_dict(bf.from_dict(data))
    assert ours["errors"]["object"] is None
    assert ours == openai.types.Batch.model_validate(data).model_dump()


# -- the text: exactly JSON, raw UTF-8 --------------------------------------------


def test_deep_nesting_is_refused_as_not_json():
    with pytest.raises(bf.SchemaError, match="not valid JSON: depth limit"):
        bf.loads("[" * 100_000)


@given(batches())
def test_dumps_round_trips_and_is_what_any_json_parser_reads_as_to_dict(batch):
    text = bf.dumps(batch)
    assert isinstance(text, str)
    assert bf.loads(text) == batch
    assert bf.loads(text.encode()) == batch
    assert json.loads(text) == bf.to_dict(batch)
    assert list(json.loads(text)) == list(bf.to_dict(batch))
    assert bf.dumps_bytes(batch) == text.encode()


@given(shaped_dicts())
def test_every_well_shaped_document_survives_the_text(data):
    batch = bf.from_dict(data)
    assert bf.loads(bf.dumps(batch)) == batch
    assert json.loads(bf.dumps(batch)) == data


def test_non_ascii_is_written_as_raw_utf8_and_escapes_read_back_equal():
    batch = bf.from_dict(full(metadata={"note": "café ☕ 𝄞", "k\u00e9": "v"}))
    text = bf.dumps(batch)
    assert '"note":"café ☕ 𝄞"' in text and "\\u" not in text
    escaped = json.dumps(bf.to_dict(batch), ensure_ascii=True)
    assert "\\u00e9" in escaped
    assert bf.loads(escaped) == bf.loads(text) == batch


LONE = "\ud800"


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (full(id="batch_" + LONE), "id"),
        (full(model=LONE), "model"),
        (full(metadata={"k": "a" + LONE}), "metadata.k"),
        (full(metadata={LONE: "v"}), "metadata"),
        (
            full(errors={"object": "list", "data": [{"message": LONE}]}),
            "errors.data[0].message",
        ),
    ],
)
def test_lone_surrogates_are_refused_with_their_path(document, path):
    for parse in (bf.from_dict, lambda d: bf.loads(json.dumps(d))):
        with pytest.raises(bf.SchemaError) as e:
            parse(document)
        assert path in [p for p, _ in e.value.errors], e.value.errors
        assert "lone surrogate" in str(e.value)


def test_a_hand_built_batch_with_a_lone_surrogate_cannot_be_dumped():
    batch = bf.new_batch(
        id="batch_1",
        input_file_id="file-" + LONE,
        endpoint="/v1/embeddings",
        created_at=1,
    )
    for dump in (bf.dumps, bf.dumps_bytes):
        with pytest.raises(bf.SchemaError) as e:
            dump(batch)
        assert e.value.errors == [
            ("input_file_id", "a lone surrogate in 'file-\\ud800'")
        ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "expected a non-negative int, got -1"),
        (2**63, f"expected an int below 2**63, got {2**63}"),
        (2**64 - 1, f"expected an int below 2**63, got {2**64 - 1}"),
        (2**64, f"expected an int below 2**63, got {2**64}"),
    ],
)
def test_integers_outside_the_api_range_are_refused_with_their_path(value, message):
    document = full(request_counts={"total": value, "completed": 0, "failed": 0})
    with pytest.raises(bf.SchemaError) as e:
        bf.from_dict(document)
    assert e.value.errors == [("request_counts.total", message)]
    with pytest.raises(bf.SchemaError) as e:
        bf.loads(json.dumps(document))
    if value >= 2**64:  # the engine reads it as a float: not an int either
        message = f"expected int, got {float(value)!r}"
    assert e.value.errors == [("request_counts.total", message)]
    assert bf.from_dict(full(created_at=2**63 - 1)).created_at == 2**63 - 1


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused_and_blamed(constant):
    text = bf.dumps(bf.from_dict(full())).replace(
        '"created_at":1711471533', f'"created_at":{constant}'
    )
    with pytest.raises(bf.SchemaError) as e:
        bf.loads(text)
    assert e.value.errors[0][0] == "" and "not valid JSON" in e.value.errors[0][1]
    assert [p for p, _ in e.value.errors[1:]] == ["created_at"]
    # Where no field is to blame, the text is refused all the same.
    with pytest.raises(bf.SchemaError, match="not valid JSON"):
        bf.loads(bf.dumps(bf.from_dict(full()))[:-1] + f',"extra":{constant}}}')


# -- the generated fast parse agrees with the detailed parse (cattrs) ---------------

ODD_VALUES: list[Any] = [
    None,
    -1,
    2**63 - 1,
    2**63,
    "\ud800",
    "caf\u00e9",
    0,
    1.0,
    True,
    "x",
    "batch",
    "completed",
    [],
    [{}],
    {},
    {"a": 1},
]


def paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document, the document's own included."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*path, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[path[0]] = replaced(document[path[0]], path[1:], new)
    return copy


def parses_agree(document: Any, strict: bool) -> None:
    # The parse for engine text leaves out what the engine refuses in text (lone
    # surrogates): it sees only documents the engine could have produced.
    try:
        engine_could = json.loads(bf_json.encode_str(document)) == document
    except (TypeError, ValueError):
        engine_could = False
    for engine in (False, True) if engine_could else (False,):
        fast = make_parser(bf.Batch, strict, engine)
        detailed = _detailed(strict).get_structure_hook(bf.Batch)
        try:
            expected = detailed(document, bf.Batch)
        except Exception:  # noqa: BLE001 - either parse may fail any way
            with pytest.raises(Exception):  # noqa: B017, PT011
                fast(document)
            continue
        assert fast(document) == expected


@given(st.one_of(api_dicts(), broken_dicts().map(lambda case: case[1])), st.data())
def test_the_fast_parse_agrees_with_the_detailed_parse(document, data):
    for strict in (False, True):
        parses_agree(document, strict)
    path = data.draw(st.sampled_from(paths(document)))
    if path:
        new = data.draw(st.sampled_from(ODD_VALUES))
        document = replaced(document, path, new)
    if data.draw(st.booleans()):
        # A key the model lacks, or one left out.
        where = data.draw(st.sampled_from([p for p in paths(document) if p]))
        parent = where[:-1]
        target = document
        for step in parent:
            target = target[step]
        if isinstance(target, dict):
            extra = data.draw(st.sampled_from(["extra", where[-1]]))
            changed = dict(target)
            if extra in changed:
                del changed[extra]
            else:
                changed[extra] = 1
            document = replaced(document, parent, changed)
    for strict in (False, True):
        parses_agree(document, strict)


def test_the_parses_agree_on_every_field_replaced_added_or_left_out():
    errors = {"object": "list", "data": [{"code": "c", "line": 1, "message": "m"}]}
    for document in (
        full(status="failed", errors=errors, metadata={"k": "v"}),
        full(
            request_counts={"total": 1, "completed": 1, "failed": 0},
            usage={
                "input_tokens": 3,
                "input_tokens_details": {"cached_tokens": 1},
                "output_tokens": 2,
                "output_tokens_details": {"reasoning_tokens": 1},
                "total_tokens": 5,
            },
        ),
    ):
        for path in paths(document):
            for new in ODD_VALUES:
                for strict in (False, True):
                    parses_agree(replaced(document, path, new), strict)
            parent = path[:-1]
            owner = document
            for step in parent:
                owner = owner[step]
            if path and isinstance(owner, dict):
                left_out = {k: v for k, v in owner.items() if k != path[-1]}
                added = {**owner, "extra": 1}
                for changed in (left_out, added):
                    for strict in (False, True):
                        parses_agree(replaced(document, parent, changed), strict)


@pytest.mark.parametrize("key", [b"k", ("k",), 1, None])
def test_metadata_keys_that_are_not_str_are_refused_by_both_parses(key):
    # bytes have len() and isascii() too: only the class test tells them apart.
    document = full(metadata={key: "v"})
    for strict in (False, True):
        parses_agree(document, strict)
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(document)
    assert info.value.errors == [("metadata", f"keys must be str, got {key!r}")]


_PLAIN = cattrs.Converter()  # cattrs' own generated unstructure of the classes


@given(st.one_of(api_dicts(), broken_dicts().map(lambda case: case[1])))
def test_the_generated_writer_writes_what_cattrs_own_unstructure_writes(document):
    try:
        batch = bf.from_dict(document)
    except bf.SchemaError:
        return
    ours = bf.to_dict(batch)
    assert ours == bf.converter.unstructure(batch)
    # cattrs writes the error list as a tuple and metadata as a dict: the same JSON.
    assert json.dumps(ours) == json.dumps(_PLAIN.unstructure(batch))


def test_long_values_are_shown_cut_in_messages():
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(full(id=["x" * 100]))
    ((path, message),) = info.value.errors
    shown = repr(["x" * 100])[:57] + "..."
    assert (path, message) == ("id", f"expected str, got {shown}")
    for length, shown in ((56, repr(["x" * 56])), (57, repr(["x" * 57])[:57] + "...")):
        with pytest.raises(bf.SchemaError) as info:  # 60 characters shown whole
            bf.from_dict(full(id=["x" * length]))
        assert info.value.errors == [("id", f"expected str, got {shown}")]


@attrs.frozen
class _Checked:
    n: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen
class _Converted:
    n: int = attrs.field(converter=int)


@pytest.mark.parametrize("cls", [_Checked, _Converted])
def test_no_parse_is_generated_that_would_skip_a_fields_own_hook(cls):
    # The generated parse writes slots directly: a validator or a converter
    # of a field it does not do the work of would never run.
    with pytest.raises(TypeError, match=f"{cls.__name__}.n has a hook the parse skips"):
        make_parser(cls, strict=False, engine=False)
