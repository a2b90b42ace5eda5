"""How a reward model is judged on recorded episodes (docs/method.md § Metrics).

Every metric is computed from per-episode progress curves Φ_t plus whatever labels the episodes
carry. A metric whose labels are missing (no failed episodes, no policy ids, ...) is reported as
``{"value": None, "reason": "..."}`` instead of a number, so a report never shows a figure that
was silently computed from nothing.

Rank statistics (Spearman, Kendall τ-b, AUROC) are implemented here with numpy (ties get average
ranks) so the package does not need scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from episodes.episode import tail_progress, unfinished_outcome

SUCCESS_DELTA = 0.05
"""Default δ: a model "detects success" when Φ_final ≥ 1 − δ (docs/method.md § Success detection)."""


# --------------------------------------------------------------------------- rank statistics
def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks with ties replaced by their average rank."""
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Boundaries of runs of equal values in the sorted array.
    boundaries = np.flatnonzero(np.diff(sorted_x) != 0) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0  # mean of 1-based ranks s+1 .. e
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either input is constant or shorter than 2."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"pearson: inputs have different lengths ({len(a)} vs {len(b)})")
    if len(a) < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom <= 1e-12:
        return float("nan")
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN if a side is constant."""
    return pearson(rankdata(x), rankdata(y))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall τ-b (tie-corrected); NaN if a side is constant or fewer than 2 items."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"kendall_tau: inputs have different lengths ({len(a)} vs {len(b)})")
    if len(a) < 2:
        return float("nan")
    # O(n²) is fine: τ is computed over a handful of policies, not frames.
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), k=1)
    da, db = da[iu], db[iu]
    concordant_minus_discordant = float((da * db).sum())
    n_a = float((da != 0).sum())
    n_b = float((db != 0).sum())
    if n_a == 0 or n_b == 0:
        return float("nan")
    return float(concordant_minus_discordant / np.sqrt(n_a * n_b))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann–Whitney U / (n_pos·n_neg)); ties count one half.

    NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if len(s) != len(y):
        raise ValueError(f"auroc: {len(s)} scores but {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# --------------------------------------------------------------------------- per-curve rules
def voc(progress: Sequence[float]) -> float:
    """Value-order correlation (GVL): Spearman(frame index, Φ). NaN for < 2 frames or flat Φ."""
    phi = np.asarray(progress, dtype=np.float64).ravel()
    return spearman(np.arange(len(phi)), phi)


def completion_class(progress: Sequence[float]) -> str:
    """3-class completion from a progress curve (docs/method.md § Metrics).

    ``success`` if Φ_final > 0.8 and mean Φ over the last third > 0.6; otherwise the rule that
    labels recorded episodes (:func:`episodes.episode.unfinished_outcome`): ``partial`` if that
    mean ≥ 0.4, else ``fail``.
    """
    phi = np.asarray(progress, dtype=np.float64).ravel()
    if len(phi) == 0:
        raise ValueError("completion_class: empty progress curve")
    if phi[-1] > 0.8 and tail_progress(phi) > 0.6:
        return "success"
    return unfinished_outcome(phi)


def expected_calibration_error(probability: Sequence[float], label: Sequence[bool], n_bins: int = 10) -> float:
    """ECE: Σ_b (n_b / N)·|mean label_b − mean probability_b| over ``n_bins`` equal-width bins of
    [0, 1] (a probability of exactly 1 falls in the last bin); NaN for no samples."""
    p = np.clip(np.asarray(probability, dtype=np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(label, dtype=np.float64).ravel()
    if len(p) != len(y):
        raise ValueError(f"expected_calibration_error: {len(p)} probabilities for {len(y)} labels")
    if len(p) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def progress_to_rubric(phi_final: float) -> int:
    """Map a final progress in [0, 1] onto the 1–5 end-score rubric (1 = nothing, 5 = done)."""
    return int(np.clip(np.rint(1.0 + 4.0 * float(np.clip(phi_final, 0.0, 1.0))), 1, 5))


def label_rubric(outcome: str | None, success: bool | None, progress_final: float | None) -> int | None:
    """The 1–5 end-score label of an episode from what it carries (RoboReward-style rubric).

    Ground-truth final progress is the finest label: it is mapped like a prediction, then made
    consistent with the success flag (a success is 5, a non-success at most 4). Without progress,
    the outcome maps success→5, partial→3, fail→1; a bare success flag maps to 5 / 1.
    """
    if progress_final is not None and np.isfinite(progress_final):
        score = progress_to_rubric(progress_final)
        if success is True or outcome == "success":
            return 5
        if success is False or outcome in ("partial", "fail"):
            return min(score, 4)
        return score
    if outcome is not None:
        return {"success": 5, "partial": 3, "fail": 1}[outcome]
    if success is not None:
        return 5 if success else 1
    return None


# --------------------------------------------------------------------------- episode records
@dataclass
class EpisodeScore:
    """One model's verdict on one episode, plus the episode's labels (``None`` where unknown)."""

    episode_index: int
    """Index of the episode in its source."""
    progress: np.ndarray
    """Predicted Φ_t in [0, 1], one per evaluated frame."""
    success: bool | None = None
    """True episode success (label)."""
    outcome: str | None = None
    """True outcome ``success`` / ``partial`` / ``fail`` (label)."""
    true_progress: np.ndarray | None = None
    """Ground-truth Φ_t aligned with ``progress`` (label)."""
    policy: str | None = None
    """Which policy/group produced the episode (for the ranking metric)."""
    end_score: float | None = None
    """The model's own 1–5 end score when it has a rubric head; else Φ_final is mapped."""
    source: str | None = None
    """Where the episode came from (file / dataset path), for the report."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Model-specific diagnostics (e.g. parse failures)."""
    phi_std: np.ndarray | None = None
    """Spread of Φ_t per frame (hop models; :mod:`reward_models.confidence`)."""
    ood: np.ndarray | None = None
    """bool per frame: out of the calibration data's distribution (models with a calibration)."""
    success_probability: float | None = None
    """Calibrated P(success) from Φ_final (models with a calibration)."""

    def __post_init__(self) -> None:
        self.progress = np.asarray(self.progress, dtype=np.float64).ravel()
        if len(self.progress) == 0:
            raise ValueError(f"episode {self.episode_index}: empty progress curve")
        for name in ("phi_std", "ood"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=bool if name == "ood" else np.float64).ravel()
                if len(value) != len(self.progress):
                    raise ValueError(
                        f"episode {self.episode_index}: {name} has {len(value)} values but progress has "
                        f"{len(self.progress)}"
                    )
                setattr(self, name, value)
        if self.true_progress is not None:
            self.true_progress = np.asarray(self.true_progress, dtype=np.float64).ravel()
            if len(self.true_progress) != len(self.progress):
                raise ValueError(
                    f"episode {self.episode_index}: true_progress has {len(self.true_progress)} "
                    f"values but progress has {len(self.progress)}"
                )

    @property
    def final(self) -> float:
        return float(self.progress[-1])

    @property
    def predicted_class(self) -> str:
        return completion_class(self.progress)

    @property
    def predicted_rubric(self) -> float:
        return float(self.end_score) if self.end_score is not None else float(progress_to_rubric(self.final))

    @property
    def label_class(self) -> str | None:
        """The completion label: the outcome, else derived from the success flag."""
        if self.outcome is not None:
            return self.outcome
        if self.success is not None:
            return "success" if self.success else "fail"
        return None

    @property
    def label_success(self) -> bool | None:
        if self.success is not None:
            return bool(self.success)
        if self.outcome is not None:
            return self.outcome == "success"
        return None

    @property
    def label_rubric(self) -> int | None:
        tp = float(self.true_progress[-1]) if self.true_progress is not None else None
        return label_rubric(self.outcome, self.success, tp)

    def summary(self, delta: float = SUCCESS_DELTA) -> dict[str, Any]:
        """JSON-ready per-episode row of the report."""
        v = voc(self.progress)
        return {
            "episode_index": self.episode_index,
            "source": self.source,
            "n_frames": int(len(self.progress)),
            "final_progress": self.final,
            "voc": None if not np.isfinite(v) else v,
            "predicted_class": self.predicted_class,
            "predicted_success": bool(self.final >= 1.0 - delta),
            "predicted_end_score": self.predicted_rubric,
            "label_success": self.label_success,
            "label_outcome": self.label_class,
            "label_end_score": self.label_rubric,
            "policy": self.policy,
            "mean_phi_std": None if self.phi_std is None else float(self.phi_std.mean()),
            "ood_fraction": None if self.ood is None else float(self.ood.mean()),
            "success_probability": self.success_probability,
            **({"extra": self.extra} if self.extra else {}),
        }


