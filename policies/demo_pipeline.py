"""`prism-demo`: the main job on built-in defaults, end to end on a CPU.

Stages (each resumes: a stage whose output already exists is skipped unless ``--force``):

1. **record**  a small multi-task dataset: per task, scripted episodes mixing successes, partial
   runs and failures, as LeRobot v3 datasets under ``OUT/data/<task>``, plus held-out episodes
   (seeds never used for training) under ``OUT/heldout/<task>``;
2. **experts** success rate of each task's scripted expert on fresh seeds (state only, fast);
3. **grm**     the reward model: the pretrained GRM shipped with prism-rl (``--grm grm``, the
   default), or with ``--grm-steps N`` a small GRM trained on ``OUT/data/*`` -> ``OUT/grm``;
4. **eval**    score the held-out episodes with the GRM beside the ground-truth oracle ->
   ``OUT/eval/<task>/report.html`` (VOC, 3-class completion, success AUROC, ...);
5. **policy**  short SAC runs on the policy task with the GRM's and the oracle's policy-invariant
   shaped rewards -> ``OUT/policy/<reward>`` (success-vs-steps curves in one plot);
6. **report**  ``OUT/report.html`` (+ ``summary.json``) with all of the above: a contact sheet of every
   camera view, the expert success rates, recorded outcomes, reward-model metrics and the policy curve.
"""

from __future__ import annotations

import html
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import sim
import sim.experts
from episodes import open_dataset
from episodes.atomic import OUTPUT_MARKERS, atomic_write_json, atomic_write_text, check_replaceable
from episodes.cli_errors import parse_config, run_cli
from episodes.jsonable import jsonable
from policies.configuration_train import RLTrainConfig
from policies.record import record_episodes
from reward_models.evaluate import EvalConfig, run_eval
from reward_models.registry import load_progress_model


@dataclass
class DemoArgs:
    """Run prism-rl's main job on built-in defaults: record -> expert check -> report."""

    out: Path = Path("prism_demo_out")
    """Output directory (re-running resumes: finished stages are kept)."""
    tasks: str = "reach,push,pickplace,drawer"
    """Comma-separated tasks to include."""
    episodes: int = 8
    """Episodes recorded per task (policy failure-mix: successes, partials and failures)."""
    expert_seeds: int = 20
    """Fresh seeds per task on which the scripted expert's success rate is measured."""
    size: int = 96
    """Camera image size in pixels."""
    cameras: str = "front,side,wrist"
    """Comma-separated cameras to record."""
    heldout_episodes: int = 6
    """Held-out episodes per task (fresh seeds, failure-mix) on which the reward model is evaluated."""
    grm: str = "grm"
    """Reward model to evaluate and shape with: ``grm`` (the pretrained GRM shipped with prism-rl) or a
    GRM checkpoint directory."""
    grm_steps: int = 0
    """Train a fresh GRM for this many steps on the recorded ``data/*`` instead of using ``--grm``
    (0: use ``--grm`` as it is)."""
    grm_image_size: int = 64
    """Resolution a freshly trained GRM (``--grm-steps``) is trained and run at."""
    policy_task: str = "reach"
    """Task of the short policy-training stage."""
    policy_steps: int = 4000
    """Env steps of the short policy-training stage (0 skips it)."""
    policy_rewards: str = "grm,oracle"
    """Comma-separated rewards of the policy stage, one short run each, plotted together: grm (the
    GRM of --grm / --grm-steps, shaped), oracle (ground-truth progress, shaped the same way) or sparse."""
    seed: int = 0
    """First seed of the recorded episodes (held-out and expert-check episodes use later seeds)."""
    force: bool = False
    """Redo every stage even if its output exists."""


def _log(msg: str) -> None:
    print(f"[prism-demo] {msg}", flush=True)


def _record(out: Path, task: str, episodes: int, seed: int, args: DemoArgs, what: str) -> None:
    if out.exists() and not args.force:
        _log(f"{what} {task}: kept existing {out}")
        return
    s = record_episodes(out, task, "failure-mix", episodes, seed, args.cameras, args.size, overwrite=True)
    _log(f"{what} {task}: {s.episodes} episodes, {s.frames} frames in {s.seconds:.1f}s, outcomes {s.outcomes}")


