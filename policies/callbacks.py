"""SB3 callbacks of ``prism-train``: shaping/ground-truth logging, true-success evaluation with
rollout videos, crash-safe checkpoints (one atomic directory per step) and a progress bar (SB3's)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import pickle
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.logger import Image

from episodes.atomic import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)
from episodes.video import write_video

CHECKPOINT_DIR_RE = re.compile(r"^step_(\d+)$")
LEGACY_CHECKPOINT_RE = re.compile(r"^step_(\d+)\.zip$")
"""Checkpoints of earlier versions: a bare model zip beside one shared ``replay_buffer.pkl``."""
TEMPORARY_RE = re.compile(r"^(step_\d+)\.(?:tmp|old)-\d+-")


class StatefulCallback(BaseCallback):
    """A callback whose bookkeeping (the attributes named in ``STATE``) travels in checkpoints, so a
    resumed run carries on exactly where the checkpoint was taken."""

    STATE: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.STATE:
            setattr(self, name, state[name])


# --------------------------------------------------------------------------------------------
# Logging: ground truth (Monitor) and shaping (ShapedRewardVecEnv) side by side.
# --------------------------------------------------------------------------------------------


class ShapingLogCallback(StatefulCallback):
    """Logs, over the last ``window`` finished training episodes:

    ``true/success_rate`` and ``true/ep_return`` (Monitor: the env's own reward and is_success),
    ``shaping/ep_shaped_return``, ``shaping/phi_final``, ``shaping/phi_max`` and
    ``shaping/model_success_rate`` (the reward model's view), plus ``shaping/phi`` per step.
    """

    STATE = (
        "true_success",
        "true_return",
        "shaped_return",
        "phi_final",
        "phi_max",
        "model_success",
        "phi_sum",
        "phi_count",
        "episodes",
        "history",
    )

    def __init__(self, window: int = 100) -> None:
        super().__init__()
        self.true_success: deque[float] = deque(maxlen=window)
        self.true_return: deque[float] = deque(maxlen=window)
        self.shaped_return: deque[float] = deque(maxlen=window)
        self.phi_final: deque[float] = deque(maxlen=window)
        self.phi_max: deque[float] = deque(maxlen=window)
        self.model_success: deque[float] = deque(maxlen=window)
        self.phi_sum = 0.0
        self.phi_count = 0
        self.episodes = 0
        self.history: list[dict[str, float]] = []
        """(timesteps, rolling true success rate, ...) each time an episode ends."""

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        dones = self.locals.get("dones", np.zeros(len(infos), dtype=bool))
        for info, done in zip(infos, dones):
            shaping = info.get("shaping")
            if shaping is not None:
                self.phi_sum += shaping["phi"]
                self.phi_count += 1
            if not done:
                continue
            self.episodes += 1
            if "episode" in info:
                self.true_return.append(float(info["episode"]["r"]))
            self.true_success.append(float(bool(info.get("is_success", False))))
            ep = info.get("shaped_episode")
            if ep is not None:
                self.shaped_return.append(ep["r"])
                self.phi_final.append(ep["phi_final"])
                self.phi_max.append(ep["phi_max"])
                self.model_success.append(float(ep["model_success"]))
            self._record()
        return True

    def _record(self) -> None:
        def rec(key: str, values) -> None:
            if values:
                self.logger.record(key, float(np.mean(values)))

        rec("true/success_rate", self.true_success)
        rec("true/ep_return", self.true_return)
        rec("shaping/ep_shaped_return", self.shaped_return)
        rec("shaping/phi_final", self.phi_final)
        rec("shaping/phi_max", self.phi_max)
        rec("shaping/model_success_rate", self.model_success)
        if self.phi_count:
            self.logger.record("shaping/phi", self.phi_sum / self.phi_count)
            self.phi_sum, self.phi_count = 0.0, 0
        self.history.append(
            {
                "timesteps": int(self.num_timesteps),
                "success_rate": float(np.mean(self.true_success)) if self.true_success else 0.0,
                "shaped_return": float(np.mean(self.shaped_return)) if self.shaped_return else 0.0,
            }
        )


# --------------------------------------------------------------------------------------------
# Evaluation on true success.
# --------------------------------------------------------------------------------------------


@dataclass
class EpisodeResult:
    success: bool
    return_: float
    length: int
    seed: int
    final_progress: float = float("nan")
    """Ground-truth progress of the last state (``info["progress"]``), NaN if the env has none."""


def run_episodes(
    act: Callable[[Any], np.ndarray],
    env: Any,
    episodes: int,
    seed: int,
    video_camera: str | None = None,
    video_episodes: int = 1,
) -> tuple[list[EpisodeResult], list[np.ndarray]]:
    """Roll out ``act(obs) -> action`` for ``episodes`` episodes (episode k seeded ``seed + k``).

    Success is the env's own ``info["is_success"]`` at the episode's end. With ``video_camera``,
    the first ``video_episodes`` episodes are rendered from that camera (frames concatenated).

    Not SB3's ``evaluate_policy``: it seeds a VecEnv once (episode k's start then depends on the
    episodes before it), auto-resets past the last frame and wants a ``model.predict``; here every
    policy meets the same starts, ``act`` is any callable (VLA policies too) and the last frame counts.
    """
    results: list[EpisodeResult] = []
    frames: list[np.ndarray] = []
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        record = video_camera is not None and k < video_episodes
        if record:
            frames.append(env.unwrapped.render_cameras((video_camera,))[video_camera])
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
            if record:
                frames.append(env.unwrapped.render_cameras((video_camera,))[video_camera])
        results.append(
            EpisodeResult(
                bool(info.get("is_success", False)), total, length, seed + k, float(info.get("progress", float("nan")))
            )
        )
    return results, frames


def write_rollout_video(path: Path, frames: list[np.ndarray], fps: float) -> np.ndarray:
    """The frames of :func:`run_episodes` as an mp4, cropped to even height and width (H.264 needs
    them); returns the cropped stack."""
    stack = np.stack(frames)
    h, w = stack.shape[1:3]
    stack = stack[:, : h - h % 2, : w - w % 2]
    write_video(path, stack, fps=fps)
    return stack


def read_eval_curve(path: Path) -> list[dict[str, float]]:
    """Rows of a run's ``eval/curve.csv`` (written by :class:`TrueSuccessEvalCallback`) as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]


class TrueSuccessEvalCallback(StatefulCallback):
    """Every ``eval_every`` env steps: deterministic rollouts on a separate, unshaped env; logs
    ``eval/success_rate`` and ``eval/ep_return``, appends to ``eval/curve.csv``, keeps
    ``eval/best_model.zip``; every ``video_every``-th evaluation writes ``eval/videos/step_N.mp4``
    and a filmstrip image to TensorBoard.

    ``eval/curve.csv`` always mirrors ``curve``: a fresh run starts it empty, a resumed one with the
    rows of its checkpoint (rows written after that checkpoint are dropped, never duplicated).

    Not an ``EvalCallback`` subclass: that one counts callback calls (back to 0 on resume), ranks by
    mean reward, saves non-atomically and runs ``evaluate_policy``, so every method would be replaced."""

    STATE = ("curve", "best", "last_eval_step", "n_evals")
    FIELDS = ("timesteps", "success_rate", "mean_return", "mean_length", "mean_final_progress", "episodes")

    def __init__(
        self,
        make_env: Callable[[], Any],
        eval_dir: Path,
        eval_every: int,
        episodes: int,
        seed: int,
        video_every: int = 0,
        video_camera: str = "front",
        fps: float = 20.0,
    ) -> None:
        super().__init__()
        self.make_env = make_env
        self.eval_dir = Path(eval_dir)
        self.eval_every = eval_every
        self.episodes = episodes
        self.seed = seed
        self.video_every = video_every
        self.video_camera = video_camera
        self.fps = fps
        self.env = None
        self.curve: list[dict[str, float]] = []
        self.best = -1.0
        self.last_eval_step = 0
        """Env steps at the latest evaluation (the next is due ``eval_every`` steps later)."""
        self.n_evals = 0

    def _init_callback(self) -> None:
        self._write_curve()

    def _on_step(self) -> bool:
        if self.eval_every and self.num_timesteps - self.last_eval_step >= self.eval_every:
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.curve or self.curve[-1]["timesteps"] < self.num_timesteps:
            self.evaluate()
        self.close()

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def evaluate(self) -> dict[str, float]:
        if self.env is None:
            self.env = self.make_env()
        self.last_eval_step = self.num_timesteps
        self.n_evals += 1
        video = self.video_every > 0 and (self.n_evals % self.video_every == 0 or self.n_evals == 1)
        model = self.model

        def act(obs):
            return model.predict(obs, deterministic=True)[0]

        results, frames = run_episodes(
            act, self.env, self.episodes, self.seed, video_camera=self.video_camera if video else None
        )
        row = {
            "timesteps": float(self.num_timesteps),
            "success_rate": float(np.mean([r.success for r in results])),
            "mean_return": float(np.mean([r.return_ for r in results])),
            "mean_length": float(np.mean([r.length for r in results])),
            "mean_final_progress": float(np.mean([r.final_progress for r in results])),
            "episodes": float(len(results)),
        }
        self.curve.append(row)
        self._write_curve()
        self.logger.record("eval/success_rate", row["success_rate"])
        self.logger.record("eval/ep_return", row["mean_return"])
        self.logger.record("eval/ep_length", row["mean_length"])
        self.logger.record("eval/final_progress", row["mean_final_progress"])
        if row["success_rate"] > self.best:
            self.best = row["success_rate"]
            save_model_atomic(model, self.eval_dir / "best_model.zip")
        if frames:
            self._write_video(frames)
        self.logger.dump(self.num_timesteps)
        return row

    def _write_curve(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.FIELDS)
        writer.writeheader()
        for row in self.curve:
            writer.writerow(
                {k: (int(row[k]) if k in ("timesteps", "episodes") else row.get(k, "")) for k in self.FIELDS}
            )
        atomic_write_text(self.eval_dir / "curve.csv", buf.getvalue())  # (creates eval_dir)

    def _write_video(self, frames: list[np.ndarray]) -> None:
        stack = write_rollout_video(self.eval_dir / "videos" / f"step_{self.num_timesteps:09d}.mp4", frames, self.fps)
        # TensorBoard video needs moviepy; a filmstrip of 8 frames carries the same story.
        picks = np.linspace(0, len(stack) - 1, num=min(8, len(stack))).astype(int)
        strip = np.concatenate(list(stack[picks]), axis=1)
        self.logger.record("eval/rollout", Image(strip, "HWC"), exclude=("stdout", "log", "json", "csv"))


# --------------------------------------------------------------------------------------------
# Checkpoints and progress.
# --------------------------------------------------------------------------------------------


def _model_bytes(model: Any) -> bytes:
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def save_model_atomic(model: Any, path: Path) -> Path:
    """``model.save`` to a temporary sibling, then rename (a reader never sees a partial zip)."""
    return atomic_write_bytes(Path(path), _model_bytes(model))


MODEL_FILE = "model.zip"
REPLAY_BUFFER_FILE = "replay_buffer.pkl"
STATE_FILE = "state.pkl"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FORMAT = 1
VEC_NORMALIZE_STATS = ("obs_rms", "ret_rms")


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint of the current step was written."""

    def __init__(self, checkpoint: Path, step: int, signum: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint {checkpoint}")
        self.checkpoint = checkpoint
        self.step = step
        self.signum = signum


def checkpoint_candidates(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in ``run_dir/checkpoints``, newest first (complete or not:
    :func:`load_checkpoint` checks). Directories of this version come before a legacy zip of the
    same step."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        if (m := CHECKPOINT_DIR_RE.match(p.name)) and p.is_dir():
            found.append((int(m.group(1)), 1, p))
        elif (m := LEGACY_CHECKPOINT_RE.match(p.name)) and p.is_file():
            found.append((int(m.group(1)), 0, p))
    return [(step, path) for step, _, path in sorted(found, reverse=True)]


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint directory; ``ValueError`` saying what is wrong
    otherwise (no manifest: the write never finished; size or hash mismatch: a file was damaged)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        files, step = manifest["files"], int(manifest["timesteps"])
    except FileNotFoundError:
        raise ValueError(f"{path} is incomplete (no {MANIFEST_FILE})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path / MANIFEST_FILE} is unreadable: {exc}") from None
    for name, meta in files.items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"{file} is missing")
        data = file.read_bytes()
        if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError(f"{file} is damaged (its size or SHA-256 differs from {MANIFEST_FILE})")
    return {**manifest, "timesteps": step}


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """``(path, step)`` of the newest complete, intact checkpoint directory of a run, or None."""
    for step, path in checkpoint_candidates(run_dir):
        if path.is_dir():
            try:
                verify_checkpoint(path)
            except ValueError:
                continue
            return path, step
    return None


def capture_training_state(model: Any, callbacks: dict[str, StatefulCallback]) -> dict[str, Any]:
    """Everything besides the model zip and the replay buffer that a resumed run needs to carry on as
    this one would: RNG states (python, numpy, torch, the action space's, each env's), the callbacks'
    bookkeeping and VecNormalize's running statistics."""
    rng: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "action_space": model.action_space.np_random.bit_generator.state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["torch_cuda"] = torch.cuda.get_rng_state_all()
    env = model.get_env()
    if env is not None:
        rng["envs"] = env.get_attr("np_random")
    state: dict[str, Any] = {"rng": rng, "callbacks": {k: cb.state_dict() for k, cb in callbacks.items()}}
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None:  # (obs_rms exists only with norm_obs)
        state["vec_normalize"] = {k: v for k, v in vars(normalizer).items() if k in VEC_NORMALIZE_STATS}
    return state


def restore_training_state(model: Any, state: dict[str, Any], callbacks: dict[str, StatefulCallback]) -> None:
    """Undo :func:`capture_training_state` on a freshly loaded model (call before ``learn``).

    SB3's ``load`` reseeds every RNG and queues ``seed + i`` for env ``i``'s next reset, which would
    replay the run's first episodes; the queued seeds are used up by one reset here, then each env
    gets its saved generator back, and the reset SB3 does at ``learn`` (a loaded model has no last
    observation) draws the next episode from it.
    (An episode in progress at the checkpoint is not restored: the env restarts with a new one.)"""
    for key, cb in callbacks.items():
        if key in state.get("callbacks", {}):
            cb.load_state_dict(state["callbacks"][key])
    rng = state.get("rng")
    if not rng:
        return
    env = model.get_env()
    if env is not None and "envs" in rng:
        env.reset()
        for i, generator in enumerate(rng["envs"]):
            env.set_attr("np_random", generator, indices=[i])
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None:
        for key, stats in state.get("vec_normalize", {}).items():
            setattr(normalizer, key, stats)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["torch_cuda"])
    model.action_space.np_random.bit_generator.state = rng["action_space"]


