"""The one rule for turning a ``--device`` value into a torch device, shared by every learner.

torch is imported on first use, so CLIs that never touch a device do not pay for it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` and ``cuda[:N]`` as given.

    A ``torch.device`` passes through. ``cuda`` without a GPU and any other name are a
    ``ValueError`` (``run_cli`` reports it in one line, exit code 2).
    """
    import torch  # torch: only when a device is resolved (CLIs that need none skip it)

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"--device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: CUDA is not available (torch sees no CUDA device); use --device cpu or auto"
        )
    return torch.device(device)