def _missing(reason: str, **extra: Any) -> dict[str, Any]:
    return {"value": None, "reason": reason, **extra}


def _mean_finite(values: list[float]) -> tuple[float | None, int]:
    finite = [v for v in values if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else None), len(finite)


def compute_metrics(scores: Sequence[EpisodeScore], delta: float = SUCCESS_DELTA) -> dict[str, Any]:
    """All the metrics of docs/method.md § Metrics for one model over a set of episodes.

    Returns ``{"voc_plus": {...}, "voc_minus": {...}, "completion_accuracy": {...},
    "success_auroc": {...}, "end_score_mae": {...}, "kendall_tau": {...}, "episodes": [...]}``;
    each metric is ``{"value": float | None, "n": int, ...}`` with a ``reason`` when ``None``.
    """
    scores = list(scores)
    out: dict[str, Any] = {}

    # VOC on successful (voc+) and failed (voc−) episodes. A flat curve has no defined rank
    # correlation; it is skipped and counted rather than scored as 0.
    for key, want in (("voc_plus", True), ("voc_minus", False)):
        group = [s for s in scores if s.label_success is want]
        if not group:
            out[key] = _missing(f"no {'successful' if want else 'failed'} episodes with a success/outcome label")
            continue
        value, n = _mean_finite([voc(s.progress) for s in group])
        out[key] = (
            {"value": value, "n": n, "n_undefined": len(group) - n}
            if value is not None
            else _missing("every curve is constant or has < 2 frames (Spearman undefined)", n=0)
        )

    labelled = [s for s in scores if s.label_class is not None]
    if labelled:
        hits = [s.predicted_class == s.label_class for s in labelled]
        confusion = {
            true: {
                pred: sum(1 for s in labelled if s.label_class == true and s.predicted_class == pred)
                for pred in ("success", "partial", "fail")
            }
            for true in ("success", "partial", "fail")
        }
        out["completion_accuracy"] = {"value": float(np.mean(hits)), "n": len(labelled), "confusion": confusion}
    else:
        out["completion_accuracy"] = _missing("no episode carries an outcome or success label")

    with_success = [s for s in scores if s.label_success is not None]
    y = np.array([s.label_success for s in with_success], dtype=bool)
    if len(with_success) and y.any() and (~y).any():
        final = np.array([s.final for s in with_success])
        pred = final >= 1.0 - delta
        tp = int((pred & y).sum())
        out["success_auroc"] = {
            "value": auroc(final, y),
            "n": len(with_success),
            "threshold": 1.0 - delta,
            "precision": tp / int(pred.sum()) if pred.any() else None,
            "recall": tp / int(y.sum()),
        }
    else:
        out["success_auroc"] = _missing("needs both successful and failed episodes with labels", n=len(with_success))

    rubric = [(s.predicted_rubric, s.label_rubric) for s in scores if s.label_rubric is not None]
    if rubric:
        err = np.abs(np.array([p for p, _ in rubric]) - np.array([t for _, t in rubric]))
        out["end_score_mae"] = {
            "value": float(err.mean()),
            "n": len(rubric),
            "from_rubric_head": all(s.end_score is not None for s in scores),
        }
    else:
        out["end_score_mae"] = _missing("no episode carries an outcome, success or progress label")

    groups: dict[str, list[EpisodeScore]] = {}
    for s in scores:
        if s.policy is not None and s.label_success is not None:
            groups.setdefault(str(s.policy), []).append(s)
    if len(groups) >= 2:
        names = sorted(groups)
        mean_final = [float(np.mean([s.final for s in groups[g]])) for g in names]
        success_rate = [float(np.mean([s.label_success for s in groups[g]])) for g in names]
        tau = kendall_tau(mean_final, success_rate)
        per_policy = {
            g: {"mean_final_progress": m, "success_rate": r, "n": len(groups[g])}
            for g, m, r in zip(names, mean_final, success_rate)
        }
        out["kendall_tau"] = (
            {"value": tau, "n": len(names), "policies": per_policy}
            if np.isfinite(tau)
            else _missing("success rates (or predictions) are identical across policies", policies=per_policy)
        )
    else:
        out["kendall_tau"] = _missing(
            "needs >= 2 policies: set meta['policy'] (or 'policy' in episode.json) on labelled episodes",
            n=len(groups),
        )

    out.update(confidence_metrics(scores))
    out["episodes"] = [s.summary(delta) for s in scores]
    return out


