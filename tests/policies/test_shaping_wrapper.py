"""ShapedRewardVecEnv: exact telescoping over whole episodes (termination, truncation, SB3
auto-resets in DummyVecEnv and SubprocVecEnv), one batched model call per step, no double renders."""

from collections.abc import Sequence

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from policies.shaping import (
    ModelPotential,
    ProgressInfoPotential,
    RewardSpec,
    RewardViewsWrapper,
    ShapedRewardVecEnv,
    ZeroPotential,
    make_potential,
)
from reward_models.base import ProgressModel, hop_from_progress

from toy_envs import ChainEnv, state_from_frame

PHI = np.array([0.2, 0.1, 0.5, 0.7, 0.9])  # Φ(s_0) ≠ 0 and non-monotone on purpose


class FrameProgressModel(ProgressModel):
    """Stands in for a trained progress model: reads the state off the 'front' frame."""

    model_id = "frame-progress"
    cameras = ("front",)

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float64)
        self.encode_calls = 0
        self.rows_encoded = 0

    def encode(self, obs):
        self.encode_calls += 1
        frames = np.asarray(obs["front"])
        self.rows_encoded += len(frames)
        return np.array([self.table[state_from_frame(f)] for f in frames])

    def hop_from_embeddings(self, before, after, tasks: Sequence[str], start=None, goal=None):
        return hop_from_progress(before, after)


def make_chain(pixels=False, start=0, phi=PHI, max_steps=6, slip=0.3):
    def thunk():
        env = ChainEnv(length=4, max_steps=max_steps, phi=phi, start=start, pixels=pixels, slip=slip)
        return RewardViewsWrapper(env, ("front",))

    return thunk


def rollout_and_check(venv, gamma, phi_of_state, steps=150, seed=0, naive=False, success_reward=1.0):
    """Random actions; for every finished episode compare the wrapper's rewards with the closed
    form computed from the states the test saw itself."""
    rng = np.random.default_rng(seed)
    venv.seed(seed)
    obs = venv.reset()
    n = venv.num_envs

    def state_of(o):
        return int(round(float(np.asarray(o["state"] if isinstance(o, dict) else o).reshape(-1)[0])))

    def row(o, i):
        return {k: v[i] for k, v in o.items()} if isinstance(o, dict) else o[i]

    start = [state_of(row(obs, i)) for i in range(n)]
    rewards = [[] for _ in range(n)]
    successes = [[] for _ in range(n)]
    checked = {"terminated": 0, "truncated": 0, "dones": np.zeros(n, dtype=int)}
    for _ in range(steps):
        obs, r, dones, infos = venv.step(rng.integers(0, 3, size=n))
        for i in range(n):
            rewards[i].append(float(r[i]))
            successes[i].append(float(infos[i]["is_success"]))
            if not dones[i]:
                continue
            truncated = infos[i]["TimeLimit.truncated"]
            s_T = state_of(infos[i]["terminal_observation"])
            T = len(rewards[i])
            disc = gamma ** np.arange(T)
            if naive:
                got = float(np.sum(rewards[i]))
                want = success_reward * sum(successes[i]) + phi_of_state(s_T) - phi_of_state(start[i])
            else:
                got = float(np.sum(disc * np.asarray(rewards[i])))
                phi_T = phi_of_state(s_T) if truncated else 0.0
                want = (
                    success_reward * float(np.sum(disc * np.asarray(successes[i])))
                    + gamma**T * phi_T
                    - phi_of_state(start[i])
                )
            assert got == pytest.approx(want, abs=1e-5), (i, truncated, rewards[i])
            assert infos[i]["shaped_episode"]["discounted_r"] == pytest.approx(
                float(np.sum(disc * np.asarray(rewards[i]))), abs=1e-5
            )
            checked["truncated" if truncated else "terminated"] += 1
            checked["dones"][i] += 1
            rewards[i], successes[i] = [], []
            start[i] = state_of(row(obs, i))  # auto-reset: obs is already the next episode's s_0
    assert checked["terminated"] >= 3 and checked["truncated"] >= 3, checked
    return checked


@pytest.mark.parametrize("pixels", [False, True])
@pytest.mark.parametrize("gamma", [0.9, 0.97])
def test_oracle_shaping_telescopes_in_dummy_vec_env(pixels, gamma):
    venv = DummyVecEnv([make_chain(pixels=pixels, start=s) for s in (0, 1, 2)])
    shaped = ShapedRewardVecEnv(venv, ProgressInfoPotential(3), gamma=gamma)
    rollout_and_check(shaped, gamma, lambda s: PHI[s])


def test_naive_delta_telescopes_without_gamma_or_terminal_rule():
    venv = DummyVecEnv([make_chain(start=s) for s in (0, 2)])
    shaped = ShapedRewardVecEnv(venv, ProgressInfoPotential(2), gamma=0.9, naive=True, success_reward=2.0)
    rollout_and_check(shaped, 0.9, lambda s: PHI[s], naive=True, success_reward=2.0)


def test_model_shaping_telescopes_and_calls_the_model_once_per_step():
    """Through the real ProgressTracker: episodes start at Φ(s_0)=0 by the tracker's contract, so
    use a progress table with Φ(start)=0 (then the tracker's reconstruction is exact)."""
    phi = np.array([0.0, 0.3, 0.2, 0.6, 0.95])
    model = FrameProgressModel(phi)
    venv = DummyVecEnv([make_chain(phi=phi) for _ in range(3)])
    shaped = ShapedRewardVecEnv(venv, ModelPotential(model, 3, ("front",)), gamma=0.95)
    steps = 120
    checked = rollout_and_check(shaped, 0.95, lambda s: phi[s], steps=steps)
    assert model.encode_calls == 1 + steps  # one for the reset, then exactly one per vectorised step
    assert shaped.n_model_calls == model.encode_calls
    # Each env rendered its reward view exactly once per reset and per step -- never twice.
    assert venv.get_attr("n_renders") == [1 + steps + d for d in checked["dones"]]


