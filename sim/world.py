"""The "varied world": a procedural, seeded family of scenes around the same four tasks.

``sim.make(task, world="varied", world_split="train" | "heldout")`` draws, at every reset and from its
own random stream of the episode seed, a world variant: table and floor textures, lighting, camera
poses, the colour (from a named palette), shape and size of the task objects, the target's shape,
0-3 clutter objects on the table and the arm's colours and finish. :func:`draw_world` returns it as
a JSON-serialisable dict (``info["world"]`` at reset, ``env.unwrapped.world_params()``).

Everything is changed at run time in the compiled model (no recompilation per reset): colours,
materials, lights, cameras, geom types and sizes (with the mass, inertia and collision bounds that
go with them). Textures are rewritten in ``model.tex_data`` and re-uploaded to the renderer's GL
context, so any pattern and colour pair can be drawn, not only a pre-built bank.

Held-out split: the values listed in ``HELDOUT_*`` are never drawn by ``world_split="train"`` and
are the only ones ``"heldout"`` draws for that factor:

* object colours (task block, the other block, target, reach marker, drawer, clutter):
  train ``TRAIN_COLORS``, held out ``HELDOUT_COLORS``;
* table and floor texture patterns: train ``checker``, ``gradient``, ``flat``; held out
  ``stripes``, ``speckle``;
* arm colour schemes: train ``white``, ``grey``, ``black``, ``blue``; held out ``orange``, ``yellow``.

Shared by both splits (continuous ranges or small sets): texture colours and tints, lighting,
camera jitter, object shapes and sizes, target shapes, clutter count and shapes, arm finish.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np

from .scene import (
    ARM_PREFIX,
    FIXED_CAMERAS,
    PROP_CONAFFINITY,
    PROP_CONTYPE,
    Scene,
    lookat_quat,
)

WORLDS = ("default", "varied")
WORLD_SPLITS = ("train", "heldout")

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "blue": (0.12, 0.30, 0.85),
    "green": (0.15, 0.70, 0.25),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "purple": (0.50, 0.20, 0.75),
    "white": (0.93, 0.93, 0.93),
    "black": (0.07, 0.07, 0.08),
    "cyan": (0.10, 0.80, 0.85),
    "pink": (1.00, 0.55, 0.72),
    "brown": (0.45, 0.27, 0.12),
    "grey": (0.50, 0.50, 0.53),
    "lime": (0.65, 0.95, 0.15),
}
"""Named object colours (RGB); the instruction names the one drawn."""
TRAIN_COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black")
HELDOUT_COLORS = ("cyan", "pink", "brown", "grey", "lime")
COLOR_JITTER = 0.04
"""Per-channel RGB jitter around the palette colour (small, so the name stays right)."""

TRAIN_PATTERNS = ("checker", "gradient", "flat")
HELDOUT_PATTERNS = ("stripes", "speckle")

ARM_SCHEMES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "white": ((0.93, 0.93, 0.93), (0.22, 0.22, 0.24)),
    "grey": ((0.60, 0.60, 0.62), (0.15, 0.15, 0.16)),
    "black": ((0.12, 0.12, 0.13), (0.55, 0.55, 0.57)),
    "blue": ((0.20, 0.35, 0.75), (0.90, 0.90, 0.90)),
    "orange": ((0.95, 0.45, 0.08), (0.10, 0.10, 0.10)),
    "yellow": ((0.95, 0.80, 0.10), (0.15, 0.15, 0.15)),
}
"""Arm colour schemes: (colour of the light links, colour of the dark links/joints and fingers)."""
TRAIN_ARM_SCHEMES = ("white", "grey", "black", "blue")
HELDOUT_ARM_SCHEMES = ("orange", "yellow")
ARM_FINISHES = {"matte": (0.1, 0.1, 0.0), "metallic": (0.9, 0.9, 0.25)}
"""Arm material finish: (specular, shininess, reflectance)."""

SPLIT_CHOICES = {
    "train": {"colors": TRAIN_COLORS, "patterns": TRAIN_PATTERNS, "arm_schemes": TRAIN_ARM_SCHEMES},
    "heldout": {"colors": HELDOUT_COLORS, "patterns": HELDOUT_PATTERNS, "arm_schemes": HELDOUT_ARM_SCHEMES},
}

BLOCK_SHAPES = ("cube", "cylinder", "brick")
TARGET_SHAPES = ("disc", "square", "ring")
SHAPE_NOUNS = {
    "cube": ("cube", "block", "box"),
    "cylinder": ("cylinder", "block", "can"),
    "brick": ("block", "box", "brick"),
}
TARGET_NOUNS = {
    "disc": ("target", "goal", "pad", "circle", "spot"),
    "square": ("target", "goal", "pad", "square", "spot"),
    "ring": ("target", "goal", "ring", "circle", "spot"),
}
MARKER_NOUNS = ("ball", "sphere", "marker")
BLOCK_DENSITY = 0.05 / 0.04**3
"""kg/m^3: the default world's 4 cm, 50 g cube; varied blocks keep its density."""
MAX_CLUTTER = 3
CLUTTER_REGION = ((0.28, -0.36), (0.74, 0.36))
"""Table area (x, y min / max, m) where clutter may stand (and only where every fixed camera sees it)."""
CLUTTER_GAP = 0.02
CAMERA_MARGIN = 0.85
"""Clutter stays inside this central fraction of the front and side views (square images)."""
RING_SEGMENTS = 16
HIDDEN_GROUP, VISIBLE_GROUP = 3, 0
"""Geom groups: the renderer shows groups 0-2 by default, so group 3 hides a geom."""
PARK_Z = -3.0
"""Unused clutter waits below the floor, weightless and without contacts."""

