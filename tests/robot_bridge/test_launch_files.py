"""The launch files and their parameter YAML, checked without ROS 2 ``launch`` (not installable here):

* statically (ast): every executable is a console script of this package, every launch argument
  used is declared (and every declared one used), every parameter override and YAML key is a real
  parameter of the node it goes to, every parameter file named exists;
* by running ``generate_launch_description`` and the node-building function against stand-in
  ``launch`` / ``launch_ros`` classes that record what would be started;
* with the real ``launch`` API when it is importable (a robot machine).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import tomllib
import yaml

from robot_bridge.node_config import build_config, parameter_specs
from robot_bridge.policy_node import PolicyNodeConfig
from robot_bridge.recorder import RecorderConfig
from robot_bridge.reward_monitor import RewardMonitorConfig
from robot_bridge.sim_robot import SimRobotConfig

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
LAUNCH_FILES = sorted(LAUNCH.glob("*.launch.py"))
CONFIG_FILES = sorted((LAUNCH / "config").glob("*.yaml"))
EXECUTABLE_CONFIG = {
    "prism-sim-robot": (SimRobotConfig, "prism_sim_robot"),
    "prism-policy": (PolicyNodeConfig, "prism_policy"),
    "prism-reward-monitor": (RewardMonitorConfig, "prism_reward_monitor"),
    "prism-ros-record": (RecorderConfig, "prism_ros_record"),
}
NODE_CONFIG = {node: cls for cls, node in EXECUTABLE_CONFIG.values()}


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def fields(cls) -> set[str]:
    return {name for name, *_ in parameter_specs(cls)}


def test_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"sim.launch.py", "robot.launch.py"}
    assert {p.name for p in CONFIG_FILES} >= {"sim.yaml", "franka_fr3.yaml", "ur5e.yaml"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_static(path):
    tree = ast.parse(path.read_text())
    declared: set[str] = set()
    used: set[str] = set()
    executables: list[tuple[str, dict]] = []
    yaml_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ARGUMENTS" for t in node.targets):
            declared |= {k.value for k in node.value.keys}
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "DeclareLaunchArgument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            declared.add(node.args[0].value)
        # context.launch_configurations["x"] / .get("x", ...)
        if isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) == "launch_configurations":
            if isinstance(node.slice, ast.Constant):
                used.add(node.slice.value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_truthy":
            used.add(node.args[1].value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in node.keywords}
            exe = kw["executable"].value
            overrides: dict[str, str] = {}
            for sub in ast.walk(kw["parameters"]):
                if isinstance(sub, ast.Call) and getattr(sub.func, "id", None) == "_overrides":
                    overrides = {k.value: v.value for k, v in zip(sub.args[1].keys, sub.args[1].values)}
            used |= set(overrides)
            executables.append((exe, overrides))
            assert "package" not in kw, "the prism-* executables are console scripts found on PATH"
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.endswith(".yaml")
            and " " not in node.value
        ):
            yaml_names.add(node.value)
    assert executables, f"{path.name} starts no Node"
    scripts = console_scripts()
    for exe, overrides in executables:
        assert exe in scripts, f"{path.name}: executable {exe!r} is not a console script in pyproject.toml"
        cls = EXECUTABLE_CONFIG[exe][0]
        unknown = set(overrides.values()) - fields(cls)
        assert not unknown, f"{path.name}: {exe} has no parameters {unknown}"
    assert used <= declared, f"{path.name}: arguments used but not declared: {used - declared}"
    assert declared <= used, f"{path.name}: arguments declared but never used: {declared - used}"
    if ".yaml" in yaml_names:  # config/<arm>.yaml: the default preset and every preset listed must exist
        yaml_names.discard(".yaml")
        arguments = next(
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "ARGUMENTS" for t in n.targets)
        )
        arm = next(v for k, v in zip(arguments.keys, arguments.values) if k.value == "arm")
        default, description = arm.elts[0].value, arm.elts[1].value
        presets = {default} | {
            w.strip(",()") for w in description.split() if (LAUNCH / "config" / f"{w.strip(',()')}.yaml").exists()
        }
        assert len(presets) >= 2, f"{path.name}: arm presets {presets}"
        yaml_names |= {f"{p}.yaml" for p in presets}
    for name in yaml_names:
        assert (LAUNCH / "config" / name).is_file(), f"{path.name} names missing parameter file {name}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_parameter_files_match_node_parameters(path):
    data = yaml.safe_load(path.read_text())
    assert data, f"{path.name} is empty"
    for key, section in data.items():
        node = key.split("/")[-1]
        assert node in NODE_CONFIG, f"{path.name}: section {key!r} is for no prism node"
        params = section["ros__parameters"]
        unknown = set(params) - fields(NODE_CONFIG[node])
        assert not unknown, f"{path.name}: {node} has no parameters {sorted(unknown)}"
        for value in params.values():
            assert value != [], f"{path.name}: empty lists cannot be typed by the ROS YAML parser"
        build_config(NODE_CONFIG[node], params)  # every value has the right type / allowed value


# --------------------------------------------------------------------------------------------
# Run the launch files against recording stand-ins for launch / launch_ros.
# --------------------------------------------------------------------------------------------
class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _load_with_standins(path: Path, monkeypatch):
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Recorder,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorder,), {})
    for name, module in {
        "launch": launch,
        "launch.actions": actions,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(module, **arguments):
    description = module.generate_launch_description()
    items = description.args[0]
    configurations = {
        d.args[0]: d.kwargs["default_value"] for d in items if type(d).__name__ == "DeclareLaunchArgument"
    }
    configurations.update(arguments)
    opaque = next(i for i in items if type(i).__name__ == "OpaqueFunction")
    context = types.SimpleNamespace(launch_configurations=configurations)
    return opaque.kwargs["function"](context)


def test_sim_launch_builds_the_loop(monkeypatch, tmp_path):
    module = _load_with_standins(LAUNCH / "sim.launch.py", monkeypatch)
    nodes = _run(module)
    assert [n.kwargs["executable"] for n in nodes] == ["prism-sim-robot", "prism-policy", "prism-reward-monitor"]
    params_file, overrides = nodes[1].kwargs["parameters"]
    assert Path(params_file).is_file() and overrides == {}  # unset arguments leave the YAML alone
    nodes = _run(module, record="true", output=str(tmp_path / "ds"), policy="expert:push", reward_model="oracle")
    assert nodes[-1].kwargs["executable"] == "prism-ros-record"
    assert nodes[-1].kwargs["parameters"][1] == {"output": str(tmp_path / "ds")}
    assert nodes[1].kwargs["parameters"][1] == {"policy": "expert:push"}
    assert nodes[2].kwargs["parameters"][1] == {"model": "oracle"}
    assert all(n.kwargs["namespace"] == "prism" for n in nodes)
    # sim.yaml holds the twin's first episode for a recorder; without one nothing would come
    twin_yaml = yaml.safe_load(Path(params_file).read_text())["/**/prism_sim_robot"]["ros__parameters"]
    assert twin_yaml["wait_for_subscribers"] == 1 and twin_yaml["wait_for_commander"] is True
    assert nodes[0].kwargs["parameters"][2:] == []
    assert _run(module)[0].kwargs["parameters"][2:] == [{"wait_for_subscribers": 0}]


def test_robot_launch_per_arm(monkeypatch):
    module = _load_with_standins(LAUNCH / "robot.launch.py", monkeypatch)
    with pytest.raises(RuntimeError, match="policy:="):
        _run(module)
    nodes = _run(module, policy="/runs/x", arm="ur5e", max_joint_step="0.02")
    assert [n.kwargs["executable"] for n in nodes] == ["prism-policy", "prism-reward-monitor"]
    params_file, overrides = nodes[0].kwargs["parameters"]
    assert params_file.endswith("ur5e.yaml") and overrides == {"policy": "/runs/x", "max_joint_step": "0.02"}
    cfg = build_config(
        PolicyNodeConfig,
        {**yaml.safe_load(Path(params_file).read_text())["/**/prism_policy"]["ros__parameters"], **overrides},
    )
    assert cfg.trajectory_topic == "/scaled_joint_trajectory_controller/joint_trajectory"
    assert cfg.command_interface == "joint_trajectory" and cfg.max_joint_step == 0.02
    franka = _run(module, policy="/runs/x", record="true", monitor="false")
    assert [n.kwargs["executable"] for n in franka] == ["prism-policy", "prism-ros-record"]
    assert franka[0].kwargs["parameters"][0].endswith("franka_fr3.yaml")
    with pytest.raises(RuntimeError, match="not found"):
        _run(module, policy="/runs/x", arm="kuka")


def test_launch_files_with_real_launch_api():
    if importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip(
            "ROS 2 `launch`/`launch_ros` are not installable from the registry here; "
            "on a robot machine this test loads the launch files with the real API"
        )
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    for path in LAUNCH_FILES:
        description = PythonLaunchDescriptionSource(str(path)).get_launch_description(None)
        assert description.get_launch_arguments()
