"""Policy + reward monitor + recorder against a real arm (its driver, MoveIt Servo or trajectory
controller and cameras already running).

    ros2 launch launch/robot.launch.py arm:=franka_fr3 policy:=runs/push_pixels reward_model:=ckpt/grm
    ros2 launch launch/robot.launch.py arm:=ur5e policy:=runs/reach_joint record:=true output:=data/ur_session

``arm`` picks ``config/<arm>.yaml`` (topics, joint names, limits of franka_ros2 + MoveIt Servo or
ur_robot_driver); ``params_file`` replaces it entirely. The executables are the ``prism-*`` console
scripts of the installed prism-rl package (found on PATH), so ``Node`` is given no ament ``package``.
Arguments override single parameters only when set. Start with the e-stop topic wired
(``/<namespace>/estop``, std_msgs/Bool) and conservative limits.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")

ARGUMENTS = {
    "namespace": ("prism", "ROS namespace of the prism nodes (estop, episode and reward topics)"),
    "arm": ("franka_fr3", "parameter preset: franka_fr3 (franka_ros2 + MoveIt Servo) or ur5e (ur_robot_driver)"),
    "params_file": ("", "parameter YAML replacing config/<arm>.yaml"),
    "policy": ("", "prism-train run directory (required)"),
    "reward_model": ("", "reward model spec for the monitor: GRM checkpoint dir, clip:..., vlm:..."),
    "task": ("", "task instruction for the reward model and recorder"),
    "camera_topics": ("", "camera=topic pairs, comma separated (default: from the preset)"),
    "command_interface": ("", "twist (MoveIt Servo) or joint_trajectory (default: from the preset)"),
    "max_linear_speed": ("", "safety: Cartesian speed limit, m/s"),
    "max_joint_step": ("", "safety: largest joint-target step per command, rad"),
    "stale_timeout_s": ("", "safety: stale-input watchdog limit, s"),
    "episode_time_limit_s": ("", "safety: episode time limit, s"),
    "device": ("", "torch device for policy and reward model: auto, cpu, cuda"),
    "monitor": ("true", "start prism-reward-monitor"),
    "record": ("false", "start prism-ros-record"),
    "output": ("", "LeRobot v3 dataset directory the recorder creates"),
    "mcap": ("", "rosbag2 MCAP directory the recorder creates"),
}


def _overrides(context, mapping):
    """{parameter: value} for every launch argument in ``mapping`` that was given a value."""
    values = {}
    for argument, parameter in mapping.items():
        value = context.launch_configurations.get(argument, "")
        if value != "":
            values[parameter] = value
    return values


def _truthy(context, name):
    return context.launch_configurations[name].lower() in ("true", "1", "yes")


def _nodes(context):
    namespace = context.launch_configurations["namespace"]
    params_file = context.launch_configurations["params_file"] or os.path.join(
        CONFIG_DIR, context.launch_configurations["arm"] + ".yaml"
    )
    if not os.path.isfile(params_file):
        raise RuntimeError(f"parameter file {params_file!r} not found (arm presets: franka_fr3, ur5e)")
    if not context.launch_configurations["policy"]:
        raise RuntimeError("policy:=<prism-train run directory> is required")
    nodes = [
        Node(
            executable="prism-policy",
            name="prism_policy",
            namespace=namespace,
            output="screen",
            parameters=[
                params_file,
                _overrides(
                    context,
                    {
                        "policy": "policy",
                        "task": "task",
                        "camera_topics": "camera_topics",
                        "command_interface": "command_interface",
                        "device": "device",
                        "max_linear_speed": "max_linear_speed",
                        "max_joint_step": "max_joint_step",
                        "stale_timeout_s": "stale_timeout_s",
                        "episode_time_limit_s": "episode_time_limit_s",
                    },
                ),
            ],
        ),
    ]
    if _truthy(context, "monitor"):
        nodes.append(
            Node(
                executable="prism-reward-monitor",
                name="prism_reward_monitor",
                namespace=namespace,
                output="screen",
                parameters=[
                    params_file,
                    _overrides(
                        context,
                        {"reward_model": "model", "task": "task", "camera_topics": "camera_topics", "device": "device"},
                    ),
                ],
            )
        )
    if _truthy(context, "record"):
        nodes.append(
            Node(
                executable="prism-ros-record",
                name="prism_ros_record",
                namespace=namespace,
                output="screen",
                parameters=[
                    params_file,
                    _overrides(
                        context, {"output": "output", "mcap": "mcap", "task": "task", "camera_topics": "camera_topics"}
                    ),
                ],
            )
        )
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_nodes)]
    )
