import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# Tiny test envs live next to the tests; SubprocVecEnv workers import them by module name.
sys.path.insert(0, str(Path(__file__).parent))

# Load torch's compiler stack (and triton's native library) before MuJoCo/EGL, PyAV and pyarrow
# are loaded by other test modules: the other order segfaults inside libtriton here.
import torch._dynamo  # noqa: E402,F401