def stage_record(args: DemoArgs, tasks: list[str]) -> dict[str, dict]:
    results = {}
    heldout_seed = args.seed + 10_000  # never used for training
    for task in tasks:
        out = args.out / "data" / task
        _record(out, task, args.episodes, args.seed, args, "record")
        if args.heldout_episodes > 0:
            _record(args.out / "heldout" / task, task, args.heldout_episodes, heldout_seed, args, "held-out")
        ds = open_dataset(out)
        # Outcomes come from the episodes table: no video needs decoding for them.
        table = ds.episode_table
        labels = table["outcome"] if "outcome" in table else [None] * ds.num_episodes
        outcomes: dict[str, int] = {}
        for o in labels:
            o = o if isinstance(o, str) and o else "unknown"
            outcomes[o] = outcomes.get(o, 0) + 1
        results[task] = {"dataset": str(out), "episodes": ds.num_episodes, "outcomes": outcomes}
    return results


def expert_success_rate(task: str, seeds: range) -> float:
    env = sim.make(task, cameras=())
    try:
        policy = sim.experts.make_policy("expert", env, seed=seeds.start)
        wins = 0
        for s in seeds:
            obs, info = env.reset(seed=s)
            policy.reset(obs, info)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
                done = terminated or truncated
            wins += bool(info["is_success"])
        return wins / len(seeds)
    finally:
        env.close()


def stage_experts(args: DemoArgs, tasks: list[str]) -> dict[str, float]:
    path = args.out / "experts.json"
    if path.exists() and not args.force:
        rates = json.loads(path.read_text())
        if set(tasks) <= set(rates):
            _log(f"experts: kept existing {path}")
            return {t: rates[t] for t in tasks}
    first = args.seed + 20_000  # fresh seeds: neither training nor held-out episodes
    rates = {}
    for task in tasks:
        rates[task] = expert_success_rate(task, range(first, first + args.expert_seeds))
        _log(f"experts {task}: {rates[task]:.0%} success on {args.expert_seeds} fresh seeds")
    atomic_write_json(path, rates)
    return rates


def stage_grm(args: DemoArgs, datasets: list[str]) -> Path:
    from reward_models.train_grm import GRMTrainConfig, train_grm  # torch: kept out of --help

    ckpt = args.out / "grm"
    if (ckpt / "config.json").exists() and not args.force:
        _log(f"grm: kept existing checkpoint {ckpt}")
        return ckpt
    cfg = GRMTrainConfig(
        data=tuple(Path(d) for d in datasets),
        out=ckpt,
        steps=args.grm_steps,
        image_size=args.grm_image_size,
        seed=args.seed,
        num_threads=1,
        resume=(ckpt.with_name("grm.run") / "last").exists() and not args.force,
    )
    t0 = time.perf_counter()
    train_grm(cfg)
    _log(f"grm: trained {args.grm_steps} steps in {time.perf_counter() - t0:.0f}s -> {ckpt}")
    return ckpt


def stage_eval(args: DemoArgs, tasks: list[str], model_spec: str) -> dict[str, dict]:
    results = {}
    for task in tasks:
        out = args.out / "eval" / task
        metrics_path = out / "metrics.json"
        if metrics_path.exists() and not args.force:
            result = json.loads(metrics_path.read_text())
            _log(f"eval {task}: kept existing {out}")
        else:
            result = run_eval(
                EvalConfig(
                    model=[model_spec, "oracle"],
                    data=str(args.out / "heldout" / task),
                    out=str(out),
                    videos=2,
                    progress_bar=False,
                )
            )
        row = {}
        for label, run in result["models"].items():
            m = run["metrics"]
            row[label] = {k: m[k]["value"] for k in ("voc_plus", "completion_accuracy", "success_auroc")}
        results[task] = {"report": str(out / "report.html"), "metrics": row}
        grm = next(iter(row.values()))
        _log(f"eval {task}: GRM " + ", ".join(f"{k}={_fmt(v)}" for k, v in grm.items()))
    return results


