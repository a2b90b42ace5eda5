"""Progress reconstruction maths, the fusion's failure handling and the one-encode-per-step rule."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models.base import ProgressModel, hop_from_progress
from reward_models.oracle import OracleProgressModel
from reward_models.tracker import FUSION_MODES, FusionConfig, ProgressTracker, fuse, incremental_update, track_episode


def progress_obs(p) -> dict[str, np.ndarray]:
    p = np.atleast_1d(np.asarray(p, dtype=np.float64))
    return {"front": np.zeros((p.size, 4, 4, 3), np.uint8), "progress": p}


def random_trajectory(rng: np.random.Generator, T: int) -> np.ndarray:
    """Noisy progress with setbacks that starts at 0 and ends at 1."""
    steps = rng.normal(1.0 / T, 0.08, size=T - 2)
    p = np.clip(np.cumsum(steps), 0.0, 0.99)
    return np.concatenate([[0.0], p, [1.0]])


class CountingModel(ProgressModel):
    """Wraps a model and counts calls (the tracker must not care what is inside)."""

    def __init__(self, inner: ProgressModel) -> None:
        self.inner = inner
        self.encode_calls = 0
        self.encoded_rows = 0
        self.hop_calls = 0
        self.hop_rows = 0

    def encode(self, obs):
        self.encode_calls += 1
        self.encoded_rows += len(next(iter(obs.values())))
        return self.inner.encode(obs)

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
        self.hop_calls += 1
        self.hop_rows += len(before)
        return self.inner.hop_from_embeddings(before, after, tasks, start, goal)


class RandomHopModel(ProgressModel):
    """Adversarial: arbitrary hops in [-1, 1], including the extremes."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def encode(self, obs):
        return np.zeros((len(next(iter(obs.values()))), 2))

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
        h = self.rng.uniform(-1, 1, size=len(before))
        h[self.rng.random(len(before)) < 0.2] = self.rng.choice([-1.0, 1.0, 0.0])
        return h


class GoalLooksLikeStartModel(ProgressModel):
    """A caricature of the known failure: the task ends where it began (goal looks like start).

    Consecutive frames differ little, so the local hop is read correctly; but a reference frame
    is compared by *appearance* a(Φ) = sin(πΦ), which is identical at start and goal. So
    H(start, s_T) ≈ 0 (forward anchor says "nothing happened") and H(goal, s_0) ≈ 0 (backward
    anchor says "already done") -- the two anchors saturate in opposite directions.
    """

    def encode(self, obs):
        return np.asarray(obs["progress"], dtype=np.float64)

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
        before, after = np.asarray(before), np.asarray(after)
        local = np.abs(after - before) <= 0.15
        exact = hop_from_progress(before, after)
        a_before, a_after = np.sin(np.pi * before), np.sin(np.pi * after)
        # Anchored comparisons: from the start, appearance change reads as progress; from the
        # goal, any appearance change reads as regress.
        from_goal = before >= 0.999
        anchored = np.where(from_goal, -np.abs(a_after - a_before), np.abs(a_after - a_before))
        return np.where(local, exact, anchored)


# -- the maths -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fused", "mean", "incremental", "forward", "backward"])
def test_oracle_hops_reconstruct_exact_progress_online(mode):
    rng = np.random.default_rng(0)
    n, T = 4, 40
    trajs = np.stack([random_trajectory(rng, T) for _ in range(n)], axis=1)  # (T, n)
    tracker = ProgressTracker(OracleProgressModel(), n=n, fusion=FusionConfig(mode=mode))
    tracker.reset(range(n), ["push the block"] * n, progress_obs(trajs[0]), goal_obs=progress_obs(np.ones(n)))
    for t in range(1, T):
        phi = tracker.step(progress_obs(trajs[t]))
        np.testing.assert_allclose(phi, trajs[t], atol=1e-9)
    assert tracker.success.all()  # every trajectory ends at Φ = 1


@pytest.mark.parametrize("mode", ["fused", "mean", "incremental", "forward", "backward"])
def test_oracle_hops_reconstruct_exact_progress_offline(mode):
    traj = random_trajectory(np.random.default_rng(1), 60)
    trace = track_episode(
        OracleProgressModel(),
        progress_obs(traj),
        task="open the drawer",
        goal_obs=progress_obs([1.0]),
        fusion=FusionConfig(mode=mode),
        batch_size=16,
    )
    np.testing.assert_allclose(trace.phi, traj, atol=1e-9)
    np.testing.assert_allclose(trace.incremental, traj, atol=1e-9)
    assert trace.success_frame == len(traj) - 1 or traj[trace.success_frame] >= 0.95


