"""Domain randomisation applied at reset from the episode seed (lighting, colours, camera poses).

Randomisation draws from its own random stream, so switching it on changes the *pictures* of an
episode but never its initial state, instruction or dynamics.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass
class DomainRandomization:
    """Which appearance factors to randomise at every reset, and by how much."""

    lighting: bool = True
    """Randomise light intensity (scaled by ``light_scale``) and direction (tilted by ``light_tilt_deg``)."""
    object_colors: bool = True
    """Jitter block/target/marker colours (hue stays recognisable) and pick a random table colour."""
    camera_jitter: bool = True
    """Perturb the fixed cameras' position and orientation a little."""
    light_scale: tuple[float, float] = (0.55, 1.45)
    """Range of the multiplicative factor on each light's diffuse intensity."""
    light_tilt_deg: float = 25.0
    """Maximum tilt of each light's direction, in degrees."""
    object_color_jitter: float = 0.12
    """Maximum per-channel RGB offset for task objects (kept small so "red" stays red)."""
    camera_position_jitter_m: float = 0.01
    """Maximum camera displacement per axis, in metres."""
    camera_rotation_jitter_deg: float = 2.0
    """Maximum camera rotation about a random axis, in degrees."""


class Randomizer:
    """Remembers the nominal model appearance and re-applies a fresh random draw at each reset."""

    def __init__(
        self,
        model: mujoco.MjModel,
        config: DomainRandomization | None,
        object_geoms: list[int],
        table_geoms: list[int],
        fixed_cameras: list[int],
    ):
        self.model = model
        self.config = config
        self.object_geoms = list(object_geoms)
        self.table_geoms = list(table_geoms)
        self.fixed_cameras = list(fixed_cameras)
        self._light_diffuse = model.light_diffuse.copy()
        self._light_dir = model.light_dir.copy()
        self._geom_rgba = model.geom_rgba.copy()
        self._cam_pos = model.cam_pos.copy()
        self._cam_quat = model.cam_quat.copy()

    def apply(self, rng: np.random.Generator) -> None:
        m, cfg = self.model, self.config
        m.light_diffuse[:] = self._light_diffuse
        m.light_dir[:] = self._light_dir
        m.geom_rgba[:] = self._geom_rgba
        m.cam_pos[:] = self._cam_pos
        m.cam_quat[:] = self._cam_quat
        if cfg is None:
            return
        if cfg.lighting:
            for i in range(m.nlight):
                m.light_diffuse[i] = np.clip(self._light_diffuse[i] * rng.uniform(*cfg.light_scale), 0, 1)
                m.light_dir[i] = _tilt(self._light_dir[i], np.deg2rad(cfg.light_tilt_deg), rng)
        if cfg.object_colors:
            for g in self.object_geoms:
                jitter = rng.uniform(-cfg.object_color_jitter, cfg.object_color_jitter, 3)
                m.geom_rgba[g, :3] = np.clip(self._geom_rgba[g, :3] + jitter, 0, 1)
            table_rgb = rng.uniform(0.25, 0.85, 3)
            for g in self.table_geoms:
                m.geom_rgba[g, :3] = table_rgb
        if cfg.camera_jitter:
            for c in self.fixed_cameras:
                m.cam_pos[c] = self._cam_pos[c] + rng.uniform(-1, 1, 3) * cfg.camera_position_jitter_m
                axis = rng.normal(size=3)
                axis /= np.linalg.norm(axis)
                angle = np.deg2rad(rng.uniform(-1, 1) * cfg.camera_rotation_jitter_deg)
                dq = np.zeros(4)
                mujoco.mju_axisAngle2Quat(dq, axis, angle)
                out = np.zeros(4)
                mujoco.mju_mulQuat(out, dq, self._cam_quat[c])
                m.cam_quat[c] = out


def _tilt(direction: np.ndarray, max_angle: float, rng: np.random.Generator) -> np.ndarray:
    d = np.asarray(direction, float)
    d = d / (np.linalg.norm(d) + 1e-12)
    axis = np.cross(d, rng.normal(size=3))
    axis /= np.linalg.norm(axis) + 1e-12
    angle = rng.uniform(0, max_angle)
    # Rodrigues rotation of d about axis (axis is orthogonal to d)
    return d * np.cos(angle) + np.cross(axis, d) * np.sin(angle)
