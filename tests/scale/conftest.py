"""One local Ray per test module (``num_cpus=2``, no dashboard), shut down at the module's end.

Ray workers import the tests' helper modules (frame models, toy envs) by name, so their folders go
on the workers' PYTHONPATH as well as on this process's sys.path.
"""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HELPER_DIRS = [str(HERE), str(REPO / "tests" / "policies"), str(REPO)]
for _d in HELPER_DIRS:
    if _d not in sys.path:
        sys.path.insert(0, _d)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    pythonpath = os.pathsep.join(HELPER_DIRS + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}},
    )
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
