"""Evaluate any progress model(s) on recorded episodes: ``prism-reward eval``.

Sources (auto-detected): a LeRobot v3 dataset, a video file, a folder of videos, a folder of
episode folders (``<camera>.mp4`` + optional ``episode.json``), Robo-Dopamine's raw-data layout
(``episode_*/cam_*.mp4`` + ``annotated_keyframes.json``, ``task_instruction.json`` beside them;
:mod:`episodes.dopamine`), or a rosbag2 (directory, ``.mcap`` or ``.db3``; ``--topics`` names the
camera topics). ``--camera-map cam_high=front`` renames the data's cameras onto the views a model
reads (:mod:`episodes.camera_map`). Every model scores every episode:
models with a whole-episode scorer (CLIP min–max, GVL, rubric) use it; hop models (GRM,
``vlm-grm``, oracle) go through :func:`reward_models.tracker.track_episode`.

The report directory is built in a temporary sibling and renamed into place at the end, so a
crash never leaves a half-written report over a previous one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from episodes import Episode, open_dataset
from episodes.atomic import atomic_dir, check_output_not_input, check_replaceable
from episodes.camera_map import (
    CameraMapError,
    map_episode_cameras,
    parse_camera_map,
    source_camera_names,
)
from episodes.cli_errors import parse_config
from episodes.dopamine import is_dopamine_source, list_dopamine_episodes, load_dopamine_episode
from episodes.images import resize_frames, scaled_to_max_side
from episodes.jsonable import jsonable
from episodes.rabc import write_rabc_progress
from episodes.rosbag import ingest_bags, read_bag
from episodes.video_folder import list_video_source, load_video_item
from reward_models import report as rep
from reward_models.base import ProgressModel
from reward_models.baselines.common import EpisodeScorer
from reward_models.metrics import CONFIDENCE_METRIC_KEYS, METRIC_KEYS, SUCCESS_DELTA, EpisodeScore, compute_metrics
from reward_models.registry import load_progress_model
from reward_models.tracker import FusionConfig, track_episode


@dataclass
class EvalConfig:
    """``prism-reward eval``: score recorded episodes with one or more progress models."""

    model: list[str]
    """Model spec(s), repeat for several: a GRM checkpoint dir, ``clip:ARCH:WEIGHTS``,
    ``vlm:DIR``, ``vlm-rubric:DIR``, ``vlm-grm:DIR`` or ``oracle``."""
    data: str
    """Episodes: a LeRobot v3 dataset, a video file, a folder of videos, a folder of episode
    folders (``<camera>.mp4`` + optional ``episode.json``), Robo-Dopamine's raw-data layout
    (``episode_*/cam_*.mp4`` + ``annotated_keyframes.json``) or a rosbag2 (dir/.mcap/.db3)."""
    out: str
    """Report directory (replaced atomically when complete)."""
    task: str | None = None
    """Instruction for sources without one (plain videos, bags); overrides episode.json."""
    topics: str | None = None
    """rosbag2 only: comma-separated camera topics, optionally ``name=/topic``."""
    skip_bad: bool = False
    """Skip unreadable/invalid episodes (listed in the report) instead of failing."""
    device: str = "auto"
    """Torch device for the models: ``auto``, ``cpu``, ``cuda``, ``cuda:1``..."""
    batch_size: int = 32
    """Frames per model forward (and prompts per generate call for VLMs, capped at 8)."""
    fps: float | None = None
    """Subsample long videos to this frame rate before scoring (the final frame is kept)."""
    max_side: int | None = 256
    """Downscale frames so the longer side is at most this many pixels (0/None: keep)."""
    camera: str = "front"
    """Camera name given to single-view videos (match the view name a model expects)."""
    cameras: list[str] | None = None
    """Cameras to use (default: all of the source's cameras); the data's names or the views
    --camera-map gives them."""
    camera_map: list[str] | None = None
    """Rename the data's cameras onto the model's views: ``cam_high=front,cam_left_wrist=wrist``
    (repeatable); cameras not named keep their names."""
    max_episodes: int | None = None
    """Evaluate only the first N episodes."""
    fusion: str = "fused"
    """Tracker fusion mode for hop models: fused, mean, incremental, forward."""
    delta: float = SUCCESS_DELTA
    """Success tolerance δ: predicted success when Φ_final ≥ 1 − δ."""
    videos: int = 12
    """Write a progress-overlay mp4 for at most this many episodes (0: none)."""
    overwrite: bool = True
    """Replace an existing report at ``out`` (only once the new one is complete)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""


@dataclass
class SourceItem:
    """One loadable episode of a source."""

    name: str
    """Human-readable origin (file, folder, ``dataset#3``) used in errors and the report."""
    load: Callable[[], Episode]


@dataclass
class Skip:
    source: str
    reason: str
    model: str | None = None


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def is_lerobot_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "meta" / "info.json").is_file()


