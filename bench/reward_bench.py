"""GRM speed: encoder frames/s, tracker hops/s, and fused-tracker vs naive cost (same run).

    .venv/bin/python bench/reward_bench.py [--checkpoint CKPT] [--device cpu] [--batch-sizes 1 8 32]

*Naive* is the paper's way of running the three anchors: three separate full forward passes per
step, each encoding its BEFORE, AFTER, START and GOAL images from scratch. *Ours* encodes each new
frame once (references cached) and computes all 3·n hops from embeddings in one call.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from episodes.cli_errors import parse_config
from reward_models.configuration_grm import GRMConfig, build_vocabulary
from reward_models.modeling_grm import GRM, GRMProgressModel, load_grm
from reward_models.tracker import ProgressTracker


@dataclass
class BenchConfig:
    """Speed of the GRM encoder and tracker."""

    checkpoint: Path | None = None
    """GRM checkpoint (default: an untrained model with the default conv architecture)."""
    device: str = "cpu"
    """auto | cpu | cuda."""
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    """Numbers of parallel envs / frames per batch."""
    image_size: int = 64
    """Frame size (px) fed to the model."""
    canonical_colors: str | None = "red:blue"
    """GRMConfig.canonical_colors of the untrained model (``red:blue``, what ``prism-reward train``
    builds by default: two encodings per frame; None: one)."""
    steps: int = 10
    """Timed tracker steps per measurement (after 2 warm-up steps)."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def timed(fn, repeats: int) -> float:
    fn()
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(BenchConfig, argv)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    if cfg.checkpoint is not None:
        model = load_grm(cfg.checkpoint, device=cfg.device)
    else:
        model = GRMProgressModel(
            GRM(
                GRMConfig(
                    image_size=cfg.image_size,
                    vocabulary=build_vocabulary(["push the block"]),
                    canonical_colors=cfg.canonical_colors,
                )
            ),
            device=cfg.device,
        )
    cams = model.cameras
    rng = np.random.default_rng(0)
    task = "push the block"

    def obs(n: int) -> dict[str, np.ndarray]:
        return {c: rng.integers(0, 256, (n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8) for c in cams}

    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    print(
        f"device={model.device} threads={torch.get_num_threads()} cameras={list(cams)} size={cfg.image_size}px "
        f"backbone={model.grm_config.backbone} canonical_colors={model.grm_config.canonical_colors}"
    )
    print(
        f"{'batch':>5} {'enc images/s':>13} {'tracker steps/s':>16} {'hops/s':>9} {'naive steps/s':>14} {'naive/ours cost':>16}"
    )
    for n in cfg.batch_sizes:
        frames = obs(n)

        def encode() -> None:
            model.encode(frames)
            sync()

        t_enc = timed(encode, cfg.steps)
        tracker = ProgressTracker(model, n=n)
        start, goal = obs(n), obs(n)
        tracker.reset(range(n), [task] * n, start, goal_obs=goal)
        stream = [obs(n) for _ in range(4)]
        k = {"i": 0}

        def step() -> None:
            tracker.step(stream[k["i"] % 4])
            k["i"] += 1
            sync()

        t_ours = timed(step, cfg.steps)
        prev = {"o": start}

        def naive_step() -> None:
            cur = stream[k["i"] % 4]
            # Three full forward passes, each re-encoding before/after/start/goal.
            model.hop(prev["o"], cur, [task] * n, start_ref=start, goal_ref=goal)
            model.hop(start, cur, [task] * n, start_ref=start, goal_ref=goal)
            model.hop(goal, cur, [task] * n, start_ref=start, goal_ref=goal)
            prev["o"] = cur
            k["i"] += 1
            sync()

        t_naive = timed(naive_step, cfg.steps)
        views = n * len(cams)
        print(
            f"{n:5d} {views / t_enc:13.0f} {1 / t_ours:16.1f} {3 * n / t_ours:9.0f} {1 / t_naive:14.1f} {t_naive / t_ours:15.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