def write_checkpoint(model: Any, run_dir: Path, state: dict[str, Any]) -> Path:
    """``run_dir/checkpoints/step_N/`` as one unit: the model zip, the replay buffer (off-policy
    learners), ``state.pkl`` (:func:`capture_training_state`) and ``manifest.json`` (step, size and
    SHA-256 of each file). Built under a temporary name and renamed into place complete, so a
    crash at any moment leaves either the whole checkpoint or none of it."""
    step = int(model.num_timesteps)
    target = Path(run_dir) / "checkpoints" / f"step_{step:09d}"
    blobs = {MODEL_FILE: _model_bytes(model)}
    if getattr(model, "replay_buffer", None) is not None:
        buf = io.BytesIO()
        model.save_replay_buffer(buf)
        blobs[REPLAY_BUFFER_FILE] = buf.getvalue()
    blobs[STATE_FILE] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    with atomic_dir(target, overwrite=True) as tmp:
        for name, data in blobs.items():
            atomic_write_bytes(tmp / name, data)
        files = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in blobs.items()}
        atomic_write_json(tmp / MANIFEST_FILE, {"format": CHECKPOINT_FORMAT, "timesteps": step, "files": files})
    return target


def load_checkpoint(
    path: Path, algo_class: Any, env: Any, device: str, tensorboard_log: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """``(model, state)`` from a checkpoint directory (verified first) or a legacy ``step_N.zip``
    (with the run's one ``replay_buffer.pkl`` if present; it may not match that step, and it has
    no RNG or callback state). Raises if anything in it cannot be read."""
    path = Path(path)
    if path.is_file():  # legacy
        model = algo_class.load(path, env=env, device=device, tensorboard_log=tensorboard_log)
        buffer = path.parent / REPLAY_BUFFER_FILE
        if hasattr(model, "load_replay_buffer") and buffer.is_file():
            model.load_replay_buffer(buffer)
        print(
            f"prism-train: resuming from {path}, a checkpoint of an earlier version: its replay buffer "
            "may be from another step and its RNG state was not saved",
            file=sys.stderr,
        )
        curve_file = path.parent.parent / "eval" / "curve.csv"
        curve = (
            [r for r in read_eval_curve(curve_file) if r["timesteps"] <= model.num_timesteps]
            if curve_file.is_file()
            else []
        )
        evaluation = {
            "curve": curve,
            "best": max((r["success_rate"] for r in curve), default=-1.0),
            "last_eval_step": int(model.num_timesteps),
            "n_evals": len(curve),
        }
        return model, {"callbacks": {"eval": evaluation}}
    manifest = verify_checkpoint(path)
    model = algo_class.load(path / MODEL_FILE, env=env, device=device, tensorboard_log=tensorboard_log)
    if REPLAY_BUFFER_FILE in manifest["files"]:
        model.load_replay_buffer(path / REPLAY_BUFFER_FILE)
    state = pickle.loads((path / STATE_FILE).read_bytes())
    if model.num_timesteps != manifest["timesteps"]:
        raise ValueError(
            f"{path}: the model is at step {model.num_timesteps}, the manifest says {manifest['timesteps']}"
        )
    return model, state


def set_aside(path: Path) -> Path:
    """Rename an unusable checkpoint to ``<name>.unusable[-k]`` (no longer a checkpoint name)."""
    path = Path(path)
    target = path.with_name(f"{path.name}.unusable")
    k = 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.unusable-{k}")
    return path.rename(target)


def remove_stale_checkpoint_temporaries(run_dir: Path) -> None:
    """Half-written checkpoint directories that a killed run left behind (their writer is gone)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if ckpt_dir.is_dir():
        for base in {m.group(1) for p in ckpt_dir.iterdir() if (m := TEMPORARY_RE.match(p.name))}:
            remove_stale_temporaries(ckpt_dir / base)


class AtomicCheckpointCallback(BaseCallback):
    """Writes a checkpoint (:func:`write_checkpoint`) after every evaluation of ``eval_callback``,
    every ``every`` env steps, every ``every_seconds`` of wall time, at the end of training and when
    :meth:`request_stop` was called (then it raises :class:`TrainingInterrupted`). Keeps the
    ``keep`` newest.

    Checkpoints are taken at the start of a rollout, the one point of SB3's loop where the model,
    its replay buffer and ``num_timesteps`` agree: every transition of the steps counted is stored
    and every gradient step due is done.

    Not a ``CheckpointCallback`` subclass: that one saves from ``on_step`` (before the step's
    transition is stored), as separate files, without RNG or callback state, so nothing would be kept."""

    def __init__(
        self,
        run_dir: Path,
        every: int,
        keep: int = 3,
        every_seconds: float = 0.0,
        eval_callback: TrueSuccessEvalCallback | None = None,
        stateful: dict[str, StatefulCallback] | None = None,
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.every = every
        self.keep = max(1, keep)
        self.every_seconds = every_seconds
        self.eval_callback = eval_callback
        self.stateful = dict(stateful or {})
        self.stop_signal: int | None = None
        self._saved_step = 0
        self._saved_at = 0.0

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Checkpoint at the next consistent point, then stop training with :class:`TrainingInterrupted`."""
        self.stop_signal = signum

    def _init_callback(self) -> None:
        self._saved_step = self.model.num_timesteps
        self._saved_at = time.monotonic()

    def _on_step(self) -> bool:
        return True

    def _due(self) -> bool:
        step = self.model.num_timesteps
        if step == self._saved_step:
            return False
        return bool(
            (self.every and step - self._saved_step >= self.every)
            or (self.eval_callback is not None and self.eval_callback.last_eval_step > self._saved_step)
            or (self.every_seconds and time.monotonic() - self._saved_at >= self.every_seconds)
        )

    def _on_rollout_start(self) -> None:
        if self.stop_signal is not None:
            path = self.save()
            raise TrainingInterrupted(path, int(self.model.num_timesteps), self.stop_signal)
        if self._due():
            self.save()

    def _on_training_end(self) -> None:
        self.save()

    def save(self) -> Path:
        path = write_checkpoint(self.model, self.run_dir, capture_training_state(self.model, self.stateful))
        self._saved_step = int(self.model.num_timesteps)
        self._saved_at = time.monotonic()
        self._prune()
        return path

    def _prune(self) -> None:
        for _step, path in checkpoint_candidates(self.run_dir)[self.keep :]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:  # a legacy zip: the newer checkpoints replace it and the buffer it shared
                path.unlink(missing_ok=True)
        if not any(LEGACY_CHECKPOINT_RE.match(p.name) for p in self.dir.iterdir()):
            for name in (REPLAY_BUFFER_FILE, "latest.json"):
                (self.dir / name).unlink(missing_ok=True)


@contextlib.contextmanager
def stop_on_signals(
    callback: AtomicCheckpointCallback, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM ask ``callback`` to checkpoint and stop (a second one stops at
    once, without saving). Only the main thread can install signal handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if callback.stop_signal is not None:
            raise KeyboardInterrupt
        callback.request_stop(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class SuccessProgressBarCallback(ProgressBarCallback):
    """SB3's progress bar (over this session's env steps), labelled with the rolling true success
    rate of ``log`` (the label: SB3's rich bar shows no tqdm postfix)."""

    def __init__(self, log: ShapingLogCallback | None = None) -> None:
        super().__init__()
        self.log = log

    def _on_step(self) -> bool:
        super()._on_step()
        if self.log is not None and self.log.true_success and self.n_calls % 50 == 0:
            self.pbar.set_description(f"success {np.mean(self.log.true_success):.2f}", refresh=False)
        return True

    def close(self) -> None:
        """Close the bar after an interrupt too (SB3 ends it only when ``learn`` returns; closing
        twice is harmless)."""
        if getattr(self, "pbar", None) is not None:
            self.pbar.close()


__all__ = [
    "AtomicCheckpointCallback",
    "EpisodeResult",
    "ShapingLogCallback",
    "StatefulCallback",
    "SuccessProgressBarCallback",
    "TrainingInterrupted",
    "TrueSuccessEvalCallback",
    "capture_training_state",
    "checkpoint_candidates",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_stale_checkpoint_temporaries",
    "restore_training_state",
    "run_episodes",
    "save_model_atomic",
    "set_aside",
    "stop_on_signals",
    "verify_checkpoint",
    "write_checkpoint",
    "write_rollout_video",
]
