"""How much to trust Φ, post hoc: spread, out-of-distribution flags and a calibrated P(success).

Everything here works on an existing GRM checkpoint without retraining it and without touching
its weights file:

* **Spread** ``phi_std`` per frame: the hop head's own predictive std propagated through the
  tracker's fusion plus the disagreement of its estimates (:mod:`reward_models.tracker`,
  § Spread). Nothing to fit.
* **Out of distribution**: the Mahalanobis distance of a frame's state embedding
  (:meth:`ProgressModel.state_features`) to the embeddings of reference data. Why Mahalanobis: a
  learned regressor is only trustworthy where its training inputs were, and the embedding is the
  model's own notion of "where"; a Gaussian fit is the cheapest density with a closed-form
  distance. The covariance is Ledoit–Wolf shrunk (embeddings have hundreds of dimensions and
  calibration sets a few thousand correlated frames, so the sample covariance is near singular).
  The threshold is the 99th percentile of the distances of *held-out* reference episodes
  (every fifth one, not used for the fit): in-sample distances are biased low, held-out ones are
  what new in-distribution data will look like, so ≈1 % of such frames are flagged.
* **Calibrated success probability**: a Platt map P(success) = σ(a·logit(Φ_final) + b) fitted on
  the reference episodes' success labels. The feature is logit(Φ_final) so that a = 1, b = 0 is
  "Φ_final is the probability"; the fit is L2-regularised towards that map, so little data leaves
  the raw reading almost unchanged rather than producing an over-confident fit.

``prism-reward calibrate --model CKPT --data DATASET...`` writes all fitted statistics into one
file, ``CKPT/confidence.safetensors`` (tensors + JSON metadata, written atomically, bound to the
weights by their SHA-256), which :meth:`GRMProgressModel.from_pretrained` loads automatically.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from episodes.atomic import atomic_write_bytes
from episodes.cli_errors import parse_config
from reward_models.registry import resolve_grm_checkpoint

CONFIDENCE_NAME = "confidence.safetensors"
"""The calibration file inside a GRM checkpoint directory."""
CONFIDENCE_KIND = "prism-confidence-v1"
"""Marker in the file's metadata: only a file carrying it is ever replaced."""
MAX_PHI_VARIANCE = 0.25
"""The largest variance any quantity in [0, 1] can have: the spread's cap ("knows nothing")."""
OOD_PERCENTILE = 99.0
"""Held-out reference distances above this percentile count as out of distribution."""
WEIGHTS_NAME = "model.safetensors"


# --------------------------------------------------------------------------------------------
# Out of distribution: Mahalanobis distance of state embeddings.
# --------------------------------------------------------------------------------------------


def ledoit_wolf_covariance(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrunk covariance (1 − ρ)·S + ρ·(tr S / F)·I of rows ``x`` (N, F) and the shrinkage ρ
    (Ledoit & Wolf 2004, the analytic optimum under Frobenius loss)."""
    x = np.asarray(x, dtype=np.float64)
    n, f = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = np.trace(s) / f
    target = mu * np.eye(f)
    d2 = float(np.sum((s - target) ** 2))
    norms = np.sum(xc**2, axis=1)
    # Σ_k ||x_k x_kᵀ − S||²_F = Σ_k (|x_k|⁴ − 2 x_kᵀ S x_k) + N·||S||²_F
    b2_sum = float(np.sum(norms**2) - 2.0 * np.sum((xc @ s) * xc) + n * np.sum(s**2))
    b2 = min(b2_sum / n**2, d2)
    rho = b2 / d2 if d2 > 0 else 1.0
    return (1.0 - rho) * s + rho * target, float(rho)


@dataclass
class MahalanobisOOD:
    """Gaussian statistics of reference state features and the distance threshold."""

    mean: np.ndarray
    """(F,) mean feature."""
    whiten: np.ndarray
    """(F, F): distance = |(x − mean) @ whiten|, whiten = V·diag(λ^-½) of the shrunk covariance."""
    threshold: float
    """Distances above it are out of distribution (the held-out :data:`OOD_PERCENTILE`)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Shrinkage, frame counts, reference distance percentiles."""

    @classmethod
    def fit(
        cls, features: np.ndarray, held_out: np.ndarray | None = None, percentile: float = OOD_PERCENTILE
    ) -> MahalanobisOOD:
        """Fit on ``features`` (N, F); the threshold comes from ``held_out`` rows (None: the fit
        rows themselves, biased low -- said in ``info``)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                f"out-of-distribution statistics need at least 2 reference frames, got {features.shape[0]}"
            )
        cov, rho = ledoit_wolf_covariance(features)
        evals, evecs = np.linalg.eigh(cov)
        floor = max(float(evals.max()) * 1e-9, 1e-12)
        whiten = evecs / np.sqrt(np.maximum(evals, floor))
        ood = cls(mean=features.mean(0), whiten=whiten, threshold=float("inf"))
        ref = features if held_out is None or len(held_out) == 0 else np.asarray(held_out, dtype=np.float64)
        dist = ood.distance(ref)
        ood.threshold = float(np.percentile(dist, percentile))
        ood.info = {
            "shrinkage": rho,
            "n_fit_frames": int(features.shape[0]),
            "n_threshold_frames": int(ref.shape[0]),
            "threshold_from": "held-out episodes" if ref is not features else "the fit frames (in-sample)",
            "percentile": percentile,
            "dims": int(features.shape[1]),
            "reference_distance": {f"p{q}": float(np.percentile(dist, q)) for q in (50, 90, 99)},
        }
        return ood

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(B,) Mahalanobis distances of feature rows (B, F)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"state features have shape {features.shape}; the calibration expects (B, {self.mean.shape[0]})"
            )
        return np.linalg.norm((features - self.mean) @ self.whiten, axis=1)

    def is_out(self, distance: np.ndarray) -> np.ndarray:
        """bool per distance (NaN: not flagged)."""
        d = np.asarray(distance, dtype=np.float64)
        return np.nan_to_num(d, nan=-np.inf) > self.threshold


