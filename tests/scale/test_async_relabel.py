"""Asynchronous reward relabelling: the labels equal the synchronous wrapper's shaped rewards for the
same env, seed and actions; pending transitions are never sampled; a saved buffer holds labels only."""

import pickle

import numpy as np
import pytest

pytest.importorskip("ray")

from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from policies.async_relabel import AsyncRelabelReplayBuffer, AsyncShapedRewardVecEnv  # noqa: E402
from policies.shaping import ModelPotential, RewardViewsWrapper, ShapedRewardVecEnv  # noqa: E402

from scale_helpers import PHI, FrameProgressModel, make_frame_model, make_slow_frame_model  # noqa: E402
from toy_envs import ChainEnv  # noqa: E402

N_ENVS, GAMMA = 3, 0.9


def make_venv():
    def thunk():
        return RewardViewsWrapper(ChainEnv(length=4, max_steps=6, phi=PHI, slip=0.3), ("front",))

    venv = DummyVecEnv([thunk] * N_ENVS)
    venv.seed(0)
    return venv


def actions_for(steps):
    return np.random.default_rng(3).integers(0, 3, size=(steps, N_ENVS))


def run_async(buffer, actions, sample_every=None):
    venv = AsyncShapedRewardVecEnv(make_venv(), ("front",), gamma=GAMMA)
    obs = venv.reset()
    sampled = []
    for t, action in enumerate(actions):
        new_obs, _, dones, infos = venv.step(action)
        buffer.add(obs, new_obs, action, np.zeros(N_ENVS), dones, infos)
        obs = new_obs
        if sample_every and t % sample_every == sample_every - 1:
            sampled.append((buffer.n_pending, buffer.sample(64).rewards.numpy()))
    return sampled


def make_buffer(factory, label_batch_steps, size=500):
    venv = make_venv()
    return AsyncRelabelReplayBuffer(
        size,
        venv.observation_space,
        venv.action_space,
        device="cpu",
        n_envs=N_ENVS,
        labeller={"reward": "frames:test", "n_envs": N_ENVS, "gamma": GAMMA, "cameras": ("front",)},
        model_factory=factory,
        label_batch_steps=label_batch_steps,
        labeller_cpus=0,
    )


def test_async_labels_equal_the_synchronous_shaped_rewards(local_ray):
    steps = 80
    actions = actions_for(steps)
    sync = ShapedRewardVecEnv(make_venv(), ModelPotential(FrameProgressModel(), N_ENVS, ("front",)), gamma=GAMMA)
    sync.reset()
    expected, terminated, truncated = [], 0, 0
    for action in actions:
        _, rewards, dones, infos = sync.step(action)
        expected.append(rewards)
        truncated += sum(bool(d and i["TimeLimit.truncated"]) for d, i in zip(dones, infos))
        terminated += sum(bool(d and not i["TimeLimit.truncated"]) for d, i in zip(dones, infos))
    assert terminated and truncated, "the rollout must cover both episode ends"

    buffer = make_buffer(make_frame_model, label_batch_steps=16)
    run_async(buffer, actions)
    buffer.collect_labels(wait=True)
    assert buffer.n_pending == 0 and buffer.labelled[:steps].all()
    np.testing.assert_allclose(buffer.rewards[:steps], np.stack(expected), atol=1e-6)
    # batched encoding: one model call per chunk of 16 steps (5 chunks), none per step
    stats = local_ray.get(buffer._actor.stats.remote())
    assert stats == {"steps": steps, "batched_encodes": 5, "fallback_encodes": 0}


def test_pending_transitions_are_never_sampled_and_a_saved_buffer_is_labelled(local_ray):
    buffer = make_buffer(make_slow_frame_model, label_batch_steps=4)
    sampled = run_async(buffer, actions_for(40), sample_every=10)
    assert any(pending > 0 for pending, _ in sampled), "the labeller kept up; nothing pending to exclude"
    for _, rewards in sampled:
        assert np.isfinite(rewards).all(), "a transition with a pending reward was sampled"
    restored = pickle.loads(pickle.dumps(buffer))
    assert restored.n_pending == 0 and np.isfinite(restored.rewards[:40]).all()
