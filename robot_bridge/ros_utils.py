"""The only place (with the node modules) that imports rclpy: import check, parameters, messages,
QoS, and the ``main`` runner shared by every ``prism-*`` node.

The registry's ROS 2 wheels (``ros-rclpy`` etc., the ``ros`` extra) need their shared libraries on
``LD_LIBRARY_PATH``; their ``ros_wheels_bootstrapper`` does that by re-executing every Python start
of the venv once (a ``.pth`` hook), so console scripts work as they are. On a robot machine with a
system ROS 2, ``source /opt/ros/<distro>/setup.bash`` instead.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from episodes.cli_errors import INPUT_ERRORS, run_cli
from robot_bridge.images import rgb_from_buffer
from robot_bridge.node_config import build_config, help_text, parameter_specs

ROS_MISSING_HELP = (
    "ROS 2 Python packages are not importable ({error}). Install the `ros` extra "
    "(`pip install 'prism-rl[ros]'`: ros-rclpy, ros-rmw-fastrtps-cpp and the message wheels) or "
    "source a system ROS 2 (`source /opt/ros/<distro>/setup.bash`) before starting the node."
)


def ros_available() -> tuple[bool, str]:
    """(True, "") when rclpy and our message packages import; else (False, reason)."""
    try:
        import rclpy  # noqa: F401
        from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: F401
        from sensor_msgs.msg import Image, JointState  # noqa: F401
        from std_msgs.msg import Bool, Float32  # noqa: F401
        from trajectory_msgs.msg import JointTrajectory  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a missing shared library
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def require_ros() -> None:
    ok, error = ros_available()
    if not ok:
        raise SystemExit(ROS_MISSING_HELP.format(error=error))


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------
def declare_config(node, cls: type):
    """Declare every field of the config dataclass ``cls`` as a ROS parameter (description from
    the field docstring) and return the dataclass filled from the parameter values."""
    from rcl_interfaces.msg import ParameterDescriptor  # ROS (optional): only a live node needs it

    values: dict[str, Any] = {}
    for name, _kind, default, doc in parameter_specs(cls):
        # dynamic typing: `-p rate:=20` must work for a float field; we coerce (and check) ourselves.
        descriptor = ParameterDescriptor(description=doc, dynamic_typing=True)
        ros_default = list(default) if isinstance(default, tuple) else default
        if isinstance(ros_default, list) and not ros_default:
            ros_default = None  # rclpy cannot infer the type of an empty list
        param = node.declare_parameter(name, ros_default, descriptor)
        if param.value is not None:
            values[name] = param.value
    return build_config(cls, values)


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------
def image_to_numpy(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 (H, W, 3) RGB."""
    return rgb_from_buffer(msg.data, msg.height, msg.width, msg.encoding, msg.step)


def numpy_to_image(image: np.ndarray, stamp, frame_id: str):
    """uint8 (H, W, 3) RGB -> ``sensor_msgs/Image`` (rgb8)."""
    from sensor_msgs.msg import Image  # ROS (optional): only a live node needs it

    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    # array.array assignment is the fast path for uint8[] fields in rclpy
    msg.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return msg


def stamp_to_seconds(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_duration(seconds: float):
    from builtin_interfaces.msg import Duration  # ROS (optional): only a live node needs it

    sec = int(seconds)
    return Duration(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))


def sensor_qos(depth: int = 2):
    """Best-effort, keep-last QoS for camera streams (``qos_profile_sensor_data`` with a small
    depth: the freshest frame matters, not every frame)."""
    from rclpy.qos import QoSProfile, qos_profile_sensor_data  # ROS (optional): only a live node needs it

    return QoSProfile(
        history=qos_profile_sensor_data.history,
        depth=depth,
        reliability=qos_profile_sensor_data.reliability,
        durability=qos_profile_sensor_data.durability,
    )


