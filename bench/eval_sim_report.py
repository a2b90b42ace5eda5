"""GRM beside the oracle and the CLIP baseline on held-out sim episodes, in one report per task.

Records fresh held-out episodes (failure-mix, seeds never used for training), runs
``prism-reward eval`` with three models side by side -- a GRM checkpoint, the ground-truth oracle
and a CLIP reward (VLM-RM style; open_clip with *random* weights unless ``--clip`` names a local
weights file, since none can be downloaded here) -- prints the metrics table and the GRM's
throughput (episodes/min, frames/s), and screenshots the first report in headless Chromium.

    .venv/bin/python bench/eval_sim_report.py --grm outputs/grm_bench/ckpt --out outputs/eval_sim
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from pathlib import Path

from policies.record import record_episodes
from reward_models.baselines.testing import build_tiny_clip
from reward_models.evaluate import EvalConfig, run_eval


def _screenshot(report_dir: Path, png: Path) -> Path | None:
    spec = importlib.util.spec_from_file_location(
        "eval_report_screenshot", Path(__file__).with_name("eval_report_screenshot.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if shutil.which("chromium") is None:
        print("chromium not installed (apt-get install chromium): no screenshot")
        return None
    return module.screenshot(report_dir, png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grm", required=True, help="GRM checkpoint directory")
    ap.add_argument("--out", default="outputs/eval_sim", help="output folder (datasets + reports)")
    ap.add_argument("--tasks", default="reach,push,pickplace,drawer")
    ap.add_argument("--episodes", type=int, default=12, help="held-out episodes per task (failure-mix)")
    ap.add_argument("--seed", type=int, default=50_000, help="first held-out seed (keep it away from training seeds)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument(
        "--clip", default=None, help="clip spec (default: a small open_clip ViT with random weights built here)"
    )
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = args.clip
    if clip is None:
        cfg, weights = build_tiny_clip(out / "clip_random")
        clip = f"clip:{cfg}:{weights}"
    rows, grm_rate = [], []
    for task in args.tasks.split(","):
        data = out / "heldout" / task
        if not data.exists():
            record_episodes(data, task, "failure-mix", args.episodes, args.seed, "front,side,wrist", args.size)
        t0 = time.perf_counter()
        result = run_eval(
            EvalConfig(
                model=[args.grm, "oracle", clip],
                data=str(data),
                out=str(out / "reports" / task),
                device=args.device,
                videos=3,
                progress_bar=False,
            )
        )
        wall = time.perf_counter() - t0
        for label, run in result["models"].items():
            m = run["metrics"]
            rows.append(
                (
                    task,
                    label,
                    m["voc_plus"]["value"],
                    m["completion_accuracy"]["value"],
                    m["success_auroc"]["value"],
                    run["frames_per_s"],
                )
            )
            if label == next(iter(result["models"])):
                grm_rate.append((result["n_episodes"], run["frames"], run["seconds"], wall))
    fmt = lambda v: "  n/a" if v is None else f"{v:5.3f}"  # noqa: E731
    print(f"\n{'task':10s} {'model':28s} {'VOC+':>6s} {'3-class':>8s} {'AUROC':>6s} {'model frames/s':>15s}")
    for task, label, voc, comp, auroc, fps in rows:
        print(f"{task:10s} {label[:28]:28s} {fmt(voc):>6s} {fmt(comp):>8s} {fmt(auroc):>6s} {fps:15,.0f}")
    n_ep = sum(r[0] for r in grm_rate)
    frames = sum(r[1] for r in grm_rate)
    model_s = sum(r[2] for r in grm_rate)
    wall = sum(r[3] for r in grm_rate)
    print(
        f"\nGRM: {frames / model_s:,.0f} frames/s model-only (3 views); whole eval with 3 models, plots and "
        f"videos: {60 * n_ep / wall:.1f} episodes/min"
    )
    (out / "summary.json").write_text(
        json.dumps(
            {"rows": rows, "grm_frames_per_s": frames / model_s, "episodes_per_min_all_models": 60 * n_ep / wall},
            indent=1,
        )
    )
    first = out / "reports" / args.tasks.split(",")[0]
    png = _screenshot(first, out / "report_screenshot.png")
    if png:
        print(f"screenshot: {png}")


if __name__ == "__main__":
    main()
