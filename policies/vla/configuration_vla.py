"""Configuration of the VLA policy: views, proprioception, text side, backbone, action tokens.

A :class:`VLAConfig` is everything needed to rebuild the network from a checkpoint directory
(``config.json`` next to ``model.safetensors``): for an ``hf:<dir>`` backbone its architecture is
copied into ``backbone_config`` when the model is built, so the checkpoint alone suffices.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from episodes.config_io import dataclass_from_dict, read_json_object

POLICY_TYPE = "prism-vla"
"""Value of ``policy_type`` in every VLA ``config.json``: how loaders tell a VLA checkpoint from a
GRM checkpoint or a prism-train run."""

BACKBONE_KINDS = ("conv", "hf")

PROPRIO_NAMES: tuple[str, ...] = tuple(f"joint{i + 1}_pos" for i in range(7)) + ("gripper_width",)
"""The ``state`` entries the policy reads, by name: joint positions and gripper width. A real arm
reports all of them (no object state, no velocities whose noise differs between sim and robot)."""

ACTION_NAMES: tuple[str, ...] = ("ee_dx", "ee_dy", "ee_dz", "gripper")
"""The ``ee_delta`` action space the policy predicts (each entry in [-1, 1])."""

ACT_MODES = ("argmax", "mean")


def parse_vla_backbone(backbone: str) -> tuple[str, str]:
    """``"conv"`` -> (conv, ""), ``"hf:/dir"`` -> (hf, /dir); anything else is a clear error."""
    kind, _, arg = backbone.partition(":")
    if kind not in BACKBONE_KINDS or (kind == "conv" and arg) or (kind == "hf" and not arg):
        raise ValueError(f"backbone must be 'conv' or 'hf:<local dir>', got {backbone!r}")
    return kind, arg


@dataclass
class VLAConfig:
    """Architecture of a VLA policy. Saved as ``config.json`` inside every checkpoint."""

    policy_type: str = POLICY_TYPE
    """Marker telling loaders this folder holds a VLA policy."""
    cameras: tuple[str, ...] = ("front", "side", "wrist")
    """Views the model knows, each with a learned view embedding; any non-empty subset works."""
    image_size: int = 64
    """Side (px) each view is resized to for the conv backbone (``hf`` uses its own input size)."""
    backbone: str = "conv"
    """Per-view image encoder: ``conv`` (small CNN trained from scratch) or ``hf:<local dir>`` (a
    transformers vision tower, loaded offline)."""
    conv_channels: tuple[int, ...] = (16, 32, 64, 64)
    """Channels of the conv backbone's stride-2 stages."""
    freeze_backbone: bool = False
    """Keep a pretrained (``hf``) backbone fixed while training."""
    backbone_config: dict[str, Any] | None = None
    """The ``hf`` backbone's own architecture config, filled in when the model is built."""
    text_encoder: str = "sentence:minilm"
    """Frozen sentence encoder of the instruction (:mod:`reward_models.text_encoders`), under a learned
    projection: paraphrases and unseen words land near known instructions."""
    embed_dim: int = 128
    """Width of the view, text and proprioception embeddings."""
    hidden_dim: int = 256
    """Width of the trunk MLP that maps the fused observation to action-token logits."""
    proprio_names: tuple[str, ...] = PROPRIO_NAMES
    """Names of the ``state`` entries read as proprioception (see :data:`PROPRIO_NAMES`)."""
    proprio_indices: tuple[int, ...] = tuple(range(7)) + (14,)
    """Where :attr:`proprio_names` sit in the ``state`` vector (the sim's and the robot bridge's
    proprioceptive prefix: joint positions 0-6, velocities 7-13, gripper width 14, hand xyz 15-17);
    taken from the training data's state names."""
    proprio_mean: tuple[float, ...] = (0.0,) * len(PROPRIO_NAMES)
    """Per-entry mean of the proprioception in the training data (normalisation)."""
    proprio_std: tuple[float, ...] = (1.0,) * len(PROPRIO_NAMES)
    """Per-entry std of the proprioception in the training data (normalisation)."""
    action_names: tuple[str, ...] = ACTION_NAMES
    """Action dimensions A, in the env's order."""
    chunk_size: int = 8
    """H: future actions predicted per observation (one action chunk)."""
    execute_steps: int = 4
    """Actions of each chunk executed before the policy re-plans (receding horizon, 1..H)."""
    num_bins: int = 256
    """Action tokens per dimension: uniform bins over [-1, 1] as in OpenVLA."""
    act_mode: str = "argmax"
    """How ``act`` turns token probabilities into an action: ``argmax`` (the most likely bin's
    centre) or ``mean`` (the expected bin centre)."""
    model_id: str = "vla"
    """Identifier written into evaluation reports."""

    def __post_init__(self) -> None:
        parse_vla_backbone(self.backbone)
        self.cameras = tuple(self.cameras)
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        self.proprio_names = tuple(self.proprio_names)
        self.proprio_indices = tuple(int(i) for i in self.proprio_indices)
        self.proprio_mean = tuple(float(x) for x in self.proprio_mean)
        self.proprio_std = tuple(float(x) for x in self.proprio_std)
        self.action_names = tuple(self.action_names)
        if self.policy_type != POLICY_TYPE:
            raise ValueError(f"VLAConfig.policy_type must be {POLICY_TYPE!r}, got {self.policy_type!r}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"VLAConfig.cameras must be non-empty and distinct, got {self.cameras}")
        if not self.text_encoder.startswith("sentence:"):
            raise ValueError(
                f"VLAConfig.text_encoder must be 'sentence:minilm' or 'sentence:<local dir>', got {self.text_encoder!r}"
            )
        if self.image_size < 16:
            raise ValueError(f"VLAConfig.image_size must be >= 16, got {self.image_size}")
        if not 1 <= self.execute_steps <= self.chunk_size:
            raise ValueError(
                f"VLAConfig.execute_steps must be in [1, chunk_size={self.chunk_size}], got {self.execute_steps}"
            )
        if self.num_bins < 2:
            raise ValueError(f"VLAConfig.num_bins must be >= 2, got {self.num_bins}")
        if self.act_mode not in ACT_MODES:
            raise ValueError(f"VLAConfig.act_mode must be one of {ACT_MODES}, got {self.act_mode!r}")
        n = len(self.proprio_names)
        if len(self.proprio_mean) != n or len(self.proprio_std) != n or len(self.proprio_indices) != n:
            raise ValueError(
                f"VLAConfig.proprio_indices/proprio_mean/proprio_std need {n} values (one per proprio_names)"
            )
        if any(i < 0 for i in self.proprio_indices):
            raise ValueError("VLAConfig.proprio_indices must be >= 0")
        if any(s <= 0 for s in self.proprio_std):
            raise ValueError("VLAConfig.proprio_std must be positive")
        if self.embed_dim < 1 or self.hidden_dim < 1 or self.chunk_size < 1:
            raise ValueError("VLAConfig.embed_dim, hidden_dim and chunk_size must be >= 1")

    @property
    def backbone_kind(self) -> str:
        return parse_vla_backbone(self.backbone)[0]

    @property
    def state_dim(self) -> int:
        """Length of the ``state`` prefix the policy reads."""
        return max(self.proprio_indices) + 1

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> VLAConfig:
        if data.get("policy_type") != POLICY_TYPE:
            raise ValueError(
                f"{source}: not a VLA policy config (policy_type is {data.get('policy_type')!r}, "
                f"expected {POLICY_TYPE!r})"
            )
        return dataclass_from_dict(cls, data, source)

    @classmethod
    def from_json(cls, path: str | Path) -> VLAConfig:
        return cls.from_dict(read_json_object(path, "VLA config.json"), source=str(path))


def is_vla_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a folder whose ``config.json`` declares a VLA policy."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("policy_type") == POLICY_TYPE


__all__ = ["ACTION_NAMES", "POLICY_TYPE", "PROPRIO_NAMES", "VLAConfig", "is_vla_checkpoint", "parse_vla_backbone"]
