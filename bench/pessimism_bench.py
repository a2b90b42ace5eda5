"""Pessimism bench: does shaping with Φ − k·spread keep an RL policy from farming states the GRM
over-rates?

    .venv/bin/python bench/pessimism_bench.py --grm grm --k 0 1 --steps 12000 --episodes 20 \\
        --out outputs/pessimism_bench

For each k it trains SAC on reach with ``--reward GRM+pessimism=k`` (``prism-train``; k = 0 is the
plain GRM reward), records ``--episodes`` fresh-seed rollouts of the trained policy with their
simulator progress (``prism-eval --record``), and scores them with the *plain* GRM. Over-rating
is the gap between the GRM's Φ at the episode's end and the true final progress: a policy that
farms over-rated states shows a large positive gap. Finished runs are reused (re-running resumes).
Writes ``OUT/results.json`` and ``bench/results/pessimism_bench.json`` (bench/results_io.py) with
per-k mean Φ_final, true final progress, their gap, the share of episodes over-rated by more than
``OVER_RATED_GAP``, mean spread and true success (Wilson 95 % interval).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from episodes import open_dataset
from episodes.atomic import atomic_write_json
from policies.evaluate import wilson_interval
from reward_models.registry import load_progress_model
from reward_models.tracker import track_episode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_io import write_bench_result  # noqa: E402  (bench/ is the script's own folder)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OVER_RATED_GAP = 0.2
"""An episode counts as over-rated when the plain GRM's Φ_final exceeds its true final progress by
more than this (a fifth of the task: clearly more than the model's noise on scripted episodes)."""


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def score_rollouts(grm: str, data: Path, device: str) -> dict[str, float]:
    """Plain-GRM Φ_final vs true final progress on recorded rollouts."""
    model = load_progress_model(grm, device=device)
    ds = open_dataset(data)
    finals, truths, spreads, successes = [], [], [], []
    for i in range(len(ds)):
        ep = ds.load_episode(i, cameras=list(model.cameras) if model.cameras else None)
        trace = track_episode(model, ep)
        finals.append(trace.final)
        truths.append(float(ep.progress[-1]))
        spreads.append(float(trace.phi_std[-1]))
        successes.append(ep.outcome == "success")
    finals_a, truths_a = np.array(finals), np.array(truths)
    gaps = finals_a - truths_a
    low, high = wilson_interval(int(sum(successes)), len(successes))
    return {
        "episodes": len(finals),
        "grm_phi_final": float(finals_a.mean()),
        "true_final_progress": float(truths_a.mean()),
        "over_rating": float(gaps.mean()),
        "over_rated_share": float((gaps > OVER_RATED_GAP).mean()),
        "phi_std_final": float(np.mean(spreads)),
        "true_success": float(np.mean(successes)),
        "true_success_ci": [low, high],
    }


def findings(by_k: dict[str, dict]) -> list[str]:
    """Plain sentences: is the plain-GRM policy over-rated, and is the pessimistic one less so."""
    plain = by_k.get("0")
    if plain is None:
        return []
    lines = [
        f"k=0 (plain GRM): Φ_final − true progress {plain['over_rating']:+.3f}, "
        f"{plain['over_rated_share']:.0%} of episodes over-rated by > {OVER_RATED_GAP}, "
        f"true success {plain['true_success']:.0%}"
    ]
    for k, row in by_k.items():
        if k == "0":
            continue
        change = "less" if row["over_rating"] < plain["over_rating"] else "not less"
        lines.append(
            f"k={k}: Φ_final − true progress {row['over_rating']:+.3f} ({change} over-rated than k=0), "
            f"{row['over_rated_share']:.0%} of episodes over-rated, true success {row['true_success']:.0%}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grm", default="grm", help="GRM spec (grm, grm:DIR or DIR)")
    ap.add_argument("--k", type=float, nargs="+", default=[0.0, 1.0], help="pessimism values (0 = plain)")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("outputs/pessimism_bench"))
    ap.add_argument("--results-dir", type=Path, default=None, help="bench result folder (default bench/results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one thread is fastest on a shared 2-core machine (and leaves the other core free)
    args.out.mkdir(parents=True, exist_ok=True)
    by_k, seconds = {}, {}
    for k in args.k:
        t0 = time.perf_counter()
        run_dir = args.out / f"k{k:g}"
        reward = args.grm if k == 0 else f"{args.grm}+pessimism={k:g}"
        if not (run_dir / "model.zip").exists():
            checkpoints = run_dir / "checkpoints"
            resume = ["--resume"] if checkpoints.is_dir() and any(checkpoints.iterdir()) else []
            run(
                [
                    str(BIN / "prism-train"),
                    "--task",
                    "reach",
                    "--algo",
                    "sac",
                    "--reward",
                    reward,
                    "--obs",
                    "state",
                    "--n-envs",
                    str(args.n_envs),
                    "--steps",
                    str(args.steps),
                    "--seed",
                    str(args.seed),
                    "--eval-every",
                    "0",
                    "--torch-threads",
                    "1",
                    "--no-progress-bar",
                    "--device",
                    args.device,
                    "--out",
                    str(run_dir),
                    *resume,
                ]
            )
        rollouts = args.out / f"rollouts_k{k:g}"  # outside the run folder: prism-eval refuses to write into its input
        if not (rollouts / "meta" / "info.json").exists():
            run(
                [
                    str(BIN / "prism-eval"),
                    "--run",
                    str(run_dir),
                    "--episodes",
                    str(args.episodes),
                    "--record",
                    str(rollouts),
                    "--device",
                    args.device,
                ]
            )
        by_k[f"{k:g}"] = {"reward": reward, **score_rollouts(args.grm, rollouts, args.device)}
        seconds[f"k{k:g}"] = time.perf_counter() - t0
        print(f"k={k:g}: {by_k[f'{k:g}']}", flush=True)
    results = {
        "task": "reach",
        "algo": "sac",
        "steps": args.steps,
        "seed": args.seed,
        "grm": args.grm,
        "scored_by": f"plain {args.grm} (k = 0), fused tracker",
        "by_k": by_k,
        "findings": findings(by_k),
        "seconds": seconds,
    }
    atomic_write_json(args.out / "results.json", results)
    print(json.dumps(results, indent=2))
    print(
        f"recorded for docs/results.md: {write_bench_result('pessimism_bench', results, results_dir=args.results_dir)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