def is_rosbag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".mcap", ".db3")


def detect_source(path: str | Path) -> str:
    """``lerobot``, ``rosbag``, ``dopamine`` (Robo-Dopamine's raw-data layout) or ``video`` (file /
    folder layouts)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--data {p} does not exist")
    if is_lerobot_dataset(p):
        return "lerobot"
    if is_rosbag(p) or (
        p.is_dir() and any(is_rosbag(c) for c in p.iterdir()) and not any(c.suffix == ".mp4" for c in p.iterdir())
    ):
        return "rosbag"
    if is_dopamine_source(p):
        return "dopamine"
    return "video"


def subsample_episode(ep: Episode, fps: float | None) -> Episode:
    """Keep frames at ``fps`` on the episode's clock (never upsample; the last frame is kept)."""
    frame_index = np.asarray(ep.meta.get("frame_index", np.arange(ep.length)), dtype=np.int64)
    if fps is None or fps <= 0 or fps >= ep.fps - 1e-9:
        ep.meta["frame_index"] = frame_index.tolist()
        return ep
    ticks = np.arange(0.0, (ep.length - 1) / ep.fps + 1e-9, 1.0 / fps)
    keep = np.unique(np.clip(np.floor(ticks * ep.fps + 1e-6).astype(np.int64), 0, ep.length - 1))
    if keep[-1] != ep.length - 1:
        keep = np.append(keep, ep.length - 1)

    def take(x):
        return None if x is None else np.asarray(x)[keep]

    meta = dict(ep.meta)
    meta["frame_index"] = frame_index[keep].tolist()
    return Episode(
        task=ep.task,
        frames={c: v[keep] for c, v in ep.frames.items()},
        fps=float(fps),
        episode_index=ep.episode_index,
        task_name=ep.task_name,
        state=take(ep.state),
        action=take(ep.action),
        reward=take(ep.reward),
        done=take(ep.done),
        success=take(ep.success),
        progress=take(ep.progress),
        stage=take(ep.stage),
        outcome=ep.outcome,
        meta=meta,
    )


def iter_source(cfg: EvalConfig) -> tuple[str, list[SourceItem]]:
    """The source kind of ``cfg.data`` and its episodes as lazily-loaded items."""
    return list_source_episodes(
        cfg.data,
        task=cfg.task,
        topics=cfg.topics,
        fps=cfg.fps,
        max_side=cfg.max_side,
        camera=cfg.camera,
        cameras=cfg.cameras,
        camera_map=cfg.camera_map,
        max_episodes=cfg.max_episodes,
    )


