"""`prism-demo`: the main job on built-in defaults, end to end on a CPU.

Stages (each resumes: a stage whose output already exists is skipped unless ``--force``):

1. **record**  a small multi-task dataset: per task, scripted episodes mixing successes, partial
   runs and failures, as LeRobot v3 datasets under ``OUT/data/<task>``;
2. **experts** success rate of each task's scripted expert on fresh seeds (state only, fast);
3. **report**  ``OUT/report.html`` (+ ``summary.json``): a contact sheet of every camera view at the
   start, middle and end of an episode of each task, the expert success rates and the recorded
   outcomes.
"""

from __future__ import annotations

import html
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tyro

import sim
import sim.experts
from episodes import open_dataset
from episodes.atomic import atomic_write_json, atomic_write_text
from policies.record import record_episodes


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
    seed: int = 0
    """First seed of the recorded episodes (the expert check uses seeds after them)."""
    force: bool = False
    """Redo every stage even if its output exists."""


def _log(msg: str) -> None:
    print(f"[prism-demo] {msg}", flush=True)


def stage_record(args: DemoArgs, tasks: list[str]) -> dict[str, dict]:
    results = {}
    for task in tasks:
        out = args.out / "data" / task
        if out.exists() and not args.force:
            _log(f"record {task}: kept existing {out}")
        else:
            s = record_episodes(out, task, "failure-mix", args.episodes, args.seed, args.cameras, args.size,
                                overwrite=True)
            _log(f"record {task}: {s.episodes} episodes, {s.frames} frames in {s.seconds:.1f}s, outcomes {s.outcomes}")
        ds = open_dataset(out)
        outcomes: dict[str, int] = {}
        for i in range(ds.num_episodes):
            o = ds.episode_outcome(i) if hasattr(ds, "episode_outcome") else None
            if o is None:
                o = ds.load_episode(i, cameras=[ds.cameras[0]]).outcome or "unknown"
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
    first = args.seed + args.episodes
    rates = {}
    for task in tasks:
        rates[task] = expert_success_rate(task, range(first, first + args.expert_seeds))
        _log(f"experts {task}: {rates[task]:.0%} success on {args.expert_seeds} fresh seeds")
    atomic_write_json(path, rates)
    return rates


def contact_sheet(datasets: dict[str, str], path: Path) -> Path:
    """Rows: one episode per task (its first success if any); columns: each camera at start/middle/end."""
    import matplotlib

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
    fig, axes = plt.subplots(len(rows), len(cameras) * 3, figsize=(1.6 * len(cameras) * 3, 1.9 * len(rows)),
                             squeeze=False)
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
                    ax.text(2, 10, f"Φ={ep.progress[t]:.2f}", color="white", fontsize=6,
                            bbox=dict(facecolor="black", alpha=0.5, pad=1, lw=0))
    fig.suptitle("prism-rl demo: camera views (start / middle / end of one episode per task)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(args: DemoArgs, record: dict, experts: dict[str, float], sheet: Path, seconds: float) -> Path:
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{experts[t]:.0%}</td><td>{record[t]['episodes']}</td>"
        f"<td>{html.escape(', '.join(f'{k}: {v}' for k, v in sorted(record[t]['outcomes'].items())))}</td></tr>"
        for t in record
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>prism-rl demo report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px}}img{{max-width:100%}}</style></head><body>
<h1>prism-rl demo report</h1>
<p>Recorded {sum(r['episodes'] for r in record.values())} episodes ({args.size} px, cameras {html.escape(args.cameras)})
in {seconds:.0f} s. Datasets are LeRobot v3.0 under <code>data/&lt;task&gt;</code>.</p>
<h2>Scripted experts and recorded outcomes</h2>
<table><tr><th>task</th><th>expert success ({args.expert_seeds} fresh seeds)</th><th>episodes recorded</th>
<th>outcomes (failure-mix)</th></tr>{rows}</table>
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
    args.out.mkdir(parents=True, exist_ok=True)
    record = stage_record(args, tasks)
    experts = stage_experts(args, tasks)
    sheet = contact_sheet({t: r["dataset"] for t, r in record.items()}, args.out / "contact_sheet.png")
    report = write_report(args, record, experts, sheet, time.perf_counter() - t0)
    summary = {"config": {k: str(v) for k, v in asdict(args).items()}, "record": record,
               "expert_success": experts, "report": str(report), "seconds": time.perf_counter() - t0}
    atomic_write_json(args.out / "summary.json", summary)
    _log(f"report: {report} ({summary['seconds']:.0f}s)")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(DemoArgs, args=argv, description=__doc__.split("\n\n")[0])
    try:
        run_demo(args)
    except (ValueError, FileExistsError, PermissionError) as err:
        print(f"prism-demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
