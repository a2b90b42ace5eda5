"""Policy-invariant reward shaping from progress models, inside a stable-baselines3 ``VecEnv``.

The learner sees, per env and step (docs/method.md § Potential-based shaping)::

    r = r_success + γ·Φ(s') − Φ(s)

* γ is the **learner's** discount (Ng et al. 1999: only then is the optimal policy unchanged).
* On true termination Φ(s') = 0, so an episode's shaped return telescopes to
  Σ γ^t r_success,t − Φ(s_0). On time-limit truncation Φ(s_T) is kept, computed from the
  terminal observation (after an auto-reset the returned obs already belongs to the next
  episode): the return is Σ γ^t r_success,t + γ^T Φ(s_T) − Φ(s_0), and a learner that bootstraps
  through truncation (SB3 does) sees the same values it would have seen without the cut.
* Φ(s') of a step is cached and reused as Φ(s) of the next step -- never re-sampled -- so a noisy
  model still telescopes exactly.
* All envs' frames go through **one** batched reward-model call per step, in the main process
  (never one model copy per subprocess).

Reward variants (``--reward``):

``sparse``
    r = r_success only.
``oracle``
    Φ = the simulator's ground-truth progress (``info["progress"]``), shaped as above: the
    upper bound for any learned progress model.
``grm:CKPT`` / ``clip:...`` / ``vlm:...`` / ``oracle-model``
    Φ from a :class:`~reward_models.base.ProgressModel` (via
    ``reward_models.registry.load_progress_model``) tracked by a
    :class:`~reward_models.tracker.ProgressTracker`. ``oracle-model`` runs the oracle through the
    same model + tracker path (useful to test that path; ``oracle`` skips it).
``naive-delta`` / ``naive-delta:SPEC``
    r = r_success + Φ(s') − Φ(s): no γ and no terminal rule -- the "semantic trap" ablation.
    Bare ``naive-delta`` uses the oracle Φ, so the only difference to ``oracle`` is the rule.

With Φ ∈ [0, 1] and success ending the episode, the successful step pays r_success − Φ(s): with
r_success = 1 that is ≈ 0, because the progress has already been paid on the way (the return is the
same, only its timing moved). A larger ``success_reward`` (e.g. 2) keeps success worth more than its
approach and leaves the shaping invariant; naive-delta's Φ(s_T) ≈ 1 pays the same step about as much,
but by a rule that is not invariant.

**Pessimistic potential** (``--reward grm+pessimism=K``, any model spec with the ``+pessimism=K``
suffix): Φ_p = max(Φ − K·spread, 0), the spread being the tracker's ``phi_std``
(:mod:`reward_models.confidence`). A policy trained on a learned Φ seeks the states the model
over-rates; where those are states the model is unsure of, Φ_p pays less for them. K = 0 (the
default) is the plain potential, bit for bit. Invariance: Ng et al.'s proof needs Φ to be a
function of the state, and the tracker's Φ (and its spread) depend on the episode's history
through the incremental chain, pessimistic or not. What keeps the optimal policy here is the same
for both: each step's Φ_p(s') is cached and reused as the next step's Φ_p(s), so the shaped return
telescopes *exactly* to the true return − Φ_p(s_0) on termination (Φ_p = 0 at every episode start,
where the spread is 0), whatever values the history produced in between. On truncation the
bootstrapped γ^T·Φ_p(s_T) remains -- the term pessimism is meant to shrink.

r_success comes from the env's ``info["is_success"]`` (``success_source="env"``) or from the
model (``"model"``: Φ ≥ 1 − δ, as in Robo-Dopamine; it is paid on every step the model believes
the task is done, which is a state reward and keeps the shaping policy-invariant).

**Normalising or clipping the shaped reward** (e.g. ``VecNormalize(norm_reward=True)``) rescales
each step's reward by running statistics that change during training, so Σγ^t F_t no longer
telescopes and the policy-invariance guarantee is lost; it is off by default.

Logging keeps ground truth and shaping apart: ``Monitor`` (inside this wrapper) still reports the
env's own return and ``is_success``; this wrapper adds ``info["shaping"]`` each step (shaped
reward, Φ(s'), model success) and ``info["shaped_episode"]`` when an episode ends.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper

from reward_models.confidence import pessimistic_progress
from reward_models.registry import load_progress_model
from reward_models.tracker import FusionConfig, ProgressTracker

REWARD_VIEWS_KEY = "reward_views"
"""info key under which :class:`RewardViewsWrapper` puts the reward cameras' frames."""