def list_source_episodes(
    data: str | Path,
    *,
    task: str | None = None,
    topics: str | None = None,
    fps: float | None = None,
    max_side: int | None = None,
    camera: str = "front",
    cameras: Sequence[str] | None = None,
    camera_map: str | Sequence[str] | None = None,
    max_episodes: int | None = None,
) -> tuple[str, list[SourceItem]]:
    """The source kind and its episodes as lazily-loaded items -- the one loader of ``prism-reward
    eval``, ``train`` and ``adapt``.

    A loaded episode is subsampled to ``fps`` (never upsampled), downscaled to ``max_side`` and has
    its cameras renamed by ``camera_map`` (``cameras`` may use either name). ``task`` overrides the
    source's instruction.
    """
    data = Path(data)
    kind = detect_source(data)
    mapping = parse_camera_map(camera_map)
    select = None if cameras is None else source_camera_names(cameras, mapping)
    max_side = max_side or None
    loaders: list[tuple[str, Callable[[], Episode]]] = []
    if kind == "lerobot":
        ds = open_dataset(data)
        offsets = np.concatenate([[0], np.cumsum(ds.episode_lengths)]).astype(np.int64)

        def make(i: int) -> Callable[[], Episode]:
            def load() -> Episode:
                ep = ds.load_episode(i, cameras=select)
                if task:
                    ep.task = task
                ep.meta.setdefault("source", f"{data}#{i}")
                ep.meta["index_offset"] = int(offsets[i])
                return _downscale(ep, max_side)

            return load

        loaders = [(f"{data.name}#episode{i}", make(i)) for i in range(len(ds))]
    elif kind == "rosbag":
        if not topics:
            raise ValueError(
                f"{data} is a rosbag2: pass the camera topics with --topics /cam/front/image_raw,... "
                "(prism-reward eval), or convert it first with prism-reward ingest"
            )
        bags = [data] if is_rosbag(data) else sorted(c for c in data.iterdir() if is_rosbag(c))
        loaders = [
            (
                str(b),
                (
                    lambda b=b, i=i: read_bag(
                        b, topics, fps=fps or 10.0, task=task or "", episode_index=i, max_side=max_side
                    )
                ),
            )
            for i, b in enumerate(bags)
        ]
    elif kind == "dopamine":
        loaders = [
            (
                str(folder),
                (
                    lambda folder=folder, i=i: load_dopamine_episode(
                        folder, task=task, fps=fps, max_side=max_side, episode_index=i, cameras=select
                    )
                ),
            )
            for i, folder in enumerate(list_dopamine_episodes(data))
        ]
    else:
        loaders = [
            (
                str(item),
                (
                    lambda item=item, i=i: load_video_item(
                        item, task=task, fps=fps, max_side=max_side, episode_index=i, camera=camera, cameras=select
                    )
                ),
            )
            for i, item in enumerate(list_video_source(data))
        ]
    if max_episodes is not None:
        loaders = loaders[:max_episodes]

    def finish(load: Callable[[], Episode]) -> Callable[[], Episode]:
        def finished() -> Episode:
            # A bag is already resampled onto its own clock; subsampling again only records frame_index.
            ep = subsample_episode(load(), fps if kind != "rosbag" else None)
            return map_episode_cameras(ep, mapping)

        return finished

    return kind, [SourceItem(name, finish(load)) for name, load in loaders]


def _downscale(ep: Episode, max_side: int | None) -> Episode:
    if not max_side or max(ep.image_size) <= max_side:
        return ep
    for cam, frames in ep.frames.items():
        ep.frames[cam] = resize_frames(frames, *scaled_to_max_side(*frames.shape[1:3], max_side, minimum=2))
    return ep


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def episode_success_label(ep: Episode) -> bool | None:
    """Episode-level success: ``meta['success']``, else the outcome, else any per-frame success."""
    if isinstance(ep.meta.get("success"), bool):
        return ep.meta["success"]
    if ep.outcome is not None:
        return ep.outcome == "success"
    if ep.success is not None:
        return bool(np.asarray(ep.success).any())
    return None


@dataclass
class ModelRun:
    """Per-model accumulators during an evaluation."""

    spec: str
    model: ProgressModel
    label: str
    scores: list[EpisodeScore] = field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0


