"""Progress reconstruction from hops: incremental, forward- and backward-anchored, fused.

:class:`ProgressTracker` follows N parallel episodes online (one :meth:`ProgressModel.encode` call
per :meth:`~ProgressTracker.step`, references cached as embeddings, all 3N hops in one
:meth:`ProgressModel.hop_from_embeddings` call). :func:`track_episode` does the same offline for a
whole video, batched.

Reconstruction (docs/method.md § From hops to progress), per episode with start state s_0 and
optional goal state s_g:

* incremental  Φ_I(t) = Φ_I(t−1) + (1 − Φ_I(t−1))·H  if H ≥ 0 else Φ_I(t−1)·(1 + H),  H = H(s_{t−1}, s_t)
* forward      Φ_F(t) = H(s_0, s_t)           (clipped to [0, 1])
* backward     Φ_B(t) = 1 + H(s_g, s_t)       (needs a goal reference)

Fusion (``mode="fused"``): the paper averages the three estimates and down-weights them by the
anchor consistency w = exp(−α·Δ²), Δ = |Φ_B − Φ_F| / (mean(Φ_B, Φ_F) + ε). We use w to *gate*
between the mean and the incremental estimate: Φ* = w·mean(Φ_I, Φ_F, Φ_B) + (1 − w)·Φ_I. Why:
when the goal looks like the start, the two anchors saturate in opposite directions (Φ_F ≈ 0 and
Φ_B ≈ 1 at the very same frame), so a plain mean never reaches 1 − δ and success is never
detected; the incremental chain never compares against the references and survives. Large
anchor disagreement therefore hands control to the incremental estimate. Without a goal
reference there is only one anchor, and w comes from its disagreement with the incremental chain
(``gate_forward``, the default): Δ = |Φ_F − Φ_I| / (mean(Φ_F, Φ_I) + ε). Measured on held-out sim
episodes with a colour-canonical GRM, the forward anchor alone hedges at the end of a successful
push (final Φ_F 0.5-0.95) while Φ_I reaches 1; gating lifted push 3-class completion from 81 % to
94 % and success recall from 0.20 to 0.80 at one more false success in six failures, leaving the
other tasks' accuracy and false-success rates unchanged. (With the earlier colour-blind GRM the
same gate hurt -- the incremental chain drifted up on wrong-target reaches -- hence the switch
``gate_forward=False``: w = 1, the plain mean of Φ_I and Φ_F.)

A goal reference is also *checked* once per episode (``fused`` mode): the model's own hop
H(s_0 → s_g) must read as progress (≥ ``goal_min_hop``). A goal that looks like the start fails
the check (measured: H ≤ 0 for goal = start frame, H ≥ 0.69 for real goal frames of other
episodes); such an episode gets no goal context at all (the reference would tell the model
"nothing is left to do", which collapsed every hop on push) and Φ* = Φ_I for it -- the
estimate that never compares against a reference.

Spread (``phi_std``, post-hoc, no retraining): every hop comes with the std of the model's own
hop distribution (:meth:`ProgressModel.hop_and_std_from_embeddings`; 0 for models without one).
The incremental chain propagates it to first order (:func:`incremental_variance`: the variances
add, shrunk by how much each hop overwrites the past). Φ* is then read as a *mixture* of the
estimates with the fusion's own coefficients a_j (Σ a_j = 1, Φ* = Σ a_j Φ_j), and the law of total
variance gives Var Φ* = Σ a_j Var Φ_j + Σ a_j (Φ_j − Φ*)²: the estimates' own uncertainty plus
their disagreement (:func:`fused_spread`). Both are capped at 0.25, the largest variance any
quantity in [0, 1] can have. The cost is one reduction over logits the model computes anyway.
With a ``confidence`` calibration on the model (:mod:`reward_models.confidence`) each frame also
gets an out-of-distribution distance of its state embedding (``ood_distance``; NaN without one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reward_models.base import NON_IMAGE_KEYS, Observation, ProgressModel
from reward_models.confidence import MAX_PHI_VARIANCE, ood_distance

FUSION_MODES = ("fused", "mean", "incremental", "forward", "backward")


@dataclass
class FusionConfig:
    """How the per-episode progress estimates are combined into Φ."""

    mode: str = "fused"
    """``fused`` (consistency-gated mean, falls back to incremental when anchors disagree),
    ``mean`` (the plain mean of the available estimates, as in the paper without the weight),
    ``incremental``, ``forward`` or ``backward`` (a single estimate, for ablations)."""
    alpha: float = 20.0
    """Sharpness α of the anchor-consistency weight w = exp(−α·Δ²)."""
    delta: float = 0.05
    """Success tolerance δ: an episode counts as successful once Φ ≥ 1 − δ."""
    gate_forward: bool = True
    """``fused`` only, episodes without a goal reference: take w from the disagreement of Φ_F with
    Φ_I; False: w = 1, the plain mean of the two (see the module docstring for the measurements)."""
    eps: float = 1e-6
    """ε in the relative anchor disagreement Δ = |Φ_B − Φ_F| / (mean + ε)."""
    goal_min_hop: float = 0.5
    """``fused`` only: a goal reference is used when the model reads start → goal as at least
    this much progress; below it (the goal looks like the start) the episode is tracked without
    goal context and Φ* = Φ_I. Set it to -1 to trust every goal."""

    @property
    def checks_goals(self) -> bool:
        """Whether goal references are checked (start → goal hop ≥ ``goal_min_hop``) before use."""
        return self.mode == "fused" and self.goal_min_hop > -1.0

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise ValueError(f"FusionConfig.mode must be one of {FUSION_MODES}, got {self.mode!r}")
        if self.alpha < 0:
            raise ValueError(f"FusionConfig.alpha must be >= 0, got {self.alpha}")
        if not 0.0 <= self.delta < 1.0:
            raise ValueError(f"FusionConfig.delta must be in [0, 1), got {self.delta}")


# --------------------------------------------------------------------------------------------
# The maths, shared by the online tracker and the offline trace (pure numpy, vectorised).
# --------------------------------------------------------------------------------------------


def incremental_update(phi_prev: np.ndarray, hop: np.ndarray) -> np.ndarray:
    """One incremental reconstruction step; stays in [0, 1] for hops in [-1, 1]."""
    phi_prev = np.clip(np.asarray(phi_prev, dtype=np.float64), 0.0, 1.0)
    hop = np.clip(np.asarray(hop, dtype=np.float64), -1.0, 1.0)
    return np.clip(np.where(hop >= 0, phi_prev + (1.0 - phi_prev) * hop, phi_prev * (1.0 + hop)), 0.0, 1.0)


def forward_progress(hop_from_start: np.ndarray) -> np.ndarray:
    """Φ_F = H(s_0, s_t) clipped to [0, 1]."""
    return np.clip(np.asarray(hop_from_start, dtype=np.float64), 0.0, 1.0)


def backward_progress(hop_from_goal: np.ndarray) -> np.ndarray:
    """Φ_B = 1 + H(s_goal, s_t) clipped to [0, 1]."""
    return np.clip(1.0 + np.asarray(hop_from_goal, dtype=np.float64), 0.0, 1.0)


def fuse(
    incremental: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray | None,
    config: FusionConfig,
    uninformative_goal: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Combine the estimates into Φ (same shape) and return ``(phi, weight)``.

    ``backward`` may be ``None`` or hold NaN where no goal reference exists; those entries use
    only the incremental and forward estimates. ``uninformative_goal`` (bool, broadcastable)
    marks entries whose goal reference failed the start → goal check: in ``fused`` mode they
    get Φ* = Φ_I with w = 0.
    """
    inc = np.asarray(incremental, dtype=np.float64)
    fwd = np.asarray(forward, dtype=np.float64)
    bwd = np.full_like(inc, np.nan) if backward is None else np.asarray(backward, dtype=np.float64)
    has_goal = ~np.isnan(bwd)
    if config.mode == "backward" and not np.all(has_goal):
        raise ValueError("FusionConfig.mode='backward' needs a goal reference for every episode")

    # Anchor disagreement (backward vs forward) needs both anchors; a single anchor has w = 1.
    bwd_or_fwd = np.where(has_goal, bwd, inc if config.gate_forward else fwd)
    rel = np.abs(bwd_or_fwd - fwd) / (0.5 * (bwd_or_fwd + fwd) + config.eps)
    weight = np.exp(-config.alpha * rel**2)
    mean = np.where(has_goal, (inc + fwd + np.nan_to_num(bwd)) / 3.0, (inc + fwd) / 2.0)

    if config.mode == "fused":
        if uninformative_goal is not None:
            weight = np.where(np.asarray(uninformative_goal, dtype=bool), 0.0, weight)
        phi = weight * mean + (1.0 - weight) * inc
    elif config.mode == "mean":
        phi = mean
    elif config.mode == "incremental":
        phi = inc
    elif config.mode == "forward":
        phi = fwd
    else:
        phi = bwd
    return np.clip(phi, 0.0, 1.0), weight


