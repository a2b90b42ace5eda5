"""The one way a bench records its figures: a JSON envelope under ``bench/results/<name>.json``.

``docs/results.md`` is generated from these files by ``python scripts/gen_results.py``; nobody
edits it by hand. The envelope says where a figure came from, so a reader can reproduce it::

    {
      "schema": 1,
      "bench": "grm_generalisation",                      # file stem, [a-z0-9_-]
      "command": "python bench/grm_generalisation.py --grm grm",
      "date": "2026-01-31T12:00:00+00:00",                 # UTC, when the bench finished
      "commit": "79e194d...", "dirty": true,               # git HEAD, uncommitted changes or not
      "machine": {"cpu": "...", "cores": 2, "gpu": null, "python": "3.11.9", "platform": "Linux-..."},
      "results": {...}                                     # whatever the bench measured
    }

Numbers in ``results`` are made plain JSON (numpy scalars and arrays become numbers and lists;
NaN and infinities become ``null``, which the generator shows as "n/a").
"""

from __future__ import annotations

import math
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from episodes.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
SCHEMA_VERSION = 1
ENVELOPE_FIELDS = ("bench", "command", "date", "commit", "machine", "results")
"""Fields every result file must have (``scripts/gen_results.py`` refuses a file without one)."""
BENCH_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> str | None:
    """The CUDA device torch sees, if torch is installed and sees one (benches import torch anyway)."""
    try:
        import torch  # optional: without torch no GPU is named
    except ImportError:
        return None
    try:
        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    except Exception:  # a broken driver must not lose the bench's figures
        return None
    return None


def machine_info() -> dict[str, Any]:
    """CPU model and cores, GPU (or None), Python and platform of the machine running the bench."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "gpu": _gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def current_command() -> str:
    """The command line that started this process, with the script path relative to the repo."""
    argv = list(sys.argv)
    if argv:
        script = Path(argv[0]).resolve()
        if REPO in script.parents:
            argv[0] = str(script.relative_to(REPO))
    return "python " + shlex.join(argv)


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars/arrays and Paths converted, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return plain_json(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def bench_envelope(name: str, results: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """The envelope of a finished bench run (see the module docstring)."""
    if not BENCH_NAME.match(name):
        raise ValueError(f"bench name {name!r} must match {BENCH_NAME.pattern} (it becomes the file name)")
    if not isinstance(results, dict):
        raise ValueError(f"bench results must be a dict, got {type(results).__name__}")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "schema": SCHEMA_VERSION,
        "bench": name,
        "command": command or current_command(),
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "machine": machine_info(),
        "results": plain_json(results),
    }


def write_bench_result(
    name: str, results: dict[str, Any], command: str | None = None, results_dir: str | os.PathLike | None = None
) -> Path:
    """Write ``<results_dir>/<name>.json`` (default ``bench/results/``) atomically; returns its path.

    Then ``python scripts/gen_results.py`` turns every such file into ``docs/results.md``."""
    directory = Path(results_dir) if results_dir is not None else RESULTS_DIR
    path = directory / f"{name}.json"
    atomic_write_json(path, bench_envelope(name, results, command), indent=2)
    return path
