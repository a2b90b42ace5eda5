"""SB3 callbacks of ``prism-train``: shaping/ground-truth logging, true-success evaluation with
rollout videos, atomic checkpoints and a tqdm progress bar."""

from __future__ import annotations

import csv
import io
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from episodes.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

CHECKPOINT_RE = re.compile(r"^step_(\d+)\.zip$")


# --------------------------------------------------------------------------------------------
# Logging: ground truth (Monitor) and shaping (ShapedRewardVecEnv) side by side.
# --------------------------------------------------------------------------------------------


class ShapingLogCallback(BaseCallback):
    """Logs, over the last ``window`` finished training episodes:

    ``true/success_rate`` and ``true/ep_return`` (Monitor: the env's own reward and is_success),
    ``shaping/ep_shaped_return``, ``shaping/phi_final``, ``shaping/phi_max`` and
    ``shaping/model_success_rate`` (the reward model's view), plus ``shaping/phi`` per step.
    """

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
        results.append(EpisodeResult(bool(info.get("is_success", False)), total, length, seed + k,
                                     float(info.get("progress", float("nan")))))
    return results, frames


def read_eval_curve(path: Path) -> list[dict[str, float]]:
    """Rows of a run's ``eval/curve.csv`` (written by :class:`TrueSuccessEvalCallback`) as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]


class TrueSuccessEvalCallback(BaseCallback):
    """Every ``eval_every`` env steps: deterministic rollouts on a separate, unshaped env; logs
    ``eval/success_rate`` and ``eval/ep_return``, appends to ``eval/curve.csv``, keeps
    ``eval/best_model.zip``; every ``video_every``-th evaluation writes ``eval/videos/step_N.mp4``
    and a filmstrip image to TensorBoard."""

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
        self._last_eval = 0
        self._n_evals = 0

    def _init_callback(self) -> None:
        self.eval_dir.mkdir(parents=True, exist_ok=True)
        path = self.eval_dir / "curve.csv"
        if path.is_file() and not self.curve:  # resuming: keep the curve so far
            self.curve = read_eval_curve(path)
            self.best = max((r["success_rate"] for r in self.curve), default=-1.0)
            self._n_evals = len(self.curve)
        # (the callback's own num_timesteps is only synced on the first step)
        self._last_eval = self.model.num_timesteps

    def _on_step(self) -> bool:
        if self.eval_every and self.num_timesteps - self._last_eval >= self.eval_every:
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.curve or self.curve[-1]["timesteps"] < self.num_timesteps:
            self.evaluate()
        if self.env is not None:
            self.env.close()
            self.env = None

    def evaluate(self) -> dict[str, float]:
        if self.env is None:
            self.env = self.make_env()
        self._last_eval = self.num_timesteps
        self._n_evals += 1
        video = self.video_every > 0 and (self._n_evals % self.video_every == 0 or self._n_evals == 1)
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
            writer.writerow({k: (int(row[k]) if k in ("timesteps", "episodes") else row.get(k, "")) for k in self.FIELDS})
        atomic_write_text(self.eval_dir / "curve.csv", buf.getvalue())

    def _write_video(self, frames: list[np.ndarray]) -> None:
        from stable_baselines3.common.logger import Image

        from episodes.video import write_video

        stack = np.stack(frames)
        h, w = stack.shape[1:3]
        stack = stack[:, : h - h % 2, : w - w % 2]
        write_video(self.eval_dir / "videos" / f"step_{self.num_timesteps:09d}.mp4", stack, fps=self.fps)
        # TensorBoard video needs moviepy; a filmstrip of 8 frames carries the same story.
        picks = np.linspace(0, len(stack) - 1, num=min(8, len(stack))).astype(int)
        strip = np.concatenate(list(stack[picks]), axis=1)
        self.logger.record("eval/rollout", Image(strip, "HWC"), exclude=("stdout", "log", "json", "csv"))


# --------------------------------------------------------------------------------------------
# Checkpoints and progress.
# --------------------------------------------------------------------------------------------


def save_model_atomic(model: Any, path: Path) -> Path:
    """``model.save`` to a temporary sibling, then rename (a reader never sees a partial zip)."""
    path = Path(path)
    buf = io.BytesIO()
    model.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def save_replay_buffer_atomic(model: Any, path: Path) -> Path:
    buf = io.BytesIO()
    model.save_replay_buffer(buf)
    return atomic_write_bytes(path, buf.getvalue())


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    if not found:
        return None
    step, path = max(found)
    return path, step


class AtomicCheckpointCallback(BaseCallback):
    """``checkpoints/step_N.zip`` every ``every`` env steps (and at the end), the newest replay
    buffer for off-policy learners, and ``checkpoints/latest.json``; keeps the ``keep`` newest."""

    def __init__(self, run_dir: Path, every: int, keep: int = 3, save_replay_buffer: bool = True) -> None:
        super().__init__()
        self.dir = Path(run_dir) / "checkpoints"
        self.every = every
        self.keep = keep
        self.save_replay_buffer = save_replay_buffer
        self._last = 0

    def _init_callback(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._last = self.model.num_timesteps

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps - self._last >= self.every:
            self.save()
        return True

    def _on_training_end(self) -> None:
        self.save()

    def save(self) -> Path:
        self._last = self.num_timesteps
        path = save_model_atomic(self.model, self.dir / f"step_{self.num_timesteps:09d}.zip")
        if self.save_replay_buffer and hasattr(self.model, "replay_buffer") and self.model.replay_buffer is not None:
            save_replay_buffer_atomic(self.model, self.dir / "replay_buffer.pkl")
        atomic_write_json(self.dir / "latest.json", {"path": path.name, "timesteps": int(self.num_timesteps)})
        old = sorted(p for p in self.dir.iterdir() if CHECKPOINT_RE.match(p.name))[: -self.keep]
        for p in old:
            p.unlink(missing_ok=True)
        return path


class TqdmCallback(BaseCallback):
    """A tqdm bar over env steps showing the rolling true success rate."""

    def __init__(self, total: int, log: ShapingLogCallback | None = None, disable: bool = False) -> None:
        super().__init__()
        self.total = total
        self.log = log
        self.disable = disable
        self.bar = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", desc="train", disable=self.disable)

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.num_timesteps - self.bar.n)
            if self.log is not None and self.log.true_success and self.n_calls % 50 == 0:
                self.bar.set_postfix(success=f"{np.mean(self.log.true_success):.2f}", refresh=False)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = [
    "AtomicCheckpointCallback",
    "EpisodeResult",
    "ShapingLogCallback",
    "TqdmCallback",
    "TrueSuccessEvalCallback",
    "latest_checkpoint",
    "run_episodes",
    "save_model_atomic",
]
