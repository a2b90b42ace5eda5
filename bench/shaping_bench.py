"""Shaping bench: true success vs env steps for sparse / oracle / grm / naive-delta rewards, and the
reward model's cost inside the training loop.

    .venv/bin/python bench/shaping_bench.py --tasks reach push --seeds 0 1 \\
        --rewards sparse oracle naive-delta --grm outputs/grm_bench/ckpt --grm-tasks push \\
        --steps 8000 8000 --eval-every 2000 --eval-episodes 20 --out outputs/shaping_bench

Each run starts from the task's tuned preset (``RLTrainConfig.for_task``: ``policies/configs/<algo>_<task>.yaml``;
``--config`` replaces it).
Push from 100 expert demonstrations (the recipe that learns push on this budget)::

    .venv/bin/python bench/shaping_bench.py --tasks push --config policies/configs/sac_push_demos.yaml \
        --rewards sparse oracle naive-delta --grm outputs/grm_bench/ckpt_canonical --seeds 0 1 \
        --steps 30000 --eval-every 5000 --eval-episodes 20 --out outputs/shaping_bench_demos

For every (task, reward, seed) it runs ``policies.train.train`` into ``OUT/<task>/<reward>/seed<k>``
(finished runs are reused, so the bench can be extended run by run -- but only a run trained with the
same settings: one whose ``config.yaml`` differs in anything but bookkeeping stops the bench with the
differing fields), then writes

* ``OUT/success_vs_steps.png`` -- mean true success over seeds (min–max band) per reward,
* ``OUT/results.md`` / ``results.json`` -- final and best success, env steps to reach 80 % for
  each reward, the overhead figures, and issue #5's target per task (grm's mean at 80 % while
  sparse's is below 20 %, within 2x the oracle's env steps to 80 %) as MET / NOT MET with its figures.

Overhead: env-steps/s of the vectorised env loop (physics + reward-camera renders + shaping) with
and without the reward model, on the same envs with the same renders, so the ratio is the model's
cost alone. Without ``--grm`` the overhead is measured with an *untrained* GRM of the default
architecture (speed does not depend on the weights); the grm learning curve is then reported as
pending. ``--device cuda`` runs learner and reward model on the GPU.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from episodes.atomic import atomic_write_json, atomic_write_text
from episodes.cli_errors import parse_config
from policies.callbacks import read_eval_curve
from policies.configuration_train import RLTrainConfig
from policies.shaping import ModelPotential, RewardSpec, ZeroPotential
from policies.train import build_train_env, train
from reward_models.configuration_grm import GRMConfig
from reward_models.devices import resolve_device
from reward_models.modeling_grm import GRM, GRMProgressModel
from reward_models.registry import load_progress_model
from reward_models.tracker import FusionConfig

REWARD_LABELS = {"sparse": "sparse", "oracle": "oracle", "naive-delta": "naive-delta"}


@dataclass
class BenchArgs:
    """Success vs env steps for shaped rewards, and the reward model's overhead."""

    tasks: tuple[str, ...] = ("reach", "push")
    """Sim tasks to bench."""
    seeds: tuple[int, ...] = (0, 1)
    """Training seeds per (task, reward)."""
    rewards: tuple[str, ...] = ("sparse", "oracle", "naive-delta")
    """Reward variants besides the GRM (which --grm adds)."""
    grm: str | None = None
    """GRM checkpoint directory (from `prism-reward train`); adds the `grm:` column. Checked when the
    grm runs are due (after the other rewards of a task): if it does not exist by then, grm is
    reported as pending -- so a checkpoint still being trained can be named up front."""
    grm_tasks: tuple[str, ...] | None = None
    """Tasks on which the grm variant runs (None: all of --tasks); the others report it as not run."""
    steps: tuple[int, ...] = (20_000,)
    """Env-step budget per task (one value for all tasks, or one per task)."""
    algo: Literal["sac", "ppo"] = "sac"
    """RL algorithm of every run."""
    config: Path | None = None
    """Optional RLTrainConfig YAML used as the base of every run (default: each task's tuned preset,
    policies/configs/<algo>_<task>.yaml; the options below that are given override it)."""
    n_envs: int | None = None
    """Parallel envs per run and in the overhead measurement (None: the base config's)."""
    gamma: float | None = None
    """Learner (and shaping) discount (None: the base config's)."""
    max_episode_steps: int | None = None
    """Episode time limit (None: the task default)."""
    demo_episodes: int | None = None
    """Scripted-expert episodes given to every SAC run before learning, stepped through that run's
    own shaped env (None: the base config's). Their env steps are reported apart."""
    bc_weight: float | None = None
    """Weight of the Q-filtered cloning term on those demonstrations (None: the base config's)."""
    demo_max_progress: float | None = None
    """< 1: partial demonstrations, each stored only until its true progress reaches this value
    (None: the base config's)."""
    success_reward: float | None = None
    """r_success paid on a successful transition, for every reward alike (None: the base config's)."""
    eval_every: int = 2_000
    """Env steps between true-success evaluations (the curve's resolution)."""
    eval_episodes: int = 10
    """Episodes per evaluation point."""
    device: str = "auto"
    """Torch device for learner and reward model (auto, cpu, cuda)."""
    out: Path = Path("outputs/shaping_bench")
    """Output directory."""
    overhead_steps: int = 200
    """Vectorised steps timed for each side of the overhead measurement (0: skip it)."""
    overhead_task: str = "push"
    """Task for the overhead measurement."""
    only_overhead: bool = False
    """Skip training, only measure the overhead."""


