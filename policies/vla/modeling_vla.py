"""The VLA network, its discretised action likelihood and the :class:`VLAPolicy` wrapper.

Architecture (one forward per observation gives a whole action chunk)::

    view v image ─▶ shared backbone ─▶ MLP ─▶ + view embedding[v] ─▶ slot v (zeros + flag when absent)
    instruction ─▶ frozen sentence encoder (cached) ─▶ MLP ─▶ text embedding ─▶ FiLM on the view slots
    joint positions + gripper width ─▶ normalise ─▶ MLP ─▶ proprio embedding
    [FiLM'd view slots, view flags, text, proprio] ─▶ trunk MLP ─▶ (H, A, K) action-token logits

**Action tokens.** As in OpenVLA, each action dimension in [-1, 1] is cut into K uniform bins (256)
and the policy is a categorical distribution over the bin of every dimension of every step of the
chunk. The tokens are decoded in parallel (one forward, independent given the observation), so

    log π(a_{1:H} | o) = Σ_h Σ_d log softmax(logits[h, d])[bin(a_{h, d})]

is exact -- not a bound or an approximation -- for the discretised action. Behaviour cloning
minimises exactly this negative log-likelihood, and online RL / DPO can use the same number.

**Executing chunks: receding horizon.** ``act`` predicts a chunk of H actions, executes its first
``execute_steps`` and then predicts again from the newest observation. Temporal ensembling (ACT)
averages overlapping chunks, so the action sent to the robot is not one the policy assigned a
likelihood to; with a receding horizon every executed action *is* a token sequence the policy
produced, whose log π is exact -- what policy gradients and DPO on rollouts need. Re-planning every
``execute_steps`` still corrects drift, and costs one forward per ``execute_steps`` steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from torch import nn

from episodes.atomic import atomic_dir
from episodes.config_io import require_checkpoint_files
from policies.vla.configuration_vla import VLAConfig, parse_vla_backbone
from reward_models.devices import resolve_device
from reward_models.modeling_grm import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ConvBackbone,
    HFVisionBackbone,
    load_weights_into,
    observation_to_views,
)
from reward_models.text_encoders import load_sentence_encoder

# --------------------------------------------------------------------------------------------
# Action tokens
# --------------------------------------------------------------------------------------------


def action_to_tokens(actions: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin index of each action value (clipped to [-1, 1]); uniform bins, the last one closed."""
    pos = (actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * num_bins
    return pos.floor().long().clamp(0, num_bins - 1)


def tokens_to_action(tokens: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Centre of each bin (the continuous action a token stands for)."""
    return -1.0 + (tokens.float() + 0.5) * (2.0 / num_bins)


def token_log_prob(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log π of action chunks under (B, H, A, K) token logits: the sum of per-token log-probs.

    ``actions`` (B, H, A) in [-1, 1]; ``mask`` (B, H) bool, False for steps that do not count (a
    chunk that runs past the end of an episode). Returns (B,)."""
    return token_log_probs(logits, actions, mask).sum(dim=(1, 2))


def token_log_probs(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, A) log-prob of each action token under (B, H, A, K) logits, 0 where ``mask`` (B, H) is False."""
    tokens = action_to_tokens(actions, logits.shape[-1])
    per_token = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if mask is not None:
        per_token = per_token * mask.unsqueeze(-1).to(per_token.dtype)
    return per_token


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class VLA(nn.Module):
    """Multi-view, instruction- and proprioception-conditioned action-token model (module docstring)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        kind, arg = parse_vla_backbone(config.backbone)
        if kind == "conv":
            self.backbone = ConvBackbone(config.image_size, config.conv_channels)
        else:
            self.backbone = HFVisionBackbone(arg, config.backbone_config)
            config.backbone_config = self.backbone.backbone_config
            if config.freeze_backbone:
                self.backbone.requires_grad_(False)
        v = len(config.cameras)
        self.view_proj = nn.Sequential(nn.Linear(self.backbone.feat_dim, d), nn.GELU(), nn.Linear(d, d))
        self.view_embed = nn.Parameter(torch.randn(v, d) * 0.02)
        # Frozen and outside the state dict (a plain attribute, not a submodule): the checkpoint
        # records the encoder's spec, not its weights.
        self.sentence_encoder = load_sentence_encoder(config.text_encoder)
        self.text_proj = nn.Sequential(nn.Linear(self.sentence_encoder.dim, d), nn.GELU(), nn.Linear(d, d))
        # FiLM: the instruction rescales the visual features (which object matters is multiplicative).
        self.text_film = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.text_film.weight)
        nn.init.zeros_(self.text_film.bias)
        p = len(config.proprio_names)
        self.proprio_proj = nn.Sequential(nn.Linear(p, d), nn.GELU(), nn.Linear(d, d))
        self.register_buffer("proprio_mean", torch.tensor(config.proprio_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("proprio_std", torch.tensor(config.proprio_std, dtype=torch.float32), persistent=False)
        h = config.hidden_dim
        self.trunk = nn.Sequential(
            nn.Linear(v * d + v + 2 * d, h),
            nn.GELU(),
            nn.LayerNorm(h),
            nn.Linear(h, h),
            nn.GELU(),
            nn.LayerNorm(h),
            nn.Linear(h, config.chunk_size * config.action_dim * config.num_bins),
        )

    @property
    def device(self) -> torch.device:
        return self.view_embed.device

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, sentence dim) frozen sentence embeddings (cached per instruction by the encoder)."""
        return self.sentence_encoder.encode(list(texts)).to(self.device)

    def forward(
        self, images: torch.Tensor, view_mask: torch.Tensor, proprio: torch.Tensor, sentences: torch.Tensor
    ) -> torch.Tensor:
        """images (B, V, 3, S, S) uint8 or float in [0, 255]; view_mask (B, V) bool (at least one
        view per row); proprio (B, P) raw; sentences (B, sentence dim). Returns (B, H, A, K) logits."""
        b, v = view_mask.shape
        if not bool(view_mask.any(dim=1).all()):
            raise ValueError("every observation needs at least one camera view")
        feats = self.view_proj(self.backbone(images[view_mask]))
        slots = torch.zeros(b, v, feats.shape[-1], device=feats.device, dtype=feats.dtype)
        slots[view_mask] = feats
        slots = (slots + self.view_embed.unsqueeze(0)) * view_mask.unsqueeze(-1).to(slots.dtype)
        text = self.text_proj(sentences)
        scale, shift = self.text_film(text).unsqueeze(1).chunk(2, dim=-1)
        slots = slots * (1.0 + scale) + shift
        state = self.proprio_proj((proprio - self.proprio_mean) / self.proprio_std)
        x = torch.cat([slots.flatten(1), view_mask.to(slots.dtype), text, state], dim=-1)
        c = self.config
        return self.trunk(x).view(b, c.chunk_size, c.action_dim, c.num_bins)


# --------------------------------------------------------------------------------------------
# The policy: observations in, action chunks / log-probs out; receding-horizon execution.
# --------------------------------------------------------------------------------------------


class VLAPolicy:
    """A :class:`VLA` behind numpy observations.

    An observation is the sim's layout -- ``{"state": (D,), "pixels": {camera: (H, W, 3) uint8}}``,
    optionally ``"task"`` (the instruction) -- or the same with a leading batch dimension (and
    ``"task"`` a list). Without ``"task"`` the instruction of :meth:`start_episode` is used.
    ``state`` needs only the proprioceptive prefix (:attr:`state_dim` entries).

    It is a ``policies.record`` rollout policy (``reset(obs, info)`` / ``act(obs, info)``) and an
    ``act(obs)`` callable for ``prism-eval`` and the ROS 2 policy node.
    """

    kind = "vla"

    def __init__(self, model: VLA, device: str | torch.device = "auto", path: str | os.PathLike | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.path = None if path is None else Path(path)
        self.instruction = ""
        self.temperature: float | None = None
        """None: ``act`` is deterministic (``config.act_mode``); a number: ``act`` samples at it."""
        self._queue: list[np.ndarray] = []

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.config.cameras)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def state_dim(self) -> int:
        return self.config.state_dim

    # -- observations ----------------------------------------------------------------------------

    def _inputs(self, obs: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
        pixels = obs.get("pixels")
        if not isinstance(pixels, Mapping) or not pixels:
            raise ValueError(f"the VLA policy needs camera images in obs['pixels'] (any of {list(self.cameras)})")
        state = np.asarray(obs.get("state", np.zeros(0)), dtype=np.float32)
        batched = state.ndim == 2
        if state.ndim not in (1, 2) or state.shape[-1] < self.state_dim:
            raise ValueError(
                f"obs['state'] has shape {state.shape}; the VLA policy reads its first {self.state_dim} "
                "entries (joint positions and gripper width)"
            )
        states = state if batched else state[None]
        views = {c: (np.asarray(img) if batched else np.asarray(img)[None]) for c, img in pixels.items()}
        size = self.image_size if self.config.backbone_kind == "conv" else None
        images, mask = observation_to_views(views, self.cameras, size)
        proprio = torch.from_numpy(np.ascontiguousarray(states[:, list(self.config.proprio_indices)]))
        task = obs.get("task", self.instruction)
        texts = [task] * len(states) if isinstance(task, str) else list(task)
        if len(texts) != len(states):
            raise ValueError(f"{len(texts)} instructions for {len(states)} observations")
        dev = self.device
        return images.to(dev), mask.to(dev), proprio.to(dev), self.model.encode_text(texts)

    def logits(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """(B, H, A, K) action-token logits (differentiable)."""
        return self.model(*self._inputs(obs))

    # -- likelihood and sampling -----------------------------------------------------------------

    def log_prob(self, obs: Mapping[str, Any], action_chunk: Any, mask: Any = None) -> torch.Tensor:
        """Exact log π(action_chunk | obs) of the discretised chunk: (B,) for a batch, () for one
        observation; differentiable (for policy gradients and DPO). ``action_chunk`` (H, A) or
        (B, H, A) in [-1, 1]; ``mask`` (H,) / (B, H) bool marks the steps that count."""
        logits = self.logits(obs)
        actions = torch.as_tensor(np.asarray(action_chunk, dtype=np.float32), device=self.device)
        single = actions.dim() == 2
        if single:
            actions = actions.unsqueeze(0)
        c = self.config
        if tuple(actions.shape[1:]) != (c.chunk_size, c.action_dim):
            raise ValueError(
                f"action chunk has shape {tuple(actions.shape[1:])}, expected ({c.chunk_size}, {c.action_dim})"
            )
        m = (
            None
            if mask is None
            else torch.as_tensor(np.asarray(mask, dtype=bool), device=self.device).view(-1, c.chunk_size)
        )
        out = token_log_prob(logits, actions, m)
        return out[0] if single else out

    @torch.no_grad()
    def sample(self, obs: Mapping[str, Any], temperature: float = 1.0) -> np.ndarray:
        """An action chunk (H, A) -- (B, H, A) for a batch -- drawn from the token distribution at
        ``temperature`` (0: the most likely token of each dimension)."""
        if temperature < 0 or not np.isfinite(temperature):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        logits = self.logits(obs)
        if temperature == 0:
            tokens = logits.argmax(-1)
        else:
            probs = (logits.float() / temperature).softmax(-1)
            tokens = torch.multinomial(probs.view(-1, probs.shape[-1]), 1).view(probs.shape[:-1])
        return self._to_numpy(tokens_to_action(tokens, self.config.num_bins), obs)

    @torch.no_grad()
    def predict_chunk(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The deterministic chunk: each dimension's most likely bin centre (``act_mode=argmax``) or
        its expected bin centre (``mean``)."""
        logits = self.logits(obs)
        k = self.config.num_bins
        if self.config.act_mode == "argmax":
            chunk = tokens_to_action(logits.argmax(-1), k)
        else:
            centres = tokens_to_action(torch.arange(k, device=logits.device), k)
            chunk = (logits.softmax(-1) * centres).sum(-1)
        return self._to_numpy(chunk, obs)

    @staticmethod
    def _to_numpy(chunk: torch.Tensor, obs: Mapping[str, Any]) -> np.ndarray:
        out = chunk.float().cpu().numpy()
        return out if np.asarray(obs.get("state", np.zeros(0))).ndim == 2 else out[0]

    # -- execution -------------------------------------------------------------------------------

    def start_episode(self, instruction: str) -> None:
        """A new episode with this instruction: forget the chunk being executed."""
        self.instruction = str(instruction)
        self._queue.clear()

    def act(self, obs: Mapping[str, Any], info: Any = None) -> np.ndarray:
        """The next action (A,) of the current chunk; a new chunk every ``execute_steps`` steps
        (receding horizon, see the module docstring)."""
        if not self._queue:
            chunk = self.predict_chunk(obs) if self.temperature is None else self.sample(obs, self.temperature)
            if not np.all(np.isfinite(chunk)):
                raise RuntimeError(f"VLA policy {self.path} produced a non-finite action")
            self._queue = list(chunk[: self.config.execute_steps])
        return self._queue.pop(0).astype(np.float32)

    def reset(self, obs: Any = None, info: Mapping[str, Any] | None = None) -> None:
        """``policies.record`` protocol: the episode's instruction is ``info["task"]``."""
        self.start_episode((info or {}).get("task", self.instruction))

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        return save_vla(self.model, path, overwrite=overwrite)


# -- checkpoints ------------------------------------------------------------------------------


def save_vla(
    model: VLA, path: str | os.PathLike, overwrite: bool = True, extra_files: Mapping[str, bytes] | None = None
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ ``extra_files``) into the directory ``path``
    atomically: it appears complete or not at all."""
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite, kind="checkpoint") as tmp:
        save_model(model, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return path


def load_vla_module(path: str | os.PathLike, map_location: str = "cpu") -> VLA:
    """Rebuild a :class:`VLA` from a checkpoint directory (no other files needed)."""
    path = require_checkpoint_files(
        path, "VLA", (CONFIG_NAME, WEIGHTS_NAME), hints={WEIGHTS_NAME: " (has training saved a checkpoint yet?)"}
    )
    config = VLAConfig.from_json(path / CONFIG_NAME)
    if config.backbone_kind != "conv" and config.backbone_config is None:
        raise ValueError(f"{path / CONFIG_NAME}: backbone {config.backbone!r} but no backbone_config")
    return load_weights_into(VLA(config), path, "VLA", map_location)


def load_vla(path: str | os.PathLike, device: str | torch.device = "auto") -> VLAPolicy:
    """Load a VLA checkpoint directory (a ``prism-vla bc --out`` folder or one of its
    ``checkpoints/step_*``) as a ready-to-run :class:`VLAPolicy`."""
    return VLAPolicy(load_vla_module(path), device=device, path=path)


__all__ = [
    "VLA",
    "VLAPolicy",
    "action_to_tokens",
    "load_vla",
    "load_vla_module",
    "save_vla",
    "token_log_prob",
    "token_log_probs",
    "tokens_to_action",
]
