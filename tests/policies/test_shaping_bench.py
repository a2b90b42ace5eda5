"""The shaping benchmark's summary: mean success over seeds and the env steps to reach 80 %."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "shaping_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("shaping_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _curve(rates):
    return [{"timesteps": 5000.0 * (i + 1), "success_rate": r} for i, r in enumerate(rates)]


def test_steps_to_80_counts_a_mean_of_exactly_80_percent():
    bench = _bench()
    # 20-episode success rates whose mean is 0.8 only up to floating-point rounding
    runs = [_curve([0.3, 0.8]), _curve([0.55, 0.75]), _curve([0.4, 0.85])]
    row = bench.summarise({("push", "oracle"): runs})["push/oracle"]
    assert row["steps_to_80"] == 10000.0
    assert row["best_success"] == pytest.approx(0.8)
    below = bench.summarise({("push", "oracle"): [_curve([0.3, 0.75]), _curve([0.55, 0.8])]})["push/oracle"]
    assert below["steps_to_80"] is None