def score_episode(
    model: ProgressModel, ep: Episode, cfg: EvalConfig
) -> tuple[np.ndarray, float | None, dict[str, Any], dict[str, Any]]:
    """Φ (T,), an optional 1–5 end score, diagnostics and confidence (``phi_std``, ``ood``,
    ``success_probability`` for :class:`EpisodeScore`; empty for whole-episode scorers) -- for one
    model on one episode."""
    if isinstance(model, EpisodeScorer):
        obs = dict(ep.frames)
        res = model.score_episode(obs, ep.task, batch_size=cfg.batch_size)
        phi = np.asarray(res.progress, dtype=np.float64)
        if phi.shape != (ep.length,):
            raise ValueError(f"{model.model_id}: score_episode returned {phi.shape}, expected ({ep.length},)")
        return phi, res.end_score, dict(res.extra), {}
    trace = track_episode(model, ep, batch_size=cfg.batch_size, fusion=FusionConfig(mode=cfg.fusion, delta=cfg.delta))
    calibration = getattr(model, "confidence", None)
    confidence = {
        "phi_std": trace.phi_std,
        "ood": trace.ood if trace.ood_distance is not None else None,
        "success_probability": calibration.success_probability(trace.final) if calibration is not None else None,
    }
    return np.asarray(trace.phi, dtype=np.float64), None, {}, confidence