def incremental_variance(
    var_prev: np.ndarray, phi_prev: np.ndarray, hop: np.ndarray, hop_std: np.ndarray
) -> np.ndarray:
    """Variance of Φ_I after one :func:`incremental_update`, to first order (delta method):
    Var = (∂Φ/∂Φ_prev)²·Var_prev + (∂Φ/∂H)²·σ_H², with ∂Φ/∂Φ_prev = 1 − |H| and ∂Φ/∂H = 1 − Φ_prev
    (progress) or Φ_prev (regress). Capped at :data:`MAX_PHI_VARIANCE`."""
    phi_prev = np.clip(np.asarray(phi_prev, dtype=np.float64), 0.0, 1.0)
    hop = np.clip(np.asarray(hop, dtype=np.float64), -1.0, 1.0)
    d_hop = np.where(hop >= 0, 1.0 - phi_prev, phi_prev)
    var = (1.0 - np.abs(hop)) ** 2 * np.asarray(var_prev, dtype=np.float64) + d_hop**2 * np.asarray(
        hop_std, dtype=np.float64
    ) ** 2
    return np.minimum(var, MAX_PHI_VARIANCE)


def fusion_coefficients(
    weight: np.ndarray, has_goal: np.ndarray, config: FusionConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a_I, a_F, a_B): Φ* = a_I·Φ_I + a_F·Φ_F + a_B·Φ_B before clipping, as :func:`fuse` computes it."""
    w = np.asarray(weight, dtype=np.float64)
    k = np.where(has_goal, 3.0, 2.0)
    zero, one = np.zeros_like(w), np.ones_like(w)
    if config.mode == "fused":
        return w / k + (1.0 - w), w / k, np.where(has_goal, w / k, 0.0)
    if config.mode == "mean":
        return one / k, one / k, np.where(has_goal, one / k, 0.0)
    if config.mode == "incremental":
        return one, zero, zero
    if config.mode == "forward":
        return zero, one, zero
    return zero, zero, one


def fused_spread(
    phi: np.ndarray,
    estimates: tuple[np.ndarray, np.ndarray, np.ndarray],
    variances: tuple[np.ndarray, np.ndarray, np.ndarray],
    weight: np.ndarray,
    config: FusionConfig,
) -> np.ndarray:
    """Std of Φ* by the law of total variance over the fusion's mixture (module docstring).
    ``estimates``/``variances`` are (Φ_I, Φ_F, Φ_B) and their variances; NaN Φ_B = no goal."""
    inc, fwd, bwd = (np.asarray(e, dtype=np.float64) for e in estimates)
    has_goal = ~np.isnan(bwd)
    coeffs = fusion_coefficients(weight, has_goal, config)
    mix = sum(a * np.nan_to_num(e) for a, e in zip(coeffs, (inc, fwd, bwd)))
    var = np.zeros_like(mix)
    for a, e, v in zip(coeffs, (inc, fwd, bwd), variances):
        var = var + a * (np.nan_to_num(np.asarray(v, dtype=np.float64)) + (np.nan_to_num(e) - mix) ** 2)
    return np.sqrt(np.minimum(var, MAX_PHI_VARIANCE))


# --------------------------------------------------------------------------------------------
# Embedding containers: numpy arrays, torch tensors, or dicts of either (model-defined).
# --------------------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def emb_take(emb: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of an embedding batch."""
    if isinstance(emb, Mapping):
        return {k: emb_take(v, rows) for k, v in emb.items()}
    if _is_torch(emb):
        import torch  # torch: only for torch embeddings (an oracle's are numpy)

        return emb[torch.as_tensor(np.asarray(rows, dtype=np.int64), device=emb.device)]
    return np.asarray(emb)[np.asarray(rows, dtype=np.int64)]