# Names of the bodies the varied world adds or reshapes (tasks build the task props under these names).
BLOCK_BODY, OTHER_BLOCK_BODY, TARGET_BODY, MARKER_BODY = "task_block", "other_block", "target", "marker"
CLUTTER_BODY = "clutter{}"
EXTRA_LIGHTS = ("extra_light0", "extra_light1")
TASK_LIGHTS = ("key_light", "fill_light")
DRAWER_SHELL = ("drawer_top", "drawer_bottom", "drawer_left", "drawer_right", "drawer_back")
DRAWER_BOX = ("drawer_front", "drawer_floor", "drawer_dback")
DRAWER_METAL = ("drawer_handle", "drawer_handle_post_l", "drawer_handle_post_r")
HANDLE_METALS = {"silver": (0.75, 0.75, 0.8), "black": (0.1, 0.1, 0.1), "brass": (0.75, 0.6, 0.25)}
TEXTURE_SIZES = {"table": 128, "floor": 64}


def check_world(world: str, world_split: str | None) -> str | None:
    """Validate ``world``/``world_split``; returns the split to use (None for the default world)."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; valid worlds: {', '.join(WORLDS)}")
    if world == "default":
        if world_split is not None:
            raise ValueError(f"world_split={world_split!r} applies only to world='varied'")
        return None
    split = "train" if world_split is None else world_split
    if split not in WORLD_SPLITS:
        raise ValueError(f"unknown world_split {split!r}; valid splits: {', '.join(WORLD_SPLITS)}")
    return split


# ----- drawing a variant (pure data) -----------------------------------------------------------------
def _rgb(rng: np.random.Generator, low: float, high: float) -> list[float]:
    return [round(float(v), 4) for v in rng.uniform(low, high, 3)]


def _named_color(rng: np.random.Generator, pool: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, Any]:
    names = [c for c in pool if c not in exclude]
    name = names[int(rng.integers(len(names)))]
    rgb = np.clip(np.array(PALETTE[name]) + rng.uniform(-COLOR_JITTER, COLOR_JITTER, 3), 0.0, 1.0)
    return {"color": name, "rgb": [round(float(v), 4) for v in rgb]}


def _shape_extents(rng: np.random.Generator, shape: str) -> list[float]:
    """Half extents (x, y, z) in m; bricks have their short side along x, where the fingers close."""
    if shape == "cube":
        a = rng.uniform(0.017, 0.024)
        ext = (a, a, a)
    elif shape == "cylinder":
        r = rng.uniform(0.017, 0.023)
        ext = (r, r, rng.uniform(0.018, 0.026))
    else:
        ext = (rng.uniform(0.016, 0.02), rng.uniform(0.025, 0.032), rng.uniform(0.018, 0.022))
    return [round(float(v), 4) for v in ext]


def _texture(rng: np.random.Generator, patterns: Sequence[str], low: float, high: float) -> dict[str, Any]:
    pattern = patterns[int(rng.integers(len(patterns)))]
    return {
        "pattern": pattern,
        "rgb1": _rgb(rng, low, high),
        "rgb2": _rgb(rng, low, high),
        "cells": int(rng.integers(3, 11)),
        "angle_deg": round(float(rng.uniform(0, 180)), 2),
        "seed": int(rng.integers(2**31)),
        "tint": _rgb(rng, 0.8, 1.0),
    }


def _lights(rng: np.random.Generator) -> dict[str, Any]:
    n_lights = int(rng.integers(1, len(TASK_LIGHTS) + len(EXTRA_LIGHTS) + 1))
    headlight = bool(rng.random() < 0.7)
    lights = []
    for i in range(len(TASK_LIGHTS) + len(EXTRA_LIGHTS)):
        azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(np.deg2rad(35), np.deg2rad(80))
        dist = rng.uniform(1.5, 2.2)
        pos = np.array([0.45, 0.0, 0.0]) + dist * np.array(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
        )
        aim = np.array([0.45, 0.0, 0.0]) + np.r_[rng.uniform(-0.15, 0.15, 2), 0.0]
        # Without the headlight the first light carries the scene alone: keep it from going dark.
        alone = not headlight and i == 0
        ambient = rng.uniform(0.25, 0.4) if alone else rng.uniform(0.0, 0.12)
        diffuse = rng.uniform(0.55, 0.85) if alone else rng.uniform(0.35 if i == 0 else 0.15, 0.8)
        lights.append(
            {
                "active": i < n_lights,
                "pos": [round(float(v), 4) for v in pos],
                "dir": [round(float(v), 4) for v in (aim - pos) / np.linalg.norm(aim - pos)],
                "diffuse": round(float(diffuse), 4),
                "ambient": round(float(ambient), 4),
                "specular": round(float(rng.uniform(0.0, 0.3)), 4),
            }
        )
    return {
        "count": n_lights,
        "headlight": {
            "active": headlight,
            "ambient": round(float(rng.uniform(0.15, 0.45)), 4),
            "diffuse": round(float(rng.uniform(0.1, 0.45)), 4),
        },
        "lights": lights,
    }


def _cameras(rng: np.random.Generator) -> dict[str, Any]:
    cams = {}
    for name, (pos, lookat, fovy) in FIXED_CAMERAS.items():
        cams[name] = {
            "pos": [round(float(v), 4) for v in np.array(pos) + rng.uniform(-1, 1, 3) * [0.06, 0.08, 0.06]],
            "lookat": [round(float(v), 4) for v in np.array(lookat) + rng.uniform(-1, 1, 3) * [0.03, 0.03, 0.02]],
            "fovy": round(float(fovy + rng.uniform(-4.0, 4.0)), 3),
        }
    return cams


def draw_world(task: str, split: str, rng: np.random.Generator) -> dict[str, Any]:
    """A world variant for ``task`` from ``split``: every appearance factor, as JSON-ready data.

    Clutter poses are filled in later (:meth:`VariedWorld.place_clutter`), once the task layout is known.
    """
    choices = SPLIT_CHOICES[split]
    colors = choices["colors"]
    params: dict[str, Any] = {
        "world": "varied",
        "split": split,
        "task": task,
        "table": _texture(rng, choices["patterns"], 0.2, 0.9),
        "floor": _texture(rng, choices["patterns"], 0.1, 0.7),
        "lighting": _lights(rng),
        "cameras": _cameras(rng),
    }
    scheme = choices["arm_schemes"][int(rng.integers(len(choices["arm_schemes"])))]
    finish = list(ARM_FINISHES)[int(rng.integers(len(ARM_FINISHES)))]
    params["arm"] = {
        "scheme": scheme,
        "finish": finish,
        "primary": list(ARM_SCHEMES[scheme][0]),
        "secondary": list(ARM_SCHEMES[scheme][1]),
    }
    named: list[str] = []  # colours the instruction names: nothing else in the scene may wear them
    if task in ("push", "pickplace"):
        shape = BLOCK_SHAPES[int(rng.integers(len(BLOCK_SHAPES)))]
        extents = _shape_extents(rng, shape)
        block = {"shape": shape, "half_extents": extents, **_named_color(rng, colors)}
        target = {
            "shape": TARGET_SHAPES[int(rng.integers(len(TARGET_SHAPES)))],
            "radius": round(float(rng.uniform(0.04, 0.055)), 4),
            **_named_color(rng, colors, exclude=[block["color"]]),
        }
        named = [block["color"], target["color"]]
        # The other block has the same shape and size: only its colour tells it from the task block.
        other = {"shape": shape, "half_extents": extents, **_named_color(rng, colors, exclude=named)}
        params.update(block=block, target=target, other_block=other)
    elif task == "reach":
        params["marker"] = {"radius": round(float(rng.uniform(0.016, 0.024)), 4), **_named_color(rng, colors)}
        named = [params["marker"]["color"]]
    elif task == "drawer":
        drawer = _named_color(rng, colors)
        metal = list(HANDLE_METALS)[int(rng.integers(len(HANDLE_METALS)))]
        # The front camera sees the cabinet's back, the side camera the drawer: both wear the named
        # colour, the cabinet a shade darker.
        params["drawer"] = {
            **drawer,
            "shell_rgb": [round(v * 0.8, 4) for v in drawer["rgb"]],
            "handle": metal,
            "handle_rgb": list(HANDLE_METALS[metal]),
        }
        named = [drawer["color"]]
    clutter = []
    for _ in range(int(rng.integers(0, MAX_CLUTTER + 1))):
        shape = BLOCK_SHAPES[int(rng.integers(len(BLOCK_SHAPES)))]
        clutter.append(
            {"shape": shape, "half_extents": _shape_extents(rng, shape), **_named_color(rng, colors, exclude=named)}
        )
    params["distractors"] = clutter
    return params


# ----- textures --------------------------------------------------------------------------------------
def texture_pixels(tex: dict[str, Any], size: int) -> np.ndarray:
    """The (size, size, 3) uint8 image of a drawn texture (pattern, colours, cells, angle, seed)."""
    rgb1, rgb2 = np.array(tex["rgb1"]), np.array(tex["rgb2"])
    v, u = np.mgrid[0:size, 0:size] / size
    angle = np.deg2rad(tex["angle_deg"])
    along = u * np.cos(angle) + v * np.sin(angle)
    pattern = tex["pattern"]
    if pattern == "checker":
        mix = (np.floor(u * tex["cells"]) + np.floor(v * tex["cells"])) % 2
    elif pattern == "gradient":
        mix = (along - along.min()) / max(float(along.max() - along.min()), 1e-9)
    elif pattern == "flat":
        mix = np.zeros_like(u)
    elif pattern == "stripes":
        mix = np.floor(along * tex["cells"] * 1.5) % 2
    elif pattern == "speckle":
        mix = np.random.default_rng(tex["seed"]).random((size, size)) ** 3
    else:
        raise ValueError(f"unknown texture pattern {pattern!r}")
    img = rgb1 * (1.0 - mix[..., None]) + rgb2 * mix[..., None]
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


# ----- shapes ------------------------------------------------------------------------------------------
def set_geom_shape(
    model: mujoco.MjModel, geom: int, shape: str, half_extents: Sequence[float], density: float | None = None
) -> None:
    """Make ``geom`` a box ('cube'/'brick'), 'cylinder' or 'sphere' of ``half_extents`` at run time.

    Updates the collision bounds the broad phase uses (``geom_aabb``, ``geom_rbound``: stale ones
    make contacts go missing) and, with ``density``, the mass and inertia of its body (which must
    hold only this geom, centred at its origin); call ``mujoco.mj_setConst`` afterwards then.
    """
    a, b, c = (float(v) for v in half_extents)
    if shape in ("cube", "brick"):
        gtype, size, aabb = mujoco.mjtGeom.mjGEOM_BOX, (a, b, c), (a, b, c)
        rbound = float(np.linalg.norm(aabb))
        volume = 8 * a * b * c
        inertia = np.array([b * b + c * c, a * a + c * c, a * a + b * b]) / 3.0
    elif shape == "cylinder":
        gtype, size, aabb = mujoco.mjtGeom.mjGEOM_CYLINDER, (a, c, 0.0), (a, a, c)
        rbound = float(np.hypot(a, c))
        volume = np.pi * a * a * 2 * c
        inertia = np.array([(3 * a * a + 4 * c * c) / 12, (3 * a * a + 4 * c * c) / 12, a * a / 2])
    elif shape == "sphere":
        gtype, size, aabb = mujoco.mjtGeom.mjGEOM_SPHERE, (a, 0.0, 0.0), (a, a, a)
        rbound = a
        volume = 4 / 3 * np.pi * a**3
        inertia = np.full(3, 0.4 * a * a)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: cube, brick, cylinder, sphere")
    model.geom_type[geom] = gtype
    model.geom_size[geom] = size
    model.geom_aabb[geom] = [0.0, 0.0, 0.0, *aabb]
    model.geom_rbound[geom] = rbound
    if density is not None:
        body = model.geom_bodyid[geom]
        mass = density * volume
        model.body_mass[body] = mass
        model.body_inertia[body] = mass * inertia
        model.body_ipos[body] = 0.0
        model.body_iquat[body] = [1.0, 0.0, 0.0, 0.0]


def horizontal_radius(shape: str, half_extents: Sequence[float]) -> float:
    """Radius of the object's footprint on the table (m)."""
    a, b, _ = half_extents
    return float(a) if shape == "cylinder" else float(np.hypot(a, b))


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