def test_pixel_policy_views_are_taken_from_the_observation_not_rendered():
    model = FrameProgressModel(np.array([0.0, 0.3, 0.2, 0.6, 0.95]))
    venv = DummyVecEnv([make_chain(pixels=True, phi=model.table) for _ in range(2)])
    shaped = ShapedRewardVecEnv(venv, ModelPotential(model, 2, ("front",)), gamma=0.95)
    rollout_and_check(shaped, 0.95, lambda s: model.table[s], steps=100)
    assert venv.get_attr("n_renders") == [0, 0]
    assert model.encode_calls == 101


def test_query_every_k_holds_phi_and_still_telescopes():
    phi = np.array([0.0, 0.3, 0.2, 0.6, 0.95])
    model = FrameProgressModel(phi)
    venv = DummyVecEnv([make_chain(phi=phi, max_steps=8) for _ in range(2)])
    shaped = ShapedRewardVecEnv(venv, ModelPotential(model, 2, ("front",)), gamma=0.9, query_every=4)
    steps = 160
    rollout_and_check(shaped, 0.9, lambda s: phi[s], steps=steps)
    assert model.encode_calls < 0.8 * (steps + 1)  # fewer calls than steps...
    assert model.encode_calls >= steps // 4  # ...but at least every 4th step


def test_model_success_source_pays_success_when_phi_reaches_one_minus_delta():
    phi = np.array([0.0, 0.3, 0.5, 0.97, 0.99])
    venv = DummyVecEnv([make_chain(phi=phi, slip=0.0)])
    shaped = ShapedRewardVecEnv(venv, ProgressInfoPotential(1, delta=0.05), gamma=1.0, success_source="model")
    shaped.reset()
    # +1 +1 +1 from state 0: states 1, 2, 3 -> r_success only at state 3 (Φ=0.97 ≥ 0.95)
    rs = [shaped.step(np.array([2]))[1][0] for _ in range(3)]
    assert rs[0] == pytest.approx(0.3) and rs[1] == pytest.approx(0.2)
    assert rs[2] == pytest.approx(1.0 + 0.97 - 0.5)


def test_sparse_is_the_success_reward_only():
    venv = DummyVecEnv([make_chain(start=3, slip=0.0)])
    shaped = ShapedRewardVecEnv(venv, ZeroPotential(1), gamma=0.9)
    shaped.reset()
    assert shaped.step(np.array([1]))[1][0] == 0.0
    _, r, done, infos = shaped.step(np.array([2]))
    assert done[0] and infos[0]["is_success"] and r[0] == 1.0


def test_shaping_logs_keep_true_and_shaped_quantities_apart():
    from stable_baselines3.common.monitor import Monitor

    venv = DummyVecEnv([lambda: Monitor(make_chain(start=3, slip=0.0)())])
    shaped = ShapedRewardVecEnv(venv, ProgressInfoPotential(1), gamma=0.9)
    shaped.reset()
    _, r, done, infos = shaped.step(np.array([2]))
    info = infos[0]
    assert done[0]
    assert info["episode"]["r"] == 1.0  # Monitor: the env's own return
    assert info["shaped_episode"]["r"] == pytest.approx(1.0 - PHI[3])  # shaped: Φ(terminal)=0
    assert info["shaping"]["phi"] == pytest.approx(PHI[4])
    assert "reward_views" not in info


def test_reward_spec_parsing_and_errors():
    assert RewardSpec.parse("sparse").potential == "none"
    assert RewardSpec.parse("oracle") == RewardSpec("progress", False, None, "oracle")
    naive = RewardSpec.parse("naive-delta")
    assert naive.naive and naive.potential == "progress"
    grm = RewardSpec.parse("naive-delta:grm:/tmp/ckpt")
    assert grm.naive and grm.model_spec == "grm:/tmp/ckpt"
    assert RewardSpec.parse("clip:ViT-B-32:/w.bin").model_spec == "clip:ViT-B-32:/w.bin"
    for bad in ("", "dense", "naive-delta:sparse"):
        with pytest.raises(ValueError, match="reward"):
            RewardSpec.parse(bad)
    with pytest.raises(ValueError, match="cameras"):
        make_potential(RewardSpec.parse("grm:x"), 1, model=type("M", (FrameProgressModel,), {"cameras": None})(PHI))


def test_missing_reward_camera_is_a_clear_error():
    venv = DummyVecEnv([lambda: ChainEnv()])  # no RewardViewsWrapper, no pixels
    shaped = ShapedRewardVecEnv(venv, ModelPotential(FrameProgressModel(PHI), 1, ("front",)), gamma=0.9)
    with pytest.raises(KeyError, match="RewardViewsWrapper"):
        shaped.reset()


def test_telescoping_across_subprocess_auto_resets():
    phi = np.array([0.0, 0.3, 0.2, 0.6, 0.95])
    model = FrameProgressModel(phi)
    venv = SubprocVecEnv([make_chain(phi=phi) for _ in range(2)], start_method="forkserver")
    try:
        shaped = ShapedRewardVecEnv(venv, ModelPotential(model, 2, ("front",)), gamma=0.95)
        rollout_and_check(shaped, 0.95, lambda s: phi[s], steps=100)
        assert model.encode_calls == 101
    finally:
        venv.close()
