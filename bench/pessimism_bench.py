"""Pessimism bench: does shaping with Φ − k·spread keep an RL policy from farming states the GRM
over-rates?

    .venv/bin/python bench/pessimism_bench.py --grm grm --k 0 1 --steps 20000 --episodes 20 \\
        --out outputs/pessimism_bench

For each k it trains SAC on reach with ``--reward GRM+pessimism=k`` (``prism-train``; k = 0 is the
plain GRM reward), records ``--episodes`` fresh-seed rollouts of the trained policy with their
simulator progress (``prism-eval --record``), and scores them with the *plain* GRM. Over-rating
is the gap between the GRM's Φ at the episode's end and the true final progress: a policy that
farms over-rated states shows a large positive gap. Finished runs are reused (re-running resumes).
Writes ``OUT/results.json`` with per-k mean Φ_final, true final progress, their gap, mean spread
and true success.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def score_rollouts(grm: str, data: Path, device: str) -> dict[str, float]:
    """Plain-GRM Φ_final vs true final progress on recorded rollouts."""
    from episodes import open_dataset
    from reward_models.registry import load_progress_model
    from reward_models.tracker import track_episode

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
    return {"episodes": len(finals), "grm_phi_final": float(finals_a.mean()), "true_final_progress": float(truths_a.mean()),
            "over_rating": float((finals_a - truths_a).mean()), "phi_std_final": float(np.mean(spreads)),
            "true_success": float(np.mean(successes))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grm", default="grm", help="GRM spec (grm, grm:DIR or DIR)")
    ap.add_argument("--k", type=float, nargs="+", default=[0.0, 1.0], help="pessimism values (0 = plain)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("outputs/pessimism_bench"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for k in args.k:
        run_dir = args.out / f"k{k:g}"
        reward = args.grm if k == 0 else f"{args.grm}+pessimism={k:g}"
        if not (run_dir / "model.zip").exists():
            checkpoints = run_dir / "checkpoints"
            resume = ["--resume"] if checkpoints.is_dir() and any(checkpoints.iterdir()) else []
            run([str(BIN / "prism-train"), "--task", "reach", "--algo", "sac", "--reward", reward, "--obs", "state",
                 "--n-envs", str(args.n_envs), "--steps", str(args.steps), "--seed", str(args.seed), "--eval-every", "0",
                 "--device", args.device, "--out", str(run_dir), *resume])
        rollouts = args.out / f"rollouts_k{k:g}"  # outside the run folder: prism-eval refuses to write into its input
        if not (rollouts / "meta" / "info.json").exists():
            run([str(BIN / "prism-eval"), "--run", str(run_dir), "--episodes", str(args.episodes), "--record",
                 str(rollouts), "--device", args.device])
        results[f"{k:g}"] = {"reward": reward, **score_rollouts(args.grm, rollouts, args.device)}
        print(f"k={k:g}: {results[f'{k:g}']}", flush=True)
    from episodes.atomic import atomic_write_json

    atomic_write_json(args.out / "results.json", {"steps": args.steps, "seed": args.seed, "grm": args.grm, "by_k": results})
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
