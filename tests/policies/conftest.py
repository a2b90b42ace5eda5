import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# Tiny test envs live next to the tests; SubprocVecEnv workers import them by module name.
sys.path.insert(0, str(Path(__file__).parent))