SUCCESS_SOURCES = ("env", "model")

PESSIMISM_SUFFIX = "+pessimism="
"""``--reward SPEC+pessimism=K``: shape with Φ − K·spread (module docstring)."""


# --------------------------------------------------------------------------------------------
# The reward rule itself (pure, vectorised): the one function both the wrapper and the proofs use.
# --------------------------------------------------------------------------------------------


def shaped_reward(
    r_success: np.ndarray,
    phi_prev: np.ndarray,
    phi_next: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
    naive: bool = False,
) -> np.ndarray:
    """Per-env reward of one transition.

    ``phi_prev`` = Φ(s) (cached from the previous step), ``phi_next`` = Φ(s') (for finished
    episodes, Φ of the terminal observation). Policy-invariant: r_success + γ·Φ'(s') − Φ(s) with
    Φ'(s') = 0 where ``terminated``. ``naive``: r_success + Φ(s') − Φ(s) (no γ, no terminal rule).
    """
    r_success = np.asarray(r_success, dtype=np.float64)
    phi_prev = np.asarray(phi_prev, dtype=np.float64)
    phi_next = np.asarray(phi_next, dtype=np.float64)
    if naive:
        return r_success + phi_next - phi_prev
    phi_next = np.where(np.asarray(terminated, dtype=bool), 0.0, phi_next)
    return r_success + gamma * phi_next - phi_prev


@dataclass(frozen=True)
class RewardSpec:
    """A parsed ``--reward`` string."""

    potential: str
    """``none`` (sparse), ``progress`` (ground-truth info["progress"]) or ``model``."""
    naive: bool = False
    """Use the naive Φ(s') − Φ(s) rule instead of policy-invariant shaping."""
    model_spec: str | None = None
    """Spec for ``reward_models.registry.load_progress_model`` when ``potential == "model"``."""
    text: str = ""
    """The original string."""
    pessimism: float = 0.0
    """K of the pessimistic potential Φ − K·spread (``+pessimism=K`` suffix; model potentials only)."""

    @classmethod
    def parse(cls, text: str) -> RewardSpec:
        raw = text.strip()
        if not raw:
            raise ValueError("--reward is empty; use sparse, oracle, naive-delta[:SPEC], grm:CKPT, clip:..., vlm:...")
        base, sep, option = raw.rpartition(PESSIMISM_SUFFIX)
        if sep:
            try:
                k = float(option)
            except ValueError:
                raise ValueError(
                    f"--reward {raw!r}: {PESSIMISM_SUFFIX}K needs a number K >= 0, got {option!r}"
                ) from None
            if not np.isfinite(k) or k < 0:
                raise ValueError(f"--reward {raw!r}: {PESSIMISM_SUFFIX}K needs a finite K >= 0, got {option!r}")
            spec = cls.parse(base)
            if spec.potential != "model":
                raise ValueError(
                    f"--reward {raw!r}: {PESSIMISM_SUFFIX}K applies to reward-model potentials "
                    f"(grm, grm:CKPT, ...), not to {base!r}"
                )
            return cls(spec.potential, spec.naive, spec.model_spec, raw, k)
        naive = False
        inner = raw
        if raw == "naive-delta" or raw.startswith("naive-delta:"):
            naive = True
            inner = raw.partition(":")[2] or "oracle"
            if inner in ("sparse", "naive-delta") or inner.startswith("naive-delta:"):
                raise ValueError(
                    f"--reward {raw!r}: naive-delta needs a potential (oracle or a model spec), not {inner!r}"
                )
        if inner == "sparse":
            return cls("none", False, None, raw)
        if inner == "oracle":
            return cls("progress", naive, None, raw)
        if inner == "oracle-model":
            return cls("model", naive, "oracle", raw)
        if inner == "grm":  # the pretrained GRM shipped with the package
            return cls("model", naive, "grm", raw)
        if ":" not in inner:
            raise ValueError(
                f"--reward {raw!r} is not a known variant; use sparse, oracle, oracle-model, "
                "naive-delta[:SPEC] or a model spec such as grm:PATH/TO/CKPT, clip:..., vlm:..."
            )
        return cls("model", naive, inner, raw)


