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
# Top to bottom. The spine (the path from the initial status through the statuses
# with the most descendants) is column 0. Each status entered from several
# statuses (expire, cancel) gets a column of its own to the right, below its
# sources; every edge into it leaves its source's right side at its own height and
# runs along a bus down into it, labelled on its own stretch. A status entered
# from one spine status (fail) sits in column 1, a row above its source; one
# entered from a side status (mark_cancelled) sits right below it.
#
# Sizes: the docs show the picture at its natural size (it is narrower than the
# furo content column, 40em of 16-17.6 px), and every text is FONT px, at least
# 80% of the body text.

FONT = 15
_W, _H, _GAP_X, _GAP_Y, _PAD = 110, 40, 50, 44, 20
_CHAR = 0.6 * FONT  # a generous width per character, for the canvas size


def _layout(graph: _Graph) -> dict[BatchStatus, tuple[int, int]]:
    edges = [e for e in graph.edges if e.source is not e.dest]
    sources = {s: [e.source for e in edges if e.dest is s] for s in graph.statuses}
    children = {s: [e.dest for e in edges if e.source is s] for s in graph.statuses}

    def descendants(status: BatchStatus) -> int:
        return len(children[status]) + sum(descendants(c) for c in children[status])

    place = {graph.initial: (0, 0)}
    spine = graph.initial
    while options := [c for c in children[spine] if len(sources[c]) == 1]:
        nxt = max(options, key=descendants)
        place[nxt] = (0, place[spine][1] + 1)
        spine = nxt
    side = 0
    for status in graph.statuses:  # topological: sources are placed first
        if status in place:
            continue
        (column, row), *more = [place[p] for p in sources[status]]
        if more:
            side += 1
            place[status] = (side, 1 + max(r for _, r in [(column, row), *more]))
        elif column == 0:
            place[status] = (1, row - 1)
        else:
            place[status] = (column, row + 1)
    return place


class _Canvas:
    """SVG parts, and how far they reach (to size the picture)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.right = 0.0

    def path(self, d: str) -> str:
        return f'<path d="{d}" fill="none" stroke="#555" marker-end="url(#arrow)"/>'

    def text(self, x: float, y: float, label: str, anchor: str = "middle") -> str:
        """A label; a white halo drawn first keeps it legible over the lines."""
        reach = {"start": len(label), "middle": len(label) / 2, "end": 0}[anchor]
        self.right = max(self.right, x + reach * _CHAR)
        at = f'x="{x:g}" y="{y:g}" text-anchor="{anchor}"'
        return (
            f'<text {at} fill="white" stroke="white" stroke-width="5" '
            f'aria-hidden="true">{escape(label)}</text>'
            f'<text {at} fill="#222">{escape(label)}</text>'
        )

    def edge(self, edge: _Edge, d: str, label: str) -> None:
        self.parts.append(
            f'<g class="edge" data-source="{edge.source.value}" '
            f'data-dest="{edge.dest.value}" data-event="{edge.label}">'
            f"{self.path(d)}{label}</g>"
        )


class _Frame:
    """Where each status sits in the picture, in grid cells and in pixels."""

    def __init__(self, graph: _Graph) -> None:
        self.place = place = _layout(graph)
        self.top = min(r for _, r in place.values())
        self.columns = 1 + max(c for c, _ in place.values())
        self.rows = 1 + max(r for _, r in place.values()) - self.top
        below = {  # statuses entered from the side, each at its own height
            e.dest
            for e in graph.edges
            if place[e.dest][0] != place[e.source][0]
            and place[e.dest][1] > place[e.source][1]
        }
        side = sorted(below, key=lambda s: place[s])
        self.heights = {s: (i + 1) / (len(side) + 1) for i, s in enumerate(side)}

    def box(self, status: BatchStatus) -> tuple[float, float]:
        """The top left corner of the status' box."""
        column, row = self.place[status]
        return _PAD + column * (_W + _GAP_X), _PAD + (row - self.top) * (_H + _GAP_Y)

    def centre(self, column: int) -> float:
        """The x of a column's middle: the bus edges into that column go down."""
        return _PAD + column * (_W + _GAP_X) + _W / 2

    def size(self, canvas: _Canvas) -> tuple[int, int]:
        """Width and height of the picture: every box, and every label's reach."""
        width = round(
            max(canvas.right, _PAD + self.columns * (_W + _GAP_X) - _GAP_X) + _PAD
        )
        height = 2 * _PAD + self.rows * _H + (self.rows - 1) * _GAP_Y
        return width, height


