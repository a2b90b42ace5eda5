"""Asynchronous reward relabelling for off-policy training (SAC): env stepping never waits for the model.

The synchronous path (:class:`~policies.shaping.ShapedRewardVecEnv`) calls the reward model inside
``env.step``. Here the work is split in three:

* :class:`AsyncShapedRewardVecEnv` (env side) gathers each step's reward observation -- the reward
  cameras of every s' (terminal frames of finished episodes), the finished envs' new first frames, the
  tasks, ``terminated`` and the env's ``is_success`` -- into one :class:`RelabelStep` and hands it on in
  ``info[RELABEL_KEY]``; the reward it returns is a placeholder.
* :class:`AsyncRelabelReplayBuffer` / :class:`AsyncRelabelDictReplayBuffer` (SB3 replay buffers) store
  the transition with its reward *pending* (NaN) and send the frames on -- never into the SB3 arrays --
  in chunks of ``label_batch_steps`` steps to
* :class:`RewardLabeller`, a Ray actor, which encodes all frames of a chunk in **one** model call and
  then runs the same :class:`~policies.shaping.Potential` (tracker) and the same
  :func:`~policies.shaping.shaped_reward` as the synchronous wrapper, step by step, in order.

``sample`` draws only labelled transitions (it blocks only while none is labelled yet, at the start).

**Exact policy invariance.** The labeller sees the steps in exactly the order the env produced them (one
actor, chunks submitted in order), so Φ(s') of a step is cached and reused as Φ(s) of the next step of
the same episode, termination sets Φ(s') = 0 and truncation keeps Φ(s') -- the rules of
:func:`~policies.shaping.shaped_reward`, which is called, not re-implemented. For the same env, seed and
actions the rewards equal the synchronous wrapper's (tests/scale/test_async_relabel.py); only the batch
size of the encoder call differs, which can move a float in the last bits.

A label carries its step id; the buffer writes it only where that step still lives (a tiny buffer that
wrapped around meanwhile cannot be mislabelled). Saving the buffer (checkpoints) first waits for every
pending label, so a checkpoint holds only labelled transitions; the actor itself is not saved and a
resumed run starts a new one at its first ``env.reset``. ``max_pending_chunks`` bounds the frames in
flight: beyond it ``add`` waits for the oldest chunk (the model is then slower than the envs; the
figures in bench/scale_bench.py say by how much). Not supported: PPO (it needs rewards before its
update), ``query_every`` > 1, reward normalisation, demonstrations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from policies.shaping import (
    REWARD_VIEWS_KEY,
    SUCCESS_SOURCES,
    Potential,
    RewardSpec,
    ShapedRewardVecEnv,
    make_potential,
    shaped_reward,
)
from reward_models.registry import load_progress_model
from reward_models.tracker import FusionConfig, emb_take, obs_batch_size, obs_concat, obs_take

RELABEL_KEY = "relabel_step"
"""info key under which :class:`AsyncShapedRewardVecEnv` hands each step's :class:`RelabelStep` to the buffer."""


@dataclass
class RelabelStep:
    """What the labeller needs of one vectorised step (n envs); frames only, no policy observations."""

    next_obs: dict[str, np.ndarray]
    """Reward observation of every s' (n rows; terminal observations for finished envs)."""
    dones: np.ndarray
    terminated: np.ndarray
    env_success: np.ndarray
    """The env's ``is_success`` of each transition."""
    reset_obs: dict[str, np.ndarray] | None = None
    """First states of the finished envs' next episodes (n rows, finished rows used), or None."""
    reset_tasks: list[str] | None = None
    start_obs: dict[str, np.ndarray] | None = None
    """Set on the first step after ``env.reset()``: all envs' first states (n rows)..."""
    start_tasks: list[str] | None = None
    """... and their tasks."""


class DeferredPotential(Potential):
    """The env side of asynchronous shaping: names the cameras to gather; Φ is the labeller's job."""

    def __init__(self, cameras: Sequence[str]) -> None:
        self.cameras = tuple(cameras)

    def reset(self, obs, tasks):
        raise RuntimeError("DeferredPotential computes no Φ: the RewardLabeller does")

    def step(self, obs, done, reset_obs, reset_tasks):
        raise RuntimeError("DeferredPotential computes no Φ: the RewardLabeller does")