def confidence_metrics(scores: Sequence[EpisodeScore]) -> dict[str, Any]:
    """How far to trust the model (:data:`CONFIDENCE_METRIC_KEYS`): ECE of the calibrated P(success)
    and, for comparison, of Φ_final read as a probability; Spearman correlation of the per-frame
    error |Φ − true Φ| with the predicted spread (positive: the spread points at the errors);
    mean spread and OOD fraction over all frames."""
    out: dict[str, Any] = {}
    labelled = [s for s in scores if s.label_success is not None]
    y = [bool(s.label_success) for s in labelled]
    with_p = [s for s in labelled if s.success_probability is not None]
    if with_p:
        out["success_ece"] = {
            "value": expected_calibration_error(
                [s.success_probability for s in with_p], [bool(s.label_success) for s in with_p]
            ),
            "n": len(with_p),
            "bins": 10,
        }
    else:
        out["success_ece"] = _missing("needs a calibrated model (prism-reward calibrate) and success labels")
    out["raw_phi_ece"] = (
        {"value": expected_calibration_error([s.final for s in labelled], y), "n": len(labelled), "bins": 10}
        if labelled
        else _missing("no episode carries a success label")
    )
    pairs = [s for s in scores if s.phi_std is not None and s.true_progress is not None]
    if pairs:
        err = np.concatenate([np.abs(s.progress - s.true_progress) for s in pairs])
        std = np.concatenate([s.phi_std for s in pairs])
        rho = spearman(err, std)
        out["spread_error_corr"] = (
            {"value": rho, "n": int(err.size)}
            if np.isfinite(rho)
            else _missing("the spread or the error is constant", n=int(err.size))
        )
    else:
        out["spread_error_corr"] = _missing("needs a model with a spread and episodes with true progress")
    with_std = [s.phi_std for s in scores if s.phi_std is not None]
    out["mean_phi_std"] = (
        {"value": float(np.concatenate(with_std).mean()), "n": len(with_std)}
        if with_std
        else _missing("the model reports no spread")
    )
    with_ood = [s.ood for s in scores if s.ood is not None]
    out["ood_fraction"] = (
        {"value": float(np.concatenate(with_ood).mean()), "n": len(with_ood)}
        if with_ood
        else _missing("needs a calibrated model (prism-reward calibrate)")
    )
    return out


CONFIDENCE_METRIC_KEYS = ("success_ece", "raw_phi_ece", "spread_error_corr", "mean_phi_std", "ood_fraction")
"""Confidence metrics (:func:`confidence_metrics`), in report order."""

METRIC_KEYS = ("voc_plus", "voc_minus", "completion_accuracy", "success_auroc", "end_score_mae", "kendall_tau")
"""The headline metrics, in report order."""
