"""Learning components judged by what they learn (small budgets, 2 CPU cores)."""

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from policies.shaping import ProgressInfoPotential, ShapedRewardVecEnv
from toy_envs import ChainEnv


def chain_success(model, episodes=20):
    env = ChainEnv(length=20, max_steps=30, slip=0.1)
    wins = 0
    for k in range(episodes):
        obs, info = env.reset(seed=k)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(int(model.predict(obs, deterministic=True)[0]))
            done = term or trunc
        wins += info["is_success"]
    return wins / episodes


def test_ppo_learns_a_long_chain_with_progress_shaping():
    """20 steps to the goal, 30-step limit, slips: a random walk almost never succeeds; PPO on the
    oracle-shaped reward solves it within 6k steps."""
    torch.set_num_threads(1)
    results = {}
    for name, potential in (("oracle", ProgressInfoPotential(4)),):
        venv = DummyVecEnv([lambda: Monitor(ChainEnv(length=20, max_steps=30, slip=0.1))] * 4)
        env = ShapedRewardVecEnv(venv, potential, gamma=0.95)
        model = PPO("MlpPolicy", env, gamma=0.95, n_steps=64, batch_size=64, seed=0, learning_rate=3e-3,
                    policy_kwargs={"net_arch": [32]}, device="cpu")
        before = chain_success(model)
        model.learn(6_000)
        results[name] = (before, chain_success(model))
    assert results["oracle"][0] == 0.0 and results["oracle"][1] >= 0.8, results


@pytest.mark.slow
def test_sac_on_panda_reach_with_oracle_shaping_learns_to_approach_the_target(tmp_path):
    """Real sim, state-only SAC, ~3k env steps: the deterministic policy ends its episodes much
    closer to the target (true progress) than before training."""
    from policies.configuration_train import TrainConfig
    from policies.train import train

    cfg = TrainConfig(task="reach", algo="sac", reward="oracle", n_envs=4, steps=3_000, seed=0, gamma=0.9,
                      max_episode_steps=30, eval_every=3_000, eval_episodes=8, video_every=0,
                      checkpoint_every=0, progress_bar=False, net_arch=(64, 64), out=tmp_path / "run",
                      hyperparams={"learning_starts": 300, "gradient_steps": 2, "batch_size": 128,
                                   "learning_rate": 2e-3})
    result = train(cfg)
    from policies.callbacks import run_episodes
    from policies.run import load_policy
    from policies.train import make_eval_env_fn
    from stable_baselines3 import SAC

    env = make_eval_env_fn(cfg)()
    try:
        untrained = SAC("MlpPolicy", env, seed=1, device="cpu", policy_kwargs={"net_arch": [64, 64]})
        before, _ = run_episodes(lambda o: untrained.predict(o, deterministic=True)[0], env, 8, seed=10_000)
        policy = load_policy(cfg.out, device="cpu")
        after, _ = run_episodes(policy.predict, env, 8, seed=10_000)
    finally:
        env.close()
    p_before = np.mean([r.final_progress for r in before])
    p_after = np.mean([r.final_progress for r in after])
    assert result.eval_curve[-1]["mean_final_progress"] >= p_before + 0.25
    assert p_after >= p_before + 0.25, (p_before, p_after)
