"""Pictures and tables of the lifecycle, rendered from the transition table.

The table becomes one small intermediate model (:class:`_Graph`: statuses and
labelled edges); each renderer reads only that model. :data:`FORMATS` is the
registry the ``batchfsm diagram --format`` choices come from.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

import attrs

from ._graph import NOOPS, TOPO_ORDER
from ._model import TERMINAL_STATUSES, BatchStatus
from ._table import INITIAL, MOVES, STAMPS

__all__ = ["FORMATS", "render", "to_mermaid", "transition_table_rst"]


@attrs.frozen
class _Edge:
    source: BatchStatus
    dest: BatchStatus
    label: str


@attrs.frozen
class _Graph:
    statuses: tuple[BatchStatus, ...]
    initial: BatchStatus
    terminal: frozenset[BatchStatus]
    edges: tuple[_Edge, ...]


def _graph() -> _Graph:
    edges = [
        _Edge(source, move.dest, move.event.value)
        for move in MOVES
        for source in move.sources
    ]
    edges += [
        _Edge(status, status, f"{event.value} (no-op)")
        for status, event in sorted(NOOPS)
    ]
    return _Graph(TOPO_ORDER, INITIAL, TERMINAL_STATUSES, tuple(edges))


def _mermaid(graph: _Graph) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {graph.initial.value}"]
    lines += [
        f"    {e.source.value} --> {e.dest.value}: {e.label}" for e in graph.edges
    ]
    lines += [f"    {s.value} --> [*]" for s in graph.statuses if s in graph.terminal]
    return "\n".join(lines) + "\n"


def _dot(graph: _Graph) -> str:
    lines = [
        "digraph batch_lifecycle {",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded"];',
        '    __start [shape=point, label=""];',
        f"    __start -> {graph.initial.value};",
    ]
    lines += [
        f"    {s.value} [peripheries=2];" for s in graph.statuses if s in graph.terminal
    ]
    lines += [
        f'    {e.source.value} -> {e.dest.value} [label="{e.label}"];'
        for e in graph.edges
    ]
    return "\n".join([*lines, "}"]) + "\n"


# -- SVG: drawn from the table, no layout engine needed -----------------------------
#
# The spine (the path from the initial status through the statuses with the most
# descendants) is the middle row; other single-source moves branch to the row
# above; each status entered from several statuses (expire, cancel) gets a row of
# its own below, right of all its sources, with its edges rising from below the
# sources and one label.

_W, _H, _GAP_X, _GAP_Y, _PAD = 120, 36, 100, 44, 20


def _layout(graph: _Graph) -> dict[BatchStatus, tuple[int, int]]:
    edges = [e for e in graph.edges if e.source is not e.dest]
    sources = {s: [e.source for e in edges if e.dest is s] for s in graph.statuses}
    children = {s: [e.dest for e in edges if e.source is s] for s in graph.statuses}

    def descendants(status: BatchStatus) -> int:
        return len(children[status]) + sum(descendants(c) for c in children[status])

    place = {graph.initial: (0, 0)}
    spine = graph.initial
    while True:
        options = [c for c in children[spine] if len(sources[c]) == 1]
        if not options:
            break
        nxt = max(options, key=descendants)
        place[nxt] = (place[spine][0] + 1, 0)
        spine = nxt
    extra_row = 0
    for status in graph.statuses:  # topological: sources are placed first
        if status in place:
            continue
        column = 1 + max(place[p][0] for p in sources[status])
        if len(sources[status]) == 1 and place[sources[status][0]][1] == 0:
            place[status] = (place[sources[status][0]][0] + 1, -1)
        elif len(sources[status]) == 1:
            place[status] = (column, place[sources[status][0]][1])
        else:
            extra_row += 1
            place[status] = (column, extra_row)
    return place


def _svg(graph: _Graph) -> str:
    place = _layout(graph)
    top = min(r for _, r in place.values())
    columns = 1 + max(c for c, _ in place.values())
    rows = 1 + max(r for _, r in place.values()) - top
    width = 2 * _PAD + columns * _W + (columns - 1) * _GAP_X
    height = 2 * _PAD + rows * _H + (rows - 1) * _GAP_Y

    def box(status: BatchStatus) -> tuple[float, float]:
        column, row = place[status]
        return _PAD + column * (_W + _GAP_X), _PAD + (row - top) * (_H + _GAP_Y)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>The Batch lifecycle</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]

    def line(path: str) -> None:
        parts.append(
            f'<path d="{path}" fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        )

    def text(x: float, y: float, label: str, anchor: str = "middle") -> None:
        parts.append(
            f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}" fill="#333" '
            f'paint-order="stroke" stroke="white" stroke-width="3">'
            f"{escape(label)}</text>"
        )

    labelled: set[BatchStatus] = set()
    for edge in graph.edges:
        sx, sy = box(edge.source)
        dx, dy = box(edge.dest)
        if edge.source is edge.dest:  # a loop over the top of the box
            x0, x1 = sx + _W * 0.3, sx + _W * 0.7
            line(
                f"M {x0:g} {sy:g} C {x0:g} {sy - 24:g} {x1:g} {sy - 24:g} {x1:g} {sy:g}"
            )
            text(sx + _W / 2, sy - 20, edge.label)
        elif place[edge.dest][1] > 0:  # one of several: rise from below the source
            x0, y0 = sx + _W / 2, sy + _H
            x1, y1 = dx, dy + _H / 2
            line(f"M {x0:g} {y0:g} C {x0:g} {y1:g} {x0:g} {y1:g} {x1:g} {y1:g}")
            if edge.dest not in labelled:
                labelled.add(edge.dest)
                text(dx - 6, y1 - 5, edge.label, anchor="end")
        else:
            x0, y0 = sx + _W, sy + _H / 2
            x1, y1 = dx, dy + _H / 2
            bend = (x1 - x0) / 2
            line(
                f"M {x0:g} {y0:g} "
                f"C {x0 + bend:g} {y0:g} {x1 - bend:g} {y1:g} {x1:g} {y1:g}"
            )
            text(
                (x0 + x1) / 2,
                min(y0, y1) - 5 if y0 == y1 else (y0 + y1) / 2 - 5,
                edge.label,
            )
    for status in graph.statuses:
        x, y = box(status)
        terminal = status in graph.terminal
        parts.append(
            f'<rect x="{x:g}" y="{y:g}" width="{_W}" height="{_H}" rx="8" '
            f'fill="{"#f1f3f4" if terminal else "#e8f0fe"}" stroke="#333" '
            f'stroke-width="{2.5 if terminal else 1}"/>'
        )
        parts.append(
            f'<text x="{x + _W / 2:g}" y="{y + _H / 2 + 4:g}" text-anchor="middle">'
            f"{status.value}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def transition_table_rst() -> str:
    """The transition table as a reStructuredText list-table (for the docs)."""
    rows = [
        "   * - event\n     - from\n     - to\n     - stamps\n     - may also set",
    ]
    rows += [
        f"   * - ``{move.event.value}``\n"
        f"     - {', '.join(s.value for s in move.sources)}\n"
        f"     - {move.dest.value}\n"
        f"     - ``{STAMPS[move.dest]}``\n"
        f"     - {', '.join(f'``{n}``' for n in sorted(move.may_set)) or '—'}"
        for move in MOVES
    ]
    return ".. list-table::\n   :header-rows: 1\n\n" + "\n".join(rows) + "\n"


#: Renderers by format name; ``batchfsm diagram --format`` offers these.
FORMATS: dict[str, Callable[[_Graph], str]] = {
    "mermaid": _mermaid,
    "dot": _dot,
    "svg": _svg,
}


def render(format: str) -> str:
    """The lifecycle diagram in ``format`` (one of :data:`FORMATS`)."""
    return FORMATS[format](_graph())


def to_mermaid() -> str:
    """The lifecycle as a Mermaid state diagram, derived from the transition table.

    Example:
        >>> import batchfsm as bf
        >>> print(bf.to_mermaid())  # doctest: +ELLIPSIS
        stateDiagram-v2
            [*] --> validating
            validating --> in_progress: start
            validating --> failed: fail
        ...
            cancelling --> cancelling: cancel (no-op)
            failed --> [*]
        ...
    """
    return render("mermaid")
