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


def test_docs_table_has_a_row_per_move():
    table = transition_table_rst()
    assert table.count("   * - ``") == len(MOVES)
