"""Helpers for the ROS 2 bridge tests: isolated DDS domains, node processes, a topic probe.

Nodes run as real processes (the ``prism-*`` console scripts of the venv) over real Fast DDS,
isolated per test by ``ROS_DOMAIN_ID`` and ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "launch" / "config"
BIN = Path(sys.executable).parent
NAMESPACE = "/prism"


def ros_importable() -> tuple[bool, str]:
    from robot_bridge.ros_utils import ros_available

    return ros_available()


def pytest_collection_modifyitems(config, items):
    ok, reason = ros_importable()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"rclpy / ROS 2 messages not importable ({reason}); install the `ros` extra")
    for item in items:
        if "ros" in item.keywords:
            item.add_marker(skip)


_domain_counter = [0]


@pytest.fixture
def ros_domain(monkeypatch) -> int:
    """A DDS domain id no other test (or parallel run) uses: processes started by the test and the
    in-test probe share it."""
    _domain_counter[0] += 1
    # Fast DDS uses UDP ports 7400 + 250 * domain (+ offsets): domains above ~101 land in Linux's
    # ephemeral port range (32768-60999) and can collide with other sockets, so stay in 1..100.
    domain = 1 + (os.getpid() * 7 + _domain_counter[0] * 13) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    return domain


class Processes:
    """Starts ``prism-*`` executables as real processes; stops (SIGINT, then SIGKILL) at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(
        self,
        name: str,
        executable: str,
        params: dict | None = None,
        params_file: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> subprocess.Popen:
        cmd = [str(BIN / executable) if (BIN / executable).exists() else executable]
        cmd += extra_args or []
        cmd += ["--ros-args", "-r", f"__ns:={NAMESPACE}"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        for key, value in (params or {}).items():
            if isinstance(value, (list, tuple)):
                value = "[" + ",".join(str(v) for v in value) + "]"
            elif isinstance(value, bool):
                value = str(value).lower()
            elif value == "":
                value = "''"  # rcl rejects `name:=` with nothing after it
            cmd += ["-p", f"{key}:={value}"]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                [str(REPO), str(REPO / "tests" / "robot_bridge"), os.environ.get("PYTHONPATH", "")]
            ),
            PYTHONUNBUFFERED="1",
        )
        log = open(self.tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp_path, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start_camera(
        self, name: str = "camera", cameras=("front",), rate_hz: float = 30.0, size: int = 64
    ) -> subprocess.Popen:
        """A separate camera-driver process publishing ``<ns>/<camera>/image_raw``."""
        script = Path(__file__).with_name("bridge_camera_publisher.py")
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        log = open(self.tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, str(script), NAMESPACE, ",".join(cameras), str(rate_hz), str(size)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def kill(self, name: str) -> None:
        """Hard kill (a crashed driver / unplugged camera)."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(5)

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=10)


@pytest.fixture
def processes(tmp_path, ros_domain):
    procs = Processes(tmp_path)
    yield procs
    procs.close()


class Probe:
    """An in-test rclpy node that records every message on the topics it is asked to watch, with
    the receive time (``time.monotonic()``)."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list[tuple[float, object]]] = defaultdict(list)
        self.publishers: dict[str, object] = {}

    def watch(self, topic: str, msg_type, qos=10) -> None:
        self.node.create_subscription(
            msg_type, topic, lambda m, t=topic: self.messages[t].append((time.monotonic(), m)), qos
        )

    def publisher(self, topic: str, msg_type, qos=10):
        if topic not in self.publishers:
            self.publishers[topic] = self.node.create_publisher(msg_type, topic, qos)
        return self.publishers[topic]

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def spin_until(self, predicate, timeout: float, processes: Processes | None = None) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
            if processes is not None:
                processes.assert_alive()
        return predicate()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


@pytest.fixture
def probe(ros_domain):
    p = Probe(ros_domain)
    yield p
    p.close()