# ----- the world in a model ----------------------------------------------------------------------------
class VariedWorld:
    """Adds the varied world's extra elements to a scene, then applies drawn variants to the model."""

    def __init__(self, task: str, split: str):
        self.task = task
        self.split = split

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return draw_world(self.task, self.split, rng)

    # --- build time ---
    def add_to_scene(self, scene: Scene) -> None:
        """Textures, materials, extra lights, clutter bodies and target shapes (before compiling)."""
        spec = scene.spec
        for name, size in TEXTURE_SIZES.items():
            spec.add_texture(
                name=f"{name}_tex",
                type=mujoco.mjtTexture.mjTEXTURE_2D,
                builtin=mujoco.mjtBuiltin.mjBUILTIN_FLAT,
                width=size,
                height=size,
                rgb1=[1, 1, 1],
                rgb2=[1, 1, 1],
            )
            mat = spec.add_material(name=f"{name}_mat", texrepeat=[1, 1] if name == "table" else [8, 8])
            mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"{name}_tex"
            spec.geom(name).material = f"{name}_mat"
        spec.add_material(name="arm_mat")
        for name in EXTRA_LIGHTS:
            spec.worldbody.add_light(name=name, pos=[0.45, 0, 2.0], dir=[0, 0, -1], castshadow=False)
        for i in range(MAX_CLUTTER):
            scene.add_block(CLUTTER_BODY.format(i), 0.02, (0.5, 0.5, 0.5, 1.0))
        target = spec.body(TARGET_BODY)
        if target is not None:
            kw = {"contype": 0, "conaffinity": 0, "group": HIDDEN_GROUP}
            target.add_geom(
                name="target_square", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.04, 0.04, 0.001], pos=[0, 0, 0.001], **kw
            )
            for k in range(RING_SEGMENTS):
                target.add_geom(
                    name=f"target_ring{k}",
                    type=mujoco.mjtGeom.mjGEOM_BOX,
                    size=[0.005, 0.01, 0.001],
                    pos=[0.04, 0, 0.0012],
                    **kw,
                )

    def bind(self, model: mujoco.MjModel) -> None:
        """Resolve ids and remember the nominal values that variants are applied on top of."""
        m = self.model = model
        self._scratch = mujoco.MjData(model)  # mj_setConst's workspace: keeps the episode's data untouched
        self._tex = {name: m.texture(f"{name}_tex").id for name in TEXTURE_SIZES}
        self._arm_mat = m.material("arm_mat").id
        self._lights = [m.light(n).id for n in TASK_LIGHTS + EXTRA_LIGHTS]
        self._cams = {name: m.camera(name).id for name in FIXED_CAMERAS}
        self._clutter = [m.body(CLUTTER_BODY.format(i)).id for i in range(MAX_CLUTTER)]
        self._clutter_qadr = [int(m.jnt_qposadr[m.body_jntadr[b]]) for b in self._clutter]
        self._clutter_geom = [m.geom(CLUTTER_BODY.format(i) + "_geom").id for i in range(MAX_CLUTTER)]
        arm_bodies = {b for b in range(m.nbody) if m.body(b).name.startswith(ARM_PREFIX)}
        visible = [g for g in range(m.ngeom) if m.geom_bodyid[g] in arm_bodies and m.geom_group[g] < 3]
        nominal = [
            m.mat_rgba[m.geom_matid[g], :3]
            if m.geom_matid[g] >= 0 and np.allclose(m.geom_rgba[g], 0.5)
            else m.geom_rgba[g, :3]
            for g in visible
        ]
        # Light links wear the scheme's first colour, dark links and fingers its second.
        self._arm_light = [g for g, rgb in zip(visible, nominal) if float(np.mean(rgb)) > 0.5]
        self._arm_dark = [g for g, rgb in zip(visible, nominal) if float(np.mean(rgb)) <= 0.5]

    def _geom(self, name: str) -> int:
        return self.model.geom(name).id

    # --- reset time ---
    def apply(self, params: dict[str, Any]) -> None:
        """Set every appearance factor and object shape of ``params`` in the model.

        :meth:`place_clutter` completes the variant (and refreshes the model's derived constants).
        """
        m = self.model
        for name, tex_id in self._tex.items():
            size = TEXTURE_SIZES[name]
            adr = m.tex_adr[tex_id]
            m.tex_data[adr : adr + size * size * 3] = texture_pixels(params[name], size).reshape(-1)
            m.geom_rgba[self._geom(name)] = [*params[name]["tint"], 1.0]
        legs = np.array(params["table"]["rgb1"]) * 0.6
        for i in range(4):
            m.geom_rgba[self._geom(f"table_leg{i}")] = [*legs, 1.0]
        light = params["lighting"]
        m.vis.headlight.active = int(light["headlight"]["active"])
        m.vis.headlight.ambient = [light["headlight"]["ambient"]] * 3
        m.vis.headlight.diffuse = [light["headlight"]["diffuse"]] * 3
        for lid, spec in zip(self._lights, light["lights"]):
            m.light_active[lid] = spec["active"]
            m.light_pos[lid] = spec["pos"]
            m.light_dir[lid] = spec["dir"]
            m.light_diffuse[lid] = [spec["diffuse"]] * 3
            m.light_ambient[lid] = [spec["ambient"]] * 3
            m.light_specular[lid] = [spec["specular"]] * 3
        for name, cam in params["cameras"].items():
            c = self._cams[name]
            m.cam_pos[c] = cam["pos"]
            m.cam_quat[c] = lookat_quat(cam["pos"], cam["lookat"])
            m.cam_fovy[c] = cam["fovy"]
        arm = params["arm"]
        m.mat_specular[self._arm_mat], m.mat_shininess[self._arm_mat], m.mat_reflectance[self._arm_mat] = ARM_FINISHES[
            arm["finish"]
        ]
        for geoms, rgb in ((self._arm_light, arm["primary"]), (self._arm_dark, arm["secondary"])):
            for g in geoms:
                m.geom_rgba[g] = [*rgb, 1.0]
                m.geom_matid[g] = self._arm_mat
        if "block" in params:
            for body, obj in ((BLOCK_BODY, params["block"]), (OTHER_BLOCK_BODY, params["other_block"])):
                g = self._geom(f"{body}_geom")
                set_geom_shape(m, g, obj["shape"], obj["half_extents"], density=BLOCK_DENSITY)
                m.geom_rgba[g] = [*obj["rgb"], 1.0]
            self._apply_target(params["target"])
        if "marker" in params:
            g = self._geom(f"{MARKER_BODY}_geom")
            r = params["marker"]["radius"]
            set_geom_shape(m, g, "sphere", (r, r, r))
            m.geom_rgba[g] = [*params["marker"]["rgb"], 1.0]
        if "drawer" in params:
            drawer = params["drawer"]
            for names, rgb in (
                (DRAWER_SHELL, drawer["shell_rgb"]),
                (DRAWER_BOX, drawer["rgb"]),
                (DRAWER_METAL, drawer["handle_rgb"]),
            ):
                for name in names:
                    m.geom_rgba[self._geom(name)] = [*rgb, 1.0]

    def _apply_target(self, target: dict[str, Any]) -> None:
        m = self.model
        r = target["radius"]
        rgba = [*target["rgb"], 1.0]
        disc, square = self._geom("target_geom"), self._geom("target_square")
        rings = [self._geom(f"target_ring{k}") for k in range(RING_SEGMENTS)]
        for g in [disc, square, *rings]:
            m.geom_group[g] = HIDDEN_GROUP
            m.geom_rgba[g] = rgba
        if target["shape"] == "disc":
            m.geom_size[disc] = [r, 0.001, 0.0]
            m.geom_group[disc] = VISIBLE_GROUP
        elif target["shape"] == "square":
            m.geom_size[square] = [r * 0.9, r * 0.9, 0.001]
            m.geom_group[square] = VISIBLE_GROUP
        else:
            width = 0.25 * r
            mid = r - width / 2
            for k, g in enumerate(rings):
                theta = 2 * np.pi * k / RING_SEGMENTS
                m.geom_pos[g] = [mid * np.cos(theta), mid * np.sin(theta), 0.0012]
                m.geom_quat[g] = [np.cos(theta / 2), 0.0, 0.0, np.sin(theta / 2)]
                m.geom_size[g] = [width / 2, mid * np.pi / RING_SEGMENTS * 1.05, 0.001]
                m.geom_group[g] = VISIBLE_GROUP

    def place_clutter(
        self,
        data: mujoco.MjData,
        params: dict[str, Any],
        rng: np.random.Generator,
        keep_clear: list[tuple[np.ndarray, np.ndarray, float]],
    ) -> None:
        """Stand the drawn clutter on the table away from ``keep_clear`` (segments a-b with a radius).

        A clutter object that finds no free spot is left out (``params["distractors"]`` is trimmed);
        the poses are written into ``params``. Unused clutter is parked below the floor.
        """
        m = self.model
        (x0, y0), (x1, y1) = CLUTTER_REGION
        placed: list[tuple[np.ndarray, float]] = []
        kept = []
        for obj in params["distractors"]:
            radius = horizontal_radius(obj["shape"], obj["half_extents"])
            for _ in range(200):
                xy = rng.uniform([x0, y0], [x1, y1])
                if (
                    all(segment_distance(xy, a, b) >= r + radius for a, b, r in keep_clear)
                    and all(np.linalg.norm(xy - p) >= q + radius + CLUTTER_GAP for p, q in placed)
                    and self._in_view([xy[0], xy[1], obj["half_extents"][2]], radius)
                ):
                    break
            else:
                continue
            placed.append((xy, radius))
            yaw = float(rng.uniform(-np.pi, np.pi))
            kept.append({**obj, "xy": [round(float(v), 4) for v in xy], "yaw": round(yaw, 4)})
        params["distractors"] = kept
        for i, (body, adr, g) in enumerate(zip(self._clutter, self._clutter_qadr, self._clutter_geom)):
            if i < len(kept):
                obj = kept[i]
                set_geom_shape(m, g, obj["shape"], obj["half_extents"], density=BLOCK_DENSITY)
                m.geom_rgba[g] = [*obj["rgb"], 1.0]
                data.qpos[adr : adr + 3] = [obj["xy"][0], obj["xy"][1], obj["half_extents"][2]]
                data.qpos[adr + 3 : adr + 7] = [np.cos(obj["yaw"] / 2), 0, 0, np.sin(obj["yaw"] / 2)]
                m.body_gravcomp[body] = 0.0
                m.geom_contype[g], m.geom_conaffinity[g] = PROP_CONTYPE, PROP_CONAFFINITY
                m.geom_group[g] = VISIBLE_GROUP
            else:
                data.qpos[adr : adr + 3] = [0.0, 2.0 * i, PARK_Z]
                data.qpos[adr + 3 : adr + 7] = [1.0, 0.0, 0.0, 0.0]
                m.body_gravcomp[body] = 1.0
                m.geom_contype[g] = m.geom_conaffinity[g] = 0
                m.geom_group[g] = HIDDEN_GROUP
        mujoco.mj_setConst(m, self._scratch)  # derived masses/inertias after all the shape changes

    def _in_view(self, point: Sequence[float], radius: float) -> bool:
        """Whether a ball at ``point`` lies inside the central ``CAMERA_MARGIN`` of every fixed camera."""
        m = self.model
        for cam in self._cams.values():
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, m.cam_quat[cam])
            rel = rot.reshape(3, 3).T @ (np.asarray(point) - m.cam_pos[cam])  # world-fixed cameras
            depth = -rel[2]
            if depth <= radius:
                return False
            half_view = np.tan(np.deg2rad(m.cam_fovy[cam]) / 2) * CAMERA_MARGIN
            if np.any(np.abs(rel[:2]) + radius > half_view * depth):
                return False
        return True

    def upload_textures(self, renderer: mujoco.Renderer) -> None:
        """Send the rewritten textures to ``renderer``'s GL context (it copied them when it was made)."""
        # mujoco.Renderer exposes no public way to refresh a texture; its context is the documented
        # target of mjr_uploadTexture, so reach for it rather than rebuild the renderer every reset.
        renderer._gl_context.make_current()
        for tex_id in self._tex.values():
            mujoco.mjr_uploadTexture(self.model, renderer._mjr_context, tex_id)


def instruction_variants(templates: Sequence[str], **slots: Sequence[str]) -> list[str]:
    """Every ``templates`` string formatted with every combination of the ``slots`` synonyms, deduplicated."""
    keys = list(slots)
    out: dict[str, None] = {}
    for template in templates:
        for combo in itertools.product(*(slots[k] for k in keys)):
            out[template.format(**dict(zip(keys, combo)))] = None
    return list(out)
