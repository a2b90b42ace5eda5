"""Zero-shot CLIP reward in the style of VLM-RM, through open_clip (weights from a local file).

With unit-normalised embeddings of the image x, the goal prompt g (from the task) and a generic
baseline prompt b, VLM-RM projects onto the baseline→goal direction d = g − b:

    P = α·d dᵀ/‖d‖² + (1 − α)·I,      R(x) = 1 − ½‖(x − g)P‖²

(α = 1: only the component along the task direction counts). Multi-view states average R over
views. Progress Φ ∈ [0, 1] comes from R by

* offline (:meth:`score_episode`): min–max over the episode's frames;
* online (:meth:`encode` / hops): a fixed calibration Φ = clip((R − r_low)/(r_high − r_low)),
  with (r_low, r_high) from :meth:`calibrate` on recorded episodes, or by default R at the
  baseline prompt's and the goal prompt's own embeddings (a crude range: images rarely reach a
  text embedding, so calibrate for real use).

Hops are ``hop_from_progress(Φ(before), Φ(after))``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reward_models.base import Observation, ProgressModel, hop_from_progress
from reward_models.baselines.common import EpisodeProgress, EpisodeScorer, image_views
from reward_models.devices import resolve_device


@dataclass
class CLIPRewardConfig:
    """How the CLIP reward is computed."""

    arch: str = "ViT-B-32"
    """open_clip architecture name, or a path to a model-config JSON (registered on the fly)."""
    weights: str | None = None
    """Local open_clip checkpoint (``.pt``/``.bin``/``.safetensors``). Required: nothing downloads."""
    goal_template: str = "a robot arm that has completed the task: {task}"
    """Goal prompt; ``{task}`` is replaced by the instruction."""
    baseline_prompt: str = "a robot arm on a table"
    """Generic baseline prompt b (VLM-RM)."""
    alpha: float = 1.0
    """Projection strength α in [0, 1] (1 = project fully onto the goal − baseline direction)."""
    r_low: float | None = None
    """Online calibration: R that maps to Φ = 0 (default: R of the baseline prompt embedding)."""
    r_high: float | None = None
    """Online calibration: R that maps to Φ = 1 (default: R of the goal prompt embedding = 1)."""


def _register_arch(arch: str) -> str:
    """Accept an open_clip model-config JSON path: register its folder, return the model name."""
    import open_clip  # open_clip (learn extra): only when a clip: model loads

    p = Path(arch)
    if p.suffix == ".json":
        if not p.is_file():
            raise FileNotFoundError(f"open_clip model config {p} does not exist")
        open_clip.add_model_config(p)
        return p.stem
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; use a name from open_clip.list_models() "
            "(e.g. ViT-B-32) or a path to a model-config .json"
        )
    return arch


class CLIPRewardModel(EpisodeScorer, ProgressModel):
    """VLM-RM-style CLIP reward as a progress model (see module docstring)."""

    def __init__(self, config: CLIPRewardConfig, device: str = "auto") -> None:
        import open_clip  # open_clip and torch (learn extra): only when a clip: model loads
        import torch

        if not config.weights:
            raise ValueError(
                "the CLIP baseline needs local weights (no downloads here): use "
                f"clip:{config.arch}:/path/to/open_clip_checkpoint.pt"
            )
        if not Path(config.weights).is_file():
            raise FileNotFoundError(f"CLIP weights file {config.weights} does not exist")
        if not 0.0 <= config.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {config.alpha}")
        self.cfg = config
        self.device = resolve_device(device)
        name = _register_arch(config.arch)
        try:
            self.clip = open_clip.create_model(name, pretrained=config.weights, device=self.device)
        except Exception as exc:
            raise ValueError(f"cannot load open_clip {name!r} weights from {config.weights}: {exc}") from exc
        self.clip.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        pp = getattr(self.clip.visual, "preprocess_cfg", {}) or {}
        size = pp.get("size", getattr(self.clip.visual, "image_size", 224))
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self._mean = torch.tensor(pp.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=self.device).view(
            1, 3, 1, 1
        )
        self._std = torch.tensor(pp.get("std", (0.26862954, 0.26130258, 0.27577711)), device=self.device).view(
            1, 3, 1, 1
        )
        self._text_cache: dict[str, Any] = {}
        self._baseline = self._embed_texts([config.baseline_prompt])[0]
        self.model_id = f"clip:{name}"

    # -- embeddings ----------------------------------------------------------------------------

    def _embed_texts(self, texts: Sequence[str]):
        import torch  # torch: the registry imports this module without it

        with torch.no_grad():
            emb = self.clip.encode_text(self.tokenizer(list(texts)).to(self.device)).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def _goal(self, task: str):
        if task not in self._text_cache:
            self._text_cache[task] = self._embed_texts([self.cfg.goal_template.format(task=task)])[0]
        return self._text_cache[task]

    def _embed_images(self, images: np.ndarray):
        """uint8 (N, H, W, 3) -> unit embeddings (N, D); resize + centre crop as open_clip does."""
        import torch  # torch: the registry imports this module without it
        import torch.nn.functional as F

        x = torch.as_tensor(np.ascontiguousarray(images), device=self.device).permute(0, 3, 1, 2).float() / 255.0
        th, tw = self.image_size
        h, w = x.shape[-2:]
        scale = max(th / h, tw / w)
        x = F.interpolate(
            x,
            size=(max(th, round(h * scale)), max(tw, round(w * scale))),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        top, left = (x.shape[-2] - th) // 2, (x.shape[-1] - tw) // 2
        x = x[..., top : top + th, left : left + tw].clamp(0, 1)
        x = (x - self._mean) / self._std
        with torch.no_grad():
            emb = self.clip.encode_image(x).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def encode(self, obs: Observation):
        """(B, V, D) unit image embeddings, one per view (views in the observation's order)."""
        import torch  # torch: the registry imports this module without it

        views = image_views(obs, self.cameras)
        return torch.stack([self._embed_images(v) for v in views.values()], dim=1)

    # -- reward ----------------------------------------------------------------------------------

    def reward_from_embeddings(self, emb, tasks: Sequence[str]) -> np.ndarray:
        """VLM-RM reward R (B,) averaged over views, from :meth:`encode` output."""
        import torch  # torch: the registry imports this module without it

        goals = torch.stack([self._goal(t) for t in tasks])  # (B, D)
        d = goals - self._baseline.unsqueeze(0)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        diff = emb - goals.unsqueeze(1)  # (B, V, D)
        along = (diff * d.unsqueeze(1)).sum(-1, keepdim=True) * d.unsqueeze(1)
        a = self.cfg.alpha
        projected = a * along + (1.0 - a) * diff
        r = 1.0 - 0.5 * (projected**2).sum(-1)  # (B, V)
        return r.mean(dim=1).cpu().numpy().astype(np.float64)

    def calibration(self, task: str) -> tuple[float, float]:
        """(r_low, r_high) used online for ``task``."""
        lo, hi = self.cfg.r_low, self.cfg.r_high
        if lo is None or hi is None:
            goal = self._goal(task)
            probe = np.stack([self._baseline.cpu().numpy(), goal.cpu().numpy()])
            import torch  # torch: the registry imports this module without it

            r = self.reward_from_embeddings(torch.as_tensor(probe, device=self.device).unsqueeze(1), [task, task])
            lo = float(r[0]) if lo is None else lo
            hi = float(r[1]) if hi is None else hi
        if hi - lo <= 1e-9:
            raise ValueError(f"CLIP calibration range is empty (r_low={lo}, r_high={hi})")
        return lo, hi

    def calibrate(
        self, episodes: Iterable[tuple[Mapping[str, np.ndarray], str]], batch_size: int = 64
    ) -> tuple[float, float]:
        """Set the online (r_low, r_high) to the min / max reward seen over recorded episodes."""
        lows, highs = [], []
        for frames, task in episodes:
            r = self.episode_rewards(frames, task, batch_size)
            lows.append(r.min())
            highs.append(r.max())
        if not lows:
            raise ValueError("calibrate() got no episodes")
        self.cfg.r_low, self.cfg.r_high = float(min(lows)), float(max(highs))
        return self.cfg.r_low, self.cfg.r_high

    def progress_from_embeddings(self, emb, tasks: Sequence[str]) -> np.ndarray:
        r = self.reward_from_embeddings(emb, tasks)
        out = np.empty_like(r)
        for i, t in enumerate(tasks):
            lo, hi = self.calibration(t)
            out[i] = (r[i] - lo) / (hi - lo)
        return np.clip(out, 0.0, 1.0)

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None) -> np.ndarray:
        tasks = list(tasks)
        return hop_from_progress(
            self.progress_from_embeddings(before, tasks), self.progress_from_embeddings(after, tasks)
        )

    def episode_rewards(self, frames: Mapping[str, np.ndarray], task: str, batch_size: int = 64) -> np.ndarray:
        views = image_views(frames, self.cameras)
        T = len(next(iter(views.values())))
        out = []
        for s in range(0, T, batch_size):
            chunk = {k: v[s : s + batch_size] for k, v in views.items()}
            out.append(self.reward_from_embeddings(self.encode(chunk), [task] * len(next(iter(chunk.values())))))
        return np.concatenate(out)

    def score_episode(self, frames: Mapping[str, np.ndarray], task: str, batch_size: int = 64) -> EpisodeProgress:
        r = self.episode_rewards(frames, task, batch_size)
        span = r.max() - r.min()
        phi = (r - r.min()) / span if span > 1e-9 else np.zeros_like(r)
        return EpisodeProgress(progress=phi, extra={"reward_min": float(r.min()), "reward_max": float(r.max())})

    def config(self) -> dict[str, Any]:  # type: ignore[override]
        return {**super().config(), "kind": "clip", **json.loads(json.dumps(asdict(self.cfg)))}