# --------------------------------------------------------------------------------------------
# Calibrated success probability: Platt scaling on logit(Φ_final).
# --------------------------------------------------------------------------------------------


def _logit(p: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


@dataclass
class PlattScaling:
    """P(success) = σ(a·logit(Φ_final) + b); a = 1, b = 0 reads Φ_final as the probability."""

    a: float = 1.0
    b: float = 0.0
    n: int = 0
    """Labelled episodes it was fitted on."""

    @classmethod
    def fit(
        cls, final_phi: Sequence[float], success: Sequence[bool], l2: float = 0.1, steps: int = 100
    ) -> PlattScaling:
        """Newton's method on the log-likelihood with an L2 pull towards (a, b) = (1, 0)."""
        x = _logit(final_phi)
        y = np.asarray(success, dtype=np.float64)
        if x.shape != y.shape or x.size == 0:
            raise ValueError(f"Platt scaling needs one success label per final Φ, got {x.size} and {y.size}")
        X = np.stack([x, np.ones_like(x)], axis=1)
        prior = np.array([1.0, 0.0])
        theta = prior.copy()
        for _ in range(steps):
            p = _sigmoid(X @ theta)
            grad = X.T @ (p - y) + l2 * (theta - prior)
            hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            theta = theta - step
            if np.max(np.abs(step)) < 1e-10:
                break
        return cls(a=float(theta[0]), b=float(theta[1]), n=int(x.size))

    def __call__(self, final_phi: np.ndarray | float) -> np.ndarray:
        return _sigmoid(self.a * _logit(final_phi) + self.b)


# --------------------------------------------------------------------------------------------
# The calibration file.
# --------------------------------------------------------------------------------------------


@dataclass
class ConfidenceCalibration:
    """What ``prism-reward calibrate`` fitted for one checkpoint."""

    ood: MahalanobisOOD | None = None
    platt: PlattScaling | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Weights SHA-256, data, counts, notes (e.g. why Platt scaling was skipped)."""

    def success_probability(self, final_phi: float) -> float | None:
        return None if self.platt is None else float(self.platt(final_phi))

    def save(self, path: str | Path) -> Path:
        """One safetensors file (arrays + JSON metadata), written atomically."""
        from safetensors.numpy import save  # learn extra; the tracker imports this module without it

        tensors = {"ood.mean": np.zeros(0), "ood.whiten": np.zeros((0, 0))}
        if self.ood is not None:
            tensors = {
                "ood.mean": np.ascontiguousarray(self.ood.mean),
                "ood.whiten": np.ascontiguousarray(self.ood.whiten),
            }
        header = {
            "kind": CONFIDENCE_KIND,
            "meta": self.meta,
            "ood": None if self.ood is None else {"threshold": self.ood.threshold, "info": self.ood.info},
            "platt": None if self.platt is None else asdict(self.platt),
        }
        return atomic_write_bytes(path, save(tensors, metadata={"prism.confidence": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | Path) -> ConfidenceCalibration:
        from safetensors import safe_open  # learn extra (as above)

        header = read_confidence_header(path)
        with safe_open(str(path), framework="numpy") as f:
            mean, whiten = f.get_tensor("ood.mean"), f.get_tensor("ood.whiten")
        ood = None
        if header.get("ood") is not None:
            ood = MahalanobisOOD(
                mean=mean,
                whiten=whiten,
                threshold=float(header["ood"]["threshold"]),
                info=header["ood"].get("info", {}),
            )
        platt = PlattScaling(**header["platt"]) if header.get("platt") else None
        return cls(ood=ood, platt=platt, meta=header.get("meta", {}))


def read_confidence_header(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a calibration file; ValueError naming the file when it is not one."""
    from safetensors import SafetensorError, safe_open  # learn extra (as above)

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("prism.confidence")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable calibration file ({exc})") from exc
    header = json.loads(raw) if raw else None
    if not isinstance(header, dict) or header.get("kind") != CONFIDENCE_KIND:
        raise ValueError(f"{path}: not a prism-rl calibration file (no {CONFIDENCE_KIND!r} marker)")
    return header


def weights_sha256(checkpoint: str | Path) -> str:
    digest = hashlib.sha256()
    with open(Path(checkpoint) / WEIGHTS_NAME, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_confidence(checkpoint: str | Path) -> ConfidenceCalibration | None:
    """The checkpoint's calibration, or None when it has none. A damaged file, or one written for
    other weights (the checkpoint was retrained since), is ignored with one line on stderr: the
    model still works, only without confidence."""
    path = Path(checkpoint) / CONFIDENCE_NAME
    if not path.is_file():
        return None
    try:
        cal = ConfidenceCalibration.load(path)
        if cal.meta.get("weights_sha256") != weights_sha256(checkpoint):
            raise ValueError("it was computed for other weights; re-run prism-reward calibrate")
    except (ValueError, OSError, KeyError, TypeError) as exc:
        print(f"warning: ignoring {path}: {exc}", file=sys.stderr)
        return None
    return cal


def ood_distance(model: Any, embeddings: Any) -> np.ndarray | None:
    """(B,) out-of-distribution distances of encoded states, or None when the model has no
    calibration (or no state features)."""
    cal = getattr(model, "confidence", None)
    if cal is None or cal.ood is None:
        return None
    features = model.state_features(embeddings)
    return None if features is None else cal.ood.distance(features)


def pessimistic_progress(phi: np.ndarray, phi_std: np.ndarray, k: float) -> np.ndarray:
    """max(Φ − k·spread, 0): never above Φ, equal to it at k = 0 (policies/shaping.py)."""
    phi = np.asarray(phi, dtype=np.float64)
    if k == 0:
        return phi
    return np.maximum(phi - k * np.asarray(phi_std, dtype=np.float64), 0.0)


# --------------------------------------------------------------------------------------------
# prism-reward calibrate
# --------------------------------------------------------------------------------------------


@dataclass
class CalibrateConfig:
    """``prism-reward calibrate``: fit a GRM's post-hoc confidence (OOD statistics of its state
    embeddings, Platt-scaled success probability) on reference data; writes
    ``confidence.safetensors`` into the checkpoint (its weights are not touched)."""

    model: str
    """GRM checkpoint: ``grm`` (the shipped one), ``grm:DIR`` or ``DIR``."""
    data: list[str]
    """Reference episodes, ideally the model's training data (repeat for several sources; any
    source ``prism-reward eval`` reads)."""
    out: str | None = None
    """Write the calibration here instead of ``<checkpoint>/confidence.safetensors`` (then it is
    not loaded automatically)."""
    task: str | None = None
    """Instruction for sources without one."""
    cameras: list[str] | None = None
    """Cameras to use (default: all of the source's)."""
    camera_map: list[str] | None = None
    """Rename the data's cameras onto the model's views: ``cam_high=front`` (repeatable)."""
    fps: float | None = None
    """Subsample videos to this frame rate first."""
    max_side: int | None = 256
    """Downscale frames so the longer side is at most this."""
    max_episodes: int | None = None
    """Use only the first N episodes of each source."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda."""
    batch_size: int = 32
    """Frames per model forward."""
    fusion: str = "fused"
    """Tracker fusion mode (use the one you evaluate and train with)."""
    percentile: float = OOD_PERCENTILE
    """Held-out reference distance percentile above which a frame is out of distribution."""


def calibrate(cfg: CalibrateConfig) -> tuple[Path, ConfidenceCalibration]:
    """Fit and write the calibration; returns its path and contents."""
    from reward_models.evaluate import episode_success_label, list_source_episodes  # cycle: evaluate → tracker → here
    from reward_models.modeling_grm import CONFIG_NAME, GRMProgressModel  # torch
    from reward_models.tracker import FusionConfig, track_episode  # cycle: the tracker imports this module

    if not 50.0 <= cfg.percentile < 100.0:
        raise ValueError(f"--percentile must be in [50, 100), got {cfg.percentile}")
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if not cfg.data:
        raise ValueError("give at least one --data source")
    ckpt = resolve_grm_checkpoint(cfg.model)
    if not (ckpt / CONFIG_NAME).is_file() or not (ckpt / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"--model {cfg.model}: {ckpt} is not a GRM checkpoint ({CONFIG_NAME} + {WEIGHTS_NAME})")
    out = Path(cfg.out) if cfg.out else ckpt / CONFIDENCE_NAME
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a directory; name the calibration file")
    if out.exists():
        read_confidence_header(out)  # refuses (ValueError) to replace a file prism-rl did not write
    fusion = FusionConfig(mode=cfg.fusion)
    model = GRMProgressModel.from_pretrained(ckpt, device=cfg.device)
    model.confidence = None  # fit against the raw model, not a previous calibration
    features: list[np.ndarray] = []
    finals: list[float] = []
    labels: list[bool | None] = []
    for source in cfg.data:
        _, items = list_source_episodes(
            source,
            task=cfg.task,
            fps=cfg.fps,
            max_side=cfg.max_side,
            cameras=cfg.cameras,
            camera_map=cfg.camera_map,
            max_episodes=cfg.max_episodes,
        )
        for item in items:
            ep = item.load()
            if not ep.task:
                raise ValueError(f"{item.name}: episode has no task instruction: pass --task")
            trace = track_episode(model, ep, batch_size=cfg.batch_size, fusion=fusion, return_features=True)
            features.append(trace.state_features)
            finals.append(trace.final)
            labels.append(episode_success_label(ep))
    if not features:
        raise ValueError(f"--data {' '.join(cfg.data)}: no episodes found")
    held = np.arange(len(features)) % 5 == 4 if len(features) >= 5 else np.zeros(len(features), dtype=bool)
    fit_rows = np.concatenate([f for f, h in zip(features, held) if not h])
    held_rows = np.concatenate([f for f, h in zip(features, held) if h]) if held.any() else None
    ood = MahalanobisOOD.fit(fit_rows, held_rows, percentile=cfg.percentile)
    known = [(f, y) for f, y in zip(finals, labels) if y is not None]
    notes = []
    platt = None
    if known and any(y for _, y in known) and not all(y for _, y in known):
        platt = PlattScaling.fit([f for f, _ in known], [y for _, y in known])
    else:
        notes.append("no Platt scaling: needs both successful and failed episodes with labels")
    cal = ConfidenceCalibration(
        ood=ood,
        platt=platt,
        meta={
            "weights_sha256": weights_sha256(ckpt),
            "checkpoint": str(ckpt),
            "data": list(cfg.data),
            "n_episodes": len(features),
            "n_labelled": len(known),
            "fusion": cfg.fusion,
            "notes": notes,
        },
    )
    cal.save(out)
    return out, cal


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry for ``prism-reward calibrate``."""
    cfg = parse_config(CalibrateConfig, argv, description=CalibrateConfig.__doc__)
    out, cal = calibrate(cfg)
    ood = cal.ood
    print(
        f"wrote {out}: {cal.meta['n_episodes']} episode(s); OOD threshold {ood.threshold:.2f} "
        f"(p{ood.info['percentile']:g} of {ood.info['threshold_from']})"
        + (
            f"; P(success) = σ({cal.platt.a:.2f}·logit Φ_final + {cal.platt.b:.2f}) on {cal.platt.n} labelled"
            if cal.platt
            else f"; {'; '.join(cal.meta['notes'])}"
        )
    )
    return 0


__all__ = [
    "CONFIDENCE_NAME",
    "MAX_PHI_VARIANCE",
    "CalibrateConfig",
    "ConfidenceCalibration",
    "MahalanobisOOD",
    "PlattScaling",
    "calibrate",
    "ledoit_wolf_covariance",
    "load_confidence",
    "ood_distance",
    "pessimistic_progress",
    "read_confidence_header",
    "weights_sha256",
]
