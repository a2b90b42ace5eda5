"""MuJoCo twin + policy + reward monitor (+ optional recorder): the whole loop without a robot.

    ros2 launch launch/sim.launch.py policy:=runs/push_sac task:=push
    ros2 launch launch/sim.launch.py policy:=expert:reach reward_model:=oracle record:=true output:=data/ros_reach

The executables are the ``prism-*`` console scripts of the installed prism-rl package (found on
PATH, e.g. an activated venv), so ``Node`` is given no ament ``package``. Parameters come from
``params_file`` (default ``config/sim.yaml``); the arguments below override single values only when
they are set.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")

ARGUMENTS = {
    "namespace": ("prism", "ROS namespace of every node and relative topic"),
    "params_file": (os.path.join(CONFIG_DIR, "sim.yaml"), "parameter YAML for all nodes"),
    "task": ("", "sim task of the twin: reach, push, pickplace, drawer (default: from params_file)"),
    "policy": ("", "prism-train run dir, expert:<task> or python:<module>:<factory>"),
    "reward_model": ("", "reward model spec for the monitor: GRM dir, clip:..., oracle"),
    "command_interface": ("", "twist or joint_trajectory (default: from params_file)"),
    "max_linear_speed": ("", "safety: Cartesian speed limit, m/s"),
    "stale_timeout_s": ("", "safety: stale-input watchdog limit, s"),
    "episode_time_limit_s": ("", "safety: episode time limit, s"),
    "device": ("", "torch device for policy and reward model: auto, cpu, cuda"),
    "record": ("false", "also start prism-ros-record"),
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


def _nodes(context):
    namespace = context.launch_configurations["namespace"]
    params_file = context.launch_configurations["params_file"]
    record = context.launch_configurations["record"].lower() in ("true", "1", "yes")
    # without a recorder nothing may subscribe to the cameras: the twin must not wait for one
    no_recorder_to_wait_for = [] if record else [{"wait_for_subscribers": 0}]
    nodes = [
        Node(
            executable="prism-sim-robot",
            name="prism_sim_robot",
            namespace=namespace,
            output="screen",
            parameters=[
                params_file,
                _overrides(context, {"task": "task", "command_interface": "command_interface"}),
                *no_recorder_to_wait_for,
            ],
        ),
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
                        "command_interface": "command_interface",
                        "device": "device",
                        "max_linear_speed": "max_linear_speed",
                        "stale_timeout_s": "stale_timeout_s",
                        "episode_time_limit_s": "episode_time_limit_s",
                    },
                ),
            ],
        ),
        Node(
            executable="prism-reward-monitor",
            name="prism_reward_monitor",
            namespace=namespace,
            output="screen",
            parameters=[params_file, _overrides(context, {"reward_model": "model", "device": "device"})],
        ),
    ]
    if record:
        nodes.append(
            Node(
                executable="prism-ros-record",
                name="prism_ros_record",
                namespace=namespace,
                output="screen",
                parameters=[params_file, _overrides(context, {"output": "output", "mcap": "mcap"})],
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
