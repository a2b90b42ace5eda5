"""Plain JSON values from what our configs and results hold (numpy scalars and arrays, paths,
tuples, NaN), so every JSON file we write keeps its types and stays strict JSON."""

from __future__ import annotations

from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON types, recursively: ints, floats, bools and None stay what they are (NaN and
    ±inf become None), numpy scalars and arrays become their Python values and lists, tuples
    become lists, paths become strings; anything else becomes its ``str``. Usable as
    ``json.dumps(..., default=jsonable)``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, str) or obj is None:
        return obj
    return str(obj)  # paths, enums, ...


__all__ = ["jsonable"]