def _edge_drawing(frame: _Frame, canvas: _Canvas, edge: _Edge) -> tuple[str, str]:
    """The path of one edge and its label, by where its ends sit."""
    sx, sy = frame.box(edge.source)
    dx, dy = frame.box(edge.dest)
    (sc, _), (dc, _) = frame.place[edge.source], frame.place[edge.dest]
    if edge.source is edge.dest:  # a loop on the right side, label beside it
        x, y0, y1 = sx + _W, sy + _H * 0.3, sy + _H * 0.7
        bulge = f"{x + 30:g} {y0 - 8:g} {x + 30:g} {y1 + 8:g}"
        words = edge.label.split(" ", 1)
        label = "".join(
            canvas.text(x + 28, sy + _H / 2 - 3 + 17 * i, w, "start")
            for i, w in enumerate(words)
        )
        return f"M {x:g} {y0:g} C {bulge} {x:g} {y1:g}", label
    if sc == dc:  # straight down; label beside, inward in the last column
        x, y0, y1 = sx + _W / 2, sy + _H, dy
        inward = dc == frame.columns - 1 and dc > 0
        label = canvas.text(
            x - 6 if inward else x + 6,
            (y0 + y1) / 2 + 5,
            edge.label,
            "end" if inward else "start",
        )
        return f"M {x:g} {y0:g} V {y1:g}", label
    if dy < sy:  # up from the source's top, into the side of a status above
        x, y1 = sx + _W * 0.8, dy + _H / 2
        label = canvas.text(x - 6, (sy + dy + _H) / 2 + 5, edge.label, "end")
        return f"M {x:g} {sy:g} V {y1:g} H {dx:g}", label
    # Right, at this destination's own height, then down its bus.
    y0, bus = sy + _H * frame.heights[edge.dest], frame.centre(dc)
    # The label on this edge's own stretch, past the buses before it.
    start = sx + _W if dc - 1 == sc else frame.centre(dc - 1)
    label = canvas.text(start + 6, y0 - 4, edge.label, "start")
    return f"M {sx + _W:g} {y0:g} H {bus:g} V {dy:g}", label


def _status_box(
    canvas: _Canvas, frame: _Frame, status: BatchStatus, terminal: bool
) -> None:
    """A status' box and name; a final status is grey, with a thick border."""
    x, y = frame.box(status)
    # One group per status, named by data-status (the web view highlights one).
    canvas.parts.append(
        f'<g class="status" data-status="{status.value}">'
        f'<rect x="{x:g}" y="{y:g}" width="{_W}" height="{_H}" rx="8" '
        f'fill="{"#f1f3f4" if terminal else "#e8f0fe"}" stroke="#333" '
        f'stroke-width="{2.5 if terminal else 1}"/>'
        f"{canvas.text(x + _W / 2, y + _H / 2 + 5, status.value)}</g>"
    )


def _svg_head(width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{FONT}">',
        "<title>The Batch lifecycle</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]


def _svg(graph: _Graph) -> str:
    frame = _Frame(graph)
    canvas = _Canvas()
    for edge in graph.edges:
        canvas.edge(edge, *_edge_drawing(frame, canvas, edge))
    for status in graph.statuses:
        _status_box(canvas, frame, status, status in graph.terminal)
    head = _svg_head(*frame.size(canvas))
    return "\n".join([*head, *canvas.parts, "</svg>"]) + "\n"


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
