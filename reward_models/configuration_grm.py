"""Configuration of the GRM (general reward model): backbone, views, text vocabulary, hop bins.

A :class:`GRMConfig` is everything needed to rebuild the network from a checkpoint directory
(``config.json`` next to ``model.safetensors``), without the original backbone files: the
backbone's own architecture config is copied into ``backbone_config`` when the model is built.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from episodes.config_io import dataclass_from_dict, read_json_object

PAD, UNK = "<pad>", "<unk>"
"""Reserved vocabulary entries 0 and 1: padding and unknown words."""

BACKBONE_KINDS = ("conv", "open_clip", "hf")

CONDITIONING_KINDS = ("pooled", "spatial")

COLOR_CHANNELS = {"red": 0, "green": 1, "blue": 2}
"""Colour words :attr:`GRMConfig.canonical_colors` may pair, and their RGB channel."""

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words of an instruction ("Push the red block!" -> push, the, red, block)."""
    return _WORD.findall(text.lower())


def build_vocabulary(instructions: list[str] | tuple[str, ...], existing: list[str] | None = None) -> list[str]:
    """Vocabulary (``<pad>``, ``<unk>``, then words in first-seen order), extending ``existing``."""
    vocab = list(existing) if existing else [PAD, UNK]
    if vocab[:2] != [PAD, UNK]:
        raise ValueError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {vocab[:2]}")
    seen = set(vocab)
    for text in instructions:
        for word in tokenize(text):
            if word not in seen:
                seen.add(word)
                vocab.append(word)
    return vocab


def parse_backbone(backbone: str) -> tuple[str, str]:
    """``"conv"`` -> (conv, ""), ``"open_clip:ViT-B-32"`` -> (open_clip, ViT-B-32), ``"hf:/dir"`` -> (hf, /dir)."""
    kind, _, arg = backbone.partition(":")
    if kind not in BACKBONE_KINDS or (kind == "conv" and arg) or (kind != "conv" and not arg):
        raise ValueError(
            f"backbone must be 'conv', 'open_clip:<arch>' (an open_clip model name or "
            f"'local-dir:<dir>') or 'hf:<local dir>', got {backbone!r}"
        )
    return kind, arg


