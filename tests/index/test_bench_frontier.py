"""benchmarks/index.py's frontier reading: latency where a system's trade-off curve crosses a recall floor,
checked against values worked out by hand."""

import importlib.util
from pathlib import Path

import pytest

# loaded by path: the name "index" is also the folder of lsr.index in a source checkout
_SPEC = importlib.util.spec_from_file_location(
    "bench_index", Path(__file__).resolve().parents[2] / "benchmarks" / "index.py")
_BENCH = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_BENCH)
frontier_latency = _BENCH.frontier_latency


def test_interpolates_between_the_points_around_the_floor():
    # frontier (1.0, 0.90) -> (2.0, 0.96): 0.95 lies 5/6 of the way, so 1.0 + 5/6
    pts = [(2.0, 0.96), (1.0, 0.90), (3.0, 0.99)]
    assert frontier_latency(pts, 0.95) == pytest.approx(1.0 + 5.0 / 6.0)


def test_dominated_points_are_left_out():
    # (1.5, 0.89) is slower than (1.0, 0.90) and no better: the curve runs (1.0, 0.90) -> (2.0, 0.96)
    pts = [(1.0, 0.90), (1.5, 0.89), (2.0, 0.96)]
    assert frontier_latency(pts, 0.93) == pytest.approx(1.5)


def test_cheapest_point_already_above_the_floor_and_floor_never_reached():
    assert frontier_latency([(0.5, 0.97), (0.8, 0.99)], 0.95) == 0.5
    assert frontier_latency([(0.5, 0.90), (0.8, 0.94)], 0.95) is None
    assert frontier_latency([], 0.95) is None


def test_exactly_on_a_point():
    assert frontier_latency([(1.0, 0.90), (2.0, 0.95), (4.0, 0.99)], 0.95) == pytest.approx(2.0)
