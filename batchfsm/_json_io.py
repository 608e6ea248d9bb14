"""API JSON in and out: the public door (from_dict, to_dict, loads, dumps).

Structuring is strict about types (an ``int`` field takes a JSON integer, not
``"10"``, ``10.0`` or ``true``) and lenient about presence (optional fields may be
missing, unknown keys are ignored unless ``strict=True``). Lifecycle consistency
is not judged here: that is :func:`batchfsm.check`'s job, so that a wrong
server's answer can still be parsed and then judged rule by rule.

Each function is a call of the cattrs converter of :mod:`batchfsm._converter`
(``from_dict`` is ``converter.structure(data, Batch)``, ``to_dict`` is
``converter.unstructure(batch)``); text goes through the one JSON engine of
:mod:`batchfsm._json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from ._converter import converter, strict_converter, text_converters
from ._errors import SchemaError
from ._json import DecodeError as _DecodeError
from ._json import EncodeError as _EncodeError
from ._json import decode as _decode
from ._json import encode as _encode
from ._json_problems import text_problems
from ._json_text import make_text_parser
from ._model import Batch

__all__ = [
    "converter",
    "converter_loads",
    "dumps",
    "dumps_bytes",
    "from_dict",
    "loads",
    "pydantic_dump",
    "to_dict",
]

_structure = converter.structure
_structure_strict = strict_converter.structure
_unstructure = converter.unstructure
# Text is where the peers are fastest (pydantic-core parses and writes JSON in
# Rust): loads and dumps call the converters' Batch hooks themselves, asked of
# the converter once, at first use, instead of through its dispatch at every
# call (a quarter of a microsecond, a tenth of dumps). The hooks are the ones
# converter.structure/unstructure run. loads first tries the parse straight
# from text (batchfsm._json_text), which hands whatever it refuses to them.
_HOOKS: dict[str, Any] = {}


def _hook(name: str) -> Any:
    hook: Any
    if name == "write":
        hook = converter.get_unstructure_hook(Batch)
    elif name == "text":
        hook = make_text_parser(Batch)
    else:
        hook = text_converters[name == "strict"].get_structure_hook(Batch)
    _HOOKS[name] = hook
    return hook


# -- the public door ---------------------------------------------------------------


def from_dict(data: Mapping[str, Any] | _Dumps, *, strict: bool = False) -> Batch:
    """Parse an API Batch object (a decoded JSON document) into a :class:`Batch`.

    ``converter.structure(data, Batch)`` (``strict_converter`` when strict).
    The official client's ``openai.types.Batch`` (a pydantic model) is read
    as its JSON, ``model_dump(mode="json")``.

    Args:
        data: the decoded JSON object, or an ``openai.types.Batch``.
        strict: reject keys the Batch object does not define (by default they are
            ignored, as the API adds fields over time).

    Returns:
        The batch.

    Raises:
        SchemaError: listing every problem with its JSON path.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.from_dict({
        ...     "id": "batch_abc123", "object": "batch",
        ...     "endpoint": "/v1/chat/completions", "input_file_id": "file-abc123",
        ...     "completion_window": "24h", "status": "validating",
        ...     "created_at": 1711471533, "expires_at": 1711557933,
        ... })
        >>> b.status
        <BatchStatus.VALIDATING: 'validating'>
    """
    structure = _structure_strict if strict else _structure
    try:
        return structure(data, Batch)
    except SchemaError:
        # Asked only once the converter refused: a dict pays nothing for it.
        dumped = pydantic_dump(data)
        if dumped is None:
            raise
    return structure(dumped, Batch)


class _Dumps(Protocol):
    """A pydantic model, such as the official client's ``openai.types.Batch``."""

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


def pydantic_dump(document: object) -> dict[str, Any] | None:
    """The JSON dump of a pydantic model (``openai.types.Batch``), else None.

    Example:
        >>> pydantic_dump({"id": "batch_1"}) is None
        True
    """
    if isinstance(document, Mapping):
        return None
    dump = getattr(document, "model_dump", None)
    if not callable(dump):
        return None
    dumped = dump(mode="json")
    return dumped if isinstance(dumped, dict) else None