def test_offline_and_online_agree():
    traj = random_trajectory(np.random.default_rng(2), 30)

    class Deterministic(ProgressModel):
        """Imperfect but deterministic hops, so both paths must give the same Φ."""

        def encode(self, obs):
            return np.asarray(obs["progress"], dtype=np.float64)

        def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
            return np.tanh(3.0 * (after - before) + 0.3 * np.sin(11.0 * after))

    tracker = ProgressTracker(Deterministic(), n=1)
    tracker.reset([0], ["t"], progress_obs(traj[:1]), goal_obs=progress_obs([1.0]))
    online = [0.0] + [float(tracker.step(progress_obs(traj[t : t + 1]))[0]) for t in range(1, len(traj))]
    offline = track_episode(Deterministic(), progress_obs(traj), task="t", goal_obs=progress_obs([1.0]), batch_size=7)
    np.testing.assert_allclose(online, offline.phi, atol=1e-12)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_phi_stays_in_unit_interval_for_random_hops(mode):
    n = 8
    tracker = ProgressTracker(RandomHopModel(seed=3), n=n, fusion=FusionConfig(mode=mode))
    tracker.reset(range(n), ["t"] * n, progress_obs(np.zeros(n)), goal_obs=progress_obs(np.ones(n)))
    rng = np.random.default_rng(4)
    for _ in range(200):
        done = rng.random(n) < 0.05
        phi = tracker.step(progress_obs(np.zeros(n)), reset_mask=done, reset_obs=progress_obs(np.zeros(n)))
        assert np.all((phi >= 0) & (phi <= 1)) and np.all(np.isfinite(phi))
        w = tracker.components["weight"]
        assert np.all((w >= 0) & (w <= 1))


def test_incremental_update_is_bounded_and_inverts_hops():
    rng = np.random.default_rng(5)
    p, q = rng.random(10_000), rng.random(10_000)
    np.testing.assert_allclose(incremental_update(p, hop_from_progress(p, q)), q, atol=1e-9)
    out = incremental_update(rng.random(1000), rng.uniform(-1, 1, 1000))
    assert out.min() >= 0 and out.max() <= 1


def test_consistency_weight_gates_between_mean_and_incremental():
    cfg = FusionConfig(alpha=20.0)
    inc = np.array([0.5, 0.5])
    # Agreeing anchors -> w = 1 -> plain mean; wildly disagreeing anchors -> w ~ 0 -> incremental.
    phi, w = fuse(inc, np.array([0.8, 0.0]), np.array([0.8, 1.0]), cfg)
    assert w[0] == pytest.approx(1.0) and phi[0] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert w[1] < 1e-6 and phi[1] == pytest.approx(0.5, abs=1e-6)
    # No goal, gate_forward off: w = 1 and the plain mean of the incremental and forward
    # estimates, even when they differ.
    phi, w = fuse(np.array([0.6, 0.9]), np.array([0.6, 0.1]), None, FusionConfig(alpha=20.0, gate_forward=False))
    np.testing.assert_allclose(w, 1.0)
    np.testing.assert_allclose(phi, [0.6, 0.5])
    # gate_forward (the default): without a goal, Φ_F is gated against Φ_I -- agreement keeps the
    # mean, a large disagreement hands Φ to the incremental estimate; episodes with a goal are unchanged.
    gated = FusionConfig(alpha=20.0)
    assert gated.gate_forward
    phi, w = fuse(np.array([0.6, 0.9]), np.array([0.6, 0.1]), None, gated)
    assert w[0] == pytest.approx(1.0) and w[1] < 1e-6
    np.testing.assert_allclose(phi, [0.6, 0.9], atol=1e-6)
    phi_goal, _ = fuse(inc, np.array([0.8, 0.0]), np.array([0.8, 1.0]), gated)
    ungated = FusionConfig(alpha=20.0, gate_forward=False)
    np.testing.assert_allclose(phi_goal, fuse(inc, np.array([0.8, 0.0]), np.array([0.8, 1.0]), ungated)[0])