# BenchArgs fields that, when given, replace the base config's value of the same name in every run.
CONFIG_OVERRIDES = ("n_envs", "gamma", "demo_episodes", "bc_weight", "demo_max_progress", "success_reward")


def base_settings(args: BenchArgs, task: str) -> dict:
    """The settings every run on ``task`` starts from: --config's file, else the task's tuned preset, with the
    CONFIG_OVERRIDES that were given on top."""
    base = RLTrainConfig.from_yaml(args.config) if args.config else RLTrainConfig.for_task(task, args.algo)
    settings = base.to_dict()
    settings.update({key: getattr(args, key) for key in CONFIG_OVERRIDES if getattr(args, key) is not None})
    return settings


def run_one(args: BenchArgs, task: str, reward: str, seed: int, steps: int) -> list[dict]:
    name = "grm" if reward.startswith("grm:") else reward
    out = args.out / task / name / f"seed{seed}"
    cfg_dict = base_settings(args, task)
    cfg_dict.update(
        task=task,
        algo=args.algo,
        reward=reward,
        seed=seed,
        steps=steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        device=args.device,
        out=out,
        video_every=0,
        checkpoint_every=0,
        progress_bar=False,
        resume=(out / "checkpoints").is_dir(),
        max_episode_steps=args.max_episode_steps,
        config=None,
    )
    cfg = RLTrainConfig.from_dict(cfg_dict)
    if (out / "config.yaml").is_file():
        check_same_run(cfg, RLTrainConfig.from_yaml(out / "config.yaml"), out)
    curve_path = out / "eval" / "curve.csv"
    if (out / "model.zip").is_file() and curve_path.is_file():
        rows = read_eval_curve(curve_path)
        if rows and rows[-1]["timesteps"] >= steps:
            print(f"  reuse {out}")
            return rows
    t0 = time.perf_counter()
    result = train(cfg)
    print(
        f"  {task}/{name}/seed{seed}: {result.env_steps} steps in {time.perf_counter() - t0:.0f}s, "
        f"final success {result.final_success_rate:.0%}"
    )
    return result.eval_curve


def check_same_run(wanted, stored, out: Path) -> None:
    """Refuse to reuse or resume a run in ``out`` that was trained with other settings than the bench asks for."""
    diff = wanted.learning_differences(stored)
    if diff:
        detail = ", ".join(f"{k}: run has {have!r}, bench asks {want!r}" for k, (have, want) in diff.items())
        raise SystemExit(
            f"{out} holds a run trained with other settings ({detail}); pass the same options, or choose another --out"
        )


