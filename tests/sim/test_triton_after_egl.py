"""Rendering first and loading torch's compiler (triton) afterwards must not crash the process.

Mesa's llvmpipe and triton both bundle LLVM; loading triton after EGL initialised segfaulted
(prism-demo trains a reward model after recording). The sim loads triton before EGL starts.
"""

import importlib.util
import subprocess
import sys

import pytest

SCRIPT = """
import os
os.environ.setdefault("MUJOCO_GL", "egl")
import sim
env = sim.make("reach", cameras=("front",), image_size=32)
env.reset(seed=0)
env.close()
import torch, torch._dynamo  # loads triton
print("ok", torch.nn.Linear(2, 2)(torch.zeros(1, 2)).shape)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_torch_compiler_loads_after_rendering():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "ok" in proc.stdout
