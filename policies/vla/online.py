"""Online rollouts of a VLA policy through the shaping wrapper, grouped by start state.

The reward-driven post-training commands (``prism-vla rl``, ``dpo`` and ``rft``) collect data the
same way: ``G`` groups of ``K`` episodes, the ``K`` episodes of a group starting from the same seed
(so they can be compared with each other: a group-relative baseline for RL, chosen/rejected pairs
for DPO, the episodes worth imitating for RFT). The envs are an SB3 ``VecEnv`` (``dummy`` or ``subproc``) under
:class:`~policies.shaping.ShapedRewardVecEnv`, so every reward spec of ``prism-train`` (``sparse``,
``oracle``, ``grm``, ``grm:CKPT``, ``naive-delta``, ``+pessimism=K``) shapes the reward here exactly
as it does for SB3 learners, with one batched reward-model call per step.

Each env runs one episode per collection: an env whose episode ended keeps being stepped with zero
actions until the last one ends (its auto-reset episode is discarded), so every episode is a whole
episode from its group's seed. The policy re-plans every ``execute_steps`` actions (receding
horizon); one **decision** is an observation, the sampled chunk and the mask of the chunk's steps
that were executed before the policy re-planned or the episode ended -- log π of exactly those
tokens is what RL and DPO optimise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from policies.envs import make_vec_env
from policies.shaping import RewardSpec, ShapedRewardVecEnv, make_potential
from policies.vla.modeling_vla import VLAPolicy


def make_online_env(
    policy: VLAPolicy,
    task: str,
    reward: str,
    n_envs: int,
    gamma: float,
    device: str = "cpu",
    vec_env: str = "dummy",
    success_reward: float = 1.0,
) -> ShapedRewardVecEnv:
    """``n_envs`` sim envs rendering the policy's cameras, under the shaping wrapper of ``reward``."""
    spec = RewardSpec.parse(reward)
    potential = make_potential(spec, n_envs, device=device)
    venv = make_vec_env(
        n_envs,
        0,
        vec_env=vec_env,
        task=task,
        obs_mode="pixels",
        cameras=policy.cameras,
        image_size=policy.image_size,
        reward_cameras=tuple(getattr(potential, "cameras", ())),
    )
    return ShapedRewardVecEnv(venv, potential, gamma=gamma, naive=spec.naive, success_reward=success_reward)


def set_reset_seeds(venv: VecEnv, seeds: Sequence[int]) -> None:
    """Seeds of the next ``reset`` of each env of the innermost VecEnv. SB3's public ``seed(s)`` only
    gives s, s+1, ...; groups need repeated seeds, and SB3 (>= 2.0) passes ``_seeds`` to that reset."""
    inner = venv.unwrapped
    if len(seeds) != inner.num_envs:
        raise ValueError(f"{len(seeds)} seeds for {inner.num_envs} envs")
    inner._seeds = [int(s) for s in seeds]


def _reset_infos(venv: VecEnv) -> list[dict]:
    inner = venv.unwrapped
    return list(getattr(inner, "reset_infos", [{}] * inner.num_envs))