def run_summary(args: BenchArgs, task: str, reward: str, seed: int, key: str) -> float | None:
    """A figure of a finished run's train_summary.json (steps_per_second, demo_env_steps), None if unknown."""
    path = args.out / task / reward / f"seed{seed}" / "train_summary.json"
    try:
        return float(json.loads(path.read_text()).get(key, 0.0))
    except (OSError, ValueError):
        return None


def steps_to(curve_steps: np.ndarray, success: np.ndarray, level: float) -> float | None:
    # a mean of episode fractions, e.g. (0.80 + 0.75 + 0.85) / 3, lands a hair below 0.8 in floating point
    hit = np.flatnonzero(success >= level - 1e-9)
    return float(curve_steps[hit[0]]) if hit.size else None


def summarise(curves: dict[tuple[str, str], list[list[dict]]]) -> dict:
    table = {}
    for (task, reward), runs in curves.items():
        n = min(len(r) for r in runs)
        steps = np.array([row["timesteps"] for row in runs[0][:n]])
        succ = np.array([[row["success_rate"] for row in r[:n]] for r in runs])
        mean = succ.mean(axis=0)
        table[f"{task}/{reward}"] = {
            "task": task,
            "reward": reward,
            "seeds": len(runs),
            "steps": steps.tolist(),
            "mean_success": mean.tolist(),
            "min_success": succ.min(axis=0).tolist(),
            "max_success": succ.max(axis=0).tolist(),
            "final_success": float(mean[-1]),
            "best_success": float(mean.max()),
            "steps_to_80": steps_to(steps, mean, 0.8),
            "per_seed_final": succ[:, -1].tolist(),
        }
    return table


def target_check(table: dict, task: str) -> dict | None:
    """Issue #5's target for one task, from the mean curves: the grm reward reaches 80 % while sparse's
    mean is still below 20 %, in at most 2x the env steps the oracle needs to reach 80 %.

    None when the task lacks a grm, oracle or sparse row. Where the oracle never reaches 80 %, the
    ratio holds if grm's 80 % comes within 2x the oracle's last evaluated step (its 80 % lies beyond).
    """
    grm, oracle, sparse = (table.get(f"{task}/{reward}") for reward in ("grm", "oracle", "sparse"))
    if grm is None or oracle is None or sparse is None:
        return None
    sparse_20 = steps_to(np.array(sparse["steps"]), np.array(sparse["mean_success"]), 0.2)
    grm_80, oracle_80 = grm["steps_to_80"], oracle["steps_to_80"]
    # sparse's budget: the steps before its mean first reaches 20 % (or its whole curve if it never does)
    within_sparse = grm_80 is not None and (
        grm_80 < sparse_20 if sparse_20 is not None else grm_80 <= sparse["steps"][-1]
    )
    oracle_bound = oracle_80 if oracle_80 is not None else oracle["steps"][-1]
    within_oracle = grm_80 is not None and grm_80 <= 2 * oracle_bound
    return {
        "grm_steps_to_80": grm_80,
        "oracle_steps_to_80": oracle_80,
        "oracle_last_step": oracle["steps"][-1],
        "sparse_steps_to_20": sparse_20,
        "sparse_last_step": sparse["steps"][-1],
        "grm_before_sparse_20": within_sparse,
        "grm_within_2x_oracle": within_oracle,
        "met": bool(within_sparse and within_oracle),
    }


def describe_target(task: str, check: dict) -> str:
    def at(steps: float) -> str:
        return f"{steps / 1000:g}k"

    grm = (
        f"grm's mean reaches 80 % at {at(check['grm_steps_to_80'])}"
        if check["grm_steps_to_80"] is not None
        else "grm's mean does not reach 80 %"
    )
    sparse = (
        f"sparse's mean first reaches 20 % at {at(check['sparse_steps_to_20'])}"
        if check["sparse_steps_to_20"] is not None
        else f"sparse's mean stays below 20 % to {at(check['sparse_last_step'])}"
    )
    oracle = (
        f"oracle's reaches 80 % at {at(check['oracle_steps_to_80'])}"
        if check["oracle_steps_to_80"] is not None
        else f"oracle's does not reach 80 % by {at(check['oracle_last_step'])}"
    )
    verdict = "MET" if check["met"] else "NOT MET"
    return f"Target ({task}): {grm}; {sparse}; {oracle} -> {verdict}."