def test_goal_looks_like_start_keeps_success_detection():
    T = 40
    traj = np.linspace(0.0, 1.0, T)
    model = GoalLooksLikeStartModel()
    goal = progress_obs([1.0])
    fused = track_episode(model, progress_obs(traj), task="open and close the drawer", goal_obs=goal)
    plain = track_episode(
        model, progress_obs(traj), task="open and close the drawer", goal_obs=goal, fusion=FusionConfig(mode="mean")
    )
    # The failure exists: anchors saturate in opposite directions, the plain mean misses success.
    assert plain.forward[-1] < 0.05 and plain.backward[1] > 0.9
    assert plain.success_frame is None
    # The fused tracker saw it coming: the model reads start -> goal as no progress, so the goal
    # reference is not used (no backward anchor) and Φ* is the incremental estimate.
    assert fused.meta["goal_used"] is False and fused.meta["goal_check_hop"] < 0.5
    assert np.all(np.isnan(fused.backward)) and np.all(fused.weight[1:] == 0.0)
    # Our fusion detects success, and only at the end; Φ stays monotone-ish and low at the start.
    assert fused.success_frame is not None and fused.success_frame >= T - 2
    assert fused.phi[1] < 0.2
    assert np.corrcoef(fused.phi, traj)[0, 1] > 0.95
    # Same online.
    tracker = ProgressTracker(model, n=1)
    tracker.reset([0], ["open and close the drawer"], progress_obs(traj[:1]), goal_obs=goal)
    for t in range(1, T):
        tracker.step(progress_obs(traj[t : t + 1]))
    assert tracker.success[0]
    assert not tracker.components["goal_used"][0] and np.isnan(tracker.components["backward"][0])


class GoalContextSensitiveOracle(OracleProgressModel):
    """Exact hops, except that a goal context looking like the start (progress < 0.5) makes
    every hop read 0 -- what the trained GRM does when handed the start frame as its goal."""

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
        h = np.asarray(super().hop_from_embeddings(before, after, tasks), dtype=np.float64)
        if goal is not None:
            h = np.where(np.asarray(goal, dtype=np.float64).reshape(-1) < 0.5, 0.0, h)
        return h


def test_goal_that_looks_like_start_is_not_used_as_context():
    traj = np.linspace(0.0, 1.0, 30)
    model = GoalContextSensitiveOracle()
    looks_like_start = track_episode(model, progress_obs(traj), task="t", goal_obs=progress_obs([0.0]))
    real_goal = track_episode(model, progress_obs(traj), task="t", goal_obs=progress_obs([1.0]))
    trusted = track_episode(
        model, progress_obs(traj), task="t", goal_obs=progress_obs([0.0]), fusion=FusionConfig(goal_min_hop=-1.0)
    )
    np.testing.assert_allclose(looks_like_start.phi, traj, atol=1e-9)  # incremental of exact hops
    assert looks_like_start.meta["goal_used"] is False
    np.testing.assert_allclose(real_goal.phi, traj, atol=1e-9)
    assert real_goal.meta["goal_used"] is True and np.isfinite(real_goal.backward[1:]).all()
    # Trusting the start-like goal reproduces the collapse the check prevents.
    assert trusted.success_frame is None and trusted.phi.max() < 0.5


def test_online_goal_check_mixed_batch_and_goal_changes_on_reset():
    n, T = 4, 20
    model = CountingModel(GoalContextSensitiveOracle())
    tracker = ProgressTracker(model, n=n)
    goals = np.array([1.0, 0.0, 1.0, 0.0])  # episodes 1 and 3: goal looks like the start
    tracker.reset(range(n), ["t"] * n, progress_obs(np.zeros(n)), goal_obs=progress_obs(goals))
    assert model.hop_calls == 1  # the start -> goal check of all four goals, in one call
    np.testing.assert_array_equal(tracker.components["goal_used"], goals == 1.0)
    traj = np.linspace(0.0, 1.0, T)
    for t in range(1, T):
        calls = model.hop_calls
        phi = tracker.step(progress_obs(np.full(n, traj[t])))
        assert model.hop_calls - calls == 2  # with-goal rows and goal-less rows ask differently
        np.testing.assert_allclose(phi, traj[t], atol=1e-9)
    assert tracker.success.all()
    # Episode 1 restarts with a real goal: its check rides along in that step's with-goal call.
    calls, rows = model.hop_calls, model.hop_rows
    tracker.step(
        progress_obs(np.ones(n)),
        reset_mask=[False, True, False, False],
        reset_obs=progress_obs([0.0]),
        reset_goal_obs=progress_obs([1.0]),
    )
    assert model.hop_calls - calls == 2 and model.hop_rows - rows == 3 * 2 + 1 + 2 * 2
    np.testing.assert_array_equal(tracker.components["goal_used"], [True, True, True, False])
    calls = model.hop_calls
    tracker.step(progress_obs(np.array([1.0, 0.5, 1.0, 1.0])))
    assert model.hop_calls - calls == 2
    assert tracker.phi[1] == pytest.approx(0.5)


