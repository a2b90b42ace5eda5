"""``prism-pretrain-grm``: the one command that builds the pretrained GRM shipped as spec ``grm``.

1. **record** per task, scripted episodes in the *varied world's train split* (``sim.make(task,
   world="varied")``: textures, lighting, cameras, palette colours, shapes, distractors, arm
   appearance and paraphrased instructions drawn per episode) and in the default scene: a failure
   mix (successes, partial runs, failures, wrong objects, rewinds) plus the states RL explores
   (``random`` and strongly ``noisy`` rollouts) -> ``OUT/data/<task>_<policy>[_default]``;
2. **train** one multi-task GRM on all of it with a frozen pretrained sentence encoder on the text
   side (``sentence:minilm``) -> ``OUT/grm`` (checkpointed every ``--save-every`` steps in
   ``OUT/grm.run``).

Everything resumes: datasets already recorded are kept (they are written atomically, so a
recording cut short leaves nothing), and training continues from ``OUT/grm.run/last`` -- re-run the
same command after an interruption. Evaluate the result on held-out world variants with
``bench/grm_generalisation.py``; copy it into the package (``reward_models/pretrained/grm``) to
ship it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from episodes.cli_errors import parse_config, run_cli
from policies.record import record_episodes

RECIPE: dict[str, dict[str, int]] = {
    "varied": {"failure-mix": 40, "random": 12, "noisy": 12},
    "default": {"failure-mix": 16, "random": 6, "noisy": 6},
}
"""Episodes per world, task and behaviour at ``--scale 1``. The default world is in the mix because
it is the scene ``prism-train`` and ``prism-demo`` run in; the varied world is what makes the model
general (its held-out split stays out of training)."""

NOISY_STD = 1.0
"""Action-noise std of the ``noisy`` rollouts: far off the expert's path, like early RL."""


@dataclass
class PretrainArgs:
    """Record varied-world data and train the pretrained GRM (resumable)."""

    out: Path = Path("outputs/grm_pretrain")
    """Working directory: recorded datasets under data/, the checkpoint at grm/."""
    tasks: str = "reach,push,pickplace,drawer"
    """Comma-separated tasks."""
    scale: float = 1.0
    """Multiplies the episodes per task and behaviour (see RECIPE)."""
    seed: int = 10_000
    """First seed of the recordings (held-out evaluations use other seeds and the heldout split)."""
    size: int = 96
    """Recorded image size (px); the GRM trains at --image-size."""
    cameras: str = "front,side,wrist"
    """Cameras to record and train on."""
    steps: int = 4000
    """GRM optimisation steps."""
    image_size: int = 64
    """GRM input resolution."""
    text_encoder: str = "sentence:minilm"
    """Instruction encoder (see ``prism-reward train --help``)."""
    batch_episodes: int = 12
    """Episodes per GRM batch."""
    save_every: int = 250
    """Checkpoint the training state every N steps (what a resumed run continues from)."""
    device: str = "auto"
    """Torch device for training: auto, cpu, cuda."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def record_stage(args: PretrainArgs) -> list[Path]:
    datasets = []
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks names no task")
    jobs = [(world, task, policy, count) for world, counts in RECIPE.items() for task in tasks
            for policy, count in counts.items()]
    for k, (world, task, policy, count) in enumerate(jobs):
        episodes = max(1, round(count * args.scale))
        out = args.out / "data" / (f"{task}_{policy}" + ("" if world == "varied" else f"_{world}"))
        datasets.append(out)
        if (out / "meta" / "info.json").is_file():
            print(f"[pretrain] kept {out}", flush=True)
            continue
        seed = args.seed + 1000 * k
        s = record_episodes(out, task, policy, episodes, seed, args.cameras, args.size,
                            noise=NOISY_STD if policy == "noisy" else None, world=world,
                            world_split="train" if world == "varied" else None)
        print(f"[pretrain] {out}: {s.episodes} episodes, {s.frames} frames in {s.seconds:.0f}s, "
              f"outcomes {s.outcomes}", flush=True)
    return datasets


def train_stage(args: PretrainArgs, datasets: list[Path]) -> Path:
    from reward_models.train_grm import TrainConfig, train_grm

    ckpt = args.out / "grm"
    cfg = TrainConfig(
        data=tuple(datasets), out=ckpt, steps=args.steps, image_size=args.image_size,
        cameras=tuple(c.strip() for c in args.cameras.split(",") if c.strip()),
        text_encoder=args.text_encoder, canonical_colors=None, swap_words=(), batch_episodes=args.batch_episodes,
        save_every=args.save_every, device=args.device, num_threads=args.num_threads, model_id="grm",
        resume=(ckpt.with_name("grm.run") / "last").exists(),
    )
    t0 = time.perf_counter()
    path = train_grm(cfg)
    print(f"[pretrain] trained {args.steps} steps in {time.perf_counter() - t0:.0f}s -> {path}", flush=True)
    return path


def pretrain(args: PretrainArgs) -> Path:
    if args.scale <= 0:
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    datasets = record_stage(args)
    return train_stage(args, datasets)


def main(argv: list[str] | None = None) -> int:
    return run_cli("prism-pretrain-grm", _main, argv)


def _main(argv: list[str]) -> int:
    path = pretrain(parse_config(PretrainArgs, argv, description=__doc__.split("\n\n")[0]))
    print(f"pretrained GRM: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