def emb_concat(parts: Sequence[Any]) -> Any:
    """Concatenate embedding batches along dim 0."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: emb_concat([p[k] for p in parts]) for k in first}
    if _is_torch(first):
        import torch  # torch: only for torch embeddings (an oracle's are numpy)

        return torch.cat(list(parts), dim=0)
    return np.concatenate([np.asarray(p) for p in parts], axis=0)


def emb_assign(dst: Any, rows: np.ndarray, src: Any) -> Any:
    """``dst[rows] = src`` (returns the updated container; numpy/torch are updated in place)."""
    if isinstance(dst, Mapping):
        return {k: emb_assign(dst[k], rows, src[k]) for k in dst}
    if _is_torch(dst):
        import torch  # torch: only for torch embeddings (an oracle's are numpy)

        dst[torch.as_tensor(np.asarray(rows, dtype=np.int64), device=dst.device)] = src.to(dst.dtype)
        return dst
    dst[np.asarray(rows, dtype=np.int64)] = src
    return dst


def emb_copy(emb: Any) -> Any:
    if isinstance(emb, Mapping):
        return {k: emb_copy(v) for k, v in emb.items()}
    return emb.clone() if _is_torch(emb) else np.array(emb, copy=True)


def emb_len(emb: Any) -> int:
    if isinstance(emb, Mapping):
        return emb_len(next(iter(emb.values())))
    return int(emb.shape[0])


def obs_batch_size(obs: Observation) -> int:
    """Number of rows B of an observation (checked consistent across keys)."""
    sizes = {k: len(v) for k, v in obs.items()}
    if not sizes:
        raise ValueError("observation is empty: expected camera name -> uint8 (B, H, W, 3)")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"observation keys have different batch sizes: {sizes}")
    return next(iter(sizes.values()))


def obs_take(obs: Observation, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[rows] for k, v in obs.items()}


def obs_concat(parts: Sequence[Observation]) -> dict[str, np.ndarray]:
    """Concatenate observations row-wise; only keys present in every part are kept."""
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    if not keys:
        raise ValueError(f"observations to batch share no key: {[sorted(p) for p in parts]}")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts], axis=0) for k in keys}


def _hops_and_std(
    model: ProgressModel, before: Any, after: Any, tasks: list, start: Any, goal: Any
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`ProgressModel.hop_and_std_from_embeddings` as float64 arrays (duck-typed models
    without it give std 0)."""
    call = getattr(model, "hop_and_std_from_embeddings", None)
    if call is None:
        hops = np.asarray(model.hop_from_embeddings(before, after, tasks, start, goal), dtype=np.float64)
        return hops, np.zeros_like(hops)
    hops, std = call(before, after, tasks, start, goal)
    return np.asarray(hops, dtype=np.float64), np.asarray(std, dtype=np.float64)


