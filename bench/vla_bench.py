"""VLA bench: BC from scripted-expert demonstrations, RA-BC vs BC, and online post-training (RL, RFT, DPO).

    .venv/bin/python bench/vla_bench.py --out outputs/vla_bench

1. Records ``--demos`` expert episodes per task (``--tasks``, views front + wrist at 64 px) and trains
   one multi-task VLA on all of them (``prism-vla bc``); true success per task on
   ``--eval-episodes`` fresh seeds (``prism-eval``'s rollout, seeds from 20000).
2. Records ``--mixed`` ``failure-mix`` episodes of ``--mixed-task`` (successes, partial runs and
   failures) and trains plain BC and RA-BC (weights from the dataset's ground-truth progress) with the
   same settings and seed; true success of each on the same fresh seeds.

3. **Online post-training** from the multi-task BC policy on each task of ``--rl-tasks`` with
   ``rl`` (token-level PPO) and, on the tasks of ``--rft-tasks``, also ``rft`` (reward-filtered
   fine-tuning), each with every reward of ``--rl-rewards`` (``oracle``, the shipped ``grm``,
   ``sparse``) and ``--rl-seeds`` seeds, for ``--rl-episodes`` online episodes each: success of the
   training rollouts per iteration and of the deterministic policy on 16 fixed seeds at the start,
   midway and at the end; env steps/s.
4. **DPO** (``prism-vla dpo``) from the same BC policy on the first RL task, same budget, pairs
   ranked by the ``grm`` shaped return vs ranked at random (the control), seed 0.

Online runs go seed by seed (all tasks, learners and rewards of seed 0 first), ``--jobs`` at a time
in worker processes (each single-threaded; a run's result does not depend on which worker ran it),
and the JSON is rewritten after every run, so a bench cut short still reports what finished.
Finished stages (datasets, trained checkpoints, online runs) in ``--out`` are reused; an online run
cut short resumes. The figures go to ``bench/results/vla_bench.json``
(``bench/results_io.write_bench_result``). Everything runs on the CPU, single-threaded torch (faster
than two contending threads on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

import sim
from episodes import open_dataset
from policies.evaluate import EvalArgs
from policies.record import record_episodes
from policies.vla.rollout import evaluate_vla
from policies.vla.train_bc import BCConfig, train_bc
from policies.vla.train_online import DPOConfig, OnlineConfig, RFTConfig, RLConfig, train_online

from results_io import RESULTS_DIR, write_bench_result  # bench/ is the script's own folder, first on sys.path

CAMERAS = ("front", "wrist")
RL_EPISODES_PER_ITERATION = 16
"""groups x group_size of prism-vla rl / dpo's defaults (4 x 4): evaluations at the start, midway, end."""


def record(out: Path, task: str, policy: str, episodes: int, seed: int) -> dict:
    if not (out / "meta" / "info.json").is_file():
        record_episodes(out, task, policy, episodes=episodes, seed=seed, cameras=CAMERAS, size=64, progress_bar=False)
    ds = open_dataset(out)
    outcomes: dict[str, int] = {}
    for i in range(ds.num_episodes):
        outcome = ds.episode_table.iloc[i].get("outcome", None)
        outcomes[str(outcome)] = outcomes.get(str(outcome), 0) + 1
    return {"path": str(out), "episodes": ds.num_episodes, "frames": ds.num_frames, "outcomes": outcomes}


def train(out: Path, data: list[Path], steps: int, weighting: str = "none") -> dict:
    summary_path = out / "train_summary.json"
    if not summary_path.is_file():
        t0 = time.time()
        summary = train_bc(
            BCConfig(
                data=tuple(map(str, data)),
                out=out,
                cameras=",".join(CAMERAS),
                steps=steps,
                weighting=weighting,
                device="cpu",
                progress_bar=False,
                overwrite=True,
            )
        )
        summary["train_seconds"] = round(time.time() - t0, 1)
        return summary
    return json.loads(summary_path.read_text())


