"""The benchmarks' method: alternating rounds, medians of per-round ratios, spread."""

import pytest

from benchmarks._harness import Case, Result, run, sized, spread


def test_a_figure_is_the_median_of_per_round_ratios_taken_by_turns():
    calls: list[str] = []
    ours = iter([1.0, 2.0, 3.0, 4.0, 100.0])
    peer = iter([1.0, 4.0, 2.0, 8.0, 2.0])

    def side(name, costs):
        def measure():
            calls.append(name)
            return next(costs)

        return measure

    result = run(Case("x", side("o", ours), "p", side("p", peer), 1.0, rounds=5))
    # ours first, then the peer first, ...: neither side always runs warm
    assert calls == ["o", "p", "p", "o", "o", "p", "p", "o", "o", "p"]
    assert result.ratios == [1.0, 0.5, 1.5, 0.5, 50.0]
    # The median of the rounds' ratios, not the ratio of the medians (3/2).
    assert result.ratio == 1.0
    assert result.spread == {"min": 0.5, "q1": 0.5, "q3": 1.5, "max": 50.0}
    assert (result.ours, result.peer, result.clock) == (3.0, 2.0, "cpu")


def test_a_case_that_measures_both_sides_gives_its_pairs():
    asked: list[int] = []

    def pairs(rounds):
        asked.append(rounds)
        return [(3.0, 2.0), (2.0, 2.0), (1.0, 2.0)]

    def unused():
        raise AssertionError("pairs measures both sides")

    case = Case(
        "s", unused, "p", unused, 1.25, pairs=pairs, rounds=3, clock="server cpu"
    )
    result = run(case)
    assert asked == [3] and result.ratios == [1.5, 1.0, 0.5]
    assert result.ratio == 1.0 and result.met and result.clock == "server cpu"


def test_a_floor_is_measured_in_the_same_rounds_and_never_judged():
    result = run(
        Case("x", lambda: 3.0, "p", lambda: 2.0, 1.0, rounds=3, floor=lambda: 1.0)
    )
    assert result.floor_ratios == [0.5, 0.5, 0.5] and result.floor_ratio == 0.5
    assert not result.met  # 1.5 > 1.0, whatever the floor


def test_old_runs_without_rounds_still_read():
    old = Result("x", "p", 3.0, 2.0, 1.0, None, "µs")
    assert old.ratio == 1.5 and old.spread == {}


def test_quick_and_full_sizes(monkeypatch):
    monkeypatch.setenv("BATCHFSM_BENCH_QUICK", "1")
    assert sized(100, quick=10) == 10
    monkeypatch.setenv("BATCHFSM_BENCH_QUICK", "0")
    assert sized(100, quick=10) == 100
    monkeypatch.delenv("BATCHFSM_BENCH_QUICK")
    assert sized(100, quick=10) == 100


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], {}), ([2.0], {"min": 2.0, "q1": 2.0, "q3": 2.0, "max": 2.0})],
)
def test_the_spread_of_few_rounds(values, expected):
    assert spread(values) == expected