def _ood_or_nan(model: ProgressModel, embeddings: Any, rows: int) -> np.ndarray:
    dist = ood_distance(model, embeddings)
    return np.full(rows, np.nan) if dist is None else dist


# --------------------------------------------------------------------------------------------
# Online tracker for N parallel episodes.
# --------------------------------------------------------------------------------------------


class ProgressTracker:
    """Online Φ for ``n`` parallel episodes with one encoder forward per :meth:`step`.

    Typical use inside a vectorised env loop::

        tracker = ProgressTracker(model, n=num_envs)
        tracker.reset(range(num_envs), tasks, start_obs=first_obs)        # optional goal_obs=
        phi = tracker.step(obs_before_autoreset, reset_mask=dones, reset_obs=obs_after_autoreset)

    After a step, ``phi``/``success``/``components`` describe the observation passed to it (for
    finished envs, their terminal observation); finished envs then restart from ``reset_obs``
    with Φ = 0, so the next step continues the new episode.
    """

    def __init__(self, model: ProgressModel, n: int = 1, fusion: FusionConfig | None = None) -> None:
        if n < 1:
            raise ValueError(f"ProgressTracker needs n >= 1 episodes, got {n}")
        self.model = model
        self.n = int(n)
        self.fusion = fusion or FusionConfig()
        self.n_encode_calls = 0
        """How many times :meth:`ProgressModel.encode` was called (one per reset/step)."""
        self.n_hop_calls = 0
        """How many times :meth:`ProgressModel.hop_from_embeddings` was called."""
        self._tasks: list[str | None] = [None] * self.n
        self._active = np.zeros(self.n, dtype=bool)
        self._has_goal: bool | None = None
        self._start: Any = None
        self._goal: Any = None
        self._prev: Any = None
        self._chain = np.zeros(self.n)  # incremental Φ the next step builds on
        self._inc = np.zeros(self.n)
        self._fwd = np.zeros(self.n)
        self._bwd = np.full(self.n, np.nan)
        self._weight = np.ones(self.n)
        self._goal_ok = np.ones(self.n, dtype=bool)  # goal reference passed the start -> goal check
        self.phi = np.zeros(self.n)
        """(n,) fused Φ of the last observation of each episode."""
        self._chain_var = np.zeros(self.n)  # variance of the incremental chain the next step builds on
        self._hop_std = np.zeros((3, self.n))  # (incremental, forward, backward) hop stds of the last step
        self.phi_std = np.zeros(self.n)
        """(n,) spread of ``phi`` (module docstring § Spread); 0 at an episode's start."""
        self.ood_distance = np.full(self.n, np.nan)
        """(n,) out-of-distribution distance of the last observation (NaN: no calibration)."""

    # -- public state -------------------------------------------------------------------------

    @property
    def success(self) -> np.ndarray:
        """(n,) bool: Φ ≥ 1 − δ."""
        return self.phi >= 1.0 - self.fusion.delta

    @property
    def components(self) -> dict[str, np.ndarray]:
        """Per-episode estimates behind ``phi``: incremental, forward, backward (NaN without a
        goal, or with one that failed the start -> goal check), weight (anchor consistency w)
        and goal_used (whether the episode's goal reference is in use)."""
        return {
            "incremental": self._inc.copy(),
            "forward": self._fwd.copy(),
            "backward": self._bwd.copy(),
            "weight": self._weight.copy(),
            "goal_used": self._goal_ok & bool(self._has_goal),
            "phi_std": self.phi_std.copy(),
        }

    @property
    def ood(self) -> np.ndarray:
        """(n,) bool: the last observation is out of the calibration data's distribution."""
        cal = getattr(self.model, "confidence", None)
        if cal is None or cal.ood is None:
            return np.zeros(self.n, dtype=bool)
        return cal.ood.is_out(self.ood_distance)

    @property
    def tasks(self) -> list[str | None]:
        return list(self._tasks)

    # -- episode control ----------------------------------------------------------------------

    def _encode(self, obs: Observation) -> Any:
        self.n_encode_calls += 1
        return self.model.encode(obs)

    def _check_rows(self, obs: Observation, rows: int, what: str) -> None:
        b = obs_batch_size(obs)
        if b != rows:
            raise ValueError(f"{what} has {b} rows, expected {rows}")

    def reset(
        self,
        indices: Sequence[int] | np.ndarray,
        tasks: Sequence[str] | str,
        start_obs: Observation,
        goal_obs: Observation | None = None,
    ) -> None:
        """(Re)start episodes ``indices`` from ``start_obs`` (one row per index, Φ = 0).

        ``goal_obs`` (one row per index) enables the backward anchor; whether a goal is used is
        a property of the whole tracker (all episodes have one or none), since all hops of a
        step go through one batched model call. Start and goal are encoded in one call.
        """
        idx = np.atleast_1d(
            np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64)
        )
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.n or len(set(idx.tolist())) != idx.size:
            raise ValueError(f"reset indices must be distinct and in [0, {self.n}), got {idx.tolist()}")
        tasks = [tasks] * idx.size if isinstance(tasks, str) else list(tasks)
        if len(tasks) != idx.size:
            raise ValueError(f"reset got {len(tasks)} tasks for {idx.size} episodes")
        has_goal = goal_obs is not None
        all_reset = np.all(np.isin(np.arange(self.n), idx)) and idx.size == self.n
        if self._has_goal is not None and has_goal != self._has_goal and not all_reset:
            raise ValueError(
                "goal references must be given for all episodes or for none: this tracker "
                f"{'has' if self._has_goal else 'has no'} goals; reset all {self.n} episodes "
                "together to change that"
            )
        self._check_rows(start_obs, idx.size, "start_obs")
        if has_goal:
            self._check_rows(goal_obs, idx.size, "goal_obs")
            emb = self._encode(obs_concat([start_obs, goal_obs]))
            start = emb_take(emb, np.arange(idx.size))
            goal = emb_take(emb, np.arange(idx.size, 2 * idx.size))
        else:
            start, goal = self._encode(start_obs), None
        if self._start is None or all_reset:
            # First reset (or a full one): allocate the per-env caches from this batch's layout.
            template = emb_take(start, np.zeros(self.n, dtype=np.int64))
            self._start = emb_assign(emb_copy(template), idx, start)
            self._prev = emb_assign(emb_copy(template), idx, start)
            self._goal = emb_assign(emb_copy(template), idx, goal) if has_goal else None
            self._has_goal = has_goal
            self._active[:] = False
        else:
            self._start = emb_assign(self._start, idx, start)
            self._prev = emb_assign(self._prev, idx, start)
            if has_goal:
                self._goal = emb_assign(self._goal, idx, goal)
        for i, t in zip(idx.tolist(), tasks):
            self._tasks[i] = t
        self._goal_ok[idx] = True
        if has_goal and self.fusion.checks_goals:
            self._goal_ok[idx] = self._goal_check(start, goal, tasks)
        self._active[idx] = True
        self._chain[idx] = 0.0
        self._inc[idx] = 0.0
        self._fwd[idx] = 0.0
        self._bwd[idx] = np.where(self._goal_ok[idx], 0.0, np.nan) if self._has_goal else np.nan
        self._weight[idx] = 1.0
        self.phi[idx] = 0.0
        self._chain_var[idx] = 0.0
        self.phi_std[idx] = 0.0
        self.ood_distance[idx] = _ood_or_nan(self.model, start, idx.size)

    def step(
        self,
        obs: Observation,
        reset_mask: np.ndarray | None = None,
        reset_obs: Observation | None = None,
        reset_tasks: Sequence[str] | None = None,
        reset_goal_obs: Observation | None = None,
    ) -> np.ndarray:
        """Advance all n episodes by the observation ``obs`` (n rows); return their Φ (n,).

        ``reset_mask`` (n,) bool marks episodes that end with ``obs``; they restart from
        ``reset_obs`` -- either n rows (rows of unmasked envs ignored, e.g. the auto-reset
        observations of a VecEnv) or one row per masked env. ``reset_tasks`` (one per masked
        env) changes their instruction; ``reset_goal_obs`` (rows as ``reset_obs``) their goal
        reference, otherwise the goal is kept. Exactly one encode call encodes ``obs`` and all
        reset references together.
        """
        if not np.all(self._active):
            missing = np.flatnonzero(~self._active).tolist()
            raise RuntimeError(f"ProgressTracker.step before reset of episodes {missing}: call reset() first")
        self._check_rows(obs, self.n, "obs")
        mask = np.zeros(self.n, dtype=bool) if reset_mask is None else np.asarray(reset_mask, dtype=bool).reshape(-1)
        if mask.shape != (self.n,):
            raise ValueError(f"reset_mask must have shape ({self.n},), got {mask.shape}")
        ridx = np.flatnonzero(mask)
        parts: list[Observation] = [obs]
        n_reset_rows = 0
        if ridx.size:
            if reset_obs is None:
                raise ValueError("reset_mask marks finished episodes but reset_obs was not given")
            parts.append(self._select_reset_rows(reset_obs, ridx, "reset_obs"))
            n_reset_rows = ridx.size
            if reset_goal_obs is not None:
                if not self._has_goal:
                    raise ValueError("reset_goal_obs given but this tracker was reset without goals")
                parts.append(self._select_reset_rows(reset_goal_obs, ridx, "reset_goal_obs"))
            if reset_tasks is not None and len(reset_tasks) != ridx.size:
                raise ValueError(f"reset_tasks has {len(reset_tasks)} entries for {ridx.size} finished episodes")

        emb = self._encode(obs_concat(parts) if len(parts) > 1 else obs)
        cur = emb_take(emb, np.arange(self.n)) if len(parts) > 1 else emb

        # All hops of this step in one model call: per episode [incremental | forward | backward]
        # rows, plus a start -> goal check row per new goal. Episodes whose goal failed that
        # check are asked without goal context, which needs a second call only when a step mixes
        # both kinds of episode.
        n = self.n
        with_goal = self._goal_ok if self._has_goal else np.zeros(n, dtype=bool)
        g_idx, u_idx = np.flatnonzero(with_goal), np.flatnonzero(~with_goal)
        check_rows = ridx.size if (reset_goal_obs is not None and self.fusion.checks_goals) else 0
        tasks_arr = np.array(self._tasks, dtype=object)
        inc_h, fwd_h, bwd_h = np.zeros(n), np.zeros(n), np.full(n, np.nan)
        hop_std = np.zeros((3, n))
        check_h = np.zeros(0)
        if g_idx.size or check_rows:
            prev, start, goal, now = (self._rows(e, g_idx) for e in (self._prev, self._start, self._goal, cur))
            tasks = list(tasks_arr[g_idx]) * 3
            before, after, s_ctx, g_ctx = [prev, start, goal], [now] * 3, [start] * 3, [goal] * 3
            if check_rows:
                new_start = emb_take(emb, np.arange(n, n + check_rows))
                new_goal = emb_take(emb, np.arange(n + check_rows, n + 2 * check_rows))
                before, after = before + [new_start], after + [new_goal]
                s_ctx, g_ctx = s_ctx + [new_start], g_ctx + [new_goal]
                tasks += list(reset_tasks) if reset_tasks is not None else list(tasks_arr[ridx])
            h, sd = self._hop_call(emb_concat(before), emb_concat(after), tasks, emb_concat(s_ctx), emb_concat(g_ctx))
            m = g_idx.size
            inc_h[g_idx], fwd_h[g_idx], bwd_h[g_idx] = h[:m], h[m : 2 * m], h[2 * m : 3 * m]
            hop_std[:, g_idx] = sd[: 3 * m].reshape(3, m)
            check_h = h[3 * m :]
        if u_idx.size:
            prev, start, now = (self._rows(e, u_idx) for e in (self._prev, self._start, cur))
            h, sd = self._hop_call(
                emb_concat([prev, start]),
                emb_concat([now, now]),
                list(tasks_arr[u_idx]) * 2,
                emb_concat([start, start]),
                None,
            )
            inc_h[u_idx], fwd_h[u_idx] = h[: u_idx.size], h[u_idx.size :]
            hop_std[:2, u_idx] = sd.reshape(2, u_idx.size)

        inc_var = incremental_variance(self._chain_var, self._chain, inc_h, hop_std[0])
        self._inc = incremental_update(self._chain, inc_h)
        self._fwd = forward_progress(fwd_h)
        self._bwd = backward_progress(bwd_h)  # NaN stays NaN where no goal is used
        uninformative = (~self._goal_ok) if self._has_goal else None
        self.phi, self._weight = fuse(self._inc, self._fwd, self._bwd, self.fusion, uninformative)
        self.phi_std = fused_spread(
            self.phi,
            (self._inc, self._fwd, self._bwd),
            (inc_var, hop_std[1] ** 2, hop_std[2] ** 2),
            self._weight,
            self.fusion,
        )
        self.ood_distance = _ood_or_nan(self.model, cur, n)
        self._chain = self._inc.copy()
        self._chain_var = inc_var
        self._prev = cur

        if ridx.size:
            new_start = emb_take(emb, np.arange(n, n + n_reset_rows))
            self._start = emb_assign(self._start, ridx, new_start)
            self._prev = emb_assign(emb_copy(self._prev), ridx, new_start)
            if reset_goal_obs is not None:
                self._goal = emb_assign(
                    self._goal, ridx, emb_take(emb, np.arange(n + n_reset_rows, n + 2 * n_reset_rows))
                )
                if check_rows:
                    self._goal_ok[ridx] = check_h >= self.fusion.goal_min_hop
            if reset_tasks is not None:
                for i, t in zip(ridx.tolist(), reset_tasks):
                    self._tasks[i] = t
            # The new episodes start at Φ = 0; ``phi``/``components`` keep reporting the
            # terminal values of the finished ones until the next step.
            self._chain[ridx] = 0.0
            self._chain_var[ridx] = 0.0
        return self.phi.copy()

    def _rows(self, emb: Any, idx: np.ndarray) -> Any:
        """Rows ``idx`` of a per-episode cache; no copy in the usual case of all episodes."""
        return emb if idx.size == self.n else emb_take(emb, idx)

    def _hop_call(self, before: Any, after: Any, tasks: list, start: Any, goal: Any) -> tuple[np.ndarray, np.ndarray]:
        """Hops and their stds (rows,), one model call."""
        rows = emb_len(before)
        hops, std = _hops_and_std(self.model, before, after, tasks, start, goal)
        self.n_hop_calls += 1
        if hops.shape != (rows,) or std.shape != (rows,):
            raise ValueError(
                f"{type(self.model).__name__}.hop_from_embeddings returned shape {hops.shape}, expected ({rows},)"
            )
        return hops, std

    def _goal_check(self, start: Any, goal: Any, tasks: Sequence[str]) -> np.ndarray:
        """(rows,) bool: the model reads start -> goal as progress (the goal is informative)."""
        return self._hop_call(start, goal, list(tasks), start, goal)[0] >= self.fusion.goal_min_hop

    def _select_reset_rows(self, reset_obs: Observation, ridx: np.ndarray, what: str) -> dict[str, np.ndarray]:
        b = obs_batch_size(reset_obs)
        if b == self.n:
            return obs_take(reset_obs, ridx)
        if b == ridx.size:
            return dict(reset_obs)
        raise ValueError(f"{what} has {b} rows; expected {self.n} (all envs) or {ridx.size} (finished envs)")