def stage_policy(args: DemoArgs, model_spec: str) -> dict:
    """One short SAC run per reward (same task, seed and budget); returns their success curves."""
    from policies.callbacks import read_eval_curve  # SB3 and torch: kept out of --help
    from policies.train import train  # SB3 and torch (as above)

    runs = {}
    for name in _policy_rewards(args):
        out = args.out / "policy" / name
        curve_path = out / "eval" / "curve.csv"
        if curve_path.exists() and (out / "model.zip").exists() and not args.force:
            _log(f"policy {name}: kept existing run {out}")
            curve = read_eval_curve(curve_path)
        else:
            reward = model_spec if name == "grm" else name
            # The task's tuned SAC preset (policies/configs/sac_<task>.yaml), shortened to the demo's budget.
            cfg = RLTrainConfig.for_task(
                args.policy_task,
                "sac",
                reward=reward,
                steps=args.policy_steps,
                seed=args.seed,
                out=out,
                eval_every=max(500, args.policy_steps // 4),
                eval_episodes=10,
                progress_bar=True,
                hyperparams={"learning_starts": min(500, max(100, args.policy_steps // 8))},
            )
            result = train(cfg)
            curve = result.eval_curve
            _log(
                f"policy {name}: {result.env_steps} env steps in {result.train_seconds:.0f}s, "
                f"true success {result.final_success_rate:.0%}"
            )
        runs[name] = {"run": str(out), "curve": curve}
    plot = _plot_curves(
        {k: v["curve"] for k, v in runs.items()},
        args.out / "policy_curve.png",
        f"{args.policy_task}: SAC, {args.policy_steps} env steps, seed {args.seed}",
    )
    return {"runs": runs, "plot": plot.name}


def _model_description(args: DemoArgs) -> str:
    if args.grm_steps > 0:
        return f"GRM trained for {args.grm_steps} steps on data/*"
    return "the pretrained GRM shipped with prism-rl" if args.grm == "grm" else f"GRM {args.grm}"


def _policy_rewards(args: DemoArgs) -> list[str]:
    names = [r.strip() for r in args.policy_rewards.split(",") if r.strip()]
    bad = [r for r in names if r not in ("grm", "oracle", "sparse")]
    if bad:
        raise ValueError(f"--policy-rewards takes grm, oracle, sparse; got {bad}")
    return names


def _plot_curves(curves: dict[str, list[dict]], path: Path, title: str) -> Path:
    import matplotlib  # ~1 s to import and a process-wide backend: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, curve in curves.items():
        ax.plot(
            [row["timesteps"] for row in curve],
            [row["success_rate"] for row in curve],
            marker="o",
            label=f"{name} reward",
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("true success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically (a half-written PNG never replaces a good one)."""
    import matplotlib.pyplot as plt  # matplotlib: only the plots need it (as above)

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def contact_sheet(datasets: dict[str, str], path: Path) -> Path:
    """Rows: one episode per task (its first success if any); columns: each camera at start/middle/end."""
    import matplotlib  # ~1 s to import and a process-wide backend: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for task, root in datasets.items():
        ds = open_dataset(root)
        chosen = None
        for i in range(ds.num_episodes):
            ep = ds.load_episode(i)
            chosen = chosen or ep
            if ep.outcome == "success":
                chosen = ep
                break
        rows.append((task, chosen))
    cameras = rows[0][1].cameras
    moments = ("start", "middle", "end")
    fig, axes = plt.subplots(
        len(rows), len(cameras) * 3, figsize=(1.6 * len(cameras) * 3, 1.9 * len(rows)), squeeze=False
    )
    for r, (task, ep) in enumerate(rows):
        idx = (0, ep.length // 2, ep.length - 1)
        for c, cam in enumerate(cameras):
            for m, (name, t) in enumerate(zip(moments, idx)):
                ax = axes[r][c * 3 + m]
                ax.imshow(ep.frames[cam][t])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{cam} · {name}", fontsize=8)
                if c == 0 and m == 0:
                    ax.set_ylabel(task, fontsize=9)
                if ep.progress is not None:
                    ax.text(
                        2,
                        10,
                        f"Φ={ep.progress[t]:.2f}",
                        color="white",
                        fontsize=6,
                        bbox=dict(facecolor="black", alpha=0.5, pad=1, lw=0),
                    )
    fig.suptitle("prism-rl demo: camera views (start / middle / end of one episode per task)", fontsize=10)
    return _save_figure(fig, path)


def write_report(args: DemoArgs, summary: dict, sheet: Path) -> Path:
    record, experts = summary["record"], summary["expert_success"]
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(t)}</td><td>{experts[t]:.0%}</td><td>{record[t]['episodes']}</td>"
        f"<td>{esc(', '.join(f'{k}: {v}' for k, v in sorted(record[t]['outcomes'].items())))}</td></tr>"
        for t in record
    )
    sections = [
        f"""<h2>Scripted experts and recorded outcomes</h2>
<table><tr><th>task</th><th>expert success ({args.expert_seeds} fresh seeds)</th><th>episodes recorded</th>
<th>outcomes (failure-mix)</th></tr>{rows}</table>"""
    ]
    if summary.get("eval"):
        head = "<tr><th>task</th><th>model</th><th>VOC+</th><th>3-class completion</th><th>success AUROC</th><th>report</th></tr>"
        body = ""
        for task, ev in summary["eval"].items():
            link = (
                Path(ev["report"]).relative_to(args.out.resolve())
                if Path(ev["report"]).is_absolute()
                else Path(ev["report"]).relative_to(args.out)
            )
            for label, m in ev["metrics"].items():
                body += (
                    f"<tr><td>{esc(task)}</td><td>{esc(label)}</td><td>{_fmt(m['voc_plus'])}</td>"
                    f"<td>{_fmt(m['completion_accuracy'])}</td><td>{_fmt(m['success_auroc'])}</td>"
                    f'<td><a href="{esc(str(link))}">report</a></td></tr>'
                )
        sections.append(f"""<h2>Process reward model on held-out episodes</h2>
<p>{esc(_model_description(args))}; evaluated beside the ground-truth oracle on
{args.heldout_episodes} held-out episodes per task (seeds never used in training).</p>
<table>{head}{body}</table>""")
    if summary.get("policy"):
        pol = summary["policy"]
        finals = ", ".join(
            f"{esc(name)} {run['curve'][-1]['success_rate']:.0%}" if run["curve"] else esc(name)
            for name, run in pol["runs"].items()
        )
        sections.append(f"""<h2>Policy training with shaped rewards</h2>
<p>SAC on <b>{esc(args.policy_task)}</b>, {args.policy_steps} env steps per reward, the same seed; shaped rewards are
r = r_success + γΦ(s') − Φ(s) with Φ from the named source. Final true success: {finals}. Runs:
<code>policy/&lt;reward&gt;/</code>. A GRM trained for a few CPU minutes on a few dozen episodes is a rough
potential; longer training (<code>prism-reward train</code>) and longer RL runs (<code>prism-train</code>) do better.</p>
<img src="{esc(pol["plot"])}" alt="success vs env steps" style="max-width:520px">""")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>prism-rl demo report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px}}img{{max-width:100%}}</style></head><body>
<h1>prism-rl demo report</h1>
<p>Recorded {sum(r["episodes"] for r in record.values())} training episodes ({args.size} px, cameras
{esc(args.cameras)}); this invocation took {summary["seconds"]:.0f} s (finished stages are reused). Datasets are LeRobot v3.0 under
<code>data/&lt;task&gt;</code> and <code>heldout/&lt;task&gt;</code>.</p>
{"".join(sections)}
<h2>Contact sheet</h2><img src="{sheet.name}" alt="contact sheet">
</body></html>"""
    path = args.out / "report.html"
    atomic_write_text(path, page)
    return path


def run_demo(args: DemoArgs) -> dict:
    t0 = time.perf_counter()
    tasks = [sim.resolve_task(t) for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks names no task")
    if args.policy_steps > 0:
        args.policy_task = sim.resolve_task(args.policy_task)
    _policy_rewards(args)  # validates before any work is done
    check_replaceable(args.out, "demo")  # resumes its own folder, never writes into another
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"config": jsonable(asdict(args))}
    atomic_write_json(args.out / OUTPUT_MARKERS["demo"], summary["config"])
    summary["record"] = stage_record(args, tasks)
    summary["expert_success"] = stage_experts(args, tasks)
    if args.grm_steps > 0:
        model_spec = f"grm:{stage_grm(args, [r['dataset'] for r in summary['record'].values()])}"
    else:
        model_spec = args.grm
        load_progress_model(model_spec, device="cpu")  # a bad --grm fails here, before the long stages
    summary["grm"] = model_spec
    if args.heldout_episodes > 0:
        summary["eval"] = stage_eval(args, tasks, model_spec)
    if args.policy_steps > 0 and _policy_rewards(args):
        summary["policy"] = stage_policy(args, model_spec)
    sheet = contact_sheet({t: r["dataset"] for t, r in summary["record"].items()}, args.out / "contact_sheet.png")
    summary["seconds"] = time.perf_counter() - t0
    summary["report"] = str(write_report(args, summary, sheet))
    atomic_write_json(args.out / "summary.json", summary)
    _log(f"report: {summary['report']} ({summary['seconds']:.0f}s)")
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_cli("prism-demo", _main, argv)


def _main(argv: list[str]) -> int:
    run_demo(parse_config(DemoArgs, argv, description=__doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
