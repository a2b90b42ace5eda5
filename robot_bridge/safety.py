"""Command safety for the policy node -- pure Python, no ROS, unit-tested on its own.

The policy node asks a :class:`SafetyGuard` before every publish. The guard owns every rule that
decides whether a command reaches the arm:

* **clamps** -- Cartesian speed limits (linear / angular norm), a per-step joint-target limit
  relative to the measured position, joint limits, gripper range;
* **workspace box** -- a velocity component that would carry the end effector out of the box is
  zeroed (components pointing back inside are kept, so the arm can always recover);
* **stale-input watchdog** -- any required input (each camera, joint states, ...) older than
  ``stale_timeout_s`` stops commanding;
* **e-stop** -- latched: once engaged it stays engaged until a reset arrives *while* the e-stop
  source reads released;
* **non-finite guard** -- a command containing NaN/inf is never published; after
  ``max_invalid_commands`` in a row the guard latches a fault (cleared like the e-stop);
* **episode time limit** -- commanding stops when the episode runs past its limit.

When commanding stops (any rule above) the guard asks for exactly one *hold* command (zero twist
/ current joint positions) -- but only if a motion command was published earlier in the episode,
since an arm that was never commanded needs nothing to stop it -- and then silence. Silence is what
MoveIt Servo and joint trajectory controllers treat as "stop" after their own command timeout; the
hold makes the stop immediate.

All times are seconds on one monotonic clock chosen by the caller (tests inject their own).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass
class SafetyConfig:
    """Limits applied to every command the policy node publishes."""

    max_linear_speed: float = 0.25
    """Largest end-effector linear speed (m/s, vector norm) a Twist command may ask for."""
    max_angular_speed: float = 0.5
    """Largest end-effector angular speed (rad/s, vector norm) a Twist command may ask for."""
    workspace_min: tuple[float, float, float] = (0.15, -0.5, 0.0)
    """Lower corner (x, y, z, metres, robot base frame) of the box the end effector must stay in."""
    workspace_max: tuple[float, float, float] = (0.85, 0.5, 0.7)
    """Upper corner (x, y, z, metres, robot base frame) of the workspace box."""
    max_joint_step: float = 0.1
    """Largest change (rad) of a joint target relative to the measured joint position per command."""
    joint_limit_margin: float = 0.02
    """Joint targets are kept this far (rad) inside the joint limits."""
    stale_timeout_s: float = 0.5
    """A required input older than this (seconds) stops commanding (watchdog)."""
    episode_time_limit_s: float = 60.0
    """Commanding stops this long (seconds) after the episode started; 0 disables the limit."""
    max_invalid_commands: int = 3
    """This many non-finite policy outputs in a row latch a fault (reset like the e-stop)."""

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError("workspace_min / workspace_max must have 3 values (x, y, z)")
        if not np.all(hi > lo):
            raise ValueError(f"workspace_max {tuple(hi)} must be above workspace_min {tuple(lo)} on every axis")
        for name in ("max_linear_speed", "max_angular_speed", "max_joint_step", "stale_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.episode_time_limit_s < 0 or self.joint_limit_margin < 0:
            raise ValueError("episode_time_limit_s and joint_limit_margin must be >= 0")
        if self.max_invalid_commands < 1:
            raise ValueError("max_invalid_commands must be >= 1")


class Verdict(str, Enum):
    """What the node must do this control tick."""

    COMMAND = "command"
    """Publish the (filtered) command."""
    HOLD = "hold"
    """Publish one hold command (zero twist / hold position), then stay silent."""
    SILENT = "silent"
    """Publish nothing."""


@dataclass
class Decision:
    verdict: Verdict
    command: np.ndarray | None = None
    """The filtered command for ``COMMAND``; ``None`` otherwise."""
    reasons: list[str] = field(default_factory=list)
    """Why commanding is blocked (empty when it is not), e.g. ``["stale: front"]``."""
    clamped: bool = False
    """True when a clamp / the workspace box changed the command."""


def clamp_norm(vector: np.ndarray, limit: float) -> np.ndarray:
    """Scale ``vector`` down (direction kept) so its Euclidean norm is at most ``limit``."""
    norm = float(np.linalg.norm(vector))
    return vector * (limit / norm) if norm > limit else vector


def limit_to_workspace(
    linear_velocity: np.ndarray, position: np.ndarray, lower: np.ndarray, upper: np.ndarray, dt: float
) -> np.ndarray:
    """Zero each velocity component that would carry ``position`` outside ``[lower, upper]`` within
    ``dt``; components pointing back inside stay, so an arm outside the box can always return."""
    velocity = np.array(linear_velocity, dtype=np.float64)
    next_position = position + velocity * dt
    leaving_low = (next_position < lower) & (velocity < 0)
    leaving_high = (next_position > upper) & (velocity > 0)
    velocity[leaving_low | leaving_high] = 0.0
    return velocity


class SafetyGuard:
    """Decides, each control tick, whether and what the policy node may publish.

    Usage (one tick)::

        guard.input_received("front", now)          # from every subscription callback
        decision = guard.decide_twist(now, linear, angular, ee_position, dt)
        # or guard.decide_joints(now, targets, measured, lower, upper)
    """

    def __init__(self, config: SafetyConfig, required_inputs: Iterable[str]) -> None:
        self.config = config
        self.required_inputs = tuple(required_inputs)
        self._last_seen: dict[str, float] = {}
        self._estop_latched = False
        self._estop_source_engaged = False
        self._fault: str | None = None
        self._invalid_in_a_row = 0
        self._episode_start: float | None = None
        self._episode_over = False
        self._moved_since_stop = False
        self._blocked_reasons: list[str] = []
        self.n_invalid = 0
        """Non-finite commands rejected so far."""
        self.n_clamped = 0
        """Commands a clamp or the workspace box changed."""

    # -- inputs -----------------------------------------------------------------------------------
    def input_received(self, name: str, now: float) -> None:
        """Record that input ``name`` (a camera, ``joint_states``, ...) arrived at ``now``."""
        self._last_seen[name] = now

    def stale_inputs(self, now: float) -> list[str]:
        """Required inputs never received or older than the watchdog limit."""
        limit = self.config.stale_timeout_s
        return [n for n in self.required_inputs if now - self._last_seen.get(n, -math.inf) > limit]

    # -- e-stop / faults ----------------------------------------------------------------------------
    def set_estop(self, engaged: bool) -> None:
        """Latest value of the e-stop source; ``True`` latches the e-stop."""
        self._estop_source_engaged = bool(engaged)
        if engaged:
            self._estop_latched = True

    def reset(self) -> bool:
        """Clear a latched e-stop / fault. Refused (returns False) while the e-stop source still
        reads engaged."""
        if self._estop_source_engaged:
            return False
        self._estop_latched = False
        self._fault = None
        self._invalid_in_a_row = 0
        return True

    @property
    def estopped(self) -> bool:
        return self._estop_latched

    @property
    def fault(self) -> str | None:
        return self._fault

    # -- episodes -------------------------------------------------------------------------------------
    def start_episode(self, now: float) -> None:
        """Restart the episode clock (and allow commanding after a time-limit stop)."""
        self._episode_start = now
        self._episode_over = False

    def blocked_reasons(self, now: float) -> list[str]:
        """Every reason commanding is blocked right now (empty list: commanding allowed)."""
        reasons = []
        if self._estop_latched:
            reasons.append("e-stop")
        if self._fault:
            reasons.append(f"fault: {self._fault}")
        reasons += [f"stale: {n}" for n in self.stale_inputs(now)]
        limit = self.config.episode_time_limit_s
        if self._episode_start is None:
            reasons.append("no episode")
        elif self._episode_over or (limit > 0 and now - self._episode_start > limit):
            self._episode_over = True
            reasons.append("episode time limit")
        return reasons

    # -- decisions -----------------------------------------------------------------------------------
    def _blocked(self, reasons: list[str]) -> Decision:
        self._blocked_reasons = reasons
        if self._moved_since_stop:
            self._moved_since_stop = False
            return Decision(Verdict.HOLD, reasons=reasons)
        return Decision(Verdict.SILENT, reasons=reasons)

    def _reject_non_finite(self, *arrays: np.ndarray | None) -> Decision | None:
        if all(a is None or np.all(np.isfinite(a)) for a in arrays):
            self._invalid_in_a_row = 0
            return None
        self.n_invalid += 1
        self._invalid_in_a_row += 1
        if self._invalid_in_a_row >= self.config.max_invalid_commands:
            self._fault = f"{self._invalid_in_a_row} non-finite policy outputs in a row"
        return self._blocked(["non-finite command"] + ([f"fault: {self._fault}"] if self._fault else []))

    def decide_twist(
        self,
        now: float,
        linear: Sequence[float],
        angular: Sequence[float] = (0.0, 0.0, 0.0),
        ee_position: Sequence[float] | None = None,
        dt: float = 0.05,
    ) -> Decision:
        """Filter a Cartesian velocity command. ``ee_position`` (latest measured, base frame)
        enables the workspace box; ``dt`` is the look-ahead (the control period).
        The returned command is ``[vx, vy, vz, wx, wy, wz]``."""
        reasons = self.blocked_reasons(now)
        if reasons:
            return self._blocked(reasons)
        lin = np.asarray(linear, dtype=np.float64).reshape(3)
        ang = np.asarray(angular, dtype=np.float64).reshape(3)
        rejected = self._reject_non_finite(lin, ang)
        if rejected is not None:
            return rejected
        out_lin = clamp_norm(lin, self.config.max_linear_speed)
        out_ang = clamp_norm(ang, self.config.max_angular_speed)
        if ee_position is not None:
            pos = np.asarray(ee_position, dtype=np.float64).reshape(3)
            if np.all(np.isfinite(pos)):
                out_lin = limit_to_workspace(
                    out_lin, pos, np.asarray(self.config.workspace_min), np.asarray(self.config.workspace_max), dt
                )
        command = np.concatenate([out_lin, out_ang])
        clamped = not np.allclose(command, np.concatenate([lin, ang]))
        self.n_clamped += int(clamped)
        self._moved_since_stop = True
        return Decision(Verdict.COMMAND, command, clamped=clamped)

    def decide_joints(
        self,
        now: float,
        targets: Sequence[float],
        measured: Sequence[float],
        lower: Sequence[float] | None = None,
        upper: Sequence[float] | None = None,
    ) -> Decision:
        """Filter absolute joint position targets: each stays within ``max_joint_step`` of the
        measured position and ``joint_limit_margin`` inside ``[lower, upper]`` (when given)."""
        reasons = self.blocked_reasons(now)
        if reasons:
            return self._blocked(reasons)
        tgt = np.asarray(targets, dtype=np.float64).ravel()
        cur = np.asarray(measured, dtype=np.float64).ravel()
        if tgt.shape != cur.shape:
            raise ValueError(f"joint targets have {tgt.size} values but {cur.size} joints are measured")
        rejected = self._reject_non_finite(tgt, cur)
        if rejected is not None:
            return rejected
        step = self.config.max_joint_step
        out = np.clip(tgt, cur - step, cur + step)
        if lower is not None and upper is not None:
            margin = self.config.joint_limit_margin
            out = np.clip(out, np.asarray(lower, float) + margin, np.asarray(upper, float) - margin)
        clamped = not np.allclose(out, tgt)
        self.n_clamped += int(clamped)
        self._moved_since_stop = True
        return Decision(Verdict.COMMAND, out, clamped=clamped)

    def decide_gripper(self, now: float, value: float) -> Decision:
        """Filter a gripper command in [-1 (open), 1 (closed)]."""
        reasons = self.blocked_reasons(now)
        if reasons:
            return Decision(Verdict.SILENT, reasons=reasons)
        if not math.isfinite(value):
            return Decision(Verdict.SILENT, reasons=["non-finite command"])
        clipped = float(np.clip(value, -1.0, 1.0))
        return Decision(Verdict.COMMAND, np.array([clipped]), clamped=clipped != value)