# --------------------------------------------------------------------------------------------
# Offline: a whole video at once.
# --------------------------------------------------------------------------------------------


@dataclass
class ProgressTrace:
    """Φ of every frame of one episode, with the estimates behind it."""

    phi: np.ndarray
    """(T,) fused progress."""
    incremental: np.ndarray
    """(T,) incremental estimate."""
    forward: np.ndarray
    """(T,) forward-anchored estimate."""
    backward: np.ndarray
    """(T,) backward-anchored estimate (NaN without a goal reference)."""
    weight: np.ndarray
    """(T,) anchor-consistency weight w."""
    hops: np.ndarray
    """(T,) incremental hops H(s_{t−1}, s_t) (hops[0] = 0)."""
    delta: float = 0.05
    """Success tolerance used for ``success``."""
    meta: dict[str, Any] = field(default_factory=dict)
    phi_std: np.ndarray | None = None
    """(T,) spread of ``phi`` (module docstring § Spread); 0 at the start frame."""
    ood_distance: np.ndarray | None = None
    """(T,) out-of-distribution distance of each frame's state embedding (None: no calibration)."""
    ood_threshold: float | None = None
    """Distance above which a frame counts as out of distribution (None: no calibration)."""
    state_features: np.ndarray | None = None
    """(T, F) :meth:`ProgressModel.state_features` of every frame (``return_features=True``)."""

    @property
    def ood(self) -> np.ndarray:
        """(T,) bool: frames unlike the calibration data (all False without a calibration)."""
        if self.ood_distance is None or self.ood_threshold is None:
            return np.zeros(len(self), dtype=bool)
        return self.ood_distance > self.ood_threshold

    @property
    def success(self) -> np.ndarray:
        """(T,) bool: Φ ≥ 1 − δ."""
        return self.phi >= 1.0 - self.delta

    @property
    def final(self) -> float:
        return float(self.phi[-1])

    @property
    def success_frame(self) -> int | None:
        """First frame at which success is detected, or ``None``."""
        hits = np.flatnonzero(self.success)
        return int(hits[0]) if hits.size else None

    def __len__(self) -> int:
        return int(self.phi.shape[0])