# --------------------------------------------------------------------------------------------
# Potentials: where Φ comes from. Each gets batched per-env observations and makes at most one
# model call per step.
# --------------------------------------------------------------------------------------------


class Potential(abc.ABC):
    """Φ for ``n`` parallel episodes."""

    cameras: tuple[str, ...] = ()
    """Camera views this potential needs rendered (empty: none)."""
    n_model_calls: int = 0
    """Batched reward-model calls made so far."""

    @abc.abstractmethod
    def reset(self, obs: Mapping[str, np.ndarray], tasks: Sequence[str]) -> np.ndarray:
        """Start all episodes from ``obs`` (batched, n rows); return Φ(s_0) (n,)."""

    @abc.abstractmethod
    def step(
        self,
        obs: Mapping[str, np.ndarray],
        done: np.ndarray,
        reset_obs: Mapping[str, np.ndarray] | None,
        reset_tasks: Sequence[str] | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Φ of ``obs`` (terminal observations for ``done`` envs), then restart done envs from
        ``reset_obs`` (n rows; only done rows used). Returns ``(phi_next, phi_start, success)``:
        Φ(s') (n,), Φ of the new episodes' first states (n,; meaningful where ``done``) and the
        potential's success estimate for s' (n,) bool."""


class ZeroPotential(Potential):
    """Φ ≡ 0: the ``sparse`` variant."""

    def __init__(self, n: int) -> None:
        self.n = n

    def reset(self, obs, tasks):
        return np.zeros(self.n)

    def step(self, obs, done, reset_obs, reset_tasks):
        z = np.zeros(self.n)
        return z, z.copy(), np.zeros(self.n, dtype=bool)


class ProgressInfoPotential(Potential):
    """Φ = ground-truth progress from the env's ``info["progress"]`` (the ``oracle`` variant)."""

    def __init__(self, n: int, delta: float = 0.05) -> None:
        self.n = n
        self.delta = delta

    @staticmethod
    def _progress(obs: Mapping[str, np.ndarray], what: str) -> np.ndarray:
        if "progress" not in obs:
            raise KeyError(
                f"the oracle reward needs info['progress'] from the env ({what}); this env does not report it"
            )
        return np.asarray(obs["progress"], dtype=np.float64).reshape(-1)

    def reset(self, obs, tasks):
        return self._progress(obs, "reset")

    def step(self, obs, done, reset_obs, reset_tasks):
        phi = self._progress(obs, "step")
        start = self._progress(reset_obs, "reset") if reset_obs is not None and np.any(done) else np.zeros(self.n)
        return phi, start, phi >= 1.0 - self.delta


class ModelPotential(Potential):
    """Φ from a progress model through a :class:`~reward_models.tracker.ProgressTracker` (one
    encoder call per step for all envs, terminal and restart frames included)."""

    def __init__(self, model: Any, n: int, cameras: Sequence[str], fusion: Any = None, pessimism: float = 0.0) -> None:
        if not pessimism >= 0:
            raise ValueError(f"pessimism must be >= 0, got {pessimism}")
        self.model = model
        self.n = n
        self.cameras = tuple(cameras)
        self.tracker = ProgressTracker(model, n=n, fusion=fusion)
        self.pessimism = float(pessimism)
        """K of Φ_p = max(Φ − K·spread, 0); 0 is the plain tracker Φ."""

    @property
    def n_model_calls(self) -> int:  # type: ignore[override]
        return self.tracker.n_encode_calls

    def reset(self, obs, tasks):
        self.tracker.reset(np.arange(self.n), list(tasks), start_obs=obs)
        return self.tracker.phi.copy()

    def step(self, obs, done, reset_obs, reset_tasks):
        done = np.asarray(done, dtype=bool)
        if done.any():
            phi = self.tracker.step(obs, reset_mask=done, reset_obs=reset_obs, reset_tasks=reset_tasks)
        else:
            phi = self.tracker.step(obs)
        if self.pessimism:
            # The model claims success only when even the pessimistic reading reaches 1 − δ.
            phi = pessimistic_progress(phi, self.tracker.phi_std, self.pessimism)
        success = phi >= 1.0 - self.tracker.fusion.delta
        # The tracker restarts finished episodes at Φ = 0 (its documented contract).
        return phi, np.zeros(self.n), success


# --------------------------------------------------------------------------------------------
# Frames for the reward model: rendered in the env process, only the views the policy lacks.
# --------------------------------------------------------------------------------------------


class RewardViewsWrapper(gym.Wrapper):
    """Adds the reward model's camera frames to ``info[REWARD_VIEWS_KEY]`` on reset and step.

    Views the policy already observes (keys of a Dict observation) are *not* rendered again: the
    shaping wrapper reads those from the observation (or ``terminal_observation``). The rest are
    rendered once via ``env.unwrapped.render_cameras`` in the env's own process, so SubprocVecEnv
    workers render in parallel and the main process only runs the model.
    """

    def __init__(self, env: gym.Env, cameras: Sequence[str]) -> None:
        super().__init__(env)
        in_obs = set(env.observation_space.spaces) if isinstance(env.observation_space, gym.spaces.Dict) else set()
        self.cameras = tuple(cameras)
        self.cameras_to_render = tuple(c for c in self.cameras if c not in in_obs)
        if self.cameras_to_render and not hasattr(env.unwrapped, "render_cameras"):
            raise AttributeError(
                f"{type(env.unwrapped).__name__} has no render_cameras(); cannot render reward views {self.cameras_to_render}"
            )

    def _add_views(self, info: dict) -> dict:
        if self.cameras_to_render:
            views = self.env.unwrapped.render_cameras(self.cameras_to_render)
            info = dict(info)
            info[REWARD_VIEWS_KEY] = {c: np.asarray(views[c]) for c in self.cameras_to_render}
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._add_views(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._add_views(info)


# --------------------------------------------------------------------------------------------
# The VecEnv wrapper.
# --------------------------------------------------------------------------------------------


class ShapedRewardVecEnv(VecEnvWrapper):
    """Replaces the env reward by the shaped reward of :func:`shaped_reward` (module docstring).

    ``potential`` supplies Φ; ``gamma`` must be the learner's discount. ``query_every`` > 1 calls
    the potential only every k-th step (and whenever an episode ends), holding Φ in between; the
    held values are what is cached, so telescoping stays exact.
    """

    def __init__(
        self,
        venv: VecEnv,
        potential: Potential,
        gamma: float,
        naive: bool = False,
        success_source: str = "env",
        success_reward: float = 1.0,
        query_every: int = 1,
        default_task: str = "",
    ) -> None:
        super().__init__(venv)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if success_source not in SUCCESS_SOURCES:
            raise ValueError(f"success_source must be one of {SUCCESS_SOURCES}, got {success_source!r}")
        if query_every < 1:
            raise ValueError(f"query_every must be >= 1, got {query_every}")
        self.potential = potential
        self.gamma = float(gamma)
        self.naive = bool(naive)
        self.success_source = success_source
        self.success_reward = float(success_reward)
        self.query_every = int(query_every)
        self.default_task = default_task
        n = self.num_envs
        self._phi = np.zeros(n)  # cached Φ(s) of each env's current state
        self._model_success = np.zeros(n, dtype=bool)
        self._steps_since_query = 0
        self._ep_return = np.zeros(n)
        self._ep_disc_return = np.zeros(n)
        self._ep_len = np.zeros(n, dtype=np.int64)
        self._ep_phi0 = np.zeros(n)
        self._ep_model_success = np.zeros(n, dtype=bool)
        self._ep_phi_max = np.zeros(n)

    # -- observation plumbing ----------------------------------------------------------------

    def _views_of(self, obs_i: Any, info_views: Mapping[str, np.ndarray] | None, info: Mapping) -> dict[str, Any]:
        """One env's reward observation: its cameras (from obs or rendered views) + progress/state."""
        views: dict[str, Any] = {}
        for cam in self.potential.cameras:
            if isinstance(obs_i, Mapping) and cam in obs_i:
                views[cam] = np.asarray(obs_i[cam])
            elif info_views is not None and cam in info_views:
                views[cam] = np.asarray(info_views[cam])
            else:
                raise KeyError(
                    f"reward camera {cam!r} is neither in the observation nor in info[{REWARD_VIEWS_KEY!r}]; "
                    "wrap each env in RewardViewsWrapper(env, cameras) (policies.envs does)"
                )
        if "progress" in info:
            views["progress"] = float(info["progress"])
        if isinstance(obs_i, Mapping) and "state" in obs_i:
            views["state"] = np.asarray(obs_i["state"])
        elif isinstance(obs_i, np.ndarray):
            views["state"] = obs_i
        return views

    @staticmethod
    def _batch(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        keys = [k for k in rows[0] if all(k in r for r in rows)]
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in keys}

    @staticmethod
    def _obs_row(obs: VecEnvObs, i: int) -> Any:
        if isinstance(obs, dict):
            return {k: v[i] for k, v in obs.items()}
        if isinstance(obs, tuple):
            return obs[i]
        return obs[i]

    def _task(self, info: Mapping) -> str:
        return str(info.get("task", self.default_task))

    # -- VecEnv API ---------------------------------------------------------------------------

    def _reset_batch(self, obs: VecEnvObs) -> tuple[dict[str, np.ndarray], list[str]]:
        """The reward observation (n rows) and tasks of the envs' first states after ``reset``."""
        reset_infos = list(getattr(self.venv, "reset_infos", [{}] * self.num_envs))
        rows = [
            self._views_of(self._obs_row(obs, i), reset_infos[i].get(REWARD_VIEWS_KEY), reset_infos[i])
            for i in range(self.num_envs)
        ]
        return self._batch(rows), [self._task(info) for info in reset_infos]

    def _step_batches(
        self, obs: VecEnvObs, dones: np.ndarray, infos: Sequence[Mapping]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, list[str] | None]:
        """What :meth:`Potential.step` takes besides ``dones``: the reward observation of every s'
        (terminal observations of finished envs), and the finished envs' new first states and tasks
        (None when no env finished)."""
        n = self.num_envs
        reset_infos = list(getattr(self.venv, "reset_infos", [{}] * n))
        next_rows, reset_rows = [], []
        for i in range(n):
            info = infos[i]
            if dones[i]:
                # s' is the terminal observation; the returned obs is the next episode's s_0.
                terminal = info.get("terminal_observation")
                next_rows.append(self._views_of(terminal, info.get(REWARD_VIEWS_KEY), info))
                rinfo = reset_infos[i] or {}
                reset_rows.append(self._views_of(self._obs_row(obs, i), rinfo.get(REWARD_VIEWS_KEY), rinfo))
            else:
                next_rows.append(self._views_of(self._obs_row(obs, i), info.get(REWARD_VIEWS_KEY), info))
                reset_rows.append(next_rows[-1])  # placeholder row, ignored (not done)
        if not dones.any():
            return self._batch(next_rows), None, None
        reset_tasks = [self._task(reset_infos[i] or {}) for i in np.flatnonzero(dones)]
        return self._batch(next_rows), self._batch(reset_rows), reset_tasks

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        start_obs, tasks = self._reset_batch(obs)
        self._phi = np.asarray(self.potential.reset(start_obs, tasks), dtype=np.float64).copy()
        self._model_success[:] = False
        self._steps_since_query = 0
        self._ep_return[:] = 0.0
        self._ep_disc_return[:] = 0.0
        self._ep_len[:] = 0
        self._ep_phi0 = self._phi.copy()
        self._ep_phi_max = self._phi.copy()
        self._ep_model_success[:] = False
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, _env_reward, dones, infos = self.venv.step_wait()
        n = self.num_envs
        dones = np.asarray(dones, dtype=bool)
        truncated = np.array([bool(infos[i].get("TimeLimit.truncated", False)) for i in range(n)])
        terminated = dones & ~truncated
        infos = list(infos)

        self._steps_since_query += 1
        query = bool(dones.any()) or self._steps_since_query >= self.query_every
        if query:
            self._steps_since_query = 0
            next_obs, reset_obs, reset_tasks = self._step_batches(obs, dones, infos)
            phi_next, phi_start, model_success = self.potential.step(next_obs, dones, reset_obs, reset_tasks)
            phi_next = np.asarray(phi_next, dtype=np.float64)
            phi_start = np.asarray(phi_start, dtype=np.float64)
            self._model_success = np.asarray(model_success, dtype=bool)
        else:
            phi_next = self._phi.copy()  # hold Φ between queries
            phi_start = np.zeros(n)

        if self.success_source == "env":
            success = np.array([bool(infos[i].get("is_success", False)) for i in range(n)])
        else:
            success = self._model_success.copy()
        r_success = self.success_reward * success.astype(np.float64)
        rewards = shaped_reward(r_success, self._phi, phi_next, terminated, self.gamma, self.naive)

        self._ep_disc_return += (self.gamma**self._ep_len) * rewards
        self._ep_return += rewards
        self._ep_len += 1
        self._ep_model_success |= self._model_success
        self._ep_phi_max = np.maximum(self._ep_phi_max, phi_next)
        for i in range(n):
            info = dict(infos[i])
            info.pop(REWARD_VIEWS_KEY, None)  # frames are consumed here; don't keep them alive downstream
            info["shaping"] = {
                "reward": float(rewards[i]),
                "phi": float(phi_next[i]),
                "phi_prev": float(self._phi[i]),
                "model_success": bool(self._model_success[i]),
                "r_success": float(r_success[i]),
            }
            if dones[i]:
                info["shaped_episode"] = {
                    "r": float(self._ep_return[i]),
                    "discounted_r": float(self._ep_disc_return[i]),
                    "l": int(self._ep_len[i]),
                    "phi_start": float(self._ep_phi0[i]),
                    "phi_final": float(phi_next[i]),
                    "phi_max": float(self._ep_phi_max[i]),
                    "model_success": bool(self._ep_model_success[i]),
                    "terminated": bool(terminated[i]),
                }
            infos[i] = info

        # Cache: Φ(s') becomes the next step's Φ(s); finished envs continue from their new s_0.
        self._phi = np.where(dones, phi_start, phi_next)
        self._ep_return[dones] = 0.0
        self._ep_disc_return[dones] = 0.0
        self._ep_len[dones] = 0
        self._ep_phi0[dones] = phi_start[dones]
        self._ep_phi_max[dones] = phi_start[dones]
        self._ep_model_success[dones] = False
        if dones.any():
            self._model_success[dones] = False
        return obs, rewards.astype(np.float32), dones, infos

    @property
    def n_model_calls(self) -> int:
        return int(self.potential.n_model_calls)


def make_potential(
    spec: RewardSpec,
    n: int,
    device: str = "cpu",
    cameras: Sequence[str] | None = None,
    fusion: Any = None,
    delta: float = 0.05,
    model: Any = None,
) -> Potential:
    """Build the :class:`Potential` for a parsed reward spec.

    ``model`` overrides loading (an already-built :class:`ProgressModel`). ``cameras`` are the
    views to feed the model (default: the model's own ``cameras``).
    """
    if spec.potential == "none":
        return ZeroPotential(n)
    if spec.potential == "progress":
        return ProgressInfoPotential(n, delta=delta)
    if model is None:
        model = load_progress_model(spec.model_spec, device=device)
    cams = tuple(cameras) if cameras else tuple(getattr(model, "cameras", None) or ())
    if not cams and spec.model_spec != "oracle":
        raise ValueError(
            f"reward model {spec.model_spec!r} declares no cameras; pass the views to render (--reward-cameras)"
        )
    if fusion is None:
        fusion = FusionConfig(delta=delta)
    return ModelPotential(model, n, cams, fusion, pessimism=spec.pessimism)