def success(checkpoint: Path, task: str, episodes: int) -> dict:
    saved = checkpoint / "eval" / f"eval_{sim.resolve_task(task)}.json"  # what evaluate_vla wrote last time
    report = json.loads(saved.read_text()) if saved.is_file() else {}
    if report.get("episodes") != episodes or report.get("seed") != 20_000:
        report = evaluate_vla(EvalArgs(run=checkpoint, task=task, episodes=episodes, seed=20_000, device="cpu"))
    return {
        k: report[k]
        for k in ("success_rate", "ci_low", "ci_high", "successes", "episodes", "mean_final_progress", "mean_length")
    }


def online(cfg: OnlineConfig) -> dict:
    """Run (or resume, or reuse) one ``prism-vla rl`` / ``dpo`` / ``rft`` run; its summary without
    the long curve."""
    torch.set_num_threads(1)  # also in the worker processes
    summary_path = cfg.out / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
    else:
        cfg.resume = (cfg.out / "train_config.json").is_file()
        summary = train_online(cfg)
    curve = summary.pop("curve")
    summary["train_curve"] = [[r["episodes"], r["train_success"]] for r in curve if r.get("train_success") is not None]
    summary["eval_curve"] = [[r["episodes"], r["eval_success"]] for r in curve if r.get("eval_success") is not None]
    summary["env_steps_per_s"] = summary["env_steps"] / max(summary["seconds"], 1e-9)
    return summary


LEARNERS = {"rl": RLConfig, "rft": RFTConfig}


def online_runs(args: argparse.Namespace) -> list[tuple[str, str, OnlineConfig]]:
    """(block, key, config) of every online run, seed by seed; DPO on the first RL task, seed 0."""
    common = dict(
        init=args.out / "bc_multitask",
        episodes=args.rl_episodes,
        eval_episodes=16,
        eval_every=max(1, args.rl_episodes // (2 * RL_EPISODES_PER_ITERATION)),
        device="cpu",
        progress_bar=False,
    )
    runs = []
    for seed in range(args.rl_seeds):
        for task in args.rl_tasks:
            for learner in ["rl", "rft"] if task in args.rft_tasks else ["rl"]:
                for reward in args.rl_rewards:
                    cfg = LEARNERS[learner](
                        **common,
                        task=task,
                        out=args.out / f"{learner}_{task}_{reward}_s{seed}",
                        reward=reward,
                        seed=seed,
                    )
                    runs.append(("online", f"{task}/{learner}/{reward}/seed{seed}", cfg))
        if seed == 0:
            for ranking in ("reward", "random"):
                cfg = DPOConfig(
                    **common,
                    task=args.rl_tasks[0],
                    out=args.out / f"dpo_{ranking}",
                    reward="grm",
                    ranking=ranking,
                    seed=0,
                )
                runs.append(("dpo", ranking, cfg))
    return runs


def online_stage(args: argparse.Namespace, results: dict, started: float) -> None:
    blocks = {
        "online": results.setdefault("online", {"tasks": args.rl_tasks, "episodes": args.rl_episodes, "runs": {}}),
        "dpo": results.setdefault("dpo", {"task": args.rl_tasks[0], "episodes": args.rl_episodes, "runs": {}}),
    }
    runs = online_runs(args)
    # spawn: the workers must not inherit the parent's torch / MuJoCo state
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(online, cfg): (block, key) for block, key, cfg in runs}
        for future in as_completed(futures):
            block, key = futures[future]
            blocks[block]["runs"][key] = future.result()
            print(f"{block} {key}: eval {blocks[block]['runs'][key]['eval_curve']}", flush=True)
            results["elapsed_s"] = round(time.time() - started, 1)
            write_bench_result("vla_bench", results)
    order: dict[str, list[str]] = {}
    for name, key, _ in runs:
        order.setdefault(name, []).append(key)
    for name, block in blocks.items():  # the JSON in run order, whatever order the workers finished in
        block["runs"] = {key: block["runs"][key] for key in order.get(name, []) if key in block["runs"]}