def _episode_to_obs(episode: Any, cameras: Sequence[str] | None) -> tuple[dict[str, np.ndarray], str | None]:
    frames = dict(episode.frames)
    if cameras is not None:
        missing = [c for c in cameras if c not in frames]
        if missing:
            raise ValueError(
                f"episode {getattr(episode, 'episode_index', '?')} has no camera(s) {missing}; it has {sorted(frames)}"
            )
        frames = {c: frames[c] for c in cameras}
    if getattr(episode, "progress", None) is not None:
        frames["progress"] = np.asarray(episode.progress, dtype=np.float64)
    if getattr(episode, "state", None) is not None:
        frames["state"] = np.asarray(episode.state, dtype=np.float32)
    return frames, getattr(episode, "task", None)


def track_episode(
    model: ProgressModel,
    episode: Any,
    task: str | None = None,
    goal_obs: Observation | None = None,
    start_obs: Observation | None = None,
    fusion: FusionConfig | None = None,
    batch_size: int = 64,
    cameras: Sequence[str] | None = None,
    return_features: bool = False,
) -> ProgressTrace:
    """Φ for every frame of one video, batched (each frame encoded exactly once).

    ``episode`` is an :class:`episodes.Episode` (its ``progress``/``state`` are passed along for
    privileged models) or an observation mapping of (T, ...) arrays. ``task`` defaults to the
    episode's instruction. The start reference defaults to frame 0; ``goal_obs`` (one row)
    enables the backward anchor. ``cameras`` restricts the views given to the model.
    ``return_features`` keeps every frame's state features in the trace (for calibration).
    """
    fusion = fusion or FusionConfig()
    if isinstance(episode, Mapping):
        obs = dict(episode)
        if cameras is not None:
            obs = {k: v for k, v in obs.items() if k in cameras or k in NON_IMAGE_KEYS}
        ep_task = None
    else:
        obs, ep_task = _episode_to_obs(episode, cameras)
    task = task if task is not None else ep_task
    if task is None:
        raise ValueError("track_episode needs a task instruction (the episode has none)")
    T = obs_batch_size(obs)
    if T < 1:
        raise ValueError("track_episode got an episode with no frames")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    chunks = [model.encode(obs_take(obs, np.arange(s, min(T, s + batch_size)))) for s in range(0, T, batch_size)]
    emb = emb_concat(chunks) if len(chunks) > 1 else chunks[0]
    start = model.encode(start_obs) if start_obs is not None else emb_take(emb, np.array([0]))
    goal = model.encode(goal_obs) if goal_obs is not None else None
    if emb_len(start) != 1 or (goal is not None and emb_len(goal) != 1):
        raise ValueError("start_obs and goal_obs must have exactly one row")
    goal_check_hop = None
    if goal is not None and fusion.checks_goals:
        goal_check_hop = float(np.asarray(model.hop_from_embeddings(start, goal, [task], start, goal))[0])
        if goal_check_hop < fusion.goal_min_hop:
            goal = None  # looks like the start: tracked without goal context, Φ* = Φ_I (see fuse)
    uninformative_goal = goal_check_hop is not None and goal is None

    # Hops for frames 1..T-1: incremental (t-1 -> t), forward (start -> t), backward (goal -> t).
    hops_inc = np.zeros(T)
    hops_fwd = np.zeros(T)
    hops_bwd = np.full(T, np.nan)
    std_h = np.zeros((3, T))  # hop stds: incremental, forward, backward
    if start_obs is not None:
        first = 0  # an external start reference: frame 0 also gets anchored estimates
    else:
        first = 1
    k = 3 if goal is not None else 2
    for s in range(first, T, batch_size):
        t = np.arange(s, min(T, s + batch_size))
        b = t.size
        prev_rows = emb_take(emb, np.maximum(t - 1, 0))
        cur = emb_take(emb, t)
        starts = emb_take(start, np.zeros(b, dtype=np.int64))
        parts_before = [prev_rows, starts]
        goals = None
        if goal is not None:
            goals = emb_take(goal, np.zeros(b, dtype=np.int64))
            parts_before.append(goals)
        h, sd = _hops_and_std(
            model,
            emb_concat(parts_before),
            emb_concat([cur] * k),
            [task] * (k * b),
            emb_concat([starts] * k),
            emb_concat([goals] * k) if goals is not None else None,
        )
        hops_inc[t] = np.where(t > 0, h[:b], 0.0)
        hops_fwd[t] = h[b : 2 * b]
        std_h[0, t] = np.where(t > 0, sd[:b], 0.0)
        std_h[1, t] = sd[b : 2 * b]
        if goal is not None:
            hops_bwd[t] = h[2 * b :]
            std_h[2, t] = sd[2 * b :]

    inc = np.zeros(T)
    inc_var = np.zeros(T)
    for t in range(1, T):
        inc[t] = incremental_update(inc[t - 1], hops_inc[t])
        inc_var[t] = incremental_variance(inc_var[t - 1], inc[t - 1], hops_inc[t], std_h[0, t])
    fwd = forward_progress(hops_fwd)
    bwd = backward_progress(hops_bwd) if goal is not None else np.full(T, np.nan)
    if goal is not None and first == 1:
        bwd[0] = 0.0  # the start frame is Φ = 0 by definition, as in the online tracker
    phi, weight = fuse(inc, fwd, bwd if goal is not None else None, fusion, uninformative_goal or None)
    phi_std = fused_spread(phi, (inc, fwd, bwd), (inc_var, std_h[1] ** 2, std_h[2] ** 2), weight, fusion)
    if first == 1:
        phi[0], weight[0], phi_std[0] = 0.0, 1.0, 0.0
    cal = getattr(model, "confidence", None)
    return ProgressTrace(
        phi=phi,
        incremental=inc,
        forward=fwd,
        backward=bwd,
        weight=weight,
        hops=hops_inc,
        delta=fusion.delta,
        meta={
            "task": task,
            "model_id": model.model_id,
            "fusion": fusion.mode,
            "goal_check_hop": goal_check_hop,
            "goal_used": goal is not None,
        },
        phi_std=phi_std,
        ood_distance=ood_distance(model, emb),
        ood_threshold=cal.ood.threshold if cal is not None and cal.ood is not None else None,
        state_features=model.state_features(emb) if return_features else None,
    )
