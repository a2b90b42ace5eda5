"""Ray rollout actors behind a VecEnv: a killed worker is restarted and the run goes on with no
transition lost or duplicated; SB3 learners and prism-train use the facade unchanged."""

import numpy as np
import pytest

pytest.importorskip("ray")

from policies.ray_rollouts import RayVecEnv  # noqa: E402
from policies.shaping import RewardViewsWrapper  # noqa: E402

from scale_helpers import PHI  # noqa: E402
from toy_envs import ChainEnv  # noqa: E402

N_ENVS = 4


def chain():
    return RewardViewsWrapper(ChainEnv(length=4, max_steps=6, phi=PHI, slip=0.3), ("front",))


def rollout(venv, actions, kill_at=None):
    venv.seed(7)
    trace = [venv.reset().copy()]
    for t, action in enumerate(actions):
        if t == kill_at:
            import ray

            old_pid = ray.get(venv.workers[1].pid.remote())
            venv.step_async(action)
            ray.kill(venv.workers[1], no_restart=False)  # mid-step (or just after it, if the step won the race)
            _wait_until_dead(old_pid)
            obs, rewards, dones, infos = venv.step_wait()
        else:
            obs, rewards, dones, infos = venv.step(action)
        terminal = [float(np.asarray(i["terminal_observation"])[0]) if d else np.nan for d, i in zip(dones, infos)]
        trace += [
            obs.copy(),
            rewards.copy(),
            dones.copy(),
            np.array(terminal),
            np.array([bool(i.get("TimeLimit.truncated", False)) for i in infos]),
        ]
    return trace


def _wait_until_dead(pid: int, timeout_s: float = 30.0) -> None:
    """ray.kill is asynchronous: wait until the old worker process is really gone."""
    import os
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"worker process {pid} still alive {timeout_s} s after ray.kill")


def test_killed_worker_restarts_and_the_run_is_identical(local_ray):
    actions = np.random.default_rng(0).integers(0, 3, size=(40, N_ENVS))
    venv = RayVecEnv([chain] * N_ENVS, n_workers=2, max_restarts=2, worker_cpus=0)
    try:
        clean = rollout(venv, actions)
        killed = rollout(venv, actions, kill_at=17)
        assert venv.n_worker_restarts == 1
        assert sum(d.sum() for d in clean[3::5]) > 4, "episodes must end (auto-reset path) during the run"
        assert len(clean) == len(killed)
        for a, b in zip(clean, killed):
            np.testing.assert_array_equal(a, b)
    finally:
        venv.close()


def test_sb3_learns_through_the_facade(local_ray):
    from stable_baselines3 import PPO

    venv = RayVecEnv([chain] * 2, n_workers=2, worker_cpus=0)
    try:
        assert venv.env_is_wrapped(RewardViewsWrapper) == [True, True]
        assert venv.get_attr("length") == [4, 4]
        model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
        model.learn(64)
        assert model.num_timesteps >= 64
    finally:
        venv.close()


def test_prism_train_with_ray_rollouts_and_async_reward(local_ray, tmp_path):
    from policies.configuration_train import RLTrainConfig
    from policies.train import train

    cfg = RLTrainConfig(
        task="reach",
        algo="sac",
        reward="oracle-model",
        vec_env="ray",
        ray_workers=2,
        async_reward=True,
        n_envs=2,
        steps=240,
        eval_every=0,
        eval_episodes=1,
        video_every=0,
        checkpoint_every=0,
        checkpoint_minutes=0,
        progress_bar=False,
        obs_stats_steps=50,
        out=tmp_path / "run",
        hyperparams={"learning_starts": 100, "batch_size": 32, "buffer_size": 1000},
    )
    result = train(cfg)
    assert result.env_steps >= 240 and (tmp_path / "run" / "model.zip").is_file()


def test_async_reward_is_refused_where_it_cannot_be_exact():
    from policies.configuration_train import RLTrainConfig

    for bad in ({"algo": "ppo"}, {"query_every": 2}, {"normalize_reward": True}):
        with pytest.raises(ValueError, match="--async-reward"):
            RLTrainConfig(task="reach", async_reward=True, **bad)