class AsyncShapedRewardVecEnv(ShapedRewardVecEnv):
    """Env side of asynchronous relabelling (module docstring): rewards come from the replay buffer.

    Returns reward 0 for every step (SB3 stores it; the buffer replaces it by the label) and puts the
    step's :class:`RelabelStep` into every env's info under :data:`RELABEL_KEY`."""

    def __init__(self, venv: VecEnv, cameras: Sequence[str], gamma: float, default_task: str = "") -> None:
        super().__init__(venv, DeferredPotential(cameras), gamma=gamma, default_task=default_task)
        self._start: tuple[dict[str, np.ndarray], list[str]] | None = None

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self._start = self._reset_batch(obs)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, _env_reward, dones, infos = self.venv.step_wait()
        dones = np.asarray(dones, dtype=bool)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        next_obs, reset_obs, reset_tasks = self._step_batches(obs, dones, infos)
        start_obs, start_tasks = self._start if self._start is not None else (None, None)
        self._start = None
        step = RelabelStep(
            next_obs=next_obs,
            dones=dones,
            terminated=dones & ~truncated,
            env_success=np.array([bool(info.get("is_success", False)) for info in infos]),
            reset_obs=reset_obs,
            reset_tasks=reset_tasks,
            start_obs=start_obs,
            start_tasks=start_tasks,
        )
        out = []
        for info in infos:
            info = dict(info)
            info.pop(REWARD_VIEWS_KEY, None)  # the frames travel in the RelabelStep only
            info[RELABEL_KEY] = step
            out.append(info)
        return obs, np.zeros(self.num_envs, dtype=np.float32), dones, out


# --------------------------------------------------------------------------------------------
# The labeller (a Ray actor; a plain object in tests of the maths).
# --------------------------------------------------------------------------------------------


