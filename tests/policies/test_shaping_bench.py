"""The shaping benchmark's summary: mean success over seeds and the env steps to reach 80 %."""

import pytest

# the repository root is on sys.path (tests/conftest.py), so bench/ imports as a namespace package
from bench import shaping_bench as bench


def _curve(rates):
    return [{"timesteps": 5000.0 * (i + 1), "success_rate": r} for i, r in enumerate(rates)]


def test_steps_to_80_counts_a_mean_of_exactly_80_percent():
    # 20-episode success rates whose mean is 0.8 only up to floating-point rounding
    runs = [_curve([0.3, 0.8]), _curve([0.55, 0.75]), _curve([0.4, 0.85])]
    row = bench.summarise({("push", "oracle"): runs})["push/oracle"]
    assert row["steps_to_80"] == 10000.0
    assert row["best_success"] == pytest.approx(0.8)
    below = bench.summarise({("push", "oracle"): [_curve([0.3, 0.75]), _curve([0.55, 0.8])]})["push/oracle"]
    assert below["steps_to_80"] is None
