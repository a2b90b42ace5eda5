"""Record sim data, train the GRM, evaluate it on held-out seeds and print the table.

    .venv/bin/python bench/grm_report.py --out outputs/grm_report [--steps 800 --size 64 ...]

Held-out episodes use seeds never used for training. Reported per task: VOC (Spearman of Φ with
frame index, successful episodes), 3-class completion accuracy, success-vs-failure AUROC (score:
final Φ) -- multi-view (all cameras) and single-view (front only; the same model, trained with
view dropout) side by side; the goal-looks-like-start stress test (goal reference = the start
frame: fused vs plain-mean success recall); how well Φ ranks the true progress of held-out
random-action rollouts (the states RL explores); colour binding (final Φ of successful push /
pick-place episodes under their own instruction vs the colour-swapped one: equal means the model
ignores the colour word); leave-one-task-out VOC before/after one-shot adaptation from a single
demo. Results also go to <out>/results.json.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from episodes import open_dataset
from episodes.atomic import atomic_write_json
from episodes.cli_errors import parse_config
from reward_models.adapt_grm import AdaptConfig, adapt_grm
from reward_models.metrics import auroc, completion_class, spearman, voc
from reward_models.modeling_grm import load_grm
from reward_models.tracker import FusionConfig, track_episode
from reward_models.train_grm import GRMTrainConfig, parse_swap_pairs, swap_instruction, train_grm


@dataclass
class ReportConfig:
    """GRM report: record -> train -> held-out evaluation."""

    out: Path = Path("outputs/grm_report")
    """Working directory (datasets, checkpoints, results.json); existing datasets are reused."""
    data_dir: Path | None = None
    """Where datasets are recorded / reused (default: <out>/data)."""
    tasks: tuple[str, ...] = ("reach", "push", "pickplace", "drawer")
    """Sim tasks."""
    train_expert: int = 16
    """Expert episodes per task for training."""
    train_noisy: int = 8
    """Noisy-expert episodes per task for training."""
    train_failure: int = 12
    """failure-mix episodes per task for training."""
    train_failure_extra: int = 16
    """More failure-mix episodes per task for training (a second set of seeds): failures that
    drift (wrong target, rewind, partial) are what the hop head gets wrong most."""
    train_wrong_object: int = 0
    """Extra wrong-object episodes for training, per task in ``wrong_object_tasks`` (the other
    block is manipulated: only the instruction's colour word tells it from a success). Off by
    default: with 8 per task the colour-blind model hedged and push 3-class fell to 31 %."""
    train_explore: int = 0
    """Exploration episodes per task for training, half random-action, half expert with heavy action
    noise (``explore_noise``): the states an RL policy visits early on, which scripted episodes
    never show (a GRM trained without them ranked random-rollout progress poorly)."""
    explore_noise: float = 1.0
    """Action-noise std of the noisy half of the exploration episodes."""
    wrong_object_tasks: tuple[str, ...] = ("push", "pickplace")
    """Tasks with a distractor object that get the extra wrong-object episodes."""
    test_expert: int = 8
    """Held-out expert episodes per task."""
    test_failure: int = 8
    """Held-out failure-mix episodes per task."""
    test_random: int = 8
    """Held-out random-action episodes per task: Spearman of Φ with the *true* progress on them
    ("random-rollout rank") -- the states an RL policy explores, where shaping needs Φ to be right."""
    size: int = 64
    """Recorded and training image size (px)."""
    steps: int = 3000
    """Training steps of the multi-task GRM."""
    batch_episodes: int = 6
    """Episodes per training batch."""
    frames_per_episode: int = 5
    """Frames per episode per batch."""
    loto_task: str | None = "drawer"
    """Task left out for the adaptation experiment (None: skip it)."""
    loto_steps: int = 1200
    """Training steps of the leave-one-task-out GRM."""
    adapt_steps: int = 200
    """One-shot adaptation steps."""
    num_threads: int | None = 1
    """torch CPU threads (1 is fastest on a busy 2-core machine)."""
    device: str = "auto"
    """auto | cpu | cuda."""
    seed: int = 0
    """Training seed."""
    swap_counterfactual: float = 0.0
    """GRMTrainConfig.swap_counterfactual: probability of colour-swapped instructions (hop 0) on
    successful episodes (0: off; the wrong-object episodes carry the colour supervision)."""
    swap_weight: float = 0.15
    """GRMTrainConfig.swap_weight: loss share of the colour-swap pairs."""
    anchor_weight: float | None = None
    """GRMTrainConfig.anchor_weight: loss share of start/goal-anchored pairs (None: the default)."""
    state_weight: float | None = None
    """GRMTrainConfig.state_weight: weight of the auxiliary instruction-conditioned state probe (None: the default)."""
    zero_hop_weight: float | None = None
    """GRMTrainConfig.zero_hop_weight: loss share of zero-hop pairs (None: the GRMTrainConfig default)."""
    canonical_colors: str | None = "red:blue"
    """GRMTrainConfig.canonical_colors (None: off, the colour-blind recipe of earlier reports)."""
    fusion: str = "fused"
    """Tracker fusion mode for the multi-/single-view rows (see reward_models.tracker.FusionConfig)."""
    gate_forward: bool = True
    """FusionConfig.gate_forward for those rows (no goal: gate Φ_F against Φ_I; the default)."""
    reuse_checkpoints: bool = False
    """Evaluate <out>/grm_all (and the leave-one-task-out checkpoints) if they exist instead of
    training again."""


def record(out: Path, task: str, policy: str, n: int, seed: int, size: int, noise: float | None = None) -> Path | None:
    if n <= 0:
        return None
    if (out / "meta" / "info.json").exists():
        return out
    cmd = [
        sys.executable,
        "-m",
        "policies.record",
        "--task",
        task,
        "--episodes",
        str(n),
        "--seed",
        str(seed),
        "--policy",
        policy,
        "--cameras",
        "front,side,wrist",
        "--size",
        str(size),
        "--out",
        str(out),
    ]
    if noise is not None:
        cmd += ["--noise", str(noise)]
    subprocess.run(cmd, check=True)
    return out


def _fusion(fusion):
    """A FusionConfig from a mode name (or the config itself)."""
    return fusion if isinstance(fusion, FusionConfig) else FusionConfig(mode=fusion)


def evaluate(model, episodes, cameras=None, goal_mode: str | None = None, fusion: str = "fused") -> dict:
    """Metrics over held-out episodes, plus one row per episode (behaviour, label, final Φ, class)."""
    vocs, correct, finals, labels, detected, rows = [], 0, [], [], [], []
    for ep in episodes:
        goal = None
        if goal_mode == "start":  # worst case: the goal reference looks exactly like the start
            goal = {c: v[:1] for c, v in ep.frames.items() if cameras is None or c in cameras}
        trace = track_episode(model, ep, cameras=cameras, goal_obs=goal, fusion=_fusion(fusion))
        if ep.outcome == "success":
            v = voc(trace.phi)
            vocs.append(0.0 if np.isnan(v) else v)
        predicted = completion_class(trace.phi)
        correct += predicted == ep.outcome
        rows.append(
            {
                "episode": int(ep.episode_index),
                "seed": ep.meta.get("seed"),
                "policy": ep.meta.get("policy"),
                "outcome": ep.outcome,
                "final_phi": round(trace.final, 3),
                "predicted": predicted,
                "instruction": ep.task,
            }
        )
        finals.append(trace.final)
        labels.append(ep.outcome == "success")
        detected.append(trace.success_frame is not None)
    labels_a, detected_a = np.array(labels), np.array(detected)
    return {
        "voc": float(np.mean(vocs)) if vocs else float("nan"),
        "completion_acc": correct / len(episodes),
        "auroc": auroc(finals, labels) if 0 < sum(labels) < len(labels) else float("nan"),
        "success_recall": float(detected_a[labels_a].mean()) if labels_a.any() else float("nan"),
        "false_success": float(detected_a[~labels_a].mean()) if (~labels_a).any() else float("nan"),
        "n": len(episodes),
        "n_success": int(sum(labels)),
        "episodes": rows,
    }


def progress_rank(model, episodes, fusion: str = "fused") -> dict:
    """Spearman of Φ with the true progress, per episode (episodes whose true progress is constant
    are skipped: nothing to rank; a constant Φ counts 0), and the mean |Φ − true| over all frames."""
    ranks, errors = [], []
    for ep in episodes:
        trace = track_episode(model, ep, fusion=_fusion(fusion))
        truth = np.asarray(ep.progress, dtype=np.float64)
        errors.append(np.abs(trace.phi - truth))
        if np.ptp(truth) > 1e-6:
            ranks.append(float(np.nan_to_num(spearman(trace.phi, truth))))  # constant Φ ranks nothing: 0
    return {
        "rank": float(np.mean(ranks)) if ranks else float("nan"),
        "ranks": [round(r, 3) for r in ranks],
        "mae": float(np.concatenate(errors).mean()) if errors else float("nan"),
        "n": len(episodes),
    }


def colour_binding(model, episodes, fusion: str = "fused") -> dict | None:
    """Mean final Φ of held-out *successful* episodes under their own instruction and under the
    instruction with the colour word swapped (the other block named, which did not move). A model
    that grounds the colour word reads the swapped one as little progress; a colour-blind one gives
    the same Φ to both. None when no successful episode names a swappable colour."""
    pairs = parse_swap_pairs(GRMTrainConfig.swap_words)  # the trainer's interchangeable-object words
    config = _fusion(fusion)
    own, swapped = [], []
    for ep in episodes:
        other = swap_instruction(ep.task, pairs) if ep.outcome == "success" else None
        if other is None:
            continue
        own.append(track_episode(model, ep, fusion=config).final)
        swapped.append(track_episode(model, ep, task=other, fusion=config).final)
    if not own:
        return None
    return {"own": float(np.mean(own)), "swapped": float(np.mean(swapped)), "n": len(own)}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(ReportConfig, argv)

    t_start = time.time()
    data = cfg.data_dir or cfg.out / "data"
    train_dirs: dict[str, list[Path]] = {}
    test_dirs: dict[str, list[Path]] = {}
    random_dirs: dict[str, Path | None] = {}
    for ti, task in enumerate(cfg.tasks):
        base = 1000 * ti
        train_dirs[task] = [
            d
            for d in (
                record(data / task / "train_expert", task, "expert", cfg.train_expert, base, cfg.size),
                record(data / task / "train_noisy", task, "noisy", cfg.train_noisy, base + 100, cfg.size),
                record(data / task / "train_failure", task, "failure-mix", cfg.train_failure, base + 200, cfg.size),
                record(
                    data / task / "train_failure_extra",
                    task,
                    "failure-mix",
                    cfg.train_failure_extra,
                    base + 300,
                    cfg.size,
                ),
                record(
                    data / task / "train_wrong_object",
                    task,
                    "wrong-object",
                    cfg.train_wrong_object if task in cfg.wrong_object_tasks else 0,
                    base + 400,
                    cfg.size,
                ),
                record(
                    data / task / "train_explore_random", task, "random", cfg.train_explore // 2, base + 500, cfg.size
                ),
                record(
                    data / task / "train_explore_noisy",
                    task,
                    "noisy",
                    cfg.train_explore - cfg.train_explore // 2,
                    base + 600,
                    cfg.size,
                    noise=cfg.explore_noise,
                ),
            )
            if d is not None
        ]
        test_dirs[task] = [
            d
            for d in (
                record(data / task / "test_expert", task, "expert", cfg.test_expert, 50_000 + base, cfg.size),
                record(
                    data / task / "test_failure", task, "failure-mix", cfg.test_failure, 50_000 + base + 100, cfg.size
                ),
            )
            if d is not None
        ]
        random_dirs[task] = record(
            data / task / "test_random", task, "random", cfg.test_random, 50_000 + base + 200, cfg.size
        )
    t_record = time.time() - t_start

    def load_all(dirs):
        return [open_dataset(d).load_episode(i) for d in dirs for i in range(len(open_dataset(d)))]

    test_eps = {task: load_all(dirs) for task, dirs in test_dirs.items()}
    common = dict(
        image_size=cfg.size,
        batch_episodes=cfg.batch_episodes,
        frames_per_episode=cfg.frames_per_episode,
        num_threads=cfg.num_threads,
        device=cfg.device,
        seed=cfg.seed,
        save_every=200,
        swap_counterfactual=cfg.swap_counterfactual,
        swap_weight=cfg.swap_weight,
        canonical_colors=cfg.canonical_colors,
    )
    if cfg.state_weight is not None:
        common["state_weight"] = cfg.state_weight
    if cfg.zero_hop_weight is not None:
        common["zero_hop_weight"] = cfg.zero_hop_weight
    if cfg.anchor_weight is not None:
        common["anchor_weight"] = cfg.anchor_weight

    def train(out: Path, dirs, steps: int) -> Path:
        if cfg.reuse_checkpoints and (out / "config.json").is_file():
            return out
        return train_grm(GRMTrainConfig(data=tuple(dirs), out=out, steps=steps, **common))

    fusion = FusionConfig(mode=cfg.fusion, gate_forward=cfg.gate_forward)
    t0 = time.time()
    all_ckpt = train(cfg.out / "grm_all", [d for ds in train_dirs.values() for d in ds], cfg.steps)
    t_train = time.time() - t0
    model = load_grm(all_ckpt, device=cfg.device)
    results: dict = {"config": {k: str(v) for k, v in vars(cfg).items()}, "tasks": {}}
    for task, eps in test_eps.items():
        results["tasks"][task] = {
            "multi_view": evaluate(model, eps, fusion=fusion),
            "single_view_front": evaluate(model, eps, cameras=("front",), fusion=fusion),
            "goal_is_start_fused": evaluate(model, eps, goal_mode="start", fusion="fused"),
            "goal_is_start_mean": evaluate(model, eps, goal_mode="start", fusion="mean"),
        }
        binding = colour_binding(model, eps, fusion)
        if binding is not None:
            results["tasks"][task]["colour_binding"] = binding
        if random_dirs.get(task) is not None:
            results["tasks"][task]["random_rollouts"] = progress_rank(model, load_all([random_dirs[task]]), fusion)

    if cfg.loto_task and cfg.loto_task in cfg.tasks:
        t0 = time.time()
        loto_ckpt = train(
            cfg.out / "grm_loto", [d for t, ds in train_dirs.items() if t != cfg.loto_task for d in ds], cfg.loto_steps
        )
        eps = test_eps[cfg.loto_task]
        before = evaluate(load_grm(loto_ckpt, device=cfg.device), eps, fusion=fusion)
        adapted = cfg.out / "grm_loto_adapted"
        if not (cfg.reuse_checkpoints and (adapted / "config.json").is_file()):
            adapted = adapt_grm(
                AdaptConfig(
                    checkpoint=loto_ckpt,
                    demo=train_dirs[cfg.loto_task][0],
                    episode=0,
                    out=adapted,
                    steps=cfg.adapt_steps,
                    device=cfg.device,
                    num_threads=cfg.num_threads,
                )
            )
        after = evaluate(load_grm(adapted, device=cfg.device), eps, fusion=fusion)
        results["loto"] = {"task": cfg.loto_task, "before": before, "after": after, "seconds": time.time() - t0}
    results["seconds"] = {"record": t_record, "train": t_train, "total": time.time() - t_start}
    atomic_write_json(cfg.out / "results.json", results)

    print(f"\nGRM report (held-out seeds; {cfg.size}px; {cfg.steps} steps; train {t_train:.0f}s)")
    print(
        f"{'task':<10} {'views':<7} {'VOC':>6} {'3-class':>8} {'AUROC':>6} {'recall':>6} {'false+':>6}"
        "   goal=start: recall fused/mean, false+ fused   random rollouts: rank, MAE   "
        "colour: final Φ own / swapped instruction"
    )
    for task, r in results["tasks"].items():
        for name, key in (("multi", "multi_view"), ("front", "single_view_front")):
            m = r[key]
            extra = ""
            if key == "multi_view":
                g, gm = r["goal_is_start_fused"], r["goal_is_start_mean"]
                extra = f"   {g['success_recall']:.2f} / {gm['success_recall']:.2f}, {g['false_success']:.2f}"
                if "random_rollouts" in r:
                    extra += f"            {r['random_rollouts']['rank']:+.2f}, {r['random_rollouts']['mae']:.2f}"
                if "colour_binding" in r:
                    cb = r["colour_binding"]
                    extra += f"          {cb['own']:.2f} / {cb['swapped']:.2f}"
            print(
                f"{task:<10} {name:<7} {m['voc']:6.3f} {m['completion_acc']:8.1%} {m['auroc']:6.3f} "
                f"{m['success_recall']:6.2f} {m['false_success']:6.2f}{extra}"
            )
    misses = [
        (task, e)
        for task, r in results["tasks"].items()
        for e in r["multi_view"]["episodes"]
        if e["predicted"] != e["outcome"]
    ]
    print(f"\nmulti-view misclassified episodes ({len(misses)}):")
    for task, e in misses:
        print(
            f"  {task:<10} seed {e['seed']!s:<6} {e['policy']!s:<13} label {e['outcome']:<8} final Φ {e['final_phi']:.2f}"
            f" -> {e['predicted']:<8} '{e['instruction']}'"
        )
    if "loto" in results:
        lo = results["loto"]
        print(
            f"leave-one-task-out ({lo['task']}): VOC {lo['before']['voc']:.3f} -> {lo['after']['voc']:.3f} after "
            f"one-shot adaptation; 3-class {lo['before']['completion_acc']:.1%} -> {lo['after']['completion_acc']:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
