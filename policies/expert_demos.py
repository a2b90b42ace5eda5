"""Expert demonstrations for off-policy learners: rolled out through the *training* env, kept apart.

Push is an exploration problem more than a reward problem: with a dense progress reward, SAC still
has to find "get behind the block at table height, then push" by chance (measured: 0 % at 30–45k
steps even with the ground-truth progress). The standard remedy (Nair et al. 2018; RLPD, Ball et
al. 2023) is a few expert episodes in a replay buffer of their own, from which every batch draws a
fixed share ("symmetric sampling": half), so the demonstrations are never diluted by the growing
online data.

:class:`DemoSAC` adds the second half of that recipe: the actor also imitates the demonstrations,
but only where the critic rates the demonstrated action above the actor's own ("Q-filter", Nair et
al. 2018), so the imitation fades wherever the learner has become better than the expert.

The demonstrations are stepped through the same shaped VecEnv the learner trains on, so their
rewards come from the run's own reward (sparse, oracle, GRM, ...): every reward variant gets the
same expert *actions*, and only what the reward says about them differs. Their env steps are
counted and reported apart from the learner's (``RunResult.demo_env_steps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize
from tqdm.auto import tqdm

from sim.experts import make_policy


class DemoMixReplayBuffer(ReplayBuffer):
    """SB3 replay buffer with a second, fixed buffer of demonstrations.

    ``sample`` draws ``round(demo_fraction * batch_size)`` rows from the demonstrations (when it
    holds any) and the rest from the online data. ``add`` stores online data as usual; demos go in
    through :meth:`add_demo`. Pass it as ``replay_buffer_class`` with ``replay_buffer_kwargs``
    ``{"demo_fraction": f, "demo_capacity": n}``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space,
        action_space,
        device="auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        demo_fraction: float = 0.5,
        demo_capacity: int = 10_000,
    ):
        if not 0.0 <= demo_fraction < 1.0:
            raise ValueError(f"demo_fraction must be in [0, 1), got {demo_fraction}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.demo_fraction = float(demo_fraction)
        self.last_n_demo = 0
        """How many rows at the end of the last sampled batch came from the demonstrations."""
        # one row per transition (n_envs=1), so a demonstration env can stop storing on its own
        self.demos = ReplayBuffer(
            max(1, int(demo_capacity)),
            observation_space,
            action_space,
            device=device,
            n_envs=1,
            handle_timeout_termination=handle_timeout_termination,
        )

    def add_demo(
        self, obs, next_obs, action, reward, done, infos: list[dict[str, Any]], keep: np.ndarray | None = None
    ) -> None:
        """Store one vectorised step of demonstrations; ``keep`` (bool per env) selects the envs stored."""
        for i in range(len(infos)) if keep is None else np.flatnonzero(keep):
            if self.demos.full:
                raise RuntimeError(f"demonstration buffer full ({self.demos.buffer_size} transitions)")
            self.demos.add(
                obs[i : i + 1], next_obs[i : i + 1], action[i : i + 1], reward[i : i + 1], done[i : i + 1], [infos[i]]
            )

    def demo_transitions(self) -> int:
        return self.demos.size()

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        n_demo = int(round(self.demo_fraction * batch_size)) if self.demos.size() > 0 else 0
        if n_demo == 0:
            self.last_n_demo = 0
            return super().sample(batch_size, env)
        if self.size() == 0:  # before any online data (e.g. learning_starts=0)
            self.last_n_demo = batch_size
            return self.demos.sample(batch_size, env)
        self.last_n_demo = n_demo
        online = super().sample(batch_size - n_demo, env)
        demo = self.demos.sample(n_demo, env)
        return ReplayBufferSamples(*(None if a is None else torch.cat([a, b]) for a, b in zip(online, demo)))


def collect_demonstrations(
    model,
    venv: VecEnv,
    episodes: int,
    seed: int,
    noise: float = 0.0,
    policy: str = "expert",
    progress: bool = False,
    max_progress: float = 1.0,
) -> int:
    """Roll the task's scripted ``policy`` (sim/experts.py) out in ``venv`` -- the learner's own,
    shaped, DummyVecEnv -- until ``episodes`` episodes have finished; store every transition in
    ``model.replay_buffer`` (a :class:`DemoMixReplayBuffer`). Returns the env steps taken.

    ``max_progress`` < 1 makes *partial* demonstrations: an episode's transitions are stored only
    up to the one whose true progress (``info["progress"]``) first reaches it; the env then runs out
    its time limit on zero actions, unstored (those steps are counted in the return value)."""
    if not 0.0 < max_progress <= 1.0:
        raise ValueError(f"max_progress must be in (0, 1], got {max_progress}")
    buffer = model.replay_buffer
    if not isinstance(buffer, DemoMixReplayBuffer):
        raise TypeError("demonstrations need the learner's replay_buffer_class to be DemoMixReplayBuffer")
    inner = venv
    while not isinstance(inner, DummyVecEnv):
        if not hasattr(inner, "venv"):
            raise ValueError("demonstrations need --vec-env dummy (the scripted expert reads each env's state)")
        inner = inner.venv
    experts = [make_policy(policy, env, seed=seed + i, noise=noise) for i, env in enumerate(inner.envs)]
    normalizer = venv if isinstance(venv, VecNormalize) else None
    obs = venv.reset()
    for expert, info in zip(experts, inner.reset_infos):
        expert.reset(None, info)
    infos: list[dict[str, Any]] = list(inner.reset_infos)
    stopped = np.zeros(venv.num_envs, dtype=bool)  # partial demonstrations: past max_progress
    bar = tqdm(total=episodes, desc="demonstrations", unit="ep", disable=not progress)
    finished, steps = 0, 0
    while finished < episodes:
        actions = np.stack([e.act(None, info) for e, info in zip(experts, infos)])
        actions[stopped] = 0.0
        store = ~stopped
        new_obs, rewards, dones, infos = venv.step(actions)
        steps += venv.num_envs
        if normalizer is not None:
            rewards = normalizer.get_original_reward()
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            if done:
                next_obs[i] = infos[i]["terminal_observation"]
                finished += 1
                bar.update(1)
                experts[i].reset(None, infos[i])  # the env has already reset itself
                stopped[i] = False
            elif max_progress < 1.0 and store[i]:
                if "progress" not in infos[i]:
                    raise KeyError(
                        "partial demonstrations (max_progress < 1) need the env's info['progress'] "
                        "(the sim tasks' ground-truth progress)"
                    )
                stopped[i] = infos[i]["progress"] >= max_progress
        buffer.add_demo(obs, next_obs, actions, rewards, dones, infos, keep=store)
        obs = new_obs
    bar.close()
    return steps


def _min_q(critic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.min(torch.cat(critic(obs, actions), dim=1), dim=1, keepdim=True).values


class DemoSAC(SAC):
    """SAC (Haarnoja et al. 2018: twin critics, tanh-Gaussian actor, learnt temperature) whose actor
    loss gains ``bc_weight`` x a Q-filtered behaviour-cloning term on the demonstration rows of each
    batch (a :class:`DemoMixReplayBuffer`): ‖μ(s) − a_demo‖² where min Q(s, a_demo) > min Q(s, μ(s)).
    With no demonstrations in the batch it is plain SAC. Saved models load with ``SAC.load``."""

    def __init__(self, *args, bc_weight: float = 1.0, **kwargs):
        if bc_weight < 0:
            raise ValueError(f"bc_weight must be >= 0, got {bc_weight}")
        self.bc_weight = float(bc_weight)
        super().__init__(*args, **kwargs)

    def _temperature(self, log_prob: torch.Tensor) -> torch.Tensor:
        """α for this step; with a learnt α, one gradient step towards the target entropy first."""
        if self.ent_coef_optimizer is None:
            return self.ent_coef_tensor
        alpha = torch.exp(self.log_ent_coef.detach())
        loss = -(self.log_ent_coef * (log_prob.detach() + self.target_entropy)).mean()
        self.ent_coef_optimizer.zero_grad()
        loss.backward()
        self.ent_coef_optimizer.step()
        return alpha

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        stats: dict[str, list[float]] = {
            "critic_loss": [],
            "actor_loss": [],
            "ent_coef": [],
            "bc_loss": [],
            "bc_kept": [],
        }
        for step in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            n_demo = getattr(self.replay_buffer, "last_n_demo", 0)
            discount = batch.discounts if batch.discounts is not None else self.gamma
            if self.use_sde:
                self.actor.reset_noise()
            actions_pi, log_prob = self.actor.action_log_prob(batch.observations)
            log_prob = log_prob.reshape(-1, 1)
            alpha = self._temperature(log_prob)

            # critics: soft Bellman backup through the target critics
            with torch.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(batch.next_observations)
                next_v = _min_q(
                    self.critic_target, batch.next_observations, next_actions
                ) - alpha * next_log_prob.reshape(-1, 1)
                target_q = batch.rewards + (1 - batch.dones) * discount * next_v
            critic_loss = 0.5 * sum(F.mse_loss(q, target_q) for q in self.critic(batch.observations, batch.actions))
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # actor: maximise soft Q, plus imitation where the demonstration looks better
            actor_loss = (alpha * log_prob - _min_q(self.critic, batch.observations, actions_pi)).mean()
            stats["actor_loss"].append(actor_loss.item())
            if n_demo > 0 and self.bc_weight > 0:
                demo_obs, demo_actions = batch.observations[-n_demo:], batch.actions[-n_demo:]
                own = self.actor(demo_obs, deterministic=True)
                with torch.no_grad():
                    keep = (_min_q(self.critic, demo_obs, demo_actions) > _min_q(self.critic, demo_obs, own)).float()
                bc = (keep * (own - demo_actions).pow(2).sum(dim=1, keepdim=True)).sum() / keep.sum().clamp(min=1.0)
                actor_loss = actor_loss + self.bc_weight * bc
                stats["bc_loss"].append(bc.item())
                stats["bc_kept"].append(keep.mean().item())
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            stats["critic_loss"].append(critic_loss.item())
            stats["ent_coef"].append(float(alpha))
            if step % self.target_update_interval == 0:
                with torch.no_grad():
                    for target, source in zip(self.critic_target.parameters(), self.critic.parameters()):
                        target.mul_(1 - self.tau).add_(source, alpha=self.tau)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in stats.items():
            if values:
                self.logger.record(f"train/{key}", float(np.mean(values)))