def mean_curve(runs: list[dict], key: str) -> dict[int, float]:
    """Mean over runs of their [[episodes, success], ...] curves, at the counts all of them reached."""
    counts = sorted(set.intersection(*[{int(e) for e, _ in r[key]} for r in runs]))
    return {e: float(np.mean([dict((int(a), b) for a, b in r[key])[e] for r in runs])) for e in counts}


def summarise_runs(runs: list[dict]) -> dict:
    return {
        "runs": len(runs),
        "eval": mean_curve(runs, "eval_curve"),
        "train": mean_curve(runs, "train_curve"),
        "final_eval": [r["final_eval_success"] for r in runs],
        "env_steps_per_s": float(np.mean([r["env_steps_per_s"] for r in runs])),
    }


def online_findings(results: dict, out: Path) -> None:
    """The issue's targets, met or not, per task and learner, and a figure of the mean curves
    (bench/results/vla_online.png)."""
    import matplotlib  # optional plotting dependency, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped: dict[str, list[dict]] = {}  # "task/learner/reward" -> runs over seeds
    for key, run in results.get("online", {}).get("runs", {}).items():
        grouped.setdefault(key.rsplit("/", 1)[0], []).append(run)
    by_run = {name: summarise_runs(runs) for name, runs in grouped.items()}
    results.setdefault("online", {})["by_run"] = by_run
    dpo = results.get("dpo", {}).get("runs", {})
    results.setdefault("dpo", {})["by_ranking"] = {k: summarise_runs([r]) for k, r in dpo.items()}
    findings = []
    best_grm = 0.0
    for name, row in by_run.items():
        task, learner, reward = name.split("/")
        if reward != "grm":
            continue
        start, best = next(iter(row["eval"].values())), max(row["eval"].values())
        best_grm = max(best_grm, best)
        findings.append(
            f"{task}, {learner}, GRM-shaped: evaluation success {100 * start:.0f} % at 0 -> best mean "
            f"{100 * best:.0f} % within {max(row['eval'])} episodes ({row['runs']} seeds); target >= 90 % "
            "within 300: " + ("MET" if best >= 0.9 else "NOT MET")
        )
        for other, rule in (("sparse", "never below sparse's"), ("oracle", "within 10 points of oracle's")):
            theirs = by_run.get(f"{task}/{learner}/{other}")
            if theirs is None:
                continue
            for curve, what in (("train", "training-success"), ("eval", "evaluation-success")):
                common = sorted(set(row[curve]) & set(theirs[curve]))
                gaps = [row[curve][e] - theirs[curve][e] for e in common]
                ok = min(gaps) >= 0 if other == "sparse" else min(gaps) >= -0.10
                findings.append(
                    f"{task}, {learner}: GRM mean {what} curve {rule}: {'MET' if ok else 'NOT MET'} "
                    f"(largest shortfall {100 * max(0.0, -min(gaps)):.0f} points)"
                )
    if any(name.endswith("/grm") for name in by_run):
        findings.append(
            "Dopamine-RL's anchor is 95 % in 150 rollouts from a pretrained VLA; the best mean evaluation "
            f"success of any GRM-shaped run here is {100 * best_grm:.0f} % within {results['online'].get('episodes')} "
            "online episodes"
        )
    if dpo:
        findings.append(
            "DPO final evaluation success: "
            + ", ".join(f"{name}-ranked {100 * r['final_eval_success']:.0f} %" for name, r in dpo.items())
        )
    results["findings"] = findings

    tasks = list(dict.fromkeys(name.split("/")[0] for name in by_run))
    if not tasks:
        return
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), sharey=True, squeeze=False)
    styles = {"rft": "-", "rl": ":"}
    colours = {"oracle": "tab:green", "grm": "tab:blue", "sparse": "tab:grey"}
    for ax_row, task in zip(axes, tasks):
        for name, row in by_run.items():
            t, learner, reward = name.split("/")
            if t != task:
                continue
            style = dict(ls=styles.get(learner, "-"), color=colours.get(reward), label=f"{learner}, {reward}")
            ax_row[0].plot(list(row["train"]), [100 * v for v in row["train"].values()], marker=".", **style)
            ax_row[1].plot(list(row["eval"]), [100 * v for v in row["eval"].values()], marker="o", **style)
        if task == results.get("dpo", {}).get("task"):
            for name, run in dpo.items():
                ax_row[1].plot(
                    [e for e, _ in run["eval_curve"]],
                    [100 * v for _, v in run["eval_curve"]],
                    "s--",
                    color="tab:red" if name == "reward" else "tab:orange",
                    label=f"dpo, {name}-ranked",
                )
        for ax, title in zip(ax_row, ("training rollouts (sampled), mean over seeds", "evaluation (deterministic)")):
            ax.set(title=f"{task}: {title}", xlabel="online episodes", ylim=(-2, 102))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax_row[0].set_ylabel("true success (%)")
    fig.tight_layout()
    figure = out / "vla_online.png"
    fig.savefig(figure, dpi=90)
    plt.close(fig)
    results["figure"] = f"../bench/results/{figure.name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/vla_bench"))
    parser.add_argument("--tasks", nargs="+", default=["reach", "push", "pickplace"])
    parser.add_argument("--demos", type=int, default=120, help="expert demonstrations per task")
    parser.add_argument("--mixed-task", default="push")
    parser.add_argument("--mixed", type=int, default=60, help="failure-mix episodes for RA-BC vs BC")
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps of every training")
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--rl-tasks", nargs="+", default=["push", "pickplace"])
    parser.add_argument(
        "--rft-tasks", nargs="*", default=["push"], help="RL tasks that also run rft beside rl (each costs as much)"
    )
    parser.add_argument("--rl-rewards", nargs="+", default=["oracle", "grm", "sparse"])
    parser.add_argument("--rl-seeds", type=int, default=3)
    parser.add_argument("--rl-episodes", type=int, default=300, help="online episodes of every RL / DPO run")
    parser.add_argument("--jobs", type=int, default=2, help="online runs at a time (worker processes)")
    parser.add_argument("--skip-online", action="store_true", help="only the BC and RA-BC stages")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    results: dict = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cameras": list(CAMERAS),
        "image_size": 64,
    }

    demos = {t: record(args.out / "data" / f"{t}_expert", t, "expert", args.demos, seed=0) for t in args.tasks}
    bc = train(args.out / "bc_multitask", [Path(d["path"]) for d in demos.values()], args.steps)
    results["multitask_bc"] = {
        "data": demos,
        "training": bc,
        "success": {t: success(args.out / "bc_multitask", t, args.eval_episodes) for t in args.tasks},
    }
    print("multi-task BC:", {t: r["success_rate"] for t, r in results["multitask_bc"]["success"].items()}, flush=True)

    mixed = record(
        args.out / "data" / f"{args.mixed_task}_mixed", args.mixed_task, "failure-mix", args.mixed, seed=1000
    )
    comparison = {"data": mixed}
    for name, weighting in (("bc", "none"), ("rabc_oracle_progress", "progress")):
        ckpt = args.out / f"mixed_{name}"
        comparison[name] = {
            "training": train(ckpt, [Path(mixed["path"])], args.steps, weighting),
            "success": success(ckpt, args.mixed_task, args.eval_episodes),
        }
        print(f"{name} on mixed {args.mixed_task}:", comparison[name]["success"]["success_rate"], flush=True)
    results["mixed_rabc_vs_bc"] = comparison
    results["elapsed_s"] = round(time.time() - started, 1)
    print("wrote", write_bench_result("vla_bench", results))
    if not args.skip_online:
        online_stage(args, results, started)
        online_findings(results, RESULTS_DIR)
        print("\n".join(results["findings"]))
        print("wrote", write_bench_result("vla_bench", results))


if __name__ == "__main__":
    main()
