"""The one config of ``prism-train``: a dataclass (tyro CLI) that also loads from rl_zoo3-style YAML.

Precedence: dataclass defaults < ``--config FILE.yaml`` < explicit command-line flags. The YAML
holds any field of :class:`TrainConfig` at the top level; SB3 constructor arguments go under
``hyperparams:`` (as in rl_zoo3's per-algo files), e.g.::

    algo: sac
    task: push
    reward: oracle
    steps: 200000
    hyperparams:
      learning_rate: 0.0003
      batch_size: 256
      learning_starts: 1000
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ALGOS = ("sac", "ppo")


@dataclass
class TrainConfig:
    """Train an SB3 policy in a prism sim task with a policy-invariant shaped reward."""

    task: str = "push"
    """Sim task: reach, push, pickplace, drawer (or an env id such as prism/PandaPush-v0)."""
    algo: Literal["sac", "ppo"] = "sac"
    """RL algorithm (stable-baselines3)."""
    reward: str = "oracle"
    """Reward: sparse | oracle | naive-delta[:SPEC] | oracle-model | grm:CKPT | clip:... | vlm:...
    (policies/shaping.py explains each)."""
    obs: Literal["state", "pixels"] = "state"
    """Policy input: the state vector, or state + camera images (SB3 MultiInputPolicy)."""
    cameras: str = "front"
    """Comma-separated cameras the policy sees when --obs pixels."""
    reward_cameras: str = ""
    """Comma-separated cameras fed to the reward model ('' = the model's own camera list)."""
    image_size: int = 64
    """Square render size (pixels) for policy and reward-model cameras."""
    action_mode: Literal["ee_delta", "joint"] = "ee_delta"
    """Sim action space: end-effector deltas + gripper, or joint targets + gripper."""
    max_episode_steps: int | None = None
    """Episode time limit in control steps (None: the task's default)."""
    n_envs: int = 4
    """Parallel envs (one batched reward-model call per step covers all of them)."""
    vec_env: Literal["dummy", "subproc"] = "dummy"
    """Vectorisation: in-process (dummy) or one process per env (subproc, forkserver)."""
    steps: int = 50_000
    """Total env steps (summed over envs)."""
    seed: int = 0
    """Seed for the envs (env i gets seed + i), the learner and evaluation (seed + 10_000)."""
    device: str = "auto"
    """Torch device for the learner and the reward model: auto, cpu, cuda, cuda:1, ..."""
    out: Path = Path("runs/train")
    """Run directory: config.yaml, model.zip, checkpoints/, tb/, eval/."""
    config: Path | None = None
    """YAML file with any of these fields (and hyperparams:), applied before command-line flags."""
    resume: bool = False
    """Continue from the newest checkpoint in --out up to --steps total."""
    gamma: float = 0.98
    """Discount of the learner -- and of the shaping term γΦ(s'), which must be the same."""
    success_reward: float = 1.0
    """r_success paid on a successful transition."""
    success_source: Literal["env", "model"] = "env"
    """Where r_success comes from: the env's is_success, or the reward model (Φ ≥ 1 − δ)."""
    success_delta: float = 0.05
    """δ of the model success rule Φ ≥ 1 − δ."""
    fusion: str = "fused"
    """Progress fusion of the tracker: fused, mean, incremental, forward, backward."""
    query_every: int = 1
    """Query the reward model every k steps and hold Φ in between (episode ends always query)."""
    normalize_reward: bool = False
    """VecNormalize the shaped reward. Breaks exact telescoping (policy invariance): off by default."""
    net_arch: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the policy and value networks."""
    hyperparams: dict[str, int | float | bool | str] = field(default_factory=dict)
    """Extra SB3 constructor arguments (learning_rate, batch_size, n_steps, ...)."""
    eval_every: int = 5_000
    """Evaluate on true success every this many env steps (0: never, only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    video_every: int = 4
    """Write a rollout video every this many evaluations (0: never)."""
    checkpoint_every: int = 10_000
    """Save a checkpoint every this many env steps (0: only at the end)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""
    torch_threads: int = 1
    """Torch CPU threads (0: torch's default). 1 is fastest for small MLPs on shared cores:
    more threads oversubscribe them (measured 8x slower SAC updates with 2 threads under load)."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.config is not None:
            self.config = Path(self.config)
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.obs not in ("state", "pixels"):
            raise ValueError(f"obs must be 'state' or 'pixels', got {self.obs!r}")
        for name in ("n_envs", "steps", "image_size", "query_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "video_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.obs == "pixels" and not self.cameras.strip():
            raise ValueError("--obs pixels needs --cameras (e.g. front or front,wrist)")
        self.net_arch = tuple(int(x) for x in self.net_arch)
        self.hyperparams = dict(self.hyperparams)

    # -- YAML ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d["config"] = str(self.config) if self.config is not None else None
        d["net_arch"] = list(self.net_arch)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; valid fields: {sorted(names)}")
        if "hyperparams" in data and not isinstance(data["hyperparams"], dict):
            raise ValueError(f"{source}: 'hyperparams' must be a mapping of SB3 constructor arguments")
        kwargs = dict(data)
        if "net_arch" in kwargs and kwargs["net_arch"] is not None:
            kwargs["net_arch"] = tuple(kwargs["net_arch"])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_train_config(argv: list[str] | None = None, description: str | None = None) -> TrainConfig:
    """CLI parsing with YAML defaults: ``--config FILE`` first, explicit flags override it."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    default = TrainConfig()
    path = _flag_value(argv, "--config")
    out = _flag_value(argv, "--out")
    if path is None and "--resume" in argv and out is not None and (Path(out) / "config.yaml").is_file():
        path = str(Path(out) / "config.yaml")  # resuming: the run's own config is the base
    if path is not None:
        default = TrainConfig.from_yaml(path)
        default.config = Path(path)
    return tyro.cli(TrainConfig, args=argv, default=default, description=description)
