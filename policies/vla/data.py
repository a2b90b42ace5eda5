"""Training samples for the VLA from LeRobot v3 datasets, and RA-BC progress weights.

One sample per frame that has a real action (every frame but an episode's appended final one):
the frame's views (resized once, kept as uint8), its proprioception, its instruction and the chunk
of the next H demonstrated actions -- steps past the episode's last action are masked out of the
loss rather than padded with invented actions.

**RA-BC weights** (LeRobot's reward-aligned BC): a sample's weight is the progress the
demonstration made over its chunk, Φ(t+H) − Φ(t), clipped at 0 (a chunk that undoes progress, as
in a failing or regressing segment, teaches nothing and gets weight 0) and divided by the mean over
all samples (so the loss keeps plain BC's scale). Φ is the dataset's ground-truth ``progress``
column (the oracle) or a reward model's estimate from a progress sidecar: ``progress.parquet`` of
``prism-reward eval`` (``phi.<label>`` columns) or a LeRobot/SARM ``sarm_progress*.parquet``
(``progress_sparse``; :mod:`episodes.rabc`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from episodes import open_dataset
from episodes.lerobot import STATE_KEY
from policies.vla.configuration_vla import ACTION_NAMES, PROPRIO_NAMES
from reward_models.modeling_grm import observation_to_views


@dataclass
class BCData:
    """All samples in memory (N samples, V views, H chunk steps, A action dims)."""

    images: torch.Tensor
    """uint8 (N, V, 3, S, S)."""
    view_mask: torch.Tensor
    """bool (N, V): which views the sample's dataset has."""
    proprio: torch.Tensor
    """float32 (N, P) raw joint positions and gripper width."""
    text_index: torch.Tensor
    """int64 (N,) index into :attr:`instructions`."""
    instructions: list[str]
    actions: torch.Tensor
    """float32 (N, H, A) demonstrated chunks."""
    chunk_mask: torch.Tensor
    """bool (N, H): False for steps past the episode's last action."""
    weights: torch.Tensor
    """float32 (N,) loss weights (all 1 for plain BC)."""
    episode_progress: list[np.ndarray]
    """Φ per episode used for the weights (empty for plain BC): reports and tests."""
    proprio_indices: tuple[int, ...]
    tasks: list[str]
    """Short task names (or instructions) present, for the run summary."""

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def proprio_indices_of(state_names: Sequence[str] | None, source: str) -> tuple[int, ...]:
    """Positions of :data:`PROPRIO_NAMES` in a dataset's ``observation.state`` names."""
    if not state_names:
        raise ValueError(
            f"{source}: observation.state has no names; the VLA needs to know which entries are "
            f"the joint positions and gripper width ({', '.join(PROPRIO_NAMES)})"
        )
    missing = [n for n in PROPRIO_NAMES if n not in state_names]
    if missing:
        raise ValueError(f"{source}: observation.state lacks {missing} (the VLA reads {list(PROPRIO_NAMES)})")
    return tuple(list(state_names).index(n) for n in PROPRIO_NAMES)


