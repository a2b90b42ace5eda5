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
    from policies.configuration_train import RLTrainConfig

    wanted = RLTrainConfig(task="push", reward="oracle", success_reward=2.0, steps=50_000, out=tmp_path / "a")
    # trained by hand: other out, budget, checkpoint cadence, no progress bar -- the same run for the bench
    by_hand = RLTrainConfig(
        task="push",
        reward="oracle",
        success_reward=2.0,
        steps=60_000,
        out=tmp_path / "b",
        checkpoint_every=10_000,
        progress_bar=False,
    )
    bench.check_same_run(wanted, by_hand, tmp_path)
    other = RLTrainConfig(task="push", reward="oracle", success_reward=1.0, steps=50_000, out=tmp_path / "a")
    with pytest.raises(SystemExit, match="success_reward: run has 1.0, bench asks 2.0"):
        bench.check_same_run(wanted, other, tmp_path)


def test_plot_draws_each_reward_in_its_own_colour_with_the_target_lines(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = bench.summarise({("push", "sparse"): [_curve([0.0, 0.1])], ("push", "grm"): [_curve([0.4, 0.9])]})
    path = tmp_path / "success_vs_steps.png"
    drawn = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, fname, **kw):
        ax = fig.axes[0]
        drawn["lines"] = {line.get_label(): line for line in ax.get_lines()}
        return real_savefig(fig, fname, **kw)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    bench.plot(table, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not path.with_suffix(".tmp.png").exists()
    curves = {k: v for k, v in drawn["lines"].items() if not k.startswith("_")}
    assert curves["grm (n=1)"].get_color() == bench.REWARD_COLORS["grm"]
    assert curves["sparse (n=1)"].get_color() == bench.REWARD_COLORS["sparse"]
    levels = sorted(line.get_ydata()[0] for k, line in drawn["lines"].items() if k.startswith("_"))
    assert levels == [0.2, 0.8]


def _table(grm, oracle, sparse):
    return bench.summarise(
        {("push", "grm"): [_curve(grm)], ("push", "oracle"): [_curve(oracle)], ("push", "sparse"): [_curve(sparse)]}
    )


def test_target_is_met_only_when_grm_reaches_80_before_sparse_reaches_20_and_within_2x_oracle():
    # steps are 5k, 10k, 15k, 20k
    met = bench.target_check(_table([0.2, 0.5, 0.85, 0.9], [0.5, 0.8, 0.9, 0.9], [0.0, 0.1, 0.15, 0.2]), "push")
    assert met["met"] and met["grm_steps_to_80"] == 15000 and met["sparse_steps_to_20"] == 20000
    assert "-> MET" in bench.describe_target("push", met)

    sparse_first = bench.target_check(
        _table([0.2, 0.5, 0.85, 0.9], [0.5, 0.8, 0.9, 0.9], [0.0, 0.25, 0.1, 0.1]), "push"
    )
    assert not sparse_first["met"] and not sparse_first["grm_before_sparse_20"] and sparse_first["grm_within_2x_oracle"]

    too_slow = bench.target_check(_table([0.2, 0.5, 0.6, 0.8], [0.8, 0.9, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]), "push")
    assert not too_slow["met"] and too_slow["grm_before_sparse_20"] and not too_slow["grm_within_2x_oracle"]

    never = bench.target_check(_table([0.2, 0.5, 0.6, 0.7], [0.5, 0.8, 0.9, 0.9], [0.0] * 4), "push")
    assert not never["met"] and "grm's mean does not reach 80 %" in bench.describe_target("push", never)


def test_an_oracle_that_never_reaches_80_bounds_the_ratio_by_its_last_step():
    # oracle below 80 % through 20k: its 80 % lies beyond 20k, so grm's 80 % at 20k is within 2x of it
    check = bench.target_check(_table([0.2, 0.5, 0.6, 0.8], [0.1, 0.2, 0.3, 0.3], [0.0] * 4), "push")
    assert check["met"] and check["oracle_steps_to_80"] is None
    assert "oracle's does not reach 80 % by 20k" in bench.describe_target("push", check)
    assert bench.target_check(bench.summarise({("push", "grm"): [_curve([0.9])]}), "push") is None
