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


def test_a_stored_run_is_reused_only_when_trained_with_the_same_settings(tmp_path):
    from policies.configuration_train import TrainConfig

    wanted = TrainConfig(task="push", reward="oracle", success_reward=2.0, steps=50_000, out=tmp_path / "a")
    # trained by hand: other out, budget, checkpoint cadence, no progress bar -- the same run for the bench
    by_hand = TrainConfig(task="push", reward="oracle", success_reward=2.0, steps=60_000, out=tmp_path / "b",
                          checkpoint_every=10_000, progress_bar=False)
    bench.check_same_run(wanted, by_hand, tmp_path)
    other = TrainConfig(task="push", reward="oracle", success_reward=1.0, steps=50_000, out=tmp_path / "a")
    with pytest.raises(SystemExit, match="success_reward: run has 1.0, bench asks 2.0"):
        bench.check_same_run(wanted, other, tmp_path)