# -- the online contract ---------------------------------------------------------------------


def test_one_encode_call_per_step_including_resets():
    n = 5
    model = CountingModel(OracleProgressModel())
    tracker = ProgressTracker(model, n=n)
    tracker.reset(range(n), ["t"] * n, progress_obs(np.zeros(n)), goal_obs=progress_obs(np.ones(n)))
    assert model.encode_calls == 1 and tracker.n_encode_calls == 1  # start + goal in one batch
    assert model.hop_calls == 1  # the goals' start -> goal check, one call for all
    rng = np.random.default_rng(6)
    for _step in range(1, 31):
        done = rng.random(n) < 0.3
        before = model.encode_calls, model.hop_calls, model.encoded_rows, model.hop_rows
        tracker.step(progress_obs(rng.random(n)), reset_mask=done, reset_obs=progress_obs(np.zeros(n)))
        assert model.encode_calls - before[0] == 1
        assert model.hop_calls - before[1] == 1
        assert model.encoded_rows - before[2] == n + done.sum()  # each frame encoded once
        assert model.hop_rows - before[3] == 3 * n
    assert tracker.n_encode_calls == 31 and tracker.n_hop_calls == 31


def test_reset_mask_returns_terminal_phi_then_restarts():
    model = OracleProgressModel()
    tracker = ProgressTracker(model, n=3)
    tracker.reset(range(3), ["a", "b", "c"], progress_obs([0.0, 0.0, 0.0]))
    tracker.step(progress_obs([0.5, 0.2, 0.1]))
    # env 1 finishes at 0.9 (terminal obs); its next episode starts at 0.0 and gets a new task.
    phi = tracker.step(
        progress_obs([0.6, 0.9, 0.1]),
        reset_mask=np.array([False, True, False]),
        reset_obs=progress_obs([0.0]),  # one row per finished env is accepted too
        reset_tasks=["b2"],
    )
    np.testing.assert_allclose(phi, [0.6, 0.9, 0.1])
    np.testing.assert_allclose(tracker.phi, [0.6, 0.9, 0.1])  # reports the terminal values
    assert tracker.tasks == ["a", "b2", "c"]
    phi = tracker.step(progress_obs([0.7, 0.3, 0.2]))
    np.testing.assert_allclose(phi, [0.7, 0.3, 0.2])  # env 1 continues its new episode from 0


def test_partial_reset_and_torch_embeddings():
    torch = pytest.importorskip("torch")

    class TorchOracle(OracleProgressModel):
        def encode(self, obs):
            return torch.as_tensor(super().encode(obs))[:, None]

        def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
            return super().hop_from_embeddings(before[:, 0].numpy(), after[:, 0].numpy(), tasks)

    tracker = ProgressTracker(TorchOracle(), n=3)
    tracker.reset(range(3), ["t"] * 3, progress_obs([0.0, 0.0, 0.0]))
    tracker.step(progress_obs([0.5, 0.5, 0.5]))
    tracker.reset([2], ["u"], progress_obs([0.2]))
    phi = tracker.step(
        progress_obs([0.6, 0.6, 0.6]), reset_mask=[True, False, False], reset_obs=progress_obs([0.1] * 3)
    )
    np.testing.assert_allclose(phi, [0.6, 0.6, hop_from_progress(0.2, 0.6)])


def test_clear_errors():
    tracker = ProgressTracker(OracleProgressModel(), n=2)
    with pytest.raises(RuntimeError, match="reset"):
        tracker.step(progress_obs([0.1, 0.2]))
    tracker.reset([0, 1], ["t", "t"], progress_obs([0.0, 0.0]))
    with pytest.raises(ValueError, match="rows"):
        tracker.step(progress_obs([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="reset_obs"):
        tracker.step(progress_obs([0.1, 0.2]), reset_mask=[True, False])
    with pytest.raises(ValueError, match="goal"):
        tracker.reset([0], ["t"], progress_obs([0.0]), goal_obs=progress_obs([1.0]))
    with pytest.raises(ValueError, match="progress"):
        OracleProgressModel().encode({"front": np.zeros((1, 4, 4, 3), np.uint8)})
    with pytest.raises(ValueError, match="mode"):
        FusionConfig(mode="median")