# One colour per reward, so the same reward looks the same in every plot the bench writes.
REWARD_COLORS = {"grm": "tab:blue", "oracle": "tab:orange", "sparse": "tab:green", "naive-delta": "tab:red"}


def plot(table: dict, path: Path) -> None:
    import matplotlib  # ~1 s to import and a process-wide backend: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({v["task"] for v in table.values()})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for _key, row in sorted(table.items()):
            if row["task"] != task:
                continue
            s = np.array(row["steps"])
            (line,) = ax.plot(
                s,
                row["mean_success"],
                label=f"{row['reward']} (n={row['seeds']})",
                color=REWARD_COLORS.get(row["reward"]),
            )
            ax.fill_between(s, row["min_success"], row["max_success"], color=line.get_color(), alpha=0.15)
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel("true success rate")
        ax.set_ylim(-0.02, 1.02)
        # The target: the shaped reward reaches 80 % where sparse is still below 20 %.
        for level, style in ((0.8, "--"), (0.2, ":")):
            ax.axhline(level, color="grey", lw=0.6, ls=style)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def measure_overhead(args: BenchArgs) -> dict:
    """Env-loop steps/s with the reward model vs without it, same envs and renders."""
    device = resolve_device(args.device)
    if args.grm and Path(args.grm).exists():
        model = load_progress_model(f"grm:{args.grm}", device=device)
        model_desc = f"grm:{args.grm}"
    else:
        model = GRMProgressModel(GRM(GRMConfig()), device=device)
        model_desc = "untrained GRM, default GRMConfig (speed only)"
    # the envs the runs on that task train in (n_envs, cameras, image size), with a GRM's reward views and the
    # in-loop potential that is timed below
    settings = base_settings(args, args.overhead_task)
    settings.update(
        task=args.overhead_task,
        algo=args.algo,
        reward="grm:bench",
        out=args.out / "overhead",
        device=str(device),
        progress_bar=False,
        max_episode_steps=args.max_episode_steps,
        config=None,
        async_reward=False,
    )
    cfg = RLTrainConfig.from_dict(settings)
    env, shaped = build_train_env(cfg, device, reward_model=model, spec=RewardSpec.parse("grm:bench"))
    rng = np.random.default_rng(0)
    n, dim = env.num_envs, env.action_space.shape[0]

    def timed(potential) -> tuple[float, int]:
        shaped.potential = potential
        env.reset()
        for _ in range(5):  # warm-up (renderer/model first calls)
            env.step(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
        calls0 = potential.n_model_calls
        t0 = time.perf_counter()
        for _ in range(args.overhead_steps):
            env.step(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n * args.overhead_steps / (time.perf_counter() - t0), potential.n_model_calls - calls0

    try:
        cams = shaped.potential.cameras
        with_model, calls = timed(ModelPotential(model, n, cams, FusionConfig()))
        # Same envs, same RewardViewsWrapper renders; only the model call is gone.
        without_model, _ = timed(ZeroPotential(n))
    finally:
        env.close()
    return {
        "task": args.overhead_task,
        "n_envs": n,
        "cameras": list(cams),
        "device": str(device),
        "model": model_desc,
        "steps_per_s_with_model": with_model,
        "steps_per_s_without_model": without_model,
        "overhead_ratio": without_model / with_model,
        "model_calls_per_vec_step": calls / args.overhead_steps,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_config(BenchArgs, argv, description=__doc__.split("\n\n")[0])

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rewards = list(args.rewards) + ([f"grm:{args.grm}"] if args.grm else [])
    if len(args.steps) not in (1, len(args.tasks)):
        raise SystemExit("--steps takes one value or one per task")
    budgets = dict(zip(args.tasks, args.steps if len(args.steps) > 1 else args.steps * len(args.tasks)))
    curves: dict[tuple[str, str], list[list[dict]]] = {}
    grm_pending = args.grm is None
    if not args.only_overhead:
        for task in args.tasks:
            for reward in rewards:
                name = "grm" if reward.startswith("grm:") else reward
                if name == "grm" and args.grm_tasks is not None and task not in args.grm_tasks:
                    print(f"[bench] {task} grm: not in --grm-tasks, skipped", flush=True)
                    continue
                if name == "grm" and not Path(args.grm).exists():
                    print(f"[bench] {task} grm: no checkpoint at {args.grm} yet -> pending", flush=True)
                    grm_pending = True
                    continue
                for seed in args.seeds:
                    print(f"[bench] {task} {name} seed {seed} ({budgets[task]} steps)", flush=True)
                    curves.setdefault((task, name), []).append(run_one(args, task, reward, seed, budgets[task]))
    table = summarise(curves) if curves else {}
    for row in table.values():
        row["steps_per_s"] = [run_summary(args, row["task"], row["reward"], s, "steps_per_second") for s in args.seeds]
        row["demo_env_steps"] = [run_summary(args, row["task"], row["reward"], s, "demo_env_steps") for s in args.seeds]
    overhead = measure_overhead(args) if args.overhead_steps > 0 else None
    grm_status = f"pending (no checkpoint at {args.grm})" if grm_pending and args.grm else args.grm
    targets = {task: check for task in args.tasks if (check := target_check(table, task)) is not None}
    report = {
        "table": table,
        "overhead": overhead,
        "target": targets,
        "grm": grm_status or "pending (no checkpoint given)",
        "algo": args.algo,
        "n_envs": args.n_envs,
        "gamma": args.gamma,
        "seeds": list(args.seeds),
    }

    atomic_write_json(args.out / "results.json", report)
    lines = [
        "| task | reward | seeds | env steps | final success (per seed) | best success | env steps to 80% | "
        "train env-steps/s | demo env steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _key, row in sorted(table.items()):
        to80 = f"{row['steps_to_80']:.0f}" if row["steps_to_80"] is not None else "not reached"
        per_seed = ", ".join(f"{x:.0%}" for x in row["per_seed_final"])
        speeds = [x for x in row["steps_per_s"] if x]
        speed = f"{np.mean(speeds):.0f}" if speeds else "?"
        demo = [x for x in row["demo_env_steps"] if x is not None]
        demo_steps = f"{np.mean(demo):.0f}" if demo else "?"
        lines.append(
            f"| {row['task']} | {row['reward']} | {row['seeds']} | {row['steps'][-1]:.0f} | "
            f"{row['final_success']:.0%} ({per_seed}) | {row['best_success']:.0%} | {to80} | {speed} | "
            f"{demo_steps} |"
        )
    for task in args.tasks if args.grm and not grm_pending and args.grm_tasks is not None else ():
        if task not in args.grm_tasks:
            lines.append(f"| {task} | grm | - | - | not run (time budget; --grm-tasks) | | | | |")
    if grm_pending:
        why = (
            f"no checkpoint at {args.grm} when the grm runs were due" if args.grm else "no GRM checkpoint given (--grm)"
        )
        lines.append(f"| * | grm | - | - | pending: {why} | | | | |")
    if targets:
        lines += [""] + [describe_target(task, check) for task, check in targets.items()]
    lines += [
        "",
        "Success = deterministic policy, true `is_success` of the env, "
        f"{args.eval_episodes} fresh-seed episodes per point; mean over seeds. Env steps are the "
        "learner's; expert demonstrations (if any) were collected before them and are listed apart.",
        "Command: `.venv/bin/python bench/shaping_bench.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
    ]
    if overhead:
        lines += [
            "",
            f"Overhead ({overhead['task']}, {overhead['n_envs']} envs, cameras {overhead['cameras']}, "
            f"{overhead['device']}, {overhead['model']}): "
            f"{overhead['steps_per_s_without_model']:.0f} env-steps/s without the model, "
            f"{overhead['steps_per_s_with_model']:.0f} with it -> {overhead['overhead_ratio']:.2f}x; "
            f"{overhead['model_calls_per_vec_step']:.2f} model calls per vectorised step.",
        ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out / "results.md", text)
    if table:
        plot(table, args.out / "success_vs_steps.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