def _row_key(obs: Mapping[str, np.ndarray], row: int) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(obs):
        value = np.ascontiguousarray(np.asarray(obs[key])[row])
        digest.update(f"{key}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.digest()


class PreEncodedModel:
    """A progress model whose ``encode`` answers from one batched call made beforehand (:meth:`prefetch`).

    Rows are matched by content, so the tracker's own sequence of ``encode`` calls is served unchanged;
    a call with a row not prefetched goes to the model itself. Everything else is the wrapped model's."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.n_batched_encodes = 0
        self.n_fallback_encodes = 0
        self._index: dict[bytes, int] = {}
        self._emb: Any = None

    def __getattr__(self, name: str) -> Any:  # cameras, model_id, hop_*, confidence, state_features, ...
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def prefetch(self, batches: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._index, self._emb = {}, None
        if not batches:
            return
        every = obs_concat(list(batches))
        unique: list[int] = []
        for row in range(obs_batch_size(every)):
            key = _row_key(every, row)
            if key not in self._index:
                self._index[key] = len(unique)
                unique.append(row)
        self._emb = self.model.encode(obs_take(every, np.asarray(unique)))
        self.n_batched_encodes += 1

    def encode(self, obs: Mapping[str, np.ndarray]) -> Any:
        rows = [self._index.get(_row_key(obs, r)) for r in range(obs_batch_size(obs))]
        if self._emb is None or any(r is None for r in rows):
            self.n_fallback_encodes += 1
            return self.model.encode(obs)
        return emb_take(self._emb, np.asarray(rows, dtype=np.int64))


@dataclass
class LabellerConfig:
    """How the labeller shapes: the same fields as the synchronous wrapper's."""

    reward: str
    """--reward spec (a model spec, oracle-model, oracle, naive-delta:SPEC, ...)."""
    n_envs: int
    gamma: float
    cameras: tuple[str, ...] = ()
    success_source: str = "env"
    success_reward: float = 1.0
    fusion: str = "fused"
    delta: float = 0.05
    device: str = "cpu"
    default_task: str = ""


class RewardLabeller:
    """Labels chunks of :class:`RelabelStep` in order with the shaped reward (module docstring)."""

    def __init__(self, config: LabellerConfig, model_factory: Callable[[], Any] | None = None) -> None:
        if config.success_source not in SUCCESS_SOURCES:
            raise ValueError(f"success_source must be one of {SUCCESS_SOURCES}, got {config.success_source!r}")
        self.config = config
        spec = RewardSpec.parse(config.reward)
        model = None
        if spec.potential == "model":
            if model_factory is not None:
                model = model_factory()
            else:
                model = load_progress_model(spec.model_spec, device=config.device)
        self.model = PreEncodedModel(model) if model is not None else None
        self.potential = make_potential(
            spec,
            config.n_envs,
            device=config.device,
            cameras=config.cameras,
            fusion=FusionConfig(mode=config.fusion, delta=config.delta),
            delta=config.delta,
            model=self.model,
        )
        self.naive = spec.naive
        self.phi = np.zeros(config.n_envs)
        self.started = False
        self.n_steps_labelled = 0

    def stats(self) -> dict[str, int]:
        """Steps labelled and model encode calls: batched (one per chunk) and fallback (rows not prefetched)."""
        return {
            "steps": self.n_steps_labelled,
            "batched_encodes": self.model.n_batched_encodes if self.model is not None else 0,
            "fallback_encodes": self.model.n_fallback_encodes if self.model is not None else 0,
        }

    def label(self, chunk: Sequence[tuple[int, RelabelStep]]) -> tuple[np.ndarray, np.ndarray]:
        """``(step ids (k,), shaped rewards (k, n_envs))`` of a chunk of consecutive steps."""
        if self.model is not None:
            batches = []
            for _, step in chunk:
                batches += [b for b in (step.start_obs, step.next_obs) if b is not None]
                if step.reset_obs is not None:
                    batches.append({k: np.asarray(v)[step.dones] for k, v in step.reset_obs.items()})
            self.model.prefetch(batches)
        ids = np.array([i for i, _ in chunk], dtype=np.int64)
        rewards = (
            np.stack([self._label_step(step) for _, step in chunk]) if chunk else np.zeros((0, self.config.n_envs))
        )
        self.n_steps_labelled += len(chunk)
        return ids, rewards

    def _label_step(self, step: RelabelStep) -> np.ndarray:
        cfg = self.config
        if step.start_obs is not None:
            tasks = step.start_tasks or [cfg.default_task] * cfg.n_envs
            self.phi = np.asarray(self.potential.reset(step.start_obs, tasks), dtype=np.float64).copy()
            self.started = True
        if not self.started:
            raise RuntimeError(
                "RewardLabeller got a step before the env's first reset (its RelabelStep had no start_obs)"
            )
        dones = np.asarray(step.dones, dtype=bool)
        phi_next, phi_start, model_success = self.potential.step(step.next_obs, dones, step.reset_obs, step.reset_tasks)
        phi_next = np.asarray(phi_next, dtype=np.float64)
        success = np.asarray(step.env_success if cfg.success_source == "env" else model_success, dtype=bool)
        rewards = shaped_reward(
            cfg.success_reward * success.astype(np.float64), self.phi, phi_next, step.terminated, cfg.gamma, self.naive
        )
        # Φ(s') becomes the next step's Φ(s); finished envs continue from their new s_0.
        self.phi = np.where(dones, np.asarray(phi_start, dtype=np.float64), phi_next)
        return rewards


# --------------------------------------------------------------------------------------------
# The replay buffers.
# --------------------------------------------------------------------------------------------


class _AsyncRelabelMixin:
    """Pending rewards, chunked shipping to the labeller actor, sampling of labelled steps only.
    Mixed in before an SB3 buffer class, whose constructor it calls with the SB3 arguments."""

    def __init__(
        self,
        buffer_size,
        observation_space,
        action_space,
        device="auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        labeller: LabellerConfig | dict,
        model_factory: Callable[[], Any] | None = None,
        label_batch_steps: int = 64,
        max_pending_chunks: int = 8,
        labeller_cpus: float = 1.0,
    ) -> None:
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        if getattr(self, "optimize_memory_usage", False):
            raise ValueError("asynchronous relabelling does not support optimize_memory_usage")
        if label_batch_steps < 1 or max_pending_chunks < 1:
            raise ValueError("label_batch_steps and max_pending_chunks must be >= 1")
        self.labeller_config = labeller if isinstance(labeller, LabellerConfig) else LabellerConfig(**labeller)
        if self.labeller_config.n_envs != self.n_envs:
            raise ValueError(f"labeller n_envs={self.labeller_config.n_envs} but the buffer has n_envs={self.n_envs}")
        self.model_factory = model_factory
        self.label_batch_steps = int(label_batch_steps)
        self.max_pending_chunks = int(max_pending_chunks)
        self.labeller_cpus = float(labeller_cpus)
        self.labelled = np.zeros(self.buffer_size, dtype=bool)
        self.step_ids = np.full(self.buffer_size, -1, dtype=np.int64)
        self.n_added = 0
        self.frontier = 0
        """Every step id below this one is labelled (or has been overwritten)."""
        self._chunk: list[tuple[int, RelabelStep]] = []
        self._pending: list[Any] = []
        self._actor: Any = None

    # -- labeller ------------------------------------------------------------------------------

    def _labeller(self) -> Any:
        if self._actor is None:
            import ray  # Ray (optional, the scale extra): only the labeller actor needs it

            from reward_models.serve import ensure_ray  # Ray (as above)

            ensure_ray()
            actor_cls = ray.remote(RewardLabeller).options(num_cpus=self.labeller_cpus, max_restarts=0)
            self._actor = actor_cls.remote(self.labeller_config, self.model_factory)
        return self._actor

    def _ship(self) -> None:
        if not self._chunk:
            return
        self._pending.append(self._labeller().label.remote(self._chunk))
        self._chunk = []
        while len(self._pending) > self.max_pending_chunks:  # backpressure: the model is behind
            self._apply_ready(self._pending[:1], wait=True)

    def _apply_ready(self, refs: list[Any], wait: bool) -> None:
        import ray  # Ray (optional, the scale extra): only the labeller actor needs it

        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=None if wait else 0)
        for ref in ready:
            try:
                ids, rewards = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayActorError as exc:
                raise RuntimeError(
                    f"the reward labeller actor died ({str(exc).splitlines()[0]}); "
                    "its tracker state is lost, restart training from the last checkpoint"
                ) from None
            self._pending.remove(ref)
            pos = ids % self.buffer_size
            live = self.step_ids[pos] == ids  # a wrapped-around buffer may have replaced the step
            self.rewards[pos[live]] = rewards[live].astype(self.rewards.dtype)
            self.labelled[pos[live]] = True
        # pending chunks finish in order, so the labelled ids form a prefix
        while self.frontier < self.n_added and (
            self.labelled[self.frontier % self.buffer_size]
            or self.step_ids[self.frontier % self.buffer_size] != self.frontier
        ):
            self.frontier += 1

    def collect_labels(self, wait: bool = False) -> None:
        """Take in the labels that are ready; ``wait``: first send the open chunk, then wait for all."""
        if wait:
            self._ship()
        self._apply_ready(list(self._pending), wait=wait)

    @property
    def n_pending(self) -> int:
        """Transitions (vectorised steps) stored but not labelled yet."""
        return self.n_added - self.frontier

    # -- SB3 API ---------------------------------------------------------------------------------

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        step = infos[0].get(RELABEL_KEY) if infos else None
        if not isinstance(step, RelabelStep):
            raise ValueError(
                f"{type(self).__name__}.add needs info[{RELABEL_KEY!r}] from AsyncShapedRewardVecEnv "
                "(train with the asynchronous shaping env)"
            )
        pos = self.pos
        self.labelled[pos] = False
        self.step_ids[pos] = self.n_added
        super().add(obs, next_obs, action, np.full(np.shape(reward), np.nan, dtype=np.float32), done, infos)
        self._chunk.append((self.n_added, step))
        self.n_added += 1
        if len(self._chunk) >= self.label_batch_steps:
            self._ship()
        if self._pending:
            self._apply_ready(list(self._pending), wait=False)

    def sample(self, batch_size: int, env=None):
        self.collect_labels(wait=False)
        if self.frontier == 0 or self.frontier <= self.n_added - self.buffer_size:
            self.collect_labels(wait=True)  # the very first samples: wait for the first labels
        low = max(0, self.n_added - self.buffer_size)
        ids = np.random.randint(low, self.frontier, size=batch_size)
        pos = ids % self.buffer_size
        if not self.labelled[pos].all():  # pragma: no cover - guarded by the frontier
            raise RuntimeError("asynchronous relabelling: sampled an unlabelled transition")
        return self._get_samples(pos, env=env)

    # -- pickling (checkpoints) ------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        if getattr(self, "_actor", None) is not None:
            self.collect_labels(wait=True)  # a saved buffer holds labelled transitions only
        state = dict(self.__dict__)
        state.update(_chunk=[], _pending=[], _actor=None)
        return state


class AsyncRelabelReplayBuffer(_AsyncRelabelMixin, ReplayBuffer):
    """SB3 ``ReplayBuffer`` with asynchronous reward labels (module docstring). ``replay_buffer_kwargs``:
    ``labeller`` (a :class:`LabellerConfig` or its fields), optional ``model_factory``,
    ``label_batch_steps``, ``max_pending_chunks``, ``labeller_cpus``."""


class AsyncRelabelDictReplayBuffer(_AsyncRelabelMixin, DictReplayBuffer):
    """As :class:`AsyncRelabelReplayBuffer`, for Dict observations (pixel policies)."""


def async_buffer_class(obs_mode: str) -> type:
    """The asynchronous replay buffer for a policy's observation mode (state or pixels)."""
    return AsyncRelabelDictReplayBuffer if obs_mode == "pixels" else AsyncRelabelReplayBuffer


__all__ = [
    "RELABEL_KEY",
    "AsyncRelabelDictReplayBuffer",
    "AsyncRelabelReplayBuffer",
    "AsyncShapedRewardVecEnv",
    "DeferredPotential",
    "LabellerConfig",
    "PreEncodedModel",
    "RelabelStep",
    "RewardLabeller",
    "async_buffer_class",
]
