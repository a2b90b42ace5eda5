"""Project-wide test setup.

* Headless EGL rendering must be chosen before mujoco is first imported.
* pytest puts ``tests/`` on sys.path to import this file; ``tests/sim`` etc. would then shadow the
  real packages as namespace packages, so the repository root goes in front of it.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path[:1]:
    sys.path.insert(0, _REPO_ROOT)
