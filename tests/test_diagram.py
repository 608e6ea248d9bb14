import re
import xml.etree.ElementTree as ET

import batchfsm as bf
from batchfsm._diagram import render, transition_table_rst
from batchfsm._table import MOVES


def edges_in_table() -> set[tuple[str, str, str]]:
    return {
        (source.value, move.dest.value, move.event.value)
        for move in MOVES
        for source in move.sources
    }


def test_mermaid_has_exactly_the_table_edges():
    text = bf.to_mermaid()
    found = set(re.findall(r"^    (\w+) --> (\w+): (\w+)$", text, re.M))
    noops = {
        (s, d, e)
        for s, d, e in re.findall(r"^    (\w+) --> (\w+): (\w+) \(no-op\)$", text, re.M)
    }
    assert found == edges_in_table()
    assert noops == {("cancelling", "cancelling", "cancel")}
    finals = set(re.findall(r"^    (\w+) --> \[\*\]$", text, re.M))
    assert finals == {s.value for s in bf.TERMINAL_STATUSES}


def test_dot_has_exactly_the_table_edges():
    found = set(re.findall(r'(\w+) -> (\w+) \[label="(\w+)"\]', render("dot")))
    assert found == edges_in_table()


def test_svg_is_well_formed_and_shows_every_status_and_event():
    root = ET.fromstring(render("svg"))
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {s.value for s in bf.BatchStatus} <= texts
    assert {m.event.value for m in MOVES} <= {t.split()[0] for t in texts if t}


SVG = "{http://www.w3.org/2000/svg}"
#: furo's body text is 1rem of a root of 100% or, on wide screens, 110% (17.6 px),
#: in a content column 40em wide (640 px at 16 px).
BODY_PX, COLUMN_PX = 17.6, 640


def labels(element: ET.Element) -> list[ET.Element]:
    return [t for t in element.iter(f"{SVG}text") if t.get("aria-hidden") != "true"]


def test_svg_labels_every_edge_on_its_own():
    root = ET.fromstring(render("svg"))
    edges = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") != "edge":
            continue
        key = (
            group.get("data-source"),
            group.get("data-dest"),
            group.get("data-event"),
        )
        edges[key] = " ".join(t.text or "" for t in labels(group))
    table = {(s, d, e): e for s, d, e in edges_in_table()}
    table[("cancelling", "cancelling", "cancel (no-op)")] = "cancel (no-op)"
    assert edges == table
    for event in ("cancel", "expire"):
        assert sum(key[2] == event for key in edges) == 3


def test_svg_text_is_large_enough_at_the_size_the_docs_show():
    root = ET.fromstring(render("svg"))
    assert int(root.get("width", "0")) <= COLUMN_PX  # shown unscaled
    assert float(root.get("font-size", "0")) >= 0.8 * BODY_PX
    assert all(t.get("font-size") is None for t in root.iter(f"{SVG}text"))


def test_svg_labels_overlap_neither_each_other_nor_a_status():
    from batchfsm._diagram import _CHAR, FONT

    root = ET.fromstring(render("svg"))
    boxes = [
        tuple(float(r.get(k, "0")) for k in ("x", "y", "width", "height"))
        for r in root.iter(f"{SVG}rect")
    ]
    names = {s.value for s in bf.BatchStatus}
    spans = []
    for text in labels(root):
        if text.text in names:
            continue
        width = len(text.text or "") * _CHAR
        x = float(text.get("x", "0"))
        x -= {"start": 0, "middle": width / 2, "end": width}[
            text.get("text-anchor", "")
        ]
        spans.append((x, float(text.get("y", "0")) - FONT * 0.8, width, FONT))

    def meet(a, b):
        return (
            a[0] < b[0] + b[2] and b[0] < a[0] + a[2]
            and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
        )  # fmt: skip

    for i, span in enumerate(spans):
        assert not any(meet(span, other) for other in spans[i + 1 :]), span
        assert not any(meet(span, box) for box in boxes), span
    assert not any(meet(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_svg_names_each_status_box_for_the_web_view_to_highlight():
    root = ET.fromstring(render("svg"))
    named = {
        g.get("data-status"): [t.text for t in labels(g)]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "status"
    }
    assert named == {s.value: [s.value] for s in bf.BatchStatus}


def test_docs_table_has_a_row_per_move():
    table = transition_table_rst()
    assert table.count("   * - ``") == len(MOVES)