@dataclass
class GRMConfig:
    """Architecture of a GRM. Saved as ``config.json`` inside every checkpoint."""

    backbone: str = "conv"
    """Per-view image encoder: ``conv`` (small CNN trained from scratch), ``open_clip:<arch>``
    (random init, or weights from the local file ``pretrained``) or ``hf:<local dir>`` (a
    transformers vision tower, loaded offline)."""
    pretrained: str | None = None
    """Local weight file for ``open_clip`` backbones (never downloaded). Only read when the model
    is first built; checkpoints hold all weights."""
    image_size: int = 64
    """Side length (px) each view is resized to for the conv backbone (pretrained backbones use
    their own input size)."""
    cameras: tuple[str, ...] = ("front", "side", "wrist")
    """Views the model knows, each with a learned view embedding; any non-empty subset works."""
    embed_dim: int = 128
    """Width D of per-view tokens and of the fused state embedding."""
    conv_channels: tuple[int, ...] = (16, 32, 64, 64)
    """Channels of the conv backbone's stride-2 stages."""
    view_heads: int = 4
    """Attention heads of the cross-view fusion."""
    text_dim: int = 64
    """Width of the instruction embedding."""
    text_encoder: str = "words"
    """How instructions are read. ``words``: a learned vector per word of :attr:`vocabulary`
    (words outside it read as ``<unk>``; checkpoints before this option). ``sentence:minilm`` (the
    packaged all-MiniLM-L6-v2) or ``sentence:<local dir>`` (any transformers text encoder): a frozen
    pretrained sentence encoder under a learned projection, so paraphrases and unseen words land
    near known ones (:mod:`reward_models.text_encoders`). Loading such a checkpoint needs that
    encoder; it is never downloaded."""
    vocabulary: list[str] = field(default_factory=lambda: [PAD, UNK])
    """Instruction words (index = token id); unknown words map to ``<unk>``."""
    conditioning: str = "pooled"
    """Where the instruction enters. ``pooled`` (checkpoints before this option): FiLM on the
    task-independent pooled state embedding, instruction = mean of word vectors. ``spatial``: the
    state embedding keeps every view's spatial tokens (``token_grid``² per view) and the
    instruction *chooses what to look at* -- text-derived queries attend over those tokens when a
    hop is scored -- and the instruction is an attention pool over position-aware word vectors,
    so one salient word (a colour) is not averaged away. ``encode`` stays task-independent either
    way (one encoder pass per frame, shared by every task)."""
    token_grid: int = 4
    """Side of the spatial token grid per view (``conditioning=spatial``; conv backbone only,
    pretrained backbones give one token per view)."""
    text_queries: int = 2
    """Instruction-derived attention queries over the spatial tokens (``conditioning=spatial``)."""
    max_words: int = 24
    """Word positions with their own embedding (``conditioning=spatial``); later words share the last."""
    canonical_colors: str | None = None
    """``"a:b"`` (two of red, green, blue) turns on colour-canonical encoding: every view is encoded
    twice in the same backbone batch, as rendered and with the a/b colour channels exchanged, and
    an instruction naming ``b`` (not ``a``) reads the exchanged copy and has ``b`` read as ``a`` --
    so the object the instruction names always *looks* ``a`` to everything after the encoder.
    Binding a colour word to its object then needs no learning (a colour-blind model cannot tell
    "pushed the named block" from "pushed the other one"); the price is twice the encoder work per
    frame, still one pass per new frame. ``pooled`` conditioning only. None: off (checkpoints
    before it)."""
    num_bins: int = 41
    """K hop bins evenly covering [-1, 1]; the hop is the expectation of bin centres."""
    hidden_dim: int = 256
    """Width of the hop head's hidden layers."""
    freeze_backbone: bool = False
    """Keep pretrained backbone weights fixed during training (only used by the trainer)."""
    backbone_config: dict[str, Any] | None = None
    """The backbone's own architecture config, filled in when the model is built so that a
    checkpoint rebuilds without the original backbone files."""
    model_id: str = "grm"
    """Identifier written into evaluation reports and sidecar metadata."""
    training: dict[str, Any] = field(default_factory=dict)
    """Summary of the training run (datasets, tasks, steps, metrics) -- provenance only."""

    def __post_init__(self) -> None:
        parse_backbone(self.backbone)
        self.cameras = tuple(self.cameras)
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"GRMConfig.cameras must be non-empty and distinct, got {self.cameras}")
        if self.conditioning not in CONDITIONING_KINDS:
            raise ValueError(f"GRMConfig.conditioning must be one of {CONDITIONING_KINDS}, got {self.conditioning!r}")
        if self.token_grid < 1 or self.text_queries < 1 or self.max_words < 1:
            raise ValueError("GRMConfig.token_grid, text_queries and max_words must be >= 1")
        if self.num_bins < 3:
            raise ValueError(f"GRMConfig.num_bins must be >= 3, got {self.num_bins}")
        if self.image_size < 16:
            raise ValueError(f"GRMConfig.image_size must be >= 16, got {self.image_size}")
        if self.embed_dim % self.view_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by view_heads ({self.view_heads})")
        self.vocabulary = build_vocabulary([], self.vocabulary)
        if self.text_encoder != "words" and not self.text_encoder.startswith("sentence:"):
            raise ValueError(
                f"GRMConfig.text_encoder must be 'words', 'sentence:minilm' or "
                f"'sentence:<local dir>', got {self.text_encoder!r}"
            )
        if self.canonical_colors is not None:
            self.color_channels()  # validates
            if self.conditioning != "pooled":
                raise ValueError(
                    "GRMConfig.canonical_colors needs conditioning='pooled' "
                    "(train spatial conditioning with --canonical-colors None)"
                )

    def color_channels(self) -> tuple[str, str, int, int] | None:
        """(word a, word b, channel a, channel b) of :attr:`canonical_colors`, None when off."""
        if self.canonical_colors is None:
            return None
        a, sep, b = self.canonical_colors.partition(":")
        if not sep or a not in COLOR_CHANNELS or b not in COLOR_CHANNELS or a == b:
            raise ValueError(
                f"GRMConfig.canonical_colors must be 'a:b' with two different words of "
                f"{sorted(COLOR_CHANNELS)}, got {self.canonical_colors!r}"
            )
        return a, b, COLOR_CHANNELS[a], COLOR_CHANNELS[b]

    def reads_exchanged(self, text: str) -> bool:
        """Whether an instruction reads the colour-exchanged encoding: it names ``b`` and not ``a``."""
        return self._reads_exchanged(tokenize(text))

    def _reads_exchanged(self, words: list[str]) -> bool:
        pair = self.color_channels()
        return pair is not None and pair[1] in words and pair[0] not in words

    @property
    def backbone_kind(self) -> str:
        return parse_backbone(self.backbone)[0]

    def token_ids(self, text: str) -> list[int]:
        """Token ids of an instruction (``<unk>`` = 1 for words outside the vocabulary)."""
        index = {w: i for i, w in enumerate(self.vocabulary)}
        return [index.get(w, 1) for w in tokenize(self.canonical_text(text))] or [1]

    def canonical_text(self, text: str) -> str:
        """The instruction as the model reads it: with colour-canonical encoding on, an instruction
        that reads the exchanged frames has its colour word exchanged too (``blue`` -> ``red``), so
        the named colour is canonical in the text as in the image."""
        if not self._reads_exchanged(tokenize(text)):
            return text
        a, b, _, _ = self.color_channels()
        return re.sub(rf"\b{b}\b", a, text, flags=re.IGNORECASE)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        d["conv_channels"] = list(self.conv_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> GRMConfig:
        return dataclass_from_dict(cls, data, source)

    @classmethod
    def from_json(cls, path: str | Path) -> GRMConfig:
        return cls.from_dict(read_json_object(path, "GRM config.json"), source=str(path))
