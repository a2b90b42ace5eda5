"""Image buffers of ``sensor_msgs/Image`` <-> numpy, and resizing to a model's input size.

Pure numpy/Pillow (no ROS import) so the conversions are unit-tested without ROS.
"""

from __future__ import annotations

import numpy as np

from episodes.images import resize_frames

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC3": 3, "8UC1": 1}
"""8-bit encodings accepted from cameras (``sensor_msgs/image_encodings``)."""


def rgb_from_buffer(
    data: bytes | bytearray | memoryview | np.ndarray, height: int, width: int, encoding: str, step: int
) -> np.ndarray:
    """Decode an Image message buffer into uint8 (H, W, 3) RGB. Handles row padding (``step``)
    and BGR/alpha/mono encodings; anything else raises ValueError naming the encoding."""
    if encoding not in CHANNELS:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {sorted(CHANNELS)}")
    channels = CHANNELS[encoding]
    buf = np.frombuffer(memoryview(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data.ravel()
    if step < width * channels or buf.size < step * height:
        raise ValueError(f"image buffer too small: {buf.size} bytes for {height}x{width} {encoding} with step {step}")
    rows = buf[: step * height].reshape(height, step)[:, : width * channels]
    img = rows.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        img = img[:, :, 2::-1]
    return np.ascontiguousarray(img[:, :, :3])


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (no-op when already that size).

    A real camera gives 640x480; the policy/reward model was trained on square renders. Cropping
    keeps the aspect ratio (no stretching), which matters more for learned models than the border.
    """
    h, w = image.shape[:2]
    if h == w == size:
        return image
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return resize_frames(crop, size, size)