def latched_qos():
    """Reliable + transient-local, depth 1: late joiners get the last message (episode starts)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # ROS (optional): only a live node needs it

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def camera_topic_map(cameras: Sequence[str], overrides: Sequence[str]) -> dict[str, str]:
    """camera -> topic. Default ``<camera>/image_raw`` (relative: inside the node namespace);
    ``overrides`` entries are ``camera=topic`` (e.g. ``front=/camera/camera/color/image_raw``)."""
    topics = {cam: f"{cam}/image_raw" for cam in cameras}
    for entry in overrides:
        if "=" not in entry:
            raise ValueError(f"camera_topics entry {entry!r} must look like camera=/topic/name")
        cam, topic = (s.strip() for s in entry.split("=", 1))
        if cam not in topics:
            raise ValueError(f"camera_topics names camera {cam!r}, which is not in cameras {list(cameras)}")
        topics[cam] = topic
    return topics


def monotonic() -> float:
    """The clock the safety guard and staleness checks use (immune to wall-clock jumps)."""
    return time.monotonic()


# ---------------------------------------------------------------------------------------------
# the shared main()
# ---------------------------------------------------------------------------------------------
def run_node(
    make_node: Callable[[], Any],
    config_cls: type,
    program: str,
    node_name: str,
    summary: str,
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of every ``prism-*`` node: ``--help`` (without starting ROS), rclpy init with
    the ROS arguments, ``make_node()`` -> a wrapper with ``.node`` (the rclpy Node), ``.close()``
    and optionally ``.finished``; spin until Ctrl-C / SIGTERM / finished, then ``close()``
    (recorders flush there). Bad input (a missing or unparsable ``--params-file``, a bad parameter
    value) is one line on stderr and exit 2 (``--debug``: the traceback)."""
    argv = list(sys.argv if argv is None else argv)
    return run_cli(
        program, lambda args: _run_node(make_node, config_cls, program, node_name, summary, [argv[0], *args]), argv[1:]
    )


def params_files(argv: Sequence[str]) -> list[str]:
    """The files named by ``--params-file FILE`` after ``--ros-args``."""
    ros_args = argv[argv.index("--ros-args") + 1 :] if "--ros-args" in argv else []
    return [ros_args[i + 1] for i, arg in enumerate(ros_args[:-1]) if arg == "--params-file"]


def rcl_init_error(exc: Exception) -> str:
    """rcl's init error without its C source locations (``, at /src/rcl/arguments.c:415``)."""
    text = re.sub(r",? at \S+\.c:\d+", "", str(exc)).replace("failed to initialize rcl: ", "")
    if type(exc).__name__ == "UnknownROSArgsError":  # its message is only the list of arguments
        text = f"unknown ROS arguments {text} (see --help)"
    return " ".join(text.split())


@contextmanager
def stderr_held_back() -> Iterator[None]:
    """Hold back what C code writes to stderr (fd 2) in the block, and let it through only if the
    block succeeds: rcl logs its own line before refusing bad ROS arguments, and the refusal is
    reported once, in our one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))


def _run_node(make_node, config_cls: type, program: str, node_name: str, summary: str, argv: list[str]) -> int:
    user_args = argv[1 : argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in user_args or "--help" in user_args:
        sys.stdout.write(help_text(config_cls, program, node_name, summary))
        return 0
    if user_args:
        sys.stderr.write(
            f"{program}: unexpected arguments {user_args}; options are ROS parameters: "
            f"{program} --ros-args -p name:=value (see --help)\n"
        )
        return 2
    for path in params_files(argv):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--params-file {path}: no such file")
    require_ros()
    import rclpy  # ROS (optional): only a live node needs it
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # Our own SIGINT/SIGTERM handling: finish the current callback, then close() (recorders write
    # their files) while the context is still valid, then shut down.
    try:
        with stderr_held_back():
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rcl refuses the ROS arguments: an unparsable params file, a bad -p
        raise ValueError(rcl_init_error(exc)) from exc
    stop = {"requested": False}

    def _terminate(signum, _frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        wrapper = make_node()
    except INPUT_ERRORS:  # bad parameters / paths: run_cli reports them in one line
        rclpy.try_shutdown()
        raise
    executor = SingleThreadedExecutor()
    executor.add_node(wrapper.node)
    try:
        while rclpy.ok() and not stop["requested"] and not getattr(wrapper, "finished", False):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            wrapper.close()
        finally:
            executor.remove_node(wrapper.node)
            wrapper.node.destroy_node()
            rclpy.try_shutdown()
    return 0
