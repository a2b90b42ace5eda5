import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# Tiny test envs live next to the tests; SubprocVecEnv workers import them by module name.
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402  (after the environment set-up above)
import torch  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine run faster single-threaded than contending for both."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
