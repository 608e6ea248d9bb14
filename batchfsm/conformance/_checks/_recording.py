"""Checks that judge every Batch object the other checks were answered."""

from __future__ import annotations

from typing import Any

import attrs

from ..._errors import SchemaError
from ..._invariants import check as check_batch
from ..._invariants import check_trace
from ..._json_io import from_dict
from ..._model import Batch
from .._registry import check
from .._session import Session, SkippedError, expect

__all__: list[str] = []

_KNOWN = frozenset(a.name for a in attrs.fields(Batch))


def _recorded(s: Session) -> list[tuple[str, object]]:
    if not s.snapshots:
        raise SkippedError("no Batch object was answered, so there is nothing to judge")
    return s.snapshots


def _parsed(document: Any) -> Batch | None:
    try:
        return from_dict(document)
    except SchemaError:
        return None  # schema.batch reports it


@check("schema.batch", last=True)
def schema_batch(s: Session) -> None:
    """Every Batch object answered parses and passes check()."""
    problems: list[str] = []
    unknown: set[str] = set()
    for where, document in _recorded(s):
        try:
            batch = from_dict(document)  # type: ignore[arg-type]
        except SchemaError as exc:
            problems.append(f"{where}: {exc}")
            continue
        unknown |= set(document) - _KNOWN  # type: ignore[call-overload]
        problems += [
            f"{where}: batch {v.batch_id}: {v.rule} @ {v.path}: {v.message}"
            for v in check_batch(batch)
        ]
    if unknown:
        s.notes.append(
            "Batch objects carry keys batchfsm does not know: "
            + ", ".join(sorted(unknown))
        )
    expect(not problems, "\n".join(problems[:20]))


@check("trace.legal", last=True)
def trace_legal(s: Session) -> None:
    """All Batch objects answered, in order, pass check_trace()."""
    parsed = [b for _, d in _recorded(s) if (b := _parsed(d)) is not None]
    if not parsed:
        raise SkippedError(
            "no Batch object answered could be parsed (see schema.batch)"
        )
    violations = check_trace(parsed)
    expect(
        not violations,
        "\n".join(
            f"snapshot #{v.index} of batch {v.batch_id}: {v.rule} @ {v.path}: "
            f"{v.message}"
            for v in violations[:20]
        ),
    )