@dataclass
class Decision:
    """One re-planning point of one episode."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    chunk: np.ndarray
    rewards: list[float] = field(default_factory=list)
    """Shaped rewards of the executed steps of the chunk."""


@dataclass
class Episode:
    """One online episode: its decisions and outcome."""

    group: int
    seed: int
    task: str
    decisions: list[Decision] = field(default_factory=list)
    success: bool = False
    final_progress: float = 0.0
    shaped_return: float = 0.0
    """Undiscounted sum of the shaped rewards (the reward model's score of the episode)."""
    length: int = 0


@dataclass
class DecisionBatch:
    """Decisions of many episodes as arrays (what the losses take)."""

    images: dict[str, np.ndarray]
    states: np.ndarray
    tasks: list[str]
    chunks: np.ndarray
    """(N, H, A) sampled chunks."""
    mask: np.ndarray
    """(N, H) True for the executed steps."""
    returns: np.ndarray
    """(N,) discounted shaped reward-to-go from the decision's first step to the episode's end."""
    episode: np.ndarray
    """(N,) index of the decision's episode in the collection."""
    index: np.ndarray
    """(N,) position of the decision in its episode."""

    def __len__(self) -> int:
        return len(self.states)

    def take(self, rows: np.ndarray) -> DecisionBatch:
        """The listed rows as a batch of their own."""
        return DecisionBatch(
            images={c: v[rows] for c, v in self.images.items()},
            states=self.states[rows],
            tasks=[self.tasks[i] for i in np.asarray(rows, dtype=int)],
            chunks=self.chunks[rows],
            mask=self.mask[rows],
            returns=self.returns[rows],
            episode=self.episode[rows],
            index=self.index[rows],
        )

    def obs(self, rows: np.ndarray | slice) -> dict[str, Any]:
        """The policy observation of some rows (batched)."""
        tasks = np.asarray(self.tasks, dtype=object)[rows]
        return {
            "state": self.states[rows],
            "pixels": {c: v[rows] for c, v in self.images.items()},
            "task": [str(t) for t in tasks],
        }


def collect(
    venv: ShapedRewardVecEnv, policy: VLAPolicy, group_seeds: Sequence[int], group_size: int, temperature: float
) -> list[Episode]:
    """One episode per env: ``group_size`` consecutive envs start from each seed of ``group_seeds``.
    Chunks are sampled at ``temperature`` (0: the deterministic chunk)."""
    n = venv.num_envs
    if len(group_seeds) * group_size != n:
        raise ValueError(
            f"{len(group_seeds)} groups x {group_size} episodes need {len(group_seeds) * group_size} "
            f"envs, the env has {n}"
        )
    seeds = [int(s) for s in group_seeds for _ in range(group_size)]
    set_reset_seeds(venv, seeds)
    obs = venv.reset()
    tasks = [str(info.get("task", "")) for info in _reset_infos(venv)]
    episodes = [Episode(group=i // group_size, seed=seeds[i], task=tasks[i]) for i in range(n)]
    queues: list[list[np.ndarray]] = [[] for _ in range(n)]
    active = np.ones(n, dtype=bool)
    cameras = policy.cameras
    action_dim = policy.config.action_dim
    while active.any():
        need = [i for i in range(n) if active[i] and not queues[i]]
        if need:
            rows = np.asarray(need)
            batch = {
                "state": np.asarray(obs["state"])[rows],
                "pixels": {c: np.asarray(obs[c])[rows] for c in cameras},
                "task": [tasks[i] for i in need],
            }
            chunks = policy.sample(batch, temperature) if temperature > 0 else policy.predict_chunk(batch)
            for k, i in enumerate(need):
                episodes[i].decisions.append(
                    Decision(
                        images={c: batch["pixels"][c][k].copy() for c in cameras},
                        state=batch["state"][k].copy(),
                        chunk=chunks[k],
                    )
                )
                queues[i] = list(chunks[k][: policy.config.execute_steps])
        actions = np.zeros((n, action_dim), dtype=np.float32)
        for i in np.flatnonzero(active):
            actions[i] = queues[i].pop(0)
        obs, rewards, dones, infos = venv.step(actions)
        for i in np.flatnonzero(active):
            ep = episodes[i]
            ep.decisions[-1].rewards.append(float(rewards[i]))
            ep.length += 1
            ep.shaped_return += float(rewards[i])
            if dones[i]:
                active[i] = False
                queues[i] = []
                ep.success = bool(infos[i].get("is_success", False))
                ep.final_progress = float(infos[i].get("progress", float(ep.success)))
    return episodes


def to_batch(episodes: Sequence[Episode], gamma: float, chunk_size: int) -> DecisionBatch:
    """Stack the decisions of ``episodes``, with each decision's discounted shaped reward-to-go."""
    images: dict[str, list[np.ndarray]] = {}
    states, tasks, chunks, masks, returns, episode, index = [], [], [], [], [], [], []
    for e, ep in enumerate(episodes):
        to_go = 0.0
        per_decision = []
        for d in reversed(ep.decisions):  # reward-to-go, from the end
            for r in reversed(d.rewards):
                to_go = r + gamma * to_go
            per_decision.append(to_go)
        per_decision.reverse()
        for j, d in enumerate(ep.decisions):
            for c, img in d.images.items():
                images.setdefault(c, []).append(img)
            states.append(d.state)
            tasks.append(ep.task)
            chunks.append(d.chunk)
            m = np.zeros(chunk_size, dtype=bool)
            m[: len(d.rewards)] = True
            masks.append(m)
            returns.append(per_decision[j])
            episode.append(e)
            index.append(j)
    return DecisionBatch(
        images={c: np.stack(v) for c, v in images.items()},
        states=np.stack(states),
        tasks=tasks,
        chunks=np.stack(chunks).astype(np.float32),
        mask=np.stack(masks),
        returns=np.asarray(returns),
        episode=np.asarray(episode),
        index=np.asarray(index),
    )


def concat_batches(batches: Sequence[DecisionBatch]) -> DecisionBatch:
    """One batch of the rows of ``batches`` in order (episode indices are kept as they are)."""
    return DecisionBatch(
        images={c: np.concatenate([b.images[c] for b in batches]) for c in batches[0].images},
        states=np.concatenate([b.states for b in batches]),
        tasks=[t for b in batches for t in b.tasks],
        chunks=np.concatenate([b.chunks for b in batches]),
        mask=np.concatenate([b.mask for b in batches]),
        returns=np.concatenate([b.returns for b in batches]),
        episode=np.concatenate([b.episode for b in batches]),
        index=np.concatenate([b.index for b in batches]),
    )


def group_relative_advantages(batch: DecisionBatch, episodes: Sequence[Episode]) -> np.ndarray:
    """Each decision's reward-to-go minus the mean over its group's episodes at the same decision
    index (an episode that already ended counts 0 there: nothing more is paid after the end), scaled
    by the batch std. With a shaped reward the potential is already a baseline (the reward-to-go
    telescopes to ... − Φ(s_t)), the group mean removes what the start state alone explains."""
    n_decisions = max(len(ep.decisions) for ep in episodes)
    table = np.zeros((len(episodes), n_decisions))
    table[batch.episode, batch.index] = batch.returns
    ep_group = np.asarray([ep.group for ep in episodes])
    baseline = np.zeros_like(table)
    for g in np.unique(ep_group):
        rows = ep_group == g
        baseline[rows] = table[rows].mean(axis=0)
    adv = batch.returns - baseline[batch.episode, batch.index]
    std = adv.std()
    return adv / (std + 1e-8) if std > 1e-8 else adv


def summarise(episodes: Sequence[Episode]) -> dict[str, float]:
    """True success rate, final progress and the reward model's mean shaped return of a collection."""
    return {
        "success_rate": float(np.mean([ep.success for ep in episodes])),
        "final_progress": float(np.mean([ep.final_progress for ep in episodes])),
        "shaped_return": float(np.mean([ep.shaped_return for ep in episodes])),
        "length": float(np.mean([ep.length for ep in episodes])),
        "episodes": len(episodes),
    }


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean exact KL(π ‖ π_ref) per executed token (the anchor to the starting policy)."""
    logp, ref = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    kl = (logp.exp() * (logp - ref)).sum(-1)  # (N, H, A)
    weight = mask.unsqueeze(-1).expand_as(kl).to(kl.dtype)
    return (kl * weight).sum() / weight.sum().clamp(min=1.0)


def describe(stats: Mapping[str, float]) -> str:
    return (
        f"success {stats['success_rate']:.0%}, final progress {stats['final_progress']:.2f}, "
        f"shaped return {stats['shaped_return']:.2f}"
    )


__all__ = [
    "Decision",
    "DecisionBatch",
    "Episode",
    "collect",
    "concat_batches",
    "describe",
    "group_relative_advantages",
    "make_online_env",
    "set_reset_seeds",
    "summarise",
    "to_batch",
    "token_kl",
]
