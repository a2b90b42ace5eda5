"""Composable scene building on ``mujoco.MjSpec``: table, lights, cameras, a Panda arm and task props.

The arm always comes from an MJCF file (ours, ``sim/assets/panda.xml``, or a user-supplied one such as
MuJoCo Menagerie's ``franka_emika_panda/panda.xml``) and is *attached* into the scene under the
prefix ``panda/``. Its joints are identified by structure -- the first 7 hinge joints are the arm,
the first 2 slide joints are the fingers -- so files with other naming schemes work too. Whatever
actuators the file had are replaced by our own joint position servos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_PANDA_XML = ASSETS_DIR / "panda.xml"
PANDA_XML_ENV_VAR = "PRISM_PANDA_XML"
ARM_PREFIX = "panda/"

CAMERA_NAMES = ("front", "side", "wrist")
"""Cameras every scene provides."""
FIXED_CAMERAS = {
    "front": ((1.2, 0.0, 0.62), (0.4, 0.0, 0.12), 50.0),
    "side": ((0.5, -0.85, 0.55), (0.45, 0.0, 0.12), 55.0),
}
"""Cameras fixed in the world: position, point looked at, vertical field of view (degrees).
"front" faces the robot from across the table, "side" looks from its right."""

# Table top is the plane z = 0; the arm base stands on it at the origin.
TABLE_CENTER_XY = (0.45, 0.0)
TABLE_HALF_SIZE = (0.65, 0.7, 0.025)

# Collision bits: props (blocks, table, drawer) use contype=1; arm links use contype=2 and
# conaffinity=0 so they touch props but neither each other nor the table; hand/fingers also get
# conaffinity=1 so they rest on the table instead of passing through it.
PROP_CONTYPE, PROP_CONAFFINITY = 1, 3
LINK_CONTYPE, LINK_CONAFFINITY = 2, 0
GRIPPER_CONTYPE, GRIPPER_CONAFFINITY = 2, 1

# Joint servo gains (N m / rad, N m s / rad), torque limits (Franka datasheet) per arm joint.
ARM_KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)
ARM_KV = (450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0)
ARM_FORCE = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
FINGER_KP, FINGER_KV, FINGER_FORCE = 600.0, 20.0, 30.0
FINGER_MAX = 0.04
"""Maximum opening of one finger (m); the gripper opens to twice this."""

EE_SITE_OFFSET = 0.1
"""Grip point below the hand origin along the hand z-axis (m), between the finger pads."""


def resolve_panda_xml(panda_xml: str | os.PathLike | None = None) -> Path:
    """Return the arm MJCF to load: ``panda_xml`` if given, else ``$PRISM_PANDA_XML``, else ours.

    ``panda_xml`` may be a file or a directory holding ``panda.xml`` (e.g. a Menagerie checkout's
    ``franka_emika_panda`` folder). Raises FileNotFoundError with the offending path otherwise.
    """
    source = "panda_xml"
    if panda_xml is None:
        panda_xml = os.environ.get(PANDA_XML_ENV_VAR) or None
        source = f"${PANDA_XML_ENV_VAR}"
    if panda_xml is None:
        return DEFAULT_PANDA_XML
    path = Path(panda_xml).expanduser()
    if path.is_dir():
        candidate = path / "panda.xml"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{source}={str(panda_xml)!r} is a directory without a panda.xml in it; point it at a "
                "MuJoCo Menagerie 'franka_emika_panda' folder or directly at a Panda MJCF file"
            )
        return candidate
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}={str(panda_xml)!r} does not exist; give a Panda MJCF file (panda.xml) or a "
            "directory containing one"
        )
    return path


def lookat_quat(pos, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion of a MuJoCo camera at ``pos`` looking at ``target`` (cameras look along -z, y up)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    mat = np.stack([right, cam_up, -forward], axis=1)  # columns = camera x, y, z in the parent frame
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


@dataclass
class ArmNames:
    """Names (in the compiled scene) of the arm elements the controller needs."""

    joints: list[str]
    fingers: list[str]
    hand_body: str
    ee_site: str = "ee_site"
    wrist_camera: str = "wrist"


def _load_arm_spec(path: Path) -> mujoco.MjSpec:
    try:
        arm = mujoco.MjSpec.from_file(str(path))
    except Exception as exc:  # mujoco raises ValueError with the parser message
        raise ValueError(f"could not parse the Panda MJCF {str(path)!r}: {exc}") from exc
    # Mesh/texture folders are relative to the arm file, not to our scene: make them absolute.
    base = path.resolve().parent
    arm.meshdir = str(base / arm.meshdir) if arm.meshdir else str(base)
    arm.texturedir = str(base / arm.texturedir) if arm.texturedir else str(base)
    for elements in (arm.keys, arm.actuators):
        for element in list(elements):
            arm.delete(element)
    return arm


def _collect_arm(arm: mujoco.MjSpec, path: Path) -> tuple[list, list, object]:
    hinges = [j for j in arm.joints if j.type == mujoco.mjtJoint.mjJNT_HINGE]
    slides = [j for j in arm.joints if j.type == mujoco.mjtJoint.mjJNT_SLIDE]
    if len(hinges) < 7 or len(slides) < 2:
        raise ValueError(
            f"{str(path)!r} does not look like a Panda: need 7 hinge joints and 2 slide finger joints, "
            f"found {len(hinges)} hinge and {len(slides)} slide joints"
        )
    hand = slides[0].parent.parent
    return hinges[:7], slides[:2], hand


class Scene:
    """A table-top scene with a Panda, cameras and lights; tasks add their props with ``add_*``."""

    def __init__(self, panda_xml: str | os.PathLike | None = None, offscreen_size: tuple[int, int] = (128, 128)):
        self.panda_path = resolve_panda_xml(panda_xml)
        spec = mujoco.MjSpec()
        spec.modelname = "prism_scene"
        spec.compiler.degree = False
        spec.option.timestep = 0.002
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        spec.option.noslip_iterations = 3  # keeps grasped blocks from creeping out of the fingers
        height, width = offscreen_size
        spec.visual.global_.offwidth = max(int(width), 64)
        spec.visual.global_.offheight = max(int(height), 64)
        spec.visual.quality.shadowsize = 0  # shadows cost ~25x frame rate on CPU EGL (docs/design.md § Simulation)
        # Multisampling costs ~2.7x frame rate on CPU EGL (llvmpipe) for a mean pixel change < 1;
        # coarser tessellation of capsules/spheres another ~1.2-1.6x, invisible at 64-224 px.
        spec.visual.quality.offsamples = 0
        spec.visual.quality.numslices = 12
        spec.visual.quality.numstacks = 8
        spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
        spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
        spec.visual.headlight.specular = [0.05, 0.05, 0.05]
        spec.stat.center = [0.45, 0.0, 0.2]
        spec.stat.extent = 1.2
        self.spec = spec
        world = spec.worldbody

        world.add_geom(
            name="floor",
            type=mujoco.mjtGeom.mjGEOM_PLANE,
            size=[3, 3, 0.05],
            pos=[0, 0, -0.75],
            rgba=[0.55, 0.55, 0.6, 1],
            contype=0,
            conaffinity=0,
        )
        world.add_geom(
            name="table",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            pos=[TABLE_CENTER_XY[0], TABLE_CENTER_XY[1], -TABLE_HALF_SIZE[2]],
            size=list(TABLE_HALF_SIZE),
            rgba=[0.62, 0.5, 0.38, 1],
            contype=PROP_CONTYPE,
            conaffinity=PROP_CONAFFINITY,
            friction=[1.0, 0.005, 0.0001],
        )
        for i, (lx, ly) in enumerate([(-0.15, -0.6), (-0.15, 0.6), (1.05, -0.6), (1.05, 0.6)]):
            world.add_geom(
                name=f"table_leg{i}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                pos=[lx, ly, -0.4],
                size=[0.03, 0.03, 0.35],
                rgba=[0.4, 0.32, 0.25, 1],
                contype=0,
                conaffinity=0,
            )
        world.add_light(
            name="key_light",
            pos=[0.6, -0.4, 1.8],
            dir=[-0.1, 0.2, -1.0],
            diffuse=[0.65, 0.65, 0.65],
            specular=[0.2, 0.2, 0.2],
            castshadow=False,
        )
        world.add_light(
            name="fill_light",
            pos=[0.0, 1.0, 1.5],
            dir=[0.3, -0.6, -0.7],
            diffuse=[0.3, 0.3, 0.3],
            specular=[0.0, 0.0, 0.0],
            castshadow=False,
        )
        for name, (pos, lookat, fovy) in FIXED_CAMERAS.items():
            world.add_camera(name=name, pos=list(pos), quat=lookat_quat(pos, lookat), fovy=fovy)
        self.arm = self._attach_arm()

    def _attach_arm(self) -> ArmNames:
        arm = _load_arm_spec(self.panda_path)
        hinges, slides, hand = _collect_arm(arm, self.panda_path)
        for i, joint in enumerate(hinges):
            if not joint.name:
                joint.name = f"joint{i + 1}"
        for i, joint in enumerate(slides):
            if not joint.name:
                joint.name = f"finger_joint{i + 1}"
        if not hand.name:
            hand.name = "hand"
        gripper_bodies = {hand.name} | {j.parent.name for j in slides}
        for body in arm.bodies:
            body.gravcomp = 1.0  # the real arm's controller compensates gravity; so do we
        for geom in arm.geoms:
            if geom.contype == 0 and geom.conaffinity == 0:
                continue  # purely visual geom
            if geom.parent.name in gripper_bodies:
                geom.contype, geom.conaffinity = GRIPPER_CONTYPE, GRIPPER_CONAFFINITY
            else:
                geom.contype, geom.conaffinity = LINK_CONTYPE, LINK_CONAFFINITY
        hand.add_site(
            name="ee_site", pos=[0, 0, EE_SITE_OFFSET], size=[0.006, 0.006, 0.006], rgba=[1, 0.2, 0.2, 0], group=3
        )
        # The wrist camera sits on the hand beside the fingers and looks along them (hand +z).
        cam_pos = np.array([-0.085, 0.0, 0.02])
        hand.add_camera(
            name="wrist",
            pos=cam_pos.tolist(),
            quat=lookat_quat(cam_pos, [0.0, 0.0, 0.2], up=(-1.0, 0.0, 0.0)).tolist(),
            fovy=70,
        )
        names = ArmNames(
            joints=[ARM_PREFIX + j.name for j in hinges],
            fingers=[ARM_PREFIX + j.name for j in slides],
            hand_body=ARM_PREFIX + hand.name,
            ee_site=ARM_PREFIX + "ee_site",
            wrist_camera=ARM_PREFIX + "wrist",
        )
        frame = self.spec.worldbody.add_frame(pos=[0, 0, 0])
        self.spec.attach(arm, prefix=ARM_PREFIX, frame=frame)
        for i, joint in enumerate(names.joints):
            act = self.spec.add_actuator(name=f"act_joint{i + 1}", target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            act.set_to_position(kp=ARM_KP[i], kv=ARM_KV[i])
            act.forcerange = [-ARM_FORCE[i], ARM_FORCE[i]]
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        for i, joint in enumerate(names.fingers):
            act = self.spec.add_actuator(name=f"act_finger{i + 1}", target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            act.set_to_position(kp=FINGER_KP, kv=FINGER_KV)
            act.forcerange = [-FINGER_FORCE, FINGER_FORCE]
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            act.ctrlrange = [0.0, FINGER_MAX]
            act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        return names

    # ----- props ---------------------------------------------------------------------------------
    def add_block(self, name: str, half_size: float, rgba, mass: float = 0.05) -> None:
        """A free-floating cube resting on the table (position set at reset)."""
        body = self.spec.worldbody.add_body(name=name, pos=[0.5, 0, half_size])
        body.add_freejoint(name=f"{name}_free")
        body.add_geom(
            name=f"{name}_geom",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[half_size] * 3,
            rgba=list(rgba),
            mass=mass,
            contype=PROP_CONTYPE,
            conaffinity=PROP_CONAFFINITY,
            condim=4,
            friction=[1.2, 0.01, 0.001],
            solref=[0.01, 1],
        )

    def add_target(self, name: str, radius: float, rgba) -> None:
        """A flat, non-colliding disc on the table marking a goal location (moved at reset via mocap)."""
        body = self.spec.worldbody.add_body(name=name, pos=[0.5, 0, 0], mocap=True)
        body.add_geom(
            name=f"{name}_geom",
            type=mujoco.mjtGeom.mjGEOM_CYLINDER,
            size=[radius, 0.001, 0],
            pos=[0, 0, 0.001],
            rgba=list(rgba),
            contype=0,
            conaffinity=0,
        )

    def add_marker(self, name: str, radius: float, rgba) -> None:
        """A floating, non-colliding sphere marking a point in space (moved at reset via mocap)."""
        body = self.spec.worldbody.add_body(name=name, pos=[0.5, 0, 0.2], mocap=True)
        body.add_geom(
            name=f"{name}_geom",
            type=mujoco.mjtGeom.mjGEOM_SPHERE,
            size=[radius, 0, 0],
            rgba=list(rgba),
            contype=0,
            conaffinity=0,
        )

    def add_drawer(self, name: str = "drawer", travel: float = 0.2) -> None:
        """A cabinet on the table with one drawer that slides out towards the robot (-x).

        The cabinet is a mocap body (placed at reset); the drawer slides along its x axis and carries
        a horizontal handle bar (along y) held off the front panel, graspable from above.
        """
        cab = self.spec.worldbody.add_body(name=f"{name}_cabinet", pos=[0.75, 0, 0], mocap=True)
        wood = [0.45, 0.3, 0.18, 1]
        hx, hy, hz = 0.12, 0.14, 0.07  # cabinet half extents; it spans x in [-hx, hx] around its origin
        wall = 0.01
        box = mujoco.mjtGeom.mjGEOM_BOX
        kw = dict(type=box, rgba=wood, contype=PROP_CONTYPE, conaffinity=PROP_CONAFFINITY)
        cab.add_geom(name=f"{name}_top", pos=[0, 0, 2 * hz - wall], size=[hx, hy, wall], **kw)
        cab.add_geom(name=f"{name}_bottom", pos=[0, 0, wall], size=[hx, hy, wall], **kw)
        cab.add_geom(name=f"{name}_left", pos=[0, hy - wall, hz], size=[hx, wall, hz], **kw)
        cab.add_geom(name=f"{name}_right", pos=[0, -hy + wall, hz], size=[hx, wall, hz], **kw)
        cab.add_geom(name=f"{name}_back", pos=[hx - wall, 0, hz], size=[wall, hy, hz], **kw)
        drawer = cab.add_body(name=name, pos=[0, 0, 0])
        drawer.add_joint(
            name=f"{name}_slide",
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[-1, 0, 0],
            range=[0, travel],
            damping=4.0,
            frictionloss=0.3,
            armature=0.05,
        )
        dkw = dict(type=box, rgba=[0.72, 0.55, 0.35, 1], contype=PROP_CONTYPE, conaffinity=PROP_CONAFFINITY)
        inner_x, inner_y, inner_z = hx - 2 * wall, hy - 2 * wall - 0.002, hz - 2 * wall - 0.002
        drawer.add_geom(name=f"{name}_front", pos=[-hx + wall, 0, hz], size=[wall, hy - 0.002, hz - 0.002], **dkw)
        drawer.add_geom(
            name=f"{name}_floor", pos=[0, 0, 2 * wall + 0.004], size=[inner_x, inner_y, 0.004], mass=0.3, **dkw
        )
        drawer.add_geom(name=f"{name}_dback", pos=[hx - 3 * wall, 0, hz], size=[0.004, inner_y, inner_z], **dkw)
        metal = dict(
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            rgba=[0.75, 0.75, 0.8, 1],
            contype=PROP_CONTYPE,
            conaffinity=PROP_CONAFFINITY,
            friction=[1.5, 0.01, 0.001],
            condim=4,
        )
        # The handle sits high on the front panel and far enough out that an open finger fits between
        # bar and panel and the (20 cm wide) hand clears the cabinet top while grasping it.
        standoff = 0.065
        hx_handle, hz_handle = -hx - standoff, 2 * hz - 0.03
        drawer.add_geom(
            name=f"{name}_handle",
            fromto=[hx_handle, -0.06, hz_handle, hx_handle, 0.06, hz_handle],
            size=[0.009],
            **metal,
        )
        for side, y in (("l", -0.06), ("r", 0.06)):
            drawer.add_geom(
                name=f"{name}_handle_post_{side}",
                fromto=[hx_handle, y, hz_handle, -hx, y, hz_handle],
                size=[0.007],
                **metal,
            )
        drawer.add_site(name=f"{name}_handle_site", pos=[hx_handle, 0, hz_handle], size=[0.005] * 3, rgba=[0, 0, 0, 0])
        # The drawer slides through the cabinet; cabinet-drawer contacts would only add friction noise.
        self.spec.add_exclude(bodyname1=f"{name}_cabinet", bodyname2=name)

    def compile(self) -> mujoco.MjModel:
        return self.spec.compile()