def action_chunks(actions: np.ndarray, n_samples: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_samples, H, A) chunks ``actions[t : t+H]`` and their (n_samples, H) validity mask; steps
    at or past ``n_samples`` (the episode's real actions) are zero and masked."""
    a = actions.shape[1]
    chunks = np.zeros((n_samples, chunk_size, a), dtype=np.float32)
    mask = np.zeros((n_samples, chunk_size), dtype=bool)
    for h in range(chunk_size):
        valid = n_samples - h
        if valid <= 0:
            break
        chunks[:valid, h] = actions[h : h + valid]
        mask[:valid, h] = True
    return chunks, mask


def progress_gain_weights(progress_per_episode: Sequence[np.ndarray], chunk_size: int) -> list[np.ndarray]:
    """RA-BC weights per episode: max(Φ(min(t+H, T−1)) − Φ(t), 0) for t = 0..T−2, divided by their
    mean over every sample of every episode. Raises when no chunk makes progress."""
    gains = []
    for phi in progress_per_episode:
        phi = np.asarray(phi, dtype=np.float64)
        t = np.arange(len(phi) - 1)
        ahead = np.minimum(t + chunk_size, len(phi) - 1)
        gains.append(np.clip(phi[ahead] - phi[t], 0.0, None))
    total = np.concatenate(gains) if gains else np.zeros(0)
    if total.size == 0 or not np.isfinite(total).all() or total.mean() <= 0:
        raise ValueError(
            "progress weighting: no chunk in the data makes progress (every Φ(t+H) − Φ(t) <= 0 "
            "or not finite), so every RA-BC weight would be 0"
        )
    mean = total.mean()
    return [(g / mean).astype(np.float32) for g in gains]


def read_progress_sidecar(path: str | Path, column: str | None) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], str]:
    """{episode_index: (frame_index, Φ)} from a ``progress.parquet`` / ``sarm_progress*.parquet``
    and the column read. ``column`` None: the only ``phi.*`` column, else ``progress_sparse``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--progress {path}: no such file")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for a non-parquet file
        raise ValueError(f"--progress {path}: not a readable parquet file ({exc})") from exc
    names = table.column_names
    for key in ("episode_index", "frame_index"):
        if key not in names:
            raise ValueError(f"--progress {path}: no {key!r} column (expected a prism-reward eval progress.parquet)")
    if column is None:
        phis = [n for n in names if n.startswith("phi.")]
        if len(phis) == 1:
            column = phis[0]
        elif not phis and "progress_sparse" in names:
            column = "progress_sparse"
        else:
            raise ValueError(
                f"--progress {path}: choose the model column with --progress-column (found "
                f"{phis or 'no phi.* or progress_sparse column'})"
            )
    elif column not in names:
        raise ValueError(f"--progress-column {column!r} is not in {path} (columns: {names})")
    ep = table["episode_index"].to_numpy()
    frame = table["frame_index"].to_numpy()
    phi = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for e in np.unique(ep):
        rows = (ep == e) & np.isfinite(phi)
        order = np.argsort(frame[rows])
        out[int(e)] = (frame[rows][order], phi[rows][order])
    return out, column


def _sidecar_progress(
    sidecar: dict[int, tuple[np.ndarray, np.ndarray]], episode: int, length: int, path: str
) -> np.ndarray:
    if episode not in sidecar or len(sidecar[episode][0]) == 0:
        raise ValueError(f"--progress {path} has no finite Φ for episode {episode}")
    frames, phi = sidecar[episode]
    # A sidecar may score every k-th frame only: interpolate in between.
    return np.interp(np.arange(length), frames, phi)


def load_bc_data(
    data: Sequence[str | Path],
    cameras: Sequence[str],
    image_size: int,
    chunk_size: int,
    weighting: str = "none",
    progress: Sequence[str | Path] = (),
    progress_column: str | None = None,
    progress_bar: bool = True,
) -> BCData:
    """Read every episode of every dataset into memory as :class:`BCData` (see module docstring).
    Datasets may hold different tasks and different subsets of ``cameras``."""
    if weighting not in ("none", "progress"):
        raise ValueError(f"--weighting must be 'none' or 'progress', got {weighting!r}")
    if progress and len(progress) != len(data):
        raise ValueError(f"--progress needs one sidecar per --data dataset ({len(data)}), got {len(progress)}")
    if progress and weighting != "progress":
        raise ValueError("--progress sidecars are only read with --weighting progress")
    images, masks, proprio, text_index, actions, chunk_masks, phis = [], [], [], [], [], [], []
    instructions: dict[str, int] = {}
    tasks: set[str] = set()
    indices: tuple[int, ...] | None = None
    for k, root in enumerate(data):
        try:
            ds = open_dataset(root)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--data: {exc}") from exc
        source = str(root)
        state_feature = ds.features.get(STATE_KEY, {})
        ds_indices = proprio_indices_of(state_feature.get("names"), source)
        if indices is not None and ds_indices != indices:
            raise ValueError(
                f"{source}: proprioception sits at {ds_indices} in observation.state, but at {indices} "
                "in the datasets before it"
            )
        indices = ds_indices
        action_names = (ds.features.get("action") or {}).get("names")
        if action_names is not None and tuple(action_names) != ACTION_NAMES:
            raise ValueError(
                f"{source}: actions are {list(action_names)}; the VLA predicts ee_delta actions {list(ACTION_NAMES)}"
            )
        present = [c for c in cameras if c in ds.cameras]
        if not present:
            raise ValueError(f"{source}: has cameras {ds.cameras}, none of --cameras {list(cameras)}")
        sidecar = None
        if weighting == "progress" and progress:
            sidecar, _ = read_progress_sidecar(progress[k], progress_column)
        for ep in ds.iter_episodes(cameras=present, progress=progress_bar):
            if ep.action is None or ep.state is None:
                raise ValueError(f"{source}: episode {ep.episode_index} has no action or observation.state column")
            n = ep.length - 1  # the appended final frame has no action
            if n < 1:
                continue
            obs = {c: ep.frames[c][:n] for c in present}
            views, view_mask = observation_to_views(obs, cameras, image_size)
            images.append(views)
            masks.append(view_mask)
            proprio.append(torch.from_numpy(ep.state[:n, list(indices)].astype(np.float32)))
            text_index.append(torch.full((n,), instructions.setdefault(ep.task, len(instructions)), dtype=torch.long))
            chunk, chunk_mask = action_chunks(ep.action[:n], n, chunk_size)
            actions.append(torch.from_numpy(chunk))
            chunk_masks.append(torch.from_numpy(chunk_mask))
            tasks.add(ep.task_name or ep.task)
            if weighting == "progress":
                if sidecar is not None:
                    phis.append(_sidecar_progress(sidecar, ep.episode_index, ep.length, str(progress[k])))
                elif ep.progress is None:
                    raise ValueError(
                        f"{source}: episode {ep.episode_index} has no ground-truth progress column; give "
                        "a reward model's sidecar with --progress (prism-reward eval writes progress.parquet)"
                    )
                else:
                    phis.append(np.asarray(ep.progress, dtype=np.float64))
    if not actions:
        raise ValueError(f"--data {list(map(str, data))}: no episode with at least one action")
    n_total = sum(len(a) for a in actions)
    if weighting == "progress":
        weights = torch.from_numpy(np.concatenate(progress_gain_weights(phis, chunk_size)))
    else:
        weights = torch.ones(n_total)
    return BCData(
        images=torch.cat(images),
        view_mask=torch.cat(masks),
        proprio=torch.cat(proprio),
        text_index=torch.cat(text_index),
        instructions=list(instructions),
        actions=torch.cat(actions),
        chunk_mask=torch.cat(chunk_masks),
        weights=weights.float(),
        episode_progress=phis,
        proprio_indices=indices,
        tasks=sorted(tasks),
    )


__all__ = [
    "BCData",
    "action_chunks",
    "load_bc_data",
    "progress_gain_weights",
    "proprio_indices_of",
    "read_progress_sidecar",
]