def to_dict(batch: Batch) -> dict[str, Any]:
    """The API JSON of ``batch``: every field present, ``None`` where unset.

    ``converter.unstructure(batch)``.

    Keys follow the order of the API reference.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.loads('''{"id": "batch_1", "object": "batch", "status": "validating",
        ...   "endpoint": "/v1/embeddings", "input_file_id": "file-1",
        ...   "completion_window": "24h", "created_at": 1700000000}''')
        >>> d = bf.to_dict(b)
        >>> d["status"], d["created_at"], d["output_file_id"]
        ('validating', 1700000000, None)
    """
    return _unstructure(batch)  # type: ignore[no-any-return]


def loads(text: str | bytes, *, strict: bool = False) -> Batch:
    r"""Parse the JSON text of an API Batch object.

    Only JSON is read: ``NaN``, ``Infinity``, lone surrogates (``"\ud800"``)
    and invalid UTF-8 are refused, as are integers out of the API's range.
    An ``openai.types.Batch`` given instead of text is read as
    :func:`from_dict` reads it.

    Raises:
        SchemaError: the text is not JSON, or not a valid Batch object.

    Example:
        >>> import batchfsm as bf
        >>> bf.loads("[]")
        Traceback (most recent call last):
        ...
        batchfsm.SchemaError: invalid Batch: <document>: expected object (Batch), got []
    """
    # Straight into the classes; the converter's way judges anything unusual.
    batch = (_HOOKS.get("text") or _hook("text"))(text)
    return converter_loads(text, strict=strict) if batch is None else batch


def converter_loads(text: str | bytes, *, strict: bool = False) -> Batch:
    """:func:`loads` the converter's way: the engine's dict, then the cattrs hooks.

    What :func:`loads` does with text its straight parse refuses: it accepts
    what the rules accept and words every problem.

    Example:
        >>> converter_loads('''{"id": "batch_1", "object": "batch",
        ...   "status": "validating", "endpoint": "/v1/embeddings",
        ...   "input_file_id": "file-1", "completion_window": "24h",
        ...   "created_at": 1700000000, "new": 1}''').id
        'batch_1'
    """
    try:
        data = _decode(text)
    except _DecodeError as exc:
        if pydantic_dump(text) is not None:  # the client's object, not its text
            return from_dict(text, strict=strict)  # type: ignore[arg-type]
        problems = [("", f"not valid JSON: {exc}")]
        raise SchemaError(problems + _lenient_problems(text, strict)) from None
    name = "strict" if strict else "lenient"
    parse = _HOOKS.get(name) or _hook(name)
    return parse(data, Batch)  # type: ignore[no-any-return]


def _lenient_problems(text: str | bytes, strict: bool) -> list[tuple[str, str]]:
    """The paths to blame in text the engine refused, where a lenient parse can say.

    Python's own parser reads what the engine refuses on purpose (a lone
    surrogate, ``NaN``); the detailed parse then names the fields that hold them.
    """
    try:
        from_dict(json.loads(text), strict=strict)
    except SchemaError as exc:
        return exc.errors
    except (ValueError, TypeError, RecursionError):  # not JSON even to Python
        return []
    return []


def dumps(batch: Batch) -> str:
    r"""The API JSON text of ``batch``: compact, keys in API order.

    Non-ASCII characters are written as raw UTF-8, never ``\u`` escapes
    (:func:`loads` and any JSON parser read them back equal).

    Raises:
        SchemaError: a str of the batch holds a lone surrogate, which JSON
            text cannot carry (only a Batch built by hand can hold one).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.loads('''{"id": "batch_1", "object": "batch", "status": "validating",
        ...   "endpoint": "/v1/embeddings", "input_file_id": "file-1",
        ...   "completion_window": "24h", "created_at": 1700000000}''')
        >>> bf.dumps(b)[:38]
        '{"id":"batch_1","object":"batch","endp'
    """
    data = (_HOOKS.get("write") or _hook("write"))(batch)
    try:
        return _encode(data).decode()
    except _EncodeError:
        raise SchemaError(text_problems(data, "")) from None


def dumps_bytes(batch: Batch) -> bytes:
    r""":func:`dumps` as UTF-8 bytes, for HTTP bodies and files (no decoding).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000,
        ...                  metadata={"note": "café"})
        >>> bf.dumps_bytes(b).endswith(b'"metadata":{"note":"caf\xc3\xa9"}}')
        True
    """
    data = (_HOOKS.get("write") or _hook("write"))(batch)
    try:
        return _encode(data)
    except _EncodeError:
        raise SchemaError(text_problems(data, "")) from None
