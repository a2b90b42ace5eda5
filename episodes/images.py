"""Image resizing, written once: every frame resize of ours is PIL bilinear on uint8 RGB."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames (T, H, W, C) or one frame (H, W, C) resized to ``height`` x ``width``
    (bilinear); returned as given when already that size."""
    frames = np.asarray(frames)
    if frames.shape[-3:-1] == (height, width):
        return frames
    if frames.ndim == 3:
        return np.asarray(Image.fromarray(frames).resize((width, height), Image.BILINEAR))
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


def scaled_to_max_side(height: int, width: int, max_side: int, minimum: int = 1) -> tuple[int, int]:
    """(height, width) scaled so the longer side is ``max_side`` (aspect ratio kept, rounded, at
    least ``minimum`` pixels)."""
    scale = max_side / max(height, width)
    return max(minimum, round(height * scale)), max(minimum, round(width * scale))


__all__ = ["resize_frames", "scaled_to_max_side"]
