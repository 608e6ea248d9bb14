r"""The one JSON engine (orjson) behind the text batchfsm reads and writes.

The library's :func:`batchfsm.loads`/:func:`batchfsm.dumps`, the emulator's HTTP
answers and its reading of input lines all go through here, so that the text is
the same everywhere and the engine can change in one place. Two places keep the
standard library on purpose: a create body is parsed by it so that a refusal can
name the parameter holding a lone surrogate, and result lines are written by it
in pieces (``batchfsm.emulator._pieces``), because orjson writes ``NaN`` as
``null`` where a handler's ``NaN`` must fail its request, and holds the GIL for
a whole value where a huge embeddings answer must let other calls run. And
:func:`batchfsm.loads` first reads a Batch's text straight into the classes
with msgspec's typed decoder (``batchfsm._json_text``): a dict between text
and classes cost as much as pydantic-core's whole parse. It accepts only what
this engine and the rules accept; any other text comes here.

The text, exactly:

- compact (no spaces), keys in the order given (for a Batch, the API's order);
- non-ASCII characters written as raw UTF-8, never ``\uXXXX`` escapes (both
  parse back equal; stdlib :mod:`json` reads it unchanged);
- only JSON: ``NaN``, ``Infinity``, a lone surrogate (``"\ud800"``), invalid
  UTF-8 and numbers out of the double range are refused on the way in, and a
  str holding a lone surrogate is refused on the way out (:data:`EncodeError`);
- integers: exact up to 2**64 - 1; a larger one parses as a float, which no
  integer field of the API accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["DecodeError", "EncodeError", "decode", "encode", "encode_str"]

#: Raised by :func:`decode` for text that is not JSON (a ValueError).
DecodeError = orjson.JSONDecodeError
#: Raised by :func:`encode` for a value JSON cannot carry (a TypeError).
EncodeError = orjson.JSONEncodeError

#: ``decode(text: str | bytes) -> Any``: the value of one JSON document.
decode: Callable[[str | bytes], Any] = orjson.loads
#: ``encode(value) -> bytes``: compact UTF-8 JSON, for HTTP bodies and files.
encode: Callable[[Any], bytes] = orjson.dumps


def encode_str(value: Any) -> str:
    """Compact JSON text of ``value``, as :func:`encode` but a str.

    Example:
        >>> encode_str({"name": "café", "n": [1, None]})
        '{"name":"café","n":[1,null]}'
    """
    return orjson.dumps(value).decode()
