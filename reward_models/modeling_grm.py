"""The GRM network and its :class:`ProgressModel` wrapper.

Architecture (one forward per state, then a cheap head per hop)::

    view v image ─▶ shared backbone ─▶ linear ─▶ + view embedding[v] ─┐
                                                  (missing views masked) ├─▶ attention pool ─▶ state embedding (D)
    instruction ─▶ word embeddings (bag, <unk> for new words) ─▶ text embedding
    [text, FiLM_text(start|null, goal|null, before, after, after − before)] ─▶ MLP ─▶ K hop-bin logits
    hop = Σ softmax(logits) · bin centres   (K bins evenly covering [-1, 1])

With ``conditioning="spatial"`` (new checkpoints) the instruction chooses *what to look at*::

    view v image ─▶ conv map (g×g) ─▶ per-location MLP ─▶ + position[g×g] + view embedding[v] ─▶ tokens
    state embedding = all views' tokens (B, V·g², D) + a presence channel   (task-independent, cached)
    instruction ─▶ position-aware word vectors ─▶ attention pool (+ mean) ─▶ text embedding
    text ─▶ Q queries ─▶ attention over the state's tokens ─▶ [attended, token mean] ─▶ task-conditioned state (D)

so the colour word of "push the red block" can pick the red block's tokens instead of being one
of eight averaged words that only rescale a pooled vector. The attention runs per hop on cached
tokens (a few hundred FLOPs per token), so ``encode`` still runs once per frame for any task.

``encode`` produces state embeddings (the expensive part, once per frame); every hop -- the
incremental one and both anchored ones -- comes from cached embeddings in ``hop_from_embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from episodes.atomic import atomic_dir
from episodes.config_io import require_checkpoint_files
from reward_models.base import NON_IMAGE_KEYS, Observation, ProgressModel
from reward_models.confidence import load_confidence
from reward_models.configuration_grm import GRMConfig, build_vocabulary, parse_backbone
from reward_models.devices import resolve_device
from reward_models.text_encoders import load_sentence_encoder

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


# --------------------------------------------------------------------------------------------
# Backbones: (N, 3, H, W) uint8/float in [0, 255] -> (N, feat_dim)
# --------------------------------------------------------------------------------------------


class _Backbone(nn.Module):
    """Common preprocessing: scale to [0, 1], resize to the backbone's input, normalise."""

    feat_dim: int
    input_size: int

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        # uint8 frames (inference) and float frames (training batches, after augmentation) are
        # both in [0, 255]: scaling only uint8 would feed training a 255x brighter image than
        # inference sees.
        x = images.float() / 255.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(images))


