"""Per-frame progress in the file layout LeRobot's reward-weighted training reads.

LeRobot's SARM reward model writes ``sarm_progress.parquet`` (columns ``index``,
``episode_index``, ``frame_index`` as int64 and ``progress_sparse`` / ``progress_dense`` as
float32, one row per frame sorted by ``index``, the model in the schema metadata under
``reward_model_path``), and its RA-BC sample weighting (``lerobot.utils.rabc.RABCWeights``,
``--use_rabc --rabc_progress_path FILE``) reads that file. Writing our progress Φ the same way lets
a LeRobot policy be trained with our reward models' weights. ``index`` must be the dataset's global
frame index, the ``index`` column of its data files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from episodes.atomic import atomic_write_parquet

RABC_PROGRESS_FILE = "sarm_progress.parquet"
"""The name LeRobot looks for in a dataset's root when ``--rabc_progress_path`` is not given."""


def write_rabc_progress(
    path: str | os.PathLike,
    index: Sequence[int] | np.ndarray,
    episode_index: Sequence[int] | np.ndarray,
    frame_index: Sequence[int] | np.ndarray,
    progress: Sequence[float] | np.ndarray,
    reward_model: str,
) -> Path:
    """Write ``path`` atomically in SARM's progress schema. Our models have one progress head, so
    ``progress_sparse`` and ``progress_dense`` both hold Φ: either ``--rabc_head_mode`` reads it.
    NaN marks a frame without a value (RA-BC gives it its fallback weight)."""
    columns = {
        "index": np.asarray(index, dtype=np.int64),
        "episode_index": np.asarray(episode_index, dtype=np.int64),
        "frame_index": np.asarray(frame_index, dtype=np.int64),
        "progress_sparse": np.asarray(progress, dtype=np.float32),
    }
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"RA-BC progress columns differ in length: {lengths}")
    order = np.argsort(columns["index"], kind="stable")
    columns = {name: values[order] for name, values in columns.items()}
    columns["progress_dense"] = columns["progress_sparse"]
    table = pa.table(columns).replace_schema_metadata({b"reward_model_path": reward_model.encode()})
    return atomic_write_parquet(path, table)


__all__ = ["RABC_PROGRESS_FILE", "write_rabc_progress"]
