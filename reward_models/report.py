"""Report files of ``prism-reward eval``: per-episode PNG + overlay mp4, the sidecar parquet and
``report.html`` (self-contained apart from the images/videos it references relatively)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from episodes.video import write_video
from reward_models.metrics import CONFIDENCE_METRIC_KEYS, METRIC_KEYS

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
METRIC_TITLES = {
    "voc_plus": "VOC+ (Spearman on successes)",
    "voc_minus": "VOC− (Spearman on failures)",
    "completion_accuracy": "3-class completion accuracy",
    "success_auroc": "Success detection AUROC",
    "end_score_mae": "End-score MAE (1–5 rubric)",
    "kendall_tau": "Policy ranking Kendall τ",
    "success_ece": "ECE of calibrated P(success) (10 bins)",
    "raw_phi_ece": "ECE of Φ_final read as P(success)",
    "spread_error_corr": "Spearman(|Φ − true Φ|, spread)",
    "mean_phi_std": "Mean spread of Φ",
    "ood_fraction": "Out-of-distribution frames",
}


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib  # ~1 s to import and a process-wide backend: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thumb_strip(ep: Any, n: int = 6, height: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails (rows = cameras, columns = n evenly spaced frames) and their frame positions."""
    idx = np.unique(np.round(np.linspace(0, ep.length - 1, min(n, ep.length))).astype(int))
    rows = []
    for cam in ep.cameras:
        tiles = []
        for i in idx:
            f = ep.frames[cam][i]
            w = max(2, round(f.shape[1] * height / f.shape[0]))
            tiles.append(np.asarray(Image.fromarray(f).resize((w, height), Image.BILINEAR)))
            tiles.append(np.full((height, 4, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows[:-1]]
    return np.concatenate(rows, axis=0), idx


def plot_curves(
    ax: Any,
    ep: Any,
    curves: Mapping[str, np.ndarray],
    delta: float,
    cursor: int | None = None,
    spreads: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Φ per model (a ±spread band where ``spreads`` has the model), true progress, the δ line."""
    x = np.arange(ep.length)
    for k, (label, phi) in enumerate(curves.items()):
        ax.plot(x, phi, color=_COLORS[k % len(_COLORS)], lw=2, label=label)
        if spreads and label in spreads:
            std = np.asarray(spreads[label])
            ax.fill_between(
                x, np.clip(phi - std, 0, 1), np.clip(phi + std, 0, 1), color=_COLORS[k % len(_COLORS)], alpha=0.15, lw=0
            )
    if ep.progress is not None:
        ax.plot(x, ep.progress, color="black", lw=1.2, ls="--", label="true progress")
    ax.axhline(1.0 - delta, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(0, max(1, ep.length - 1))
    ax.set_xlabel("frame")
    ax.set_ylabel("progress Φ")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)


def write_episode_assets(
    folder: Path,
    ep: Any,
    curves: Mapping[str, np.ndarray],
    name: str,
    video: bool = True,
    delta: float = 0.05,
    spreads: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``<name>.png`` (curves over thumbnails) and optionally ``<name>.mp4`` (curve overlay)."""
    plt = _pyplot()
    strip, idx = _thumb_strip(ep)
    fig = plt.figure(figsize=(10, 2.2 + 1.1 * len(ep.cameras)), dpi=90)
    gs = fig.add_gridspec(2, 1, height_ratios=[1.1 * len(ep.cameras), 2.2])
    ax_img = fig.add_subplot(gs[0])
    ax_img.imshow(strip)
    ax_img.set_axis_off()
    ax_img.set_title(
        f"{name} — {ep.task}  (frames {', '.join(map(str, idx))}; views: {', '.join(ep.cameras)})", fontsize=9
    )
    ax = fig.add_subplot(gs[1])
    plot_curves(ax, ep, curves, delta, spreads=spreads)
    for i in idx:
        ax.axvline(i, color="#cccccc", lw=0.6, zorder=0)
    fig.tight_layout()
    png = folder / f"{name}.png"
    fig.savefig(png)
    plt.close(fig)
    out = {"png": f"episodes/{png.name}"}
    if video and curves:
        out["mp4"] = f"episodes/{write_overlay_video(folder / f'{name}.mp4', ep, curves, delta).name}"
    return out


def write_overlay_video(path: Path, ep: Any, curves: Mapping[str, np.ndarray], delta: float = 0.05) -> Path:
    """The episode's views side by side with the progress curves below and a moving cursor.

    The plot is rendered once; per frame only the cursor and the Φ read-out are drawn (cheap).
    """
    plt = _pyplot()

    view_h = 160
    views = []
    for cam in ep.cameras:
        f = ep.frames[cam]
        w = max(2, round(f.shape[2] * view_h / f.shape[1]))
        views.append((cam, w))
    width = sum(w for _, w in views)
    width += width % 2
    width = max(width, 320)
    plot_h = 180
    fig = plt.figure(figsize=(width / 100, plot_h / 100), dpi=100)
    ax = fig.add_axes([0.08, 0.22, 0.9, 0.72])
    plot_curves(ax, ep, curves, delta)
    ax.set_xlabel("")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=6)
    fig.canvas.draw()
    plot = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    # Pixel x of frame 0 and of the last frame, for the cursor.
    x0 = ax.transData.transform((0, 0))[0]
    x1 = ax.transData.transform((max(1, ep.length - 1), 0))[0]
    plt.close(fig)
    plot = np.asarray(Image.fromarray(plot).resize((width, plot_h)))
    scale = width / (fig.get_figwidth() * fig.dpi)

    def frames():
        for t in range(ep.length):
            top = np.full((view_h, width, 3), 255, np.uint8)
            x = 0
            for cam, w in views:
                top[:, x : x + w] = np.asarray(Image.fromarray(ep.frames[cam][t]).resize((w, view_h), Image.BILINEAR))
                x += w
            canvas = Image.fromarray(np.concatenate([top, plot], axis=0))
            draw = ImageDraw.Draw(canvas)
            cx = (x0 + (x1 - x0) * t / max(1, ep.length - 1)) * scale
            draw.line([(cx, view_h), (cx, view_h + plot_h)], fill=(0, 0, 0), width=1)
            text = "  ".join(f"{k}: {v[t]:.2f}" for k, v in curves.items())
            draw.rectangle([(0, 0), (min(width, 8 + 6 * len(text)), 14)], fill=(255, 255, 255))
            draw.text((4, 2), f"t={t} {text}", fill=(0, 0, 0))
            yield np.asarray(canvas)

    return write_video(path, frames(), fps=max(1.0, min(float(ep.fps), 30.0)))


def write_sidecar(path: Path, rows: Mapping[str, list], models: Mapping[str, Any]) -> Path:
    """``progress.parquet``: one row per evaluated frame keyed by (index, episode_index,
    frame_index); ``phi.<label>`` per model (and ``phi_std.<label>``, its spread, for models that
    have one); model ids + configs in the schema metadata."""
    arrays = {
        "index": pa.array(rows["index"], pa.int64()),
        "episode_index": pa.array(rows["episode_index"], pa.int64()),
        "frame_index": pa.array(rows["frame_index"], pa.int64()),
        "timestamp": pa.array(rows["timestamp"], pa.float32()),
    }
    for k, v in rows.items():
        if k.startswith(("phi.", "phi_std.")):
            arrays[k] = pa.array(v, pa.float32())
    table = pa.table(arrays)
    meta = {
        b"prism.models": json.dumps({f"phi.{label}": m for label, m in models.items()}, default=str).encode(),
        b"prism.kind": b"progress_sidecar",
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, path)
    return path


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def write_html(path: Path, result: Mapping[str, Any], pages: list[Mapping[str, Any]]) -> Path:
    """The human-facing report: metrics side by side, skips, per-episode table and plots."""
    models = result["models"]
    labels = list(models)
    e = html.escape
    css = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f6f8} td.l,th.l{text-align:left} .na{color:#999;font-size:11px;text-align:left}
.meta{color:#555;font-size:13px} .ep{margin:18px 0;padding:8px;border:1px solid #eee;border-radius:6px}
.ok{color:#1a7f37}.bad{color:#c62828} img{max-width:100%} code{background:#f4f4f4;padding:1px 4px}
"""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>prism-reward eval — {e(str(result['data']))}</title><style>{css}</style></head><body>"
    ]
    parts.append("<h1>Progress reward model evaluation</h1>")
    parts.append(
        f"<p class='meta'>data: <code>{e(str(result['data']))}</code> ({e(result['source_kind'])}) · "
        f"{result['n_episodes']} of {result['n_items']} episodes evaluated · "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} · {result['elapsed_s']:.1f}s</p>"
    )
    parts.append(
        "<h2>Models</h2><table><tr><th class='l'>label</th><th class='l'>spec</th><th>frames</th><th>frames/s</th><th class='l'>parse failures</th></tr>"
    )
    for label, m in models.items():
        cfg = m.get("config", {})
        pf = f"{cfg['parse_failures']}/{cfg['answers']}" if "parse_failures" in cfg else "—"
        parts.append(
            f"<tr><td class='l'><b>{e(label)}</b></td><td class='l'><code>{e(m['spec'])}</code></td><td>{m['frames']}</td><td>{_fmt(m['frames_per_s'], 1)}</td><td class='l'>{e(pf)}</td></tr>"
        )
    parts.append("</table>")

    parts.append(
        "<h2>Metrics</h2><table><tr><th class='l'>metric</th>" + "".join(f"<th>{e(lb)}</th>" for lb in labels) + "</tr>"
    )
    for key in METRIC_KEYS + CONFIDENCE_METRIC_KEYS:
        if key in CONFIDENCE_METRIC_KEYS and not any(
            isinstance(models[lb]["metrics"].get(key), dict) and models[lb]["metrics"][key].get("value") is not None
            for lb in labels
        ):
            continue  # no model has this confidence figure: no row of n/a's
        row = [f"<td class='l'>{e(METRIC_TITLES[key])}</td>"]
        for lb in labels:
            m = models[lb]["metrics"].get(key)
            if not isinstance(m, dict):
                row.append("<td class='na'>—</td>")
            elif m.get("value") is None:
                row.append(f"<td class='na' title='{e(m.get('reason', ''))}'>n/a: {e(m.get('reason', ''))}</td>")
            else:
                extra = f" <span class='meta'>(n={m.get('n')})</span>" if m.get("n") is not None else ""
                if key == "success_auroc":
                    extra += (
                        f"<br><span class='meta'>P={_fmt(m.get('precision'), 2)} R={_fmt(m.get('recall'), 2)}</span>"
                    )
                row.append(f"<td>{m['value']:.3f}{extra}</td>")
        parts.append("<tr>" + "".join(row) + "</tr>")
    parts.append("</table>")

    if any(
        isinstance(models[lb]["metrics"].get("kendall_tau"), dict)
        and models[lb]["metrics"]["kendall_tau"].get("policies")
        for lb in labels
    ):
        parts.append(
            "<h2>Policies</h2><table><tr><th class='l'>policy</th><th>true success rate</th>"
            + "".join(f"<th>{e(lb)} mean Φ_final</th>" for lb in labels)
            + "</tr>"
        )
        pols = {}
        for lb in labels:
            for p, v in (models[lb]["metrics"].get("kendall_tau", {}).get("policies") or {}).items():
                pols.setdefault(p, {"rate": v["success_rate"]})[lb] = v["mean_final_progress"]
        for p, v in sorted(pols.items()):
            parts.append(
                f"<tr><td class='l'>{e(p)}</td><td>{_fmt(v['rate'], 2)}</td>"
                + "".join(f"<td>{_fmt(v.get(lb))}</td>" for lb in labels)
                + "</tr>"
            )
        parts.append("</table>")

    if result["skipped"]:
        parts.append(
            f"<h2 class='bad'>Skipped ({len(result['skipped'])})</h2><table><tr><th class='l'>source</th><th class='l'>model</th><th class='l'>reason</th></tr>"
        )
        for s in result["skipped"]:
            parts.append(
                f"<tr><td class='l'>{e(s['source'])}</td><td class='l'>{e(s.get('model') or 'all')}</td><td class='l'>{e(s['reason'])}</td></tr>"
            )
        parts.append("</table>")

    per_ep = {lb: {r["source"]: r for r in models[lb]["metrics"].get("episodes", [])} for lb in labels}
    # Confidence columns only for models that report them: mean spread, OOD fraction, P(success).
    conf_cols = {
        lb: [
            k
            for k in ("mean_phi_std", "ood_fraction", "success_probability")
            if any(r.get(k) is not None for r in per_ep[lb].values())
        ]
        for lb in labels
    }
    col_titles = {"mean_phi_std": "mean spread", "ood_fraction": "OOD frames", "success_probability": "P(success)"}
    parts.append(
        "<h2>Episodes</h2><table><tr><th class='l'>episode</th><th class='l'>task</th><th>frames</th><th>label</th><th class='l'>policy</th>"
        + "".join(
            f"<th>{e(lb)} Φ_final</th><th>{e(lb)} class</th>"
            + "".join(f"<th>{e(lb)} {col_titles[k]}</th>" for k in conf_cols[lb])
            for lb in labels
        )
        + "</tr>"
    )
    for p in pages:
        label = p.get("outcome") or (
            {True: "success", False: "fail"}.get(p.get("label_success")) if p.get("label_success") is not None else None
        )
        cls = "ok" if label == "success" else "bad" if label in ("fail", "partial") else ""
        cells = []
        for lb in labels:
            r = per_ep[lb].get(p["source"])
            cells.append(
                f"<td>{_fmt(r['final_progress']) if r else '—'}</td><td>{e(r['predicted_class']) if r else '—'}</td>"
                + "".join(f"<td>{_fmt(r.get(k)) if r else '—'}</td>" for k in conf_cols[lb])
            )
        parts.append(
            f"<tr><td class='l'><a href='#ep{p['episode_index']}'>{p['episode_index']}</a> <span class='meta'>{e(Path(p['source']).name)}</span></td>"
            f"<td class='l'>{e(p['task'])}</td><td>{p['n_frames']}</td><td class='{cls}'>{e(label or '—')}</td><td class='l'>{e(str(p.get('policy') or '—'))}</td>{''.join(cells)}</tr>"
        )
    parts.append("</table>")

    for p in pages:
        parts.append(
            f"<div class='ep' id='ep{p['episode_index']}'><b>Episode {p['episode_index']}</b> <span class='meta'>{e(p['source'])}</span><br>"
        )
        parts.append(f"<img src='{e(p['png'])}' alt='progress of episode {p['episode_index']}' loading='lazy'>")
        if p.get("mp4"):
            parts.append(
                f"<br><video controls preload='none' width='640' src='{e(p['mp4'])}'></video> <a href='{e(p['mp4'])}'>mp4</a>"
            )
        parts.append("</div>")
    parts.append(
        "<p class='meta'>Files: <a href='metrics.json'>metrics.json</a> · <code>progress.parquet</code> (sidecar keyed by index, episode_index, frame_index; model configs in the schema metadata)</p>"
    )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
