"""Distributed rollouts: envs (rendering included) live in Ray actors, one learner steps them all.

:class:`RayVecEnv` is an SB3 ``VecEnv``: SAC, PPO, the shaping wrappers and the callbacks use it
unchanged. Its envs are spread over ``n_workers`` :class:`RolloutWorker` actors (several envs each);
``step_async`` sends every worker its slice of the action batch at once, so the workers step and render
in parallel -- on this machine's cores, or across a cluster (``ensure_ray(address)``: ``--ray-address``
joins one; without it Ray starts embedded here, nothing to set up).

Semantics are DummyVecEnv's (auto-reset, ``terminal_observation``, ``TimeLimit.truncated``,
``reset_infos``) with one difference that makes runs reproducible and recoverable: every episode is
reset with its own seed, ``seed + env_index + n_envs·episode`` (the first one honours ``seed()``).

**A worker that dies** (killed, node lost) is restarted by Ray (``max_restarts``) and the run goes on
with *no transition lost or duplicated*: the facade keeps, per env, the current episode's seed and the
actions taken in it (a few KB), rebuilds the lost envs in the restarted actor by resetting them with that
seed and replaying those actions, and then re-sends the action batch that was in flight. The envs are
deterministic given seed and actions (MuJoCo is), so the replayed state is the lost one and the learner
sees exactly the step it would have seen -- rather than a truncated episode with a made-up last
transition. A worker that cannot be brought back within its restarts raises a clear error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn


def actor_cpu_share(n_actors: int) -> float:
    """CPUs each of ``n_actors`` actors reserves: one, or an equal share when the cluster has fewer CPUs
    than actors (on a 2-core machine, two rollout workers and a reward labeller must all be placed,
    or the learner would wait forever for the one left unscheduled)."""
    import ray  # Ray (optional, the scale extra): prism-train imports this module without it

    total = float(ray.cluster_resources().get("CPU", 1.0))
    return min(1.0, total / max(1, n_actors))


def episode_seed(base_seed: int, env_index: int, episode: int, n_envs: int) -> int:
    """The reset seed of an env's ``episode``-th episode (0-based): distinct across envs and episodes."""
    return int(base_seed + env_index + n_envs * episode) % (2**31 - 1)


class WorkerRestarted(RuntimeError):
    """A worker was asked to step envs it never reset: Ray restarted it after the facade last heard
    from it (a kill that landed between two steps), so its envs must be restored first."""