def short_label(spec: str, taken: set[str]) -> str:
    """A short, unique, filename-safe column label for a model spec."""
    kind = spec.split(":", 1)[0] if ":" in spec and not Path(spec).exists() else "grm"
    tail = Path(spec.split(":")[-1]).name or kind
    base = "oracle" if spec == "oracle" else f"{kind}-{Path(tail).stem}" if kind != tail else kind
    base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base)[:40]
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    taken.add(label)
    return label


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation and write the report; returns the metrics dict written to ``metrics.json``."""
    if not cfg.model:
        raise ValueError("give at least one --model")
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    check_output_not_input(out, [cfg.data, *cfg.model])
    check_replaceable(out, "report")
    kind, items = iter_source(cfg)
    if not items:
        raise ValueError(f"{cfg.data}: no episodes found")
    taken: set[str] = set()
    runs = [
        ModelRun(spec, load_progress_model(spec, device=cfg.device), short_label(spec, taken)) for spec in cfg.model
    ]

    skips: list[Skip] = []
    sidecar_rows: dict[str, list] = {"index": [], "episode_index": [], "frame_index": [], "timestamp": []}
    for r in runs:
        sidecar_rows[f"phi.{r.label}"] = []
    episode_pages: list[dict[str, Any]] = []
    started = time.time()
    with atomic_dir(out, overwrite=cfg.overwrite, kind="report") as tmp:
        (tmp / "episodes").mkdir()
        bar = tqdm(items, desc="eval", unit="ep", disable=not cfg.progress_bar)
        next_offset = 0
        for n_item, item in enumerate(bar):
            try:
                ep = item.load()
                if not ep.task:
                    raise ValueError("episode has no task instruction: pass --task")
                if ep.length < 2:
                    raise ValueError(f"episode has {ep.length} frame(s); progress needs at least 2")
            except Exception as exc:
                if not cfg.skip_bad or isinstance(exc, CameraMapError):
                    if _reraisable(exc):
                        raise type(exc)(f"{item.name}: {exc}") from exc
                    raise
                skips.append(Skip(item.name, f"{type(exc).__name__}: {exc}"))
                continue
            curves: dict[str, np.ndarray] = {}
            spreads: dict[str, np.ndarray] = {}
            for r in runs:
                check_cameras_match(r, ep)
                t0 = time.time()
                try:
                    phi, end_score, extra, confidence = score_episode(r.model, ep, cfg)
                except Exception as exc:
                    if not cfg.skip_bad:
                        raise RuntimeError(f"{item.name}: model {r.spec} failed: {type(exc).__name__}: {exc}") from exc
                    skips.append(Skip(item.name, f"{type(exc).__name__}: {exc}", model=r.spec))
                    continue
                r.seconds += time.time() - t0
                r.frames += ep.length
                curves[r.label] = phi
                r.scores.append(
                    EpisodeScore(
                        episode_index=ep.episode_index,
                        progress=phi,
                        success=episode_success_label(ep),
                        outcome=ep.outcome,
                        true_progress=ep.progress,
                        policy=ep.meta.get("policy"),
                        end_score=end_score,
                        source=item.name,
                        extra=extra,
                        **confidence,
                    )
                )
                if confidence.get("phi_std") is not None:
                    spreads[r.label] = confidence["phi_std"]
            frame_index = np.asarray(ep.meta["frame_index"], dtype=np.int64)
            offset = int(ep.meta.get("index_offset", next_offset))
            next_offset = offset + int(frame_index[-1]) + 1
            sidecar_rows["index"].extend((offset + frame_index).tolist())
            sidecar_rows["episode_index"].extend([ep.episode_index] * ep.length)
            sidecar_rows["frame_index"].extend(frame_index.tolist())
            sidecar_rows["timestamp"].extend((np.arange(ep.length) / ep.fps).astype(np.float32).tolist())
            for r in runs:
                sidecar_rows[f"phi.{r.label}"].extend(curves.get(r.label, np.full(ep.length, np.nan)).tolist())
                if r.label in spreads or f"phi_std.{r.label}" in sidecar_rows:
                    column = sidecar_rows.setdefault(
                        f"phi_std.{r.label}", [np.nan] * (len(sidecar_rows["index"]) - ep.length)
                    )
                    column.extend(spreads.get(r.label, np.full(ep.length, np.nan)).tolist())
            page = rep.write_episode_assets(
                tmp / "episodes",
                ep,
                curves,
                name=f"episode_{ep.episode_index:05d}",
                video=n_item < cfg.videos,
                delta=cfg.delta,
                spreads=spreads,
            )
            page.update(
                {
                    "source": item.name,
                    "episode_index": ep.episode_index,
                    "task": ep.task,
                    "n_frames": ep.length,
                    "label_success": episode_success_label(ep),
                    "outcome": ep.outcome,
                    "policy": ep.meta.get("policy"),
                    "final": {k: float(v[-1]) for k, v in curves.items()},
                }
            )
            episode_pages.append(page)

        models_out = {}
        for r in runs:
            metrics = (
                compute_metrics(r.scores, delta=cfg.delta)
                if r.scores
                else {"episodes": [], "error": "no episode scored"}
            )
            models_out[r.label] = {
                "spec": r.spec,
                "config": jsonable(r.model.config()),
                "seconds": round(r.seconds, 3),
                "frames": r.frames,
                "frames_per_s": (r.frames / r.seconds) if r.seconds > 0 else None,
                "metrics": metrics,
            }
        result = {
            "data": str(cfg.data),
            "source_kind": kind,
            "n_episodes": len(episode_pages),
            "n_items": len(items),
            "skipped": [asdict(s) for s in skips],
            "eval_config": jsonable(asdict(cfg)),
            "elapsed_s": round(time.time() - started, 3),
            "models": models_out,
        }
        if not episode_pages:
            raise ValueError(
                f"{cfg.data}: every episode was skipped (--skip-bad), so there is nothing to "
                f"report; first reasons: {'; '.join(s.reason for s in skips[:3])}"
            )
        rep.write_sidecar(
            tmp / "progress.parquet",
            sidecar_rows,
            {r.label: {"spec": r.spec, "config": jsonable(r.model.config())} for r in runs},
        )
        for r in runs:  # the same Φ as LeRobot's RA-BC weighting reads it (--rabc_progress_path)
            write_rabc_progress(
                tmp / f"sarm_progress.{r.label}.parquet",
                sidecar_rows["index"],
                sidecar_rows["episode_index"],
                sidecar_rows["frame_index"],
                sidecar_rows[f"phi.{r.label}"],
                r.spec,
            )
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False, default=jsonable))
        rep.write_html(tmp / "report.html", result, episode_pages)
    return result


def check_cameras_match(run: ModelRun, ep: Episode) -> None:
    """A model that reads named views must find at least one of them in the episode; otherwise every
    frame would be scored from blank views. Raised whether or not --skip-bad is on: it is a
    model/data mismatch, not a bad episode."""
    wanted = getattr(run.model, "cameras", None)
    if wanted and not set(wanted) & set(ep.cameras):
        raise ValueError(
            f"model {run.spec} reads cameras {sorted(wanted)} but the data has cameras "
            f"{sorted(ep.cameras)}: none match; map the data's cameras onto the model's views with "
            f"--camera-map DATA_CAMERA=VIEW (e.g. --camera-map {ep.cameras[0]}={min(wanted)}), "
            "or choose views with --cameras or --camera"
        )


def _reraisable(exc: Exception) -> bool:
    """Can the exception be re-created from a message (to prefix the episode's name)?"""
    if isinstance(exc, (ValueError, FileNotFoundError, RuntimeError, OSError)) and type(exc).__init__ in (
        ValueError.__init__,
        FileNotFoundError.__init__,
        RuntimeError.__init__,
        OSError.__init__,
    ):
        return True
    return False


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Console entry for ``prism-reward eval``."""
    cfg = parse_config(EvalConfig, argv, description=__doc__)
    result = run_eval(cfg)
    _print_summary(result, cfg.out)
    return result


def _print_summary(result: dict[str, Any], out: str) -> None:
    print(f"evaluated {result['n_episodes']} episode(s) from {result['data']} -> {out}/report.html")
    for label, m in result["models"].items():
        vals = []
        for k in METRIC_KEYS + CONFIDENCE_METRIC_KEYS:
            v = m["metrics"].get(k, {}).get("value") if isinstance(m["metrics"].get(k), dict) else None
            if v is None and k in CONFIDENCE_METRIC_KEYS:
                continue  # confidence figures only where the model has them
            vals.append(f"{k}={'n/a' if v is None else f'{v:.3f}'}")
        print(f"  {label}: " + " ".join(vals))
    if result["skipped"]:
        print(
            f"  skipped {len(result['skipped'])}: "
            + "; ".join(f"{s['source']}: {s['reason']}" for s in result["skipped"][:5])
        )


# ----------------------------------------------------------------------------------------------
# prism-reward ingest
# ----------------------------------------------------------------------------------------------


@dataclass
class IngestConfig:
    """``prism-reward ingest``: rosbag2 (MCAP/sqlite3) camera + joint topics -> LeRobot v3."""

    bag: list[str]
    """rosbag2 recording(s): a bag directory (with metadata.yaml), a .mcap or a .db3 file; one
    episode per bag."""
    topics: str
    """Comma-separated camera topics (sensor_msgs/Image or CompressedImage); ``name=/topic``
    sets the camera name, else it is derived (``/cam/front/image_raw`` -> ``front``)."""
    out: str
    """Output LeRobot v3 dataset directory (written atomically)."""
    task: str = ""
    """Task instruction stored with every episode."""
    fps: float = 10.0
    """Rate of the common clock all topics are resampled onto."""
    joint_topic: str | None = "/joint_states"
    """sensor_msgs/JointState topic for observation.state (skipped if absent from the bag)."""
    max_side: int | None = None
    """Downscale images so the longer side is at most this (None: keep)."""
    overwrite: bool = False
    """Replace an existing dataset at ``out`` (only once the new one is complete)."""


def ingest_main(argv: Sequence[str] | None = None) -> Path:
    """Console entry for ``prism-reward ingest``."""
    cfg = parse_config(IngestConfig, argv, description=IngestConfig.__doc__)
    check_output_not_input(cfg.out, cfg.bag)
    if not cfg.task:
        print("warning: no --task given; episodes get an empty instruction")
    path = ingest_bags(
        cfg.bag,
        cfg.out,
        cfg.topics,
        fps=cfg.fps,
        task=cfg.task,
        joint_topic=cfg.joint_topic,
        max_side=cfg.max_side,
        overwrite=cfg.overwrite,
    )
    print(f"wrote {len(cfg.bag)} episode(s) to {path}")
    return path


__all__ = [
    "EvalConfig",
    "IngestConfig",
    "detect_source",
    "ingest_main",
    "iter_source",
    "list_source_episodes",
    "main",
    "run_eval",
    "score_episode",
    "subsample_episode",
]
