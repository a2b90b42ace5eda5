"""One-shot adaptation of a trained GRM to a new task (``prism-reward adapt``).

Fine-tunes on hops from a *single* demonstration of the new task: the demo's frames give every
ordered pair (progress and rewound regress), anchored at its first and last frame, with view and
context dropout and augmentation -- the same batch construction as training. The new
instruction's words are added to the vocabulary (starting from the ``<unk>`` vector). Labels are
the demo's ground-truth progress when it has them, else Φ_i = i / (T − 1) (a demo is successful).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from episodes.atomic import check_output_not_input, check_replaceable
from episodes.cli_errors import check_numeric_fields, parse_config
from reward_models.modeling_grm import load_grm_module, save_grm
from reward_models.train_grm import NUMERIC_RANGES, TrainConfig, run_training, to_train_episode


@dataclass
class AdaptConfig:
    """Adapt a GRM checkpoint to a new task from one demonstration episode."""

    checkpoint: Path
    """GRM checkpoint directory to start from."""
    demo: Path
    """LeRobot v3 dataset holding the demonstration."""
    out: Path
    """Where the adapted checkpoint directory is written."""
    episode: int = 0
    """Index of the demonstration episode inside --demo."""
    task: str | None = None
    """Instruction of the new task (default: the demo's own instruction)."""
    labels: str = "auto"
    """Hop labels from: auto (the demo's progress column if present, else linear), progress, linear."""
    steps: int = 200
    """Fine-tuning steps."""
    lr: float = 3e-4
    """Peak learning rate."""
    frames_per_episode: int = 8
    """Frames of the demo per batch group (all ordered pairs are scored)."""
    batch_episodes: int = 4
    """Groups per batch (each with its own frames, dropout and augmentation)."""
    freeze_encoder: bool = False
    """Keep the image backbone fixed (only fusion, text and head adapt)."""
    seed: int = 0
    """Seed of sampling and augmentation."""
    device: str = "auto"
    """auto | cpu | cuda."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    run_dir: Path | None = None
    """Training state and TensorBoard logs (default: <out>.run)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        self.checkpoint, self.demo, self.out = Path(self.checkpoint), Path(self.demo), Path(self.out)
        if self.labels not in ("auto", "progress", "linear"):
            raise ValueError(f"labels must be auto, progress or linear, got {self.labels!r}")


def adapt_grm(cfg: AdaptConfig, demo_episode: Any | None = None) -> Path:
    """Adapt and write the new checkpoint; ``demo_episode`` (an in-memory Episode) replaces
    ``cfg.demo``/``cfg.episode`` when given. Returns the checkpoint path."""
    check_numeric_fields(cfg, {key: NUMERIC_RANGES[key] for key in
                               ("steps", "lr", "frames_per_episode", "batch_episodes", "num_threads")})
    check_output_not_input(cfg.out, [cfg.checkpoint, cfg.demo if demo_episode is None else None])
    check_replaceable(cfg.out, "checkpoint")
    model = load_grm_module(cfg.checkpoint)
    if demo_episode is None:
        from episodes import open_dataset

        ds = open_dataset(cfg.demo)
        if not 0 <= cfg.episode < len(ds):
            raise IndexError(f"--episode {cfg.episode} out of range: {cfg.demo} has {len(ds)} episodes")
        demo_episode = ds.load_episode(cfg.episode)
    task = cfg.task or demo_episode.task
    if cfg.labels == "linear" or (cfg.labels == "auto" and demo_episode.progress is None):
        demo_episode = replace(demo_episode, progress=np.linspace(0.0, 1.0, demo_episode.length, dtype=np.float32))
    elif demo_episode.progress is None:
        raise ValueError(f"--labels progress: demo episode {cfg.episode} of {cfg.demo} has no progress column")
    demo_episode = replace(demo_episode, task=task, outcome="success")
    added = model.extend_vocabulary([task])
    if cfg.freeze_encoder:
        model.backbone.requires_grad_(False)
    data = [to_train_episode(demo_episode, model.config.cameras, model.config.image_size, source=str(cfg.demo))]
    train_cfg = TrainConfig(
        out=cfg.out, run_dir=cfg.run_dir, steps=cfg.steps, lr=cfg.lr, warmup_steps=min(20, cfg.steps // 5),
        batch_episodes=cfg.batch_episodes, frames_per_episode=cfg.frames_per_episode,
        image_size=model.config.image_size, counterfactual=0.0, seed=cfg.seed, device=cfg.device,
        num_threads=cfg.num_threads, progress_bar=cfg.progress_bar, save_every=0,
    )
    model, summary = run_training(model, data, train_cfg, desc="adapt GRM")
    model.backbone.requires_grad_(True)
    training = dict(model.config.training)
    adaptations = list(training.get("adaptations", []))
    adaptations.append({
        "from": str(cfg.checkpoint), "demo": str(cfg.demo), "episode": cfg.episode, "task": task,
        "new_words": added, "steps": cfg.steps, "final_metrics": summary,
    })
    training["adaptations"] = adaptations
    training["instructions"] = sorted(set(training.get("instructions", [])) | {task})
    model.config.training = training
    return save_grm(model, cfg.out, overwrite=True)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(AdaptConfig, argv, prog="prism-reward adapt")
    path = adapt_grm(cfg)
    print(f"adapted GRM checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