class RolloutWorker:
    """A Ray actor hosting envs ``env_indices`` of a :class:`RayVecEnv`; steps them with auto-reset."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], env_indices: Sequence[int], n_envs: int) -> None:
        self.envs = [fn() for fn in env_fns]
        self.env_indices = list(env_indices)
        self.n_envs = int(n_envs)
        self.base_seed = 0
        self.episodes = [0] * len(self.envs)
        self.restored = False  # becomes True with the first reset/restore of this incarnation

    def ready(self) -> bool:
        return True

    def pid(self) -> int:
        """The worker process's id (a restart is a new process)."""
        return os.getpid()

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.envs[0].observation_space, self.envs[0].action_space

    def _seed(self, j: int) -> int:
        return episode_seed(self.base_seed, self.env_indices[j], self.episodes[j], self.n_envs)

    def reset(self, base_seed: int, episodes: Sequence[int]) -> list[tuple[Any, dict]]:
        """Reset every env to episode ``episodes[j]``'s seed; returns ``(obs, info)`` per env."""
        self.base_seed = int(base_seed)
        self.episodes = list(episodes)
        self.restored = True
        return [env.reset(seed=self._seed(j)) for j, env in enumerate(self.envs)]

    def restore(self, base_seed: int, episodes: Sequence[int], actions: Sequence[Sequence[Any]]) -> bool:
        """Rebuild the envs' states after a restart: reset with the episode's seed, replay its actions."""
        self.reset(base_seed, episodes)
        for env, history in zip(self.envs, actions):
            for action in history:
                env.step(action)
        return True

    def step(self, actions: Sequence[Any]) -> list[tuple[Any, float, bool, dict, dict | None]]:
        """One step of every env: ``(obs, reward, done, info, reset_info)``; finished envs are reset (their
        ``info`` holds ``terminal_observation``; ``reset_info`` is the new episode's, else None)."""
        if not self.restored:
            raise WorkerRestarted(f"rollout worker for envs {self.env_indices} was restarted; restore it first")
        out = []
        for j, (env, action) in enumerate(zip(self.envs, actions)):
            obs, reward, terminated, truncated, info = env.step(action)
            done = bool(terminated or truncated)
            info = dict(info)
            reset_info = None
            if done:
                info["TimeLimit.truncated"] = bool(truncated and not terminated)
                info["terminal_observation"] = obs
                self.episodes[j] += 1
                obs, reset_info = env.reset(seed=self._seed(j))
            out.append((obs, float(reward), done, info, reset_info))
        return out

    def call(self, method: str, local: Sequence[int], args: tuple, kwargs: dict) -> list[Any]:
        return [self.envs[j].get_wrapper_attr(method)(*args, **kwargs) for j in local]

    def get_attr(self, name: str, local: Sequence[int]) -> list[Any]:
        return [self.envs[j].get_wrapper_attr(name) for j in local]

    def set_attr(self, name: str, value: Any, local: Sequence[int]) -> None:
        for j in local:
            self.envs[j].set_wrapper_attr(name, value)

    def is_wrapped(self, wrapper_class: type, local: Sequence[int]) -> list[bool]:
        return [is_wrapped(self.envs[j], wrapper_class) for j in local]

    def render(self, local: Sequence[int]) -> list[Any]:
        return [self.envs[j].render() for j in local]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class RayVecEnv(VecEnv):
    """SB3 VecEnv over Ray actors (module docstring). ``env_fns`` must be picklable (cloudpickle).
    ``worker_cpus``: CPUs each worker reserves (None: :func:`actor_cpu_share`)."""

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        n_workers: int = 2,
        ray_address: str | None = None,
        max_restarts: int = 3,
        worker_cpus: float | None = None,
        restart_timeout_s: float = 120.0,
    ) -> None:
        import ray  # Ray (as above)

        from reward_models.serve import ensure_ray  # Ray (as above)

        n = len(env_fns)
        if n < 1:
            raise ValueError("RayVecEnv needs at least one env")
        if not 1 <= n_workers:
            raise ValueError(f"ray workers must be >= 1, got {n_workers}")
        ensure_ray(ray_address)
        n_workers = min(int(n_workers), n)
        self.groups = [list(g) for g in np.array_split(np.arange(n), n_workers)]
        self.worker_of = np.zeros(n, dtype=np.int64)
        self.local_of = np.zeros(n, dtype=np.int64)
        for w, group in enumerate(self.groups):
            self.worker_of[group] = w
            self.local_of[group] = np.arange(len(group))
        if worker_cpus is None:
            worker_cpus = actor_cpu_share(n_workers)
        self.restart_timeout_s = float(restart_timeout_s)
        self.max_restarts = int(max_restarts)
        actor = ray.remote(RolloutWorker).options(
            max_restarts=int(max_restarts), max_task_retries=0, num_cpus=float(worker_cpus)
        )
        self.workers = [actor.remote([env_fns[i] for i in g], g, n) for g in self.groups]
        obs_space, act_space = ray.get(self.workers[0].spaces.remote())
        super().__init__(n, obs_space, act_space)
        self.base_seed = 0
        self.episodes = np.zeros(n, dtype=np.int64)
        self.episode_actions: list[list[Any]] = [[] for _ in range(n)]
        self.n_worker_restarts = 0
        """Worker deaths recovered from (each one replayed and re-sent, see module docstring)."""
        self._started = False
        self._actions: np.ndarray | None = None
        self._futures: list[Any] = []

    # -- helpers -----------------------------------------------------------------------------

    def _stack(self, rows: list[Any]) -> VecEnvObs:
        if isinstance(self.observation_space, gym.spaces.Dict):
            return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in self.observation_space.spaces}
        return np.stack([np.asarray(r) for r in rows])

    def _recover(self, w: int, exc: BaseException) -> Any:
        """Bring worker ``w`` back after ``exc`` and re-send its slice of the in-flight actions."""
        import ray  # Ray (as above)

        deadline = time.monotonic() + self.restart_timeout_s
        group = self.groups[w]
        # Calls made while Ray restarts the actor wait for it; a few tries cover a death noticed late.
        for attempt in range(3):
            try:
                ray.get(
                    self.workers[w].restore.remote(
                        self.base_seed, [int(self.episodes[i]) for i in group], [self.episode_actions[i] for i in group]
                    ),
                    timeout=max(1.0, deadline - time.monotonic()),
                )
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as again:
                if attempt == 2 or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"rollout worker {w} (envs {group}) died and did not come back within its "
                        f"{self.max_restarts} restart(s) and {self.restart_timeout_s:g} s "
                        f"({type(again).__name__})"
                    ) from None
                time.sleep(0.2)
        self.n_worker_restarts += 1
        return self.workers[w].step.remote([self._actions[i] for i in group])

    # -- VecEnv API ----------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        import ray  # Ray (as above)

        if self._seeds and self._seeds[0] is not None:  # seed(s): episodes count from 0 again
            self.base_seed = int(self._seeds[0])
            self.episodes[:] = 0
        elif self._started:  # every env starts its next episode
            self.episodes += 1
        self._started = True
        self._reset_seeds()
        for history in self.episode_actions:
            history.clear()
        results = ray.get(
            [
                wk.reset.remote(self.base_seed, [int(self.episodes[i]) for i in g])
                for wk, g in zip(self.workers, self.groups)
            ]
        )
        rows = [r for group in results for r in group]
        self.reset_infos = [info for _, info in rows]
        self._reset_options()
        return self._stack([obs for obs, _ in rows])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self._futures = [wk.step.remote([self._actions[i] for i in g]) for wk, g in zip(self.workers, self.groups)]

    def step_wait(self) -> VecEnvStepReturn:
        import ray  # Ray (as above)

        results = []
        for w, future in enumerate(self._futures):
            try:
                results.append(ray.get(future))
            except (ray.exceptions.RayActorError, WorkerRestarted) as exc:  # died mid-step, or since the last one
                results.append(ray.get(self._recover(w, exc)))
        rows = [r for group in results for r in group]
        obs, rewards, dones, infos = (
            [],
            np.zeros(self.num_envs, dtype=np.float32),
            np.zeros(self.num_envs, dtype=bool),
            [],
        )
        for i, (o, r, done, info, reset_info) in enumerate(rows):
            obs.append(o)
            rewards[i], dones[i] = r, done
            if done:
                self.reset_infos[i] = reset_info or {}
                self.episodes[i] += 1
                self.episode_actions[i].clear()
            else:
                self.episode_actions[i].append(self._actions[i])
            infos.append(info)
        return self._stack(obs), rewards, dones, infos

    def close(self) -> None:
        import ray  # Ray (as above)

        for wk in self.workers:
            try:
                ray.get(wk.close.remote(), timeout=10)
            except Exception:  # a dead or hung worker has nothing left to close
                pass
            ray.kill(wk)
        self.workers = []

    def _targets(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        by_worker: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            by_worker.setdefault(int(self.worker_of[i]), []).append(int(self.local_of[i]))
        return by_worker

    def _gather(self, method: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        import ray  # Ray (as above)

        out: list[Any] = []
        for w, local in self._targets(indices).items():
            out += ray.get(getattr(self.workers[w], method).remote(*args, local))
        return out

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._gather("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        import ray  # Ray (as above)

        ray.get(
            [self.workers[w].set_attr.remote(attr_name, value, local) for w, local in self._targets(indices).items()]
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        import ray  # Ray (as above)

        out: list[Any] = []
        for w, local in self._targets(indices).items():
            out += ray.get(self.workers[w].call.remote(method_name, local, method_args, method_kwargs))
        return out

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        import ray  # Ray (as above)

        out: list[bool] = []
        for w, local in self._targets(indices).items():
            out += ray.get(self.workers[w].is_wrapped.remote(wrapper_class, local))
        return out

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._gather("render", None)


__all__ = ["RayVecEnv", "RolloutWorker", "actor_cpu_share", "episode_seed"]