class ConvBackbone(_Backbone):
    """Small CNN trained from scratch: stride-2 conv stages, then a 4×4 spatial map flattened
    (keeps *where* things are, which is what progress depends on)."""

    def __init__(self, image_size: int, channels: Sequence[int], grid: int | None = None) -> None:
        super().__init__(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.input_size = image_size
        self.grid = grid
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(channels):
            # Spatial tokens: the last stage keeps its resolution, so the token grid is real
            # (not an upsampled 2×2 map at small inputs).
            stride = 1 if grid is not None and i == len(channels) - 1 and len(channels) > 1 else 2
            layers += [nn.Conv2d(c_in, c, 3, stride=stride, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        if grid is None:
            layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
            self.feat_dim = c_in * 16
        else:
            layers += [nn.AdaptiveAvgPool2d(grid)]
            self.feat_dim = c_in
        self.net = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feat_dim) flattened 4×4 map, or (N, grid², channels) tokens when built with ``grid``."""
        out = self.net(x)
        return out if self.grid is None else out.flatten(2).transpose(1, 2)


def _register_open_clip_config(model_cfg: dict[str, Any]) -> str:
    """Make an architecture dict known to open_clip under a content-hash name (public API only)."""
    import open_clip  # optional: only open_clip backbones need it

    blob = json.dumps(model_cfg, sort_keys=True)
    name = "prism-grm-" + hashlib.sha1(blob.encode()).hexdigest()[:12]
    if open_clip.get_model_config(name) is None:
        path = Path(tempfile.mkdtemp(prefix="prism-openclip-")) / f"{name}.json"
        path.write_text(blob)
        open_clip.add_model_config(path)
    return name


class OpenClipBackbone(_Backbone):
    """The vision tower of an open_clip model (random init, or CLIP weights from a local file)."""

    def __init__(self, arch: str, pretrained: str | None, backbone_config: dict[str, Any] | None) -> None:
        try:
            import open_clip  # optional: only open_clip backbones need it
            from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        except ImportError as exc:  # pragma: no cover - dependency of the `learn` extra
            raise ImportError("backbone 'open_clip:...' needs open_clip_torch (pip install 'prism-rl[learn]')") from exc
        if backbone_config is not None:
            # Rebuilding from a GRM checkpoint: the architecture is in the checkpoint, the
            # weights come from model.safetensors afterwards.
            model = open_clip.create_model(
                _register_open_clip_config(backbone_config["model_cfg"]),
                pretrained=None,
                pretrained_image=False,
                pretrained_text=False,
            )
            model_cfg = backbone_config["model_cfg"]
            mean, std = backbone_config["image_mean"], backbone_config["image_std"]
        else:
            if pretrained is not None and not Path(pretrained).is_file():
                raise FileNotFoundError(
                    f"open_clip weights {pretrained!r} not found: weights must be given as a local file path "
                    "(pretrained=PATH); prism-rl never downloads weights"
                )
            if arch.startswith("local-dir:"):
                cfg_path = Path(arch.removeprefix("local-dir:")) / "open_clip_config.json"
                if not cfg_path.is_file():
                    raise FileNotFoundError(f"open_clip local-dir model: {cfg_path} not found")
                local = json.loads(cfg_path.read_text())
                model_cfg, preprocess = local["model_cfg"], local.get("preprocess_cfg", {})
                name = _register_open_clip_config(model_cfg)
            else:
                model_cfg = open_clip.get_model_config(arch)
                if model_cfg is None:
                    raise ValueError(
                        f"unknown open_clip architecture {arch!r}; known: {open_clip.list_models()[:20]} ..."
                    )
                preprocess, name = {}, arch
            model = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False)
            if pretrained is not None:
                open_clip.load_checkpoint(model, pretrained, strict=False)
            mean = list(preprocess.get("mean", OPENAI_DATASET_MEAN))
            std = list(preprocess.get("std", OPENAI_DATASET_STD))
        super().__init__(mean=mean, std=std)
        self.visual = model.visual
        size = self.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.feat_dim = int(self.visual.output_dim)
        self.backbone_config = {"model_cfg": model_cfg, "image_mean": list(mean), "image_std": list(std)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class HFVisionBackbone(_Backbone):
    """A transformers vision tower (CLIP/SigLIP/ViT...) loaded from a local directory, offline."""

    def __init__(self, path: str, backbone_config: dict[str, Any] | None) -> None:
        try:
            import transformers  # optional and slow: only hf backbones need it
            from transformers import AutoModel
        except ImportError as exc:  # pragma: no cover
            raise ImportError("backbone 'hf:...' needs transformers (pip install 'prism-rl[learn]')") from exc
        if backbone_config is not None:
            cfg_dict = dict(backbone_config["config"])
            config_cls = transformers.CONFIG_MAPPING[cfg_dict["model_type"]]
            tower = AutoModel.from_config(config_cls.from_dict(cfg_dict))
            mean, std = backbone_config["image_mean"], backbone_config["image_std"]
        else:
            local = Path(path)
            if not local.is_dir():
                raise FileNotFoundError(
                    f"hf backbone directory {path!r} not found: weights must be given as a local directory "
                    "(saved with save_pretrained); prism-rl never downloads weights"
                )
            model = AutoModel.from_pretrained(local, local_files_only=True)
            tower = _vision_tower(model)
            mean, std = [0.5] * 3, [0.5] * 3
            pre = local / "preprocessor_config.json"
            if pre.is_file():
                pre_cfg = json.loads(pre.read_text())
                mean, std = pre_cfg.get("image_mean", mean), pre_cfg.get("image_std", std)
        super().__init__(mean=mean, std=std)
        self.tower = tower
        size = tower.config.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.feat_dim = int(tower.config.hidden_size)
        self.backbone_config = {"config": tower.config.to_dict(), "image_mean": list(mean), "image_std": list(std)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tower(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(dim=1)


def _vision_tower(model: nn.Module) -> nn.Module:
    """The standalone vision model inside a transformers model (CLIP/SigLIP dual models keep
    theirs in ``vision_model``; vision-only models are their own tower)."""
    from transformers import AutoModel, PreTrainedModel  # optional and slow: only hf backbones need it

    inner = getattr(model, "vision_model", None)
    vision_config = getattr(model.config, "vision_config", None)
    if inner is None or vision_config is None:
        return model  # already a vision model (CLIPVisionModel, SiglipVisionModel, ViTModel, ...)
    if isinstance(inner, PreTrainedModel):
        return inner
    # Older layouts keep a bare transformer there: rebuild it as a standalone vision model.
    tower = AutoModel.from_config(vision_config)
    target = getattr(tower, "vision_model", tower)
    target.load_state_dict(inner.state_dict())
    return tower


def build_backbone(config: GRMConfig) -> _Backbone:
    kind, arg = parse_backbone(config.backbone)
    if kind == "conv":
        grid = config.token_grid if config.conditioning == "spatial" else None
        return ConvBackbone(config.image_size, config.conv_channels, grid=grid)
    if kind == "open_clip":
        return OpenClipBackbone(arg, config.pretrained, config.backbone_config)
    return HFVisionBackbone(arg, config.backbone_config)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def two_hot(hops: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Soft bin targets whose expectation of bin centres equals ``hops`` exactly."""
    pos = (hops.clamp(-1, 1) + 1.0) * 0.5 * (num_bins - 1)
    lo = pos.floor().long().clamp(0, num_bins - 1)
    hi = (lo + 1).clamp(max=num_bins - 1)
    w_hi = (pos - lo.float()).clamp(0, 1)
    target = torch.zeros(*hops.shape, num_bins, device=hops.device)
    target.scatter_add_(-1, lo.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
    target.scatter_add_(-1, hi.unsqueeze(-1), w_hi.unsqueeze(-1))
    return target


class GRM(nn.Module):
    """Multi-view, instruction-conditioned hop classifier (see module docstring)."""

    def __init__(self, config: GRMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.backbone = build_backbone(config)
        if config.backbone_kind != "conv":
            config.backbone_config = self.backbone.backbone_config
        self.spatial = config.conditioning == "spatial"
        self.view_proj = nn.Sequential(nn.Linear(self.backbone.feat_dim, d), nn.GELU(), nn.Linear(d, d))
        self.view_embed = nn.Parameter(torch.randn(len(config.cameras), d) * 0.02)
        t = config.text_dim
        if self.spatial:
            n_tok = config.token_grid**2 if config.backbone_kind == "conv" else 1
            self.token_pos = nn.Parameter(torch.randn(n_tok, d) * 0.02)
            if config.text_encoder == "words":
                self.word_embed = nn.Embedding(len(config.vocabulary), t, padding_idx=0)
                self.word_pos = nn.Parameter(torch.randn(config.max_words, t) * 0.02)
                # Two attention heads over words: a salient word can take a head's whole weight.
                self.word_attn = nn.Linear(t, 2)
                self.text_proj = nn.Sequential(nn.Linear(3 * t, t), nn.GELU())
            self.text_query = nn.Linear(t, config.text_queries * d)
            self.query_base = nn.Parameter(torch.randn(config.text_queries, d) * 0.02)
            # FiLM on every cached spatial token: the instruction rescales channels per location
            # (e.g. keeps "red here" features, damps "blue here") before anything is pooled.
            self.token_film = nn.Linear(t, 2 * d)
            self.token_mlp = nn.Sequential(nn.GELU(), nn.Linear(d, d), nn.GELU())
            self.state_attn = nn.MultiheadAttention(d, config.view_heads, batch_first=True)
            self.state_out = nn.Sequential(nn.Linear((config.text_queries + 1) * d, d), nn.LayerNorm(d))
        else:
            self.fuse_query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.fuse_attn = nn.MultiheadAttention(d, config.view_heads, batch_first=True)
            self.fuse_norm = nn.LayerNorm(d)
            if config.text_encoder == "words":
                self.word_embed = nn.EmbeddingBag(len(config.vocabulary), t, mode="mean", padding_idx=0)
                self.text_proj = nn.Sequential(nn.Linear(t, t), nn.GELU())
        if config.text_encoder != "words":
            # Frozen and outside the state dict (a plain attribute, not a submodule): the checkpoint
            # records the encoder's spec instead of carrying its 90 MB of weights.
            self.sentence_encoder = load_sentence_encoder(config.text_encoder)
            self.sentence_proj = nn.Sequential(nn.Linear(self.sentence_encoder.dim, t), nn.GELU(), nn.Linear(t, t))
        self.null_start = nn.Parameter(torch.zeros(d))
        self.null_goal = nn.Parameter(torch.zeros(d))
        # FiLM: the instruction scales/shifts the visual features, so "is this progress *for
        # this task*" is a multiplicative interaction the head does not have to discover.
        self.text_film = nn.Linear(config.text_dim, 2 * 5 * d)
        nn.init.zeros_(self.text_film.weight)
        nn.init.zeros_(self.text_film.bias)
        h = config.hidden_dim
        self.head = nn.Sequential(
            nn.Linear(config.text_dim + 5 * d, h),
            nn.GELU(),
            nn.LayerNorm(h),
            nn.Linear(h, h),
            nn.GELU(),
            nn.Linear(h, config.num_bins),
        )
        self.register_buffer("bin_centers", torch.linspace(-1.0, 1.0, config.num_bins), persistent=False)
        if config.freeze_backbone and config.backbone_kind != "conv":
            self.backbone.requires_grad_(False)

    # -- states -------------------------------------------------------------------------------

    def encode_states(self, images: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """images (B, V, 3, H, W) uint8 or float in [0, 255]; view_mask (B, V) bool, True = view
        present (at least one per row). Returns (B, D) state embeddings."""
        b, v = view_mask.shape
        if not bool(view_mask.any(dim=1).all()):
            raise ValueError("every state needs at least one camera view")
        if self.spatial:
            return self._encode_tokens(images, view_mask)
        present = images[view_mask]
        pair = self.config.color_channels()
        if pair is None:
            return self._fuse_views(self.view_proj(self.backbone(present)), view_mask)
        # Colour-canonical: (B, 2D) = [as rendered | colour channels exchanged], one backbone batch.
        perm = [0, 1, 2]
        perm[pair[2]], perm[pair[3]] = pair[3], pair[2]
        feats = self.view_proj(self.backbone(torch.cat([present, present[:, perm]])))
        n = present.shape[0]
        return torch.cat([self._fuse_views(feats[:n], view_mask), self._fuse_views(feats[n:], view_mask)], dim=-1)

    def _fuse_views(self, feats: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """Per-view tokens (N present views, D) -> (B, D) state embeddings (attention + mean pool)."""
        b, v = view_mask.shape
        tokens = torch.zeros(b, v, feats.shape[-1], device=feats.device, dtype=feats.dtype)
        tokens[view_mask] = feats
        tokens = tokens + self.view_embed.unsqueeze(0)
        pooled, _ = self.fuse_attn(self.fuse_query.expand(b, -1, -1), tokens, tokens, key_padding_mask=~view_mask)
        m = view_mask.unsqueeze(-1).float()
        mean = (tokens * m).sum(1) / m.sum(1)
        return self.fuse_norm(pooled[:, 0] + mean)

    # -- text ---------------------------------------------------------------------------------

    def _encode_tokens(self, images: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """(B, V·n, D + 1): every view's spatial tokens; the last channel is 1 where the view is
        present, so the mask travels with the cached embedding."""
        b, v = view_mask.shape
        feats = self.backbone(images[view_mask])
        if feats.dim() == 2:  # pretrained backbones: one token per view
            feats = feats.unsqueeze(1)
        feats = self.view_proj(feats) + self.token_pos.unsqueeze(0)
        n, d = feats.shape[1], feats.shape[2]
        tokens = torch.zeros(b, v, n, d + 1, device=feats.device, dtype=feats.dtype)
        tokens[view_mask] = torch.cat([feats, torch.ones_like(feats[..., :1])], dim=-1)
        tokens[..., :d] = tokens[..., :d] + self.view_embed.view(1, v, 1, d)
        return tokens.reshape(b, v * n, d + 1)

    def condition_states(
        self, states: torch.Tensor, text: torch.Tensor, exchanged: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Task-conditioned (B, D) state vectors from ``encode_states`` output and (B, text_dim)
        instruction embeddings: text queries attend over the spatial tokens (``spatial``); the
        pooled embedding itself otherwise (there FiLM in the head does the conditioning).
        ``exchanged`` (B,) bool: rows whose instruction reads the colour-exchanged encoding
        (``canonical_colors``; :meth:`exchanged_rows`)."""
        if not self.spatial:
            if self.config.canonical_colors is None:
                return states
            d = states.shape[-1] // 2
            if exchanged is None:
                return states[:, :d]
            return torch.where(exchanged.to(states.device).unsqueeze(-1), states[:, d:], states[:, :d])
        tokens, present = states[..., :-1], states[..., -1] > 0.5
        b, d = tokens.shape[0], tokens.shape[-1]
        scale, shift = self.token_film(text).unsqueeze(1).chunk(2, dim=-1)
        tokens = self.token_mlp(tokens * (1.0 + scale) + shift)
        queries = self.query_base.unsqueeze(0) + self.text_query(text).view(b, -1, d)
        attended, _ = self.state_attn(queries, tokens, tokens, key_padding_mask=~present)
        m = present.unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.state_out(torch.cat([attended.flatten(1), mean], dim=-1))

    def exchanged_rows(self, texts: Sequence[str]) -> torch.Tensor | None:
        """(B,) bool: which instructions read the colour-exchanged encoding (None when off)."""
        if self.config.canonical_colors is None:
            return None
        return torch.tensor(
            [self.config.reads_exchanged(t) for t in texts], dtype=torch.bool, device=self.null_start.device
        )

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, text_dim) instruction embeddings."""
        device = self.null_start.device
        if self.config.text_encoder != "words":
            sentences = self.sentence_encoder.encode([self.config.canonical_text(t) for t in texts])
            return self.sentence_proj(sentences.to(device))
        token_ids = [self.config.token_ids(t) for t in texts]
        if self.spatial:
            longest = max(len(ids) for ids in token_ids)
            ids = torch.zeros(len(token_ids), longest, dtype=torch.long, device=device)
            for i, row in enumerate(token_ids):
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
            valid = ids != 0
            positions = torch.arange(longest, device=device).clamp(max=self.config.max_words - 1)
            words = self.word_embed(ids) + self.word_pos[positions].unsqueeze(0)
            m = valid.unsqueeze(-1).to(words.dtype)
            mean = (words * m).sum(1) / m.sum(1).clamp_min(1.0)
            scores = self.word_attn(words).masked_fill(~valid.unsqueeze(-1), float("-inf")).softmax(1)  # (B, L, 2)
            pooled = torch.einsum("blh,blt->bht", scores, words).flatten(1)
            return self.text_proj(torch.cat([mean, pooled], dim=-1))
        flat = torch.tensor([i for ids in token_ids for i in ids], dtype=torch.long, device=device)
        offsets = torch.tensor(np.cumsum([0] + [len(ids) for ids in token_ids[:-1]]), dtype=torch.long, device=device)
        return self.text_proj(self.word_embed(flat, offsets))

    def extend_vocabulary(self, instructions: Sequence[str]) -> list[str]:
        """Add the words of new instructions (one-shot adaptation); returns the added words.
        New word vectors start at the ``<unk>`` vector, i.e. at what the model did for them so far.
        A sentence-encoder text side has no vocabulary: nothing to add."""
        if self.config.text_encoder != "words":
            return []
        old = self.config.vocabulary
        new_vocab = build_vocabulary(list(instructions), old)
        added = new_vocab[len(old) :]
        if added:
            if self.spatial:
                emb = nn.Embedding(len(new_vocab), self.config.text_dim, padding_idx=0)
            else:
                emb = nn.EmbeddingBag(len(new_vocab), self.config.text_dim, mode="mean", padding_idx=0)
            emb = emb.to(self.null_start.device)
            with torch.no_grad():
                emb.weight[: len(old)] = self.word_embed.weight
                emb.weight[len(old) :] = self.word_embed.weight[1]
            self.word_embed = emb
            self.config.vocabulary = new_vocab
        return added

    # -- hops ---------------------------------------------------------------------------------

    def hop_logits(
        self,
        before: torch.Tensor,
        after: torch.Tensor,
        text: torch.Tensor,
        start: torch.Tensor | None = None,
        goal: torch.Tensor | None = None,
        start_keep: torch.Tensor | None = None,
        goal_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, K) hop-bin logits from task-conditioned (B, D) state vectors (``condition_states``).
        ``start``/``goal`` None, or rows masked out by ``*_keep`` = False, are replaced by learned
        "no reference" vectors (context dropout at training time)."""
        b = before.shape[0]
        start_ctx = self._context(start, start_keep, self.null_start, b)
        goal_ctx = self._context(goal, goal_keep, self.null_goal, b)
        visual = torch.cat([start_ctx, goal_ctx, before, after, after - before], dim=-1)
        scale, shift = self.text_film(text).chunk(2, dim=-1)
        return self.head(torch.cat([text, visual * (1.0 + scale) + shift], dim=-1))

    @staticmethod
    def _context(ref: torch.Tensor | None, keep: torch.Tensor | None, null: torch.Tensor, b: int) -> torch.Tensor:
        if ref is None:
            return null.unsqueeze(0).expand(b, -1)
        if keep is None:
            return ref
        return torch.where(keep.unsqueeze(-1), ref, null.unsqueeze(0).expand_as(ref))

    def hop_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.softmax(-1) * self.bin_centers).sum(-1)

    def hop_std_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Std of the hop under the head's own bin distribution: sqrt(Σ p·(c − E[c])²). One more
        reduction over logits already computed; a post-hoc uncertainty that needs no retraining
        (the head was trained with a two-hot cross-entropy, so a spread-out distribution means
        the training pairs near this input disagreed)."""
        p = logits.softmax(-1)
        mean = (p * self.bin_centers).sum(-1, keepdim=True)
        return (p * (self.bin_centers - mean) ** 2).sum(-1).clamp_min(0.0).sqrt()


# --------------------------------------------------------------------------------------------
# The ProgressModel wrapper: numpy observations in, hops out; checkpoints.
# --------------------------------------------------------------------------------------------


def observation_to_views(
    obs: Observation, cameras: Sequence[str], image_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the model's views of an observation: uint8 (B, V, 3, S, S) and a (B, V) view mask.

    Views the observation lacks are zero and masked; cameras the model does not know are ignored.
    Views of a different resolution are resized to ``image_size`` (default: the first view's).
    """
    image_keys = [k for k in obs if k not in NON_IMAGE_KEYS]
    present = [c for c in cameras if c in obs]
    if not present:
        raise ValueError(
            f"observation cameras {sorted(image_keys)} include none of this model's cameras {list(cameras)}"
        )
    first = np.asarray(obs[present[0]])
    if first.ndim != 4 or first.shape[-1] != 3:
        raise ValueError(f"camera {present[0]!r}: expected uint8 (B, H, W, 3), got {first.dtype} {first.shape}")
    b = first.shape[0]
    size = image_size or first.shape[1]
    views, mask = [], torch.zeros(b, len(cameras), dtype=torch.bool)
    for vi, cam in enumerate(cameras):
        if cam not in obs:
            views.append(torch.zeros(b, 3, size, size, dtype=torch.uint8))
            continue
        arr = np.asarray(obs[cam])
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] != b:
            raise ValueError(f"camera {cam!r}: expected uint8 ({b}, H, W, 3), got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
        views.append(x)
        mask[:, vi] = True
    return torch.stack(views, dim=1), mask


class GRMProgressModel(ProgressModel):
    """A trained GRM behind the :class:`ProgressModel` interface (embeddings are torch tensors)."""

    def __init__(self, model: GRM, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.model_id = model.config.model_id
        self.cameras = tuple(model.config.cameras)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.confidence: Any = None
        """:class:`reward_models.confidence.ConfidenceCalibration` or None (see ``from_pretrained``)."""

    @property
    def grm_config(self) -> GRMConfig:
        return self.model.config

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> GRMProgressModel:
        model = cls(load_grm_module(path, map_location="cpu"), device=device)
        # Post-hoc confidence statistics written by `prism-reward calibrate` beside the weights
        # (None when absent or written for other weights).
        model.confidence = load_confidence(path)
        return model

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        return save_grm(self.model, path, overwrite=overwrite)

    def config(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "model_id": self.model_id,
            "cameras": list(self.cameras),
            "backbone": cfg.backbone,
            "image_size": cfg.image_size,
            "num_bins": cfg.num_bins,
            "training": cfg.training,
        }

    @torch.no_grad()
    def encode(self, obs: Observation) -> torch.Tensor:
        images, mask = observation_to_views(
            obs, self.cameras, self.model.backbone.input_size if self.model.config.backbone_kind == "conv" else None
        )
        return self.model.encode_states(images.to(self.device), mask.to(self.device))

    def _text(self, tasks: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(tasks) if t not in self._text_cache]
        if missing:
            with torch.no_grad():
                emb = self.model.encode_text(missing)
            for t, e in zip(missing, emb):
                self._text_cache[t] = e
        return torch.stack([self._text_cache[t] for t in tasks])

    @torch.no_grad()
    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None) -> np.ndarray:
        logits = self._hop_logits(before, after, tasks, start, goal)
        return self.model.hop_from_logits(logits).double().cpu().numpy()

    @torch.no_grad()
    def hop_and_std_from_embeddings(self, before, after, tasks, start=None, goal=None) -> tuple[np.ndarray, np.ndarray]:
        logits = self._hop_logits(before, after, tasks, start, goal)
        return (
            self.model.hop_from_logits(logits).double().cpu().numpy(),
            self.model.hop_std_from_logits(logits).double().cpu().numpy(),
        )

    @torch.no_grad()
    def state_features(self, embeddings: Any) -> np.ndarray:
        """(B, F) task-independent features of ``encode`` output for out-of-distribution checks.
        ``pooled``: the state embedding itself (what the head reads). ``spatial``: the mean and
        std of each state's present tokens -- a fixed size whatever the views, and sensitive to
        both what the tokens encode and how varied they are (a new background shifts both)."""
        emb = torch.as_tensor(embeddings, device=self.device).float()
        if not self.model.spatial:
            return emb.double().cpu().numpy()
        tokens, present = emb[..., :-1], (emb[..., -1:] > 0.5).float()
        count = present.sum(1).clamp_min(1.0)
        mean = (tokens * present).sum(1) / count
        var = (((tokens - mean.unsqueeze(1)) ** 2) * present).sum(1) / count
        return torch.cat([mean, var.sqrt()], dim=-1).double().cpu().numpy()

    def _hop_logits(self, before, after, tasks, start=None, goal=None) -> torch.Tensor:
        before, after = torch.as_tensor(before, device=self.device), torch.as_tensor(after, device=self.device)
        if len(tasks) != before.shape[0] or after.shape[0] != before.shape[0]:
            raise ValueError(
                f"hop batch mismatch: {before.shape[0]} before, {after.shape[0]} after, {len(tasks)} tasks"
            )
        start = None if start is None else torch.as_tensor(start, device=self.device)
        goal = None if goal is None else torch.as_tensor(goal, device=self.device)
        text = self._text(list(tasks))
        exchanged = self.model.exchanged_rows(list(tasks))

        def cond(states):
            return self.model.condition_states(states, text, exchanged)

        return self.model.hop_logits(
            cond(before),
            cond(after),
            text,
            None if start is None else cond(start),
            None if goal is None else cond(goal),
        )


# -- checkpoints ------------------------------------------------------------------------------


def save_grm(model: GRM, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into the directory ``path`` atomically."""
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite, kind="checkpoint") as tmp:
        save_model(model, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return path


def load_grm_module(path: str | os.PathLike, map_location: str = "cpu") -> GRM:
    """Rebuild a :class:`GRM` from a checkpoint directory (no other files needed)."""
    path = require_checkpoint_files(path, "GRM", (CONFIG_NAME, WEIGHTS_NAME))
    config = GRMConfig.from_json(path / CONFIG_NAME)
    if config.backbone_kind != "conv" and config.backbone_config is None:
        raise ValueError(f"{path / CONFIG_NAME}: backbone {config.backbone!r} but no backbone_config")
    return load_weights_into(GRM(config), path, "GRM", map_location)


def load_weights_into(model: nn.Module, path: Path, kind: str, map_location: str = "cpu") -> nn.Module:
    """``path/model.safetensors`` into ``model`` (built from ``path/config.json``), in eval mode;
    unreadable or mismatched weights are one clear error naming the files."""
    try:
        missing, unexpected = load_model(model, str(path / WEIGHTS_NAME), strict=False, device=map_location)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path / WEIGHTS_NAME}: corrupt or incompatible {kind} weights ({exc})") from exc
    if missing or unexpected:
        raise ValueError(
            f"{path / WEIGHTS_NAME} does not match {path / CONFIG_NAME}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval()


def load_grm(path: str | os.PathLike, device: str | torch.device = "auto") -> GRMProgressModel:
    """Load a GRM checkpoint directory as a ready-to-use :class:`ProgressModel`."""
    return GRMProgressModel.from_pretrained(path, device=device)


__all__ = [
    "GRM",
    "GRMConfig",
    "GRMProgressModel",
    "load_grm",
    "load_grm_module",
    "save_grm",
    "two_hot",
    "observation_to_views",
]
