"""How the pretrained GRM does on world variants it never saw, and what it costs.

    .venv/bin/python bench/grm_generalisation.py --grm grm --out outputs/grm_generalisation

Held-out data: per task, episodes recorded in the varied world's *held-out split* (colours,
table textures and arm appearances the training split never draws; ``sim/world.py``) on seeds the
training never used: a failure mix (success / partial / fail) and random-action rollouts (the
states early RL visits). Reported per task, for the GRM and the ground-truth oracle beside it:

* zero-shot VOC (Spearman of Φ with time on successes), 3-class completion accuracy, success
  AUROC (score: final Φ) -- multi-view (all cameras) and single-view (front only);
* random-rollout rank: Spearman of Φ with the true progress on the random rollouts;
* calibration: expected calibration error (10 bins) of P(success): the calibrated one where the
  checkpoint has ``prism-reward calibrate``'s file, else the final Φ read as a probability;
* one-shot adaptation (``prism-reward adapt`` on the first successful held-out episode), scored on
  the other held-out episodes of that task, beside the zero-shot figures, with adapt's defaults:
  rehearsal (mixed into the batches and guarding the step choice) on the checkpoint's own
  rehearsal set (train-split failure-mix episodes of every task, shipped with ``grm``);
* cost: encoder images/s, and the RL-loop overhead ratio (env steps/s without a reward model over
  with it; same envs and renders, same run; ``shaping_bench.measure_overhead``).

Targets (printed MET / NOT MET): zero-shot VOC >= 0.90, 3-class >= 80 %, AUROC >= 0.90;
after adaptation never below zero-shot and >= 0.95 / 90 % / 0.95; rank >= 0.7; ECE <= 0.1;
overhead <= 1.5x. Results go to ``<out>/results.json``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from episodes.cli_errors import parse_config  # noqa: E402
from reward_models.metrics import expected_calibration_error  # noqa: E402

from grm_report import evaluate, progress_rank  # noqa: E402
from results_io import write_bench_result  # noqa: E402

TARGETS = {
    "voc": 0.90,
    "completion_acc": 0.80,
    "auroc": 0.90,
    "rank": 0.70,
    "ece": 0.10,
    "overhead": 1.5,
    "adapted_voc": 0.95,
    "adapted_completion_acc": 0.90,
    "adapted_auroc": 0.95,
}


@dataclass
class GeneralisationArgs:
    """Evaluate a GRM on held-out world variants (zero-shot, single/multi-view, adapted, cost)."""

    grm: str = "grm"
    """GRM spec: ``grm`` (the shipped one) or a checkpoint directory."""
    out: Path = Path("outputs/grm_generalisation")
    """Working directory: held-out datasets (reused when present), adapted checkpoints, results.json."""
    tasks: tuple[str, ...] = ("reach", "push", "pickplace", "drawer")
    """Tasks to evaluate."""
    episodes: int = 16
    """Held-out failure-mix episodes per task."""
    random_episodes: int = 8
    """Held-out random-action rollouts per task (for the rank)."""
    seed: int = 500_000
    """First seed of the held-out recordings (training used seeds below 100k)."""
    size: int = 96
    """Recorded image size."""
    adapt_steps: int = 150
    """Steps of the one-shot adaptation (0 skips it)."""
    num_threads: int | None = 1
    """torch CPU threads (1 is fastest on a busy 2-core machine)."""
    overhead_steps: int = 100
    """Vector-env steps per arm of the overhead measurement (0 skips it)."""
    device: str = "cpu"
    """Torch device."""
    extra: list[str] = field(default_factory=list)
    """Extra ``prism-reward adapt`` flags, e.g. ``--freeze-encoder``."""


def record_heldout(args: GeneralisationArgs, task: str, policy: str, n: int, seed: int) -> Path:
    from policies.record import record_episodes

    out = args.out / "data" / f"{task}_{policy}"
    if not (out / "meta" / "info.json").is_file():
        record_episodes(
            out,
            task,
            policy,
            n,
            seed,
            "front,side,wrist",
            args.size,
            world="varied",
            world_split="heldout",
            progress_bar=False,
        )
    return out


def load(path: Path) -> list:
    from episodes import open_dataset

    ds = open_dataset(path)
    return [ds.load_episode(i) for i in range(len(ds))]


def encoder_images_per_s(model, size: int = 96, batch: int = 32, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    obs = {c: rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8) for c in model.cameras}
    model.encode(obs)
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.encode(obs)
    return batch * len(model.cameras) * repeats / (time.perf_counter() - t0)


def adapt_and_score(args: GeneralisationArgs, ckpt: Path, task: str, dataset: Path, episodes: list) -> dict | None:
    from reward_models.adapt_grm import AdaptConfig, adapt_grm
    from reward_models.modeling_grm import load_grm

    demo = next((i for i, ep in enumerate(episodes) if ep.outcome == "success"), None)
    if demo is None or args.adapt_steps <= 0:
        return None
    out = args.out / "adapted" / task
    if not (out / "config.json").is_file():
        t0 = time.perf_counter()
        adapt_grm(
            AdaptConfig(
                checkpoint=ckpt,
                demo=dataset,
                episode=demo,
                out=out,
                steps=args.adapt_steps,
                device=args.device,
                num_threads=args.num_threads,
                progress_bar=False,
            ),
        )
        print(f"{task:9s} adapted in {time.perf_counter() - t0:.0f} s", flush=True)
    rest = [ep for i, ep in enumerate(episodes) if i != demo]
    before = evaluate(load_grm(ckpt, device=args.device), rest)
    after = evaluate(load_grm(out, device=args.device), rest)
    keys = ("voc", "completion_acc", "auroc")
    return {"demo_episode": demo, "before": {k: before[k] for k in keys}, "after": {k: after[k] for k in keys}}


def overhead(args: GeneralisationArgs, ckpt: Path) -> dict:
    from shaping_bench import BenchArgs, measure_overhead

    bench = BenchArgs(grm=str(ckpt), device=args.device, overhead_steps=args.overhead_steps, out=args.out)
    return measure_overhead(bench)


def verdict(value: float, target: float, lower_is_better: bool = False) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    return "MET" if (value <= target if lower_is_better else value >= target) else "NOT MET"


def main(argv: list[str] | None = None) -> int:
    from reward_models.modeling_grm import load_grm
    from reward_models.registry import resolve_grm_checkpoint

    args = parse_config(GeneralisationArgs, argv, description=__doc__.split("\n\n")[0])
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    ckpt = resolve_grm_checkpoint(args.grm)
    model = load_grm(ckpt, device=args.device)
    results: dict = {"grm": str(ckpt), "args": {k: str(v) for k, v in asdict(args).items()}, "tasks": {}}
    for ti, task in enumerate(args.tasks):
        seed = args.seed + 10_000 * ti
        mix_path = record_heldout(args, task, "failure-mix", args.episodes, seed)
        rnd_path = record_heldout(args, task, "random", args.random_episodes, seed + 5_000)
        mix, rnd = load(mix_path), load(rnd_path)
        row = {
            "multi_view": evaluate(model, mix),
            "single_view": evaluate(model, mix, cameras=["front"]),
            "rank": progress_rank(model, rnd),
        }
        for part in ("multi_view", "single_view"):
            row[part].pop("episodes", None)
        finals = np.array([track_final(model, ep) for ep in mix])
        labels = np.array([ep.outcome == "success" for ep in mix], dtype=float)
        calibration = getattr(model, "confidence", None)  # prism-reward calibrate's Platt map, if fitted
        prob = (
            [calibration.success_probability(f) for f in finals] if calibration is not None else np.clip(finals, 0, 1)
        )
        row["ece"] = expected_calibration_error(prob, labels)
        row["ece_source"] = "calibrated P(success)" if calibration is not None else "final Φ read as P(success)"
        row["adaptation"] = adapt_and_score(args, ckpt, task, mix_path, mix)
        results["tasks"][task] = row
        mv = row["multi_view"]
        print(
            f"{task:9s} zero-shot VOC {mv['voc']:.3f}  3-class {mv['completion_acc']:.0%}  AUROC {mv['auroc']:.3f}"
            f"  | front only VOC {row['single_view']['voc']:.3f} 3-class {row['single_view']['completion_acc']:.0%}"
            f" AUROC {row['single_view']['auroc']:.3f}  | rank {row['rank']['rank']:.3f}  ECE {row['ece']:.3f}",
            flush=True,
        )
        if row["adaptation"]:
            b, a = row["adaptation"]["before"], row["adaptation"]["after"]
            print(
                f"{'':9s} adapted   VOC {b['voc']:.3f} -> {a['voc']:.3f}  3-class {b['completion_acc']:.0%} -> "
                f"{a['completion_acc']:.0%}  AUROC {b['auroc']:.3f} -> {a['auroc']:.3f}",
                flush=True,
            )
    results["encoder_images_per_s"] = encoder_images_per_s(model)
    print(f"encoder: {results['encoder_images_per_s']:.0f} images/s ({args.device})")
    if args.overhead_steps > 0:
        results["overhead"] = overhead(args, ckpt)
        o = results["overhead"]
        print(
            f"RL loop: {o['steps_per_s_without_model']:.0f} env-steps/s without the GRM, "
            f"{o['steps_per_s_with_model']:.0f} with it: overhead {o['overhead_ratio']:.2f}x"
        )
    results["targets"] = target_table(results)
    for line in results["targets"]:
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"results: {args.out / 'results.json'}")
    print(f"recorded for docs/results.md: {write_bench_result('grm_generalisation', results)}")
    return 0


def track_final(model, ep) -> float:
    from reward_models.tracker import track_episode

    return float(track_episode(model, ep).final)


def target_table(results: dict) -> list[str]:
    lines = []
    for task, row in results["tasks"].items():
        mv = row["multi_view"]
        parts = [
            f"VOC {mv['voc']:.3f} {verdict(mv['voc'], TARGETS['voc'])}",
            f"3-class {mv['completion_acc']:.0%} {verdict(mv['completion_acc'], TARGETS['completion_acc'])}",
            f"AUROC {mv['auroc']:.3f} {verdict(mv['auroc'], TARGETS['auroc'])}",
            f"rank {row['rank']['rank']:.3f} {verdict(row['rank']['rank'], TARGETS['rank'])}",
            f"ECE {row['ece']:.3f} {verdict(row['ece'], TARGETS['ece'], lower_is_better=True)}",
        ]
        if row.get("adaptation"):
            b, a = row["adaptation"]["before"], row["adaptation"]["after"]
            never_below = all(np.nan_to_num(a[k], nan=0) >= np.nan_to_num(b[k], nan=0) - 1e-9 for k in b)
            parts.append(f"adapted never below zero-shot: {'MET' if never_below else 'NOT MET'}")
            parts.append(
                f"adapted VOC {a['voc']:.3f} {verdict(a['voc'], TARGETS['adapted_voc'])}, 3-class "
                f"{a['completion_acc']:.0%} {verdict(a['completion_acc'], TARGETS['adapted_completion_acc'])}"
                f", AUROC {a['auroc']:.3f} {verdict(a['auroc'], TARGETS['adapted_auroc'])}"
            )
        lines.append(f"Target ({task}): " + "; ".join(parts))
    if "overhead" in results:
        r = results["overhead"]["overhead_ratio"]
        lines.append(
            f"Target (cost): RL-loop overhead {r:.2f}x {verdict(r, TARGETS['overhead'], lower_is_better=True)}"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
