"""Policy invariance, proven on finite MDPs solved exactly: the rewards come from driving the
real ShapedRewardVecEnv one transition at a time, then value iteration finds the optimal policy."""

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from policies.shaping import ProgressInfoPotential, ShapedRewardVecEnv, ZeroPotential

from toy_envs import GraphEnv


def random_mdp(seed: int, n_states: int = 8, n_actions: int = 3):
    rng = np.random.default_rng(seed)
    next_state = rng.integers(0, n_states, size=(n_states, n_actions))
    goal = n_states - 1
    # Make the goal reachable from everywhere: a path 0 -> 1 -> ... -> goal through action 0.
    next_state[np.arange(n_states - 1), 0] = np.arange(1, n_states)
    next_state[goal] = goal
    return next_state, goal


def reward_table(next_state, goal, phi, gamma, variant):
    """R[s, a] and terminated[s, a] read off the wrapper by taking each transition once."""
    n_states, n_actions = next_state.shape
    env = GraphEnv(next_state, goal, phi)
    venv = DummyVecEnv([lambda: env])
    if variant == "sparse":
        wrapped = ShapedRewardVecEnv(venv, ZeroPotential(1), gamma=gamma)
    else:
        wrapped = ShapedRewardVecEnv(venv, ProgressInfoPotential(1), gamma=gamma, naive=variant == "naive-delta")
    R = np.zeros((n_states, n_actions))
    term = np.zeros((n_states, n_actions), dtype=bool)
    for s in range(n_states):
        if s == goal:
            continue
        for a in range(n_actions):
            env.set_start(s)
            wrapped.reset()
            _, r, done, infos = wrapped.step(np.array([a]))
            R[s, a] = r[0]
            term[s, a] = done[0] and not infos[0]["TimeLimit.truncated"]
            expected_next = infos[0]["terminal_observation"][0] if done[0] else None
            if expected_next is not None:
                assert int(expected_next) == next_state[s, a]
    return R, term


def optimal_action_sets(next_state, goal, R, term, gamma, tol=1e-5):
    n_states, _ = next_state.shape
    V = np.zeros(n_states)
    for _ in range(5000):
        Q = R + gamma * np.where(term, 0.0, V[next_state])
        Q[goal] = 0.0
        V_new = Q.max(axis=1)
        if np.max(np.abs(V_new - V)) < 1e-12:
            break
        V = V_new
    Q = R + gamma * np.where(term, 0.0, V[next_state])
    return [frozenset(np.flatnonzero(Q[s] >= Q[s].max() - tol).tolist()) for s in range(n_states) if s != goal]


@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_shaping_keeps_optimal_policy_and_naive_delta_changes_it(gamma):
    changed_by_naive = 0
    for seed in range(12):
        next_state, goal = random_mdp(seed)
        rng = np.random.default_rng(100 + seed)
        base = optimal_action_sets(
            next_state, goal, *reward_table(next_state, goal, np.zeros(8), gamma, "sparse"), gamma
        )
        for k in range(3):
            phi = rng.uniform(0.0, 1.0, size=8)  # an arbitrary (wrong) progress model
            shaped = optimal_action_sets(next_state, goal, *reward_table(next_state, goal, phi, gamma, "oracle"), gamma)
            assert shaped == base, f"shaping changed the optimal policy (seed {seed}, potential {k})"
            naive = optimal_action_sets(
                next_state, goal, *reward_table(next_state, goal, phi, gamma, "naive-delta"), gamma
            )
            changed_by_naive += naive != base
    # The semantic trap is real: the naive rule changes the optimal policy for many potentials.
    assert changed_by_naive >= 6, changed_by_naive


def test_naive_delta_prefers_lingering_near_the_goal():
    """A chain where finishing means passing a state the progress model rates low: with the naive
    rule and γ < 1 the optimal policy stops before the goal; with proper shaping it finishes."""
    # states 0..4, goal 4; action 0 = forward, action 1 = stay. State 3 looks like regress (Φ=0).
    next_state = np.array([[1, 0], [2, 1], [3, 2], [4, 3], [4, 4]])
    phi = np.array([0.0, 0.5, 0.95, 0.0, 0.0])
    gamma = 0.5
    R, term = reward_table(next_state, 4, phi, gamma, "naive-delta")
    naive = optimal_action_sets(next_state, 4, R, term, gamma)
    assert naive[2] == frozenset({1}), "naive-delta should linger at the high-progress state 2"
    R, term = reward_table(next_state, 4, phi, gamma, "oracle")
    shaped = optimal_action_sets(next_state, 4, R, term, gamma)
    assert all(s == frozenset({0}) for s in shaped)
