"""Small deterministic progress models for the scale tests (imported by Ray workers by name)."""

import time
from collections.abc import Sequence

import numpy as np
import torch

from reward_models.base import ProgressModel, hop_from_progress

from toy_envs import state_from_frame

PHI = np.array([0.2, 0.1, 0.5, 0.7, 0.9])  # Φ(s_0) ≠ 0 and non-monotone on purpose


class FrameProgressModel(ProgressModel):
    """Reads the chain state off the 'front' frame; torch embeddings (so the wire conversion is exercised)
    with a per-row std that depends on the frame (so the service's std path is checked too)."""

    model_id = "frame-progress"
    cameras = ("front",)

    def __init__(self, table=PHI, encode_delay_s: float = 0.0):
        self.table = np.asarray(table, dtype=np.float64)
        self.rows_encoded = 0
        self.encode_delay_s = encode_delay_s

    def encode(self, obs):
        time.sleep(self.encode_delay_s)  # a slow model keeps requests in flight (fault tests)
        frames = np.asarray(obs["front"])
        self.rows_encoded += len(frames)
        return torch.tensor([self.table[state_from_frame(f)] for f in frames], dtype=torch.float64)

    def hop_from_embeddings(self, before, after, tasks: Sequence[str], start=None, goal=None):
        return hop_from_progress(np.asarray(before), np.asarray(after))

    def hop_and_std_from_embeddings(self, before, after, tasks, start=None, goal=None):
        hops = self.hop_from_embeddings(before, after, tasks, start, goal)
        return hops, 0.01 * np.abs(np.asarray(after, dtype=np.float64))


def make_frame_model():
    return FrameProgressModel()


def make_slow_frame_model():
    return FrameProgressModel(encode_delay_s=0.1)
