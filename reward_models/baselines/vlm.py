"""Generative VLM baselines through transformers image-text-to-text models (local weights only).

* :class:`VLMBackend` -- loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a local
  directory (``local_files_only=True``) and runs batched greedy generation on interleaved
  text/image prompts (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM/Idefics3, ... anything whose
  processor accepts a chat template with ``{"type": "image"}`` entries).
* :class:`GVLProgressModel` (``vlm:<dir>``) -- GVL-style: the episode's frames are shown
  **shuffled** (so the model cannot read progress off the temporal order), after the first frame
  given as the 0 % reference, and the model states each frame's completion percent.
* :class:`RubricProgressModel` (``vlm-rubric:<dir>``) -- RoboReward-style 1–5 rubric on the
  whole clip; the progress curve comes from scoring growing prefixes of the clip.

Both are :class:`ProgressModel` s too (per-state prompts, hops from the implied progress), so
online consumers can use them unchanged -- slowly: one generation per state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reward_models.base import Observation, ProgressModel, hop_from_progress
from reward_models.baselines.common import (
    EpisodeProgress,
    EpisodeScorer,
    even_indices,
    image_views,
    interpolate_missing,
)
from reward_models.baselines.parsing import ParseStats, parse_frame_percents, parse_percent, parse_rubric
from reward_models.devices import resolve_device

Content = list[dict[str, str]]
"""A chat message content list: ``{"type": "text", "text": ...}`` / ``{"type": "image"}``."""


def _check_local_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what}: {p} is not a local model directory. Weights are never downloaded here: "
            "download the model elsewhere (e.g. `hf download ORG/NAME --local-dir DIR`) and pass DIR"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {p} has no config.json (not a transformers model directory)")
    return p


class VLMBackend:
    """A local image-text-to-text model with batched greedy generation."""

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        max_new_tokens: int = 32,
        max_pixels: int | None = 76800,
        min_pixels: int | None = None,
    ) -> None:
        import torch  # torch and transformers: only when a vlm model loads
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = _check_local_dir(path, "VLM")
        self.device = resolve_device(device)
        self.max_new_tokens = int(max_new_tokens)
        self.max_pixels = max_pixels
        try:
            self.processor = AutoProcessor.from_pretrained(str(self.path), local_files_only=True)
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            self.model = AutoModelForImageTextToText.from_pretrained(str(self.path), local_files_only=True, dtype=dtype)
        except Exception as exc:
            raise ValueError(f"cannot load a transformers image-text-to-text model from {self.path}: {exc}") from exc
        self.model.to(self.device).eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # batched generation continues every row at its end
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        ip = getattr(self.processor, "image_processor", None)
        size = getattr(ip, "size", None)
        # Qwen-style processors bound the pixel count per image (the released Robo-Dopamine
        # GRM runs with 12544..76800 pixels).
        if isinstance(size, Mapping) and "longest_edge" in size and "shortest_edge" in size and max_pixels:
            ip.size = {"shortest_edge": int(min_pixels or size["shortest_edge"]), "longest_edge": int(max_pixels)}

    def _prepare_image(self, img: np.ndarray):
        pil = Image.fromarray(np.ascontiguousarray(img))
        if self.max_pixels and pil.width * pil.height > self.max_pixels:
            s = (self.max_pixels / (pil.width * pil.height)) ** 0.5
            pil = pil.resize((max(28, int(pil.width * s)), max(28, int(pil.height * s))), Image.BILINEAR)
        return pil

    def generate(self, contents: Sequence[Content], images: Sequence[Sequence[np.ndarray]]) -> list[str]:
        """Greedy answers for a batch of prompts (one user turn each, images in order)."""
        import torch  # torch: the registry imports this module without it

        if len(contents) != len(images):
            raise ValueError(f"{len(contents)} prompts but {len(images)} image lists")
        for c, imgs in zip(contents, images):
            n_slots = sum(1 for part in c if part.get("type") == "image")
            if n_slots != len(imgs):
                raise ValueError(f"prompt has {n_slots} image slots but {len(imgs)} images were given")
        texts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": list(c)}], add_generation_prompt=True, tokenize=False
            )
            for c in contents
        ]
        pil = [[self._prepare_image(im) for im in imgs] for imgs in images]
        inputs = self.processor(text=texts, images=pil, return_tensors="pt", padding=True)
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [s.strip() for s in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


# ----------------------------------------------------------------------------------------------
# GVL: per-frame completion percent on shuffled frames.
# ----------------------------------------------------------------------------------------------


@dataclass
class GVLConfig:
    """GVL-style per-frame percent scorer."""

    max_frames: int = 16
    """Frames shown per episode (evenly spaced, first and last included); others interpolated."""
    camera: str | None = None
    """View to show (default: the first camera of the episode)."""
    seed: int = 0
    """Seed of the frame shuffle (fixed, so reports are reproducible)."""
    max_new_tokens: int = 256
    """Answer budget: about 10 tokens per frame line."""
    max_pixels: int = 76800
    """Upper bound on pixels per image given to the processor."""


class GVLProgressModel(EpisodeScorer, ProgressModel):
    """``vlm:<dir>``: the model states a completion percent for each (shuffled) frame."""

    def __init__(self, path: str | Path, device: str = "auto", config: GVLConfig | None = None) -> None:
        self.cfg = config or GVLConfig()
        self.backend = VLMBackend(
            path, device=device, max_new_tokens=self.cfg.max_new_tokens, max_pixels=self.cfg.max_pixels
        )
        self.model_id = f"vlm:{self.backend.path.name}"
        self.stats = ParseStats()

    def _view(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        views = image_views(frames)
        cam = self.cfg.camera or next(iter(views))
        if cam not in views:
            raise ValueError(f"GVL camera {cam!r} not in the episode (views: {sorted(views)})")
        return views[cam]

    @staticmethod
    def episode_prompt(task: str, n: int) -> Content:
        content: Content = [
            {
                "type": "text",
                "text": (
                    "You are an expert roboticist tasked to predict task completion percentages for frames "
                    f"of a robot attempting the task: {task}.\nThe task completion percentages are between 0 "
                    "and 100, where 100 corresponds to full task completion. The frames below are shown in "
                    "random order.\nInitial robot scene (0% complete): "
                ),
            },
            {"type": "image"},
        ]
        for k in range(n):
            content += [{"type": "text", "text": f"\nFrame {k + 1}: "}, {"type": "image"}]
        content.append(
            {
                "type": "text",
                "text": (
                    f"\nFor each of the {n} frames, answer one line 'Frame <number>: <percent>%' and nothing else."
                ),
            }
        )
        return content

    def score_episode(self, frames: Mapping[str, np.ndarray], task: str, batch_size: int = 16) -> EpisodeProgress:
        video = self._view(frames)
        T = len(video)
        idx = even_indices(T, self.cfg.max_frames)
        rng = np.random.default_rng(self.cfg.seed)
        order = rng.permutation(len(idx))  # order[k] = which sampled frame is shown as "Frame k+1"
        answer = self.backend.generate(
            [self.episode_prompt(task, len(idx))], [[video[0]] + [video[idx[o]] for o in order]]
        )[0]
        parsed = parse_frame_percents(answer, len(idx))
        values = np.full(len(idx), np.nan)
        failures = 0
        for k, o in enumerate(order):
            ok = parsed[k] is not None
            self.stats.record(ok, answer)
            failures += not ok
            if ok:
                values[o] = parsed[k] / 100.0
        phi = np.clip(interpolate_missing(values, idx, T, fill=0.0), 0.0, 1.0)
        return EpisodeProgress(progress=phi, extra={"parse_failures": failures, "frames_asked": int(len(idx))})

    # -- online: one prompt per state ------------------------------------------------------------

    def state_prompt(self, task: str) -> Content:
        return [
            {"type": "text", "text": f"A robot is attempting the task: {task}.\nCurrent scene: "},
            {"type": "image"},
            {
                "type": "text",
                "text": "\nWhat percentage of the task is complete (0-100)? Answer with one number followed by %.",
            },
        ]

    def encode(self, obs: Observation) -> np.ndarray:
        """The chosen view (B, H, W, 3); the stated completion (unparseable -> 0) is asked for in
        :meth:`hop_from_embeddings`."""
        # The "embedding" is the chosen view itself: the prompt needs the task, which only
        # hop_from_embeddings receives.
        return self._view(obs)

    def _progress(self, video: np.ndarray, tasks: Sequence[str], batch_size: int = 8) -> np.ndarray:
        out = np.zeros(len(video))
        for s in range(0, len(video), batch_size):
            rows = range(s, min(len(video), s + batch_size))
            answers = self.backend.generate([self.state_prompt(tasks[i]) for i in rows], [[video[i]] for i in rows])
            for i, a in zip(rows, answers):
                p = parse_percent(a)
                self.stats.record(p is not None, a)
                out[i] = (p or 0.0) / 100.0
        return out

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None) -> np.ndarray:
        tasks = list(tasks)
        return hop_from_progress(self._progress(np.asarray(before), tasks), self._progress(np.asarray(after), tasks))

    def config(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            **super().config(),
            "kind": "vlm-gvl",
            "path": str(self.backend.path),
            **asdict(self.cfg),
            **self.stats.as_dict(),
        }


# ----------------------------------------------------------------------------------------------
# RoboReward-style 1–5 rubric on the whole clip.
# ----------------------------------------------------------------------------------------------

RUBRIC = (
    "1 - No success: the robot made no meaningful progress toward the task.\n"
    "2 - Minimal progress: the robot started the task but achieved little.\n"
    "3 - Partial completion: the robot completed a substantial part of the task.\n"
    "4 - Near completion: the task is almost done but not fully achieved.\n"
    "5 - Perfect completion: the task was fully accomplished."
)


@dataclass
class RubricConfig:
    """RoboReward-style rubric scorer."""

    max_frames: int = 8
    """Frames per clip shown to the model (evenly spaced, first and last included)."""
    curve_points: int = 8
    """Prefixes of the episode scored to draw the progress curve (the last one is the whole clip)."""
    camera: str | None = None
    """View to show (default: the first camera)."""
    fallback_score: int = 1
    """Score used when an answer cannot be parsed (counted as a parse failure)."""
    max_new_tokens: int = 16
    """Answer budget."""
    max_pixels: int = 76800
    """Upper bound on pixels per image given to the processor."""


class RubricProgressModel(EpisodeScorer, ProgressModel):
    """``vlm-rubric:<dir>``: a 1–5 end score of the clip; Φ = (score − 1) / 4."""

    def __init__(self, path: str | Path, device: str = "auto", config: RubricConfig | None = None) -> None:
        self.cfg = config or RubricConfig()
        if not 1 <= self.cfg.fallback_score <= 5:
            raise ValueError(f"fallback_score must be in 1..5, got {self.cfg.fallback_score}")
        self.backend = VLMBackend(
            path, device=device, max_new_tokens=self.cfg.max_new_tokens, max_pixels=self.cfg.max_pixels
        )
        self.model_id = f"vlm-rubric:{self.backend.path.name}"
        self.stats = ParseStats()

    @staticmethod
    def clip_prompt(task: str, n_frames: int) -> Content:
        content: Content = [
            {
                "type": "text",
                "text": (f"Here are {n_frames} frames, in temporal order, of a robot attempting the task: {task}.\n"),
            }
        ]
        for k in range(n_frames):
            content += [{"type": "text", "text": f"Frame {k + 1}: "}, {"type": "image"}, {"type": "text", "text": "\n"}]
        content.append(
            {
                "type": "text",
                "text": (
                    "Rate how well the task was accomplished at the end of the clip using this rubric:\n"
                    f"{RUBRIC}\nAnswer with 'ANSWER: <score>' where <score> is 1, 2, 3, 4 or 5."
                ),
            }
        )
        return content

    def _score_clips(self, clips: Sequence[np.ndarray], tasks: Sequence[str], batch_size: int) -> np.ndarray:
        scores = np.zeros(len(clips))
        for s in range(0, len(clips), max(1, batch_size)):
            rows = list(range(s, min(len(clips), s + max(1, batch_size))))
            answers = self.backend.generate(
                [self.clip_prompt(tasks[i], len(clips[i])) for i in rows], [list(clips[i]) for i in rows]
            )
            for i, a in zip(rows, answers):
                r = parse_rubric(a)
                self.stats.record(r is not None, a)
                scores[i] = r if r is not None else self.cfg.fallback_score
        return scores

    def _view(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        views = image_views(frames)
        cam = self.cfg.camera or next(iter(views))
        if cam not in views:
            raise ValueError(f"rubric camera {cam!r} not in the episode (views: {sorted(views)})")
        return views[cam]

    def score_episode(self, frames: Mapping[str, np.ndarray], task: str, batch_size: int = 4) -> EpisodeProgress:
        video = self._view(frames)
        T = len(video)
        ends = even_indices(T, self.cfg.curve_points)
        ends = ends[ends > 0] if len(ends) > 1 else ends  # a one-frame prefix says nothing
        clips = [video[: e + 1][even_indices(e + 1, self.cfg.max_frames)] for e in ends]
        before = self.stats.failures
        scores = self._score_clips(clips, [task] * len(clips), batch_size)
        # Frame 0 is anchored at Φ = 0 (the start of an attempt, as in the hop trackers).
        positions = np.concatenate([[0], ends]) if ends[0] > 0 else ends
        values = np.concatenate([[0.0], (scores - 1.0) / 4.0]) if ends[0] > 0 else (scores - 1.0) / 4.0
        phi = np.clip(interpolate_missing(values, positions, T), 0.0, 1.0)
        return EpisodeProgress(
            progress=phi,
            end_score=float(scores[-1]),
            extra={"parse_failures": self.stats.failures - before, "prefix_scores": scores.tolist()},
        )

    def encode(self, obs: Observation) -> np.ndarray:
        return self._view(obs)

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None) -> np.ndarray:
        tasks = list(tasks)
        b = (self._score_clips([np.asarray(x)[None] for x in before], tasks, 8) - 1.0) / 4.0
        a = (self._score_clips([np.asarray(x)[None] for x in after], tasks, 8) - 1.0) / 4.0
        return hop_from_progress(b, a)

    def config(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            **super().config(),
            "kind": "vlm-rubric",
            "path": str(self.backend.path),
            **asdict(self.cfg),
            **self.stats.as_dict(),
        }
