"""The one config of ``prism-train``: a dataclass (tyro CLI) that also loads from rl_zoo3-style YAML.

Precedence: dataclass defaults < the task preset (``policies/configs/<algo>_<task>.yaml``, used when
no ``--config`` is given) < ``--config FILE.yaml`` < explicit command-line flags. The YAML files in
``policies/configs/`` (package data) are the one source of the shipped settings: the tuned task
presets, the per-algo SB3 hyperparameters under every run (``<algo>_defaults.yaml``) and recipes
for ``--config``. A YAML holds any field of :class:`RLTrainConfig` at the top level; SB3 constructor
arguments go under ``hyperparams:`` (as in rl_zoo3's per-algo files), e.g.::

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
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

import sim
from episodes.cli_errors import check_numeric_fields, parse_config

ALGOS = ("sac", "ppo")

FIELD_RANGES: dict[str, str] = {
    "image_size": "[8, 4096]",
    "max_episode_steps": "[1, inf)",
    "n_envs": "[1, inf)",
    "steps": "[1, inf)",
    "seed": "[0, 2147483647]",
    "gamma": "(0, 1]",
    "success_delta": "[0, 1)",
    "query_every": "[1, inf)",
    "obs_stats_steps": "[0, inf)",
    "eval_every": "[0, inf)",
    "eval_episodes": "[1, inf)",
    "video_every": "[0, inf)",
    "checkpoint_every": "[0, inf)",
    "checkpoint_minutes": "[0, inf)",
    "demo_episodes": "[0, inf)",
    "demo_fraction": "[0, 1)",
    "bc_weight": "[0, inf)",
    "demo_noise": "[0, inf)",
    "demo_max_progress": "(0, 1]",
    "torch_threads": "[0, inf)",
    "ray_workers": "[1, inf)",
}
"""Allowed interval of each numeric field of :class:`RLTrainConfig` (every one is also checked finite)."""

INT_FIELDS = (
    "image_size",
    "max_episode_steps",
    "n_envs",
    "steps",
    "seed",
    "query_every",
    "obs_stats_steps",
    "eval_every",
    "eval_episodes",
    "video_every",
    "checkpoint_every",
    "demo_episodes",
    "torch_threads",
    "ray_workers",
)


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


HYPERPARAM_RULES: dict[str, tuple[bool, Callable[[float], bool], str]] = {
    # name: (integer?, test, what the test means)
    "learning_rate": (False, _positive, "> 0"),
    "buffer_size": (True, _positive, ">= 1"),
    "batch_size": (True, _positive, ">= 1"),
    "learning_starts": (True, _non_negative, ">= 0"),
    "tau": (False, lambda v: 0 < v <= 1, "in (0, 1]"),
    "train_freq": (True, _positive, ">= 1"),
    "gradient_steps": (True, lambda v: v == -1 or v >= 1, "-1 (one per env step) or >= 1"),
    "target_update_interval": (True, _positive, ">= 1"),
    "n_steps": (True, _positive, ">= 1"),
    "n_epochs": (True, _positive, ">= 1"),
    "gae_lambda": (False, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "clip_range": (False, _positive, "> 0"),
    "clip_range_vf": (False, _positive, "> 0"),
    "vf_coef": (False, _non_negative, ">= 0"),
    "max_grad_norm": (False, _positive, "> 0"),
    "target_kl": (False, _positive, "> 0"),
    "sde_sample_freq": (True, lambda v: v >= -1, ">= -1"),
    "stats_window_size": (True, _positive, ">= 1"),
}
"""Checks of the SB3 constructor arguments that are numbers (``ent_coef`` and ``target_entropy`` may
also be ``auto``; any other numeric hyperparameter must at least be finite). None passes where SB3
accepts it (``clip_range_vf``, ``target_kl``)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_hyperparams(hyperparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``hyperparams.<key>`` for a non-finite or out-of-range value."""
    for key, value in hyperparams.items():
        name = f"hyperparams.{key}"
        if key in ("ent_coef", "target_entropy") and isinstance(value, str):
            if value == "auto":
                continue
            number = value.removeprefix("auto_") if key == "ent_coef" else value
            try:
                ok = math.isfinite(float(number)) and float(number) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{name}: must be a number, 'auto' or 'auto_<initial value > 0>', got {value!r}")
            continue
        if value is None or not _is_number(value):
            if key in HYPERPARAM_RULES and value is not None:
                raise ValueError(f"{name}: must be a number, got {value!r}")
            continue
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be a finite number, got {value}")
        if key == "ent_coef" and value < 0:
            raise ValueError(f"{name}: must be >= 0, got {value}")
        if key in HYPERPARAM_RULES:
            integer, test, meaning = HYPERPARAM_RULES[key]
            if integer and value != int(value):
                raise ValueError(f"{name}: must be a whole number, got {value}")
            if not test(value):
                raise ValueError(f"{name}: must be {meaning}, got {value}")


PRESET_DIR = Path(__file__).resolve().with_name("configs")
"""The shipped YAML settings (package data, pyproject.toml): ``<algo>_<task>.yaml`` is a task's tuned
preset, ``<algo>_defaults.yaml`` the SB3 hyperparameters under every run of that algo, and the others
are recipes to pass as ``--config``. Why each value was chosen is said beside it there."""


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (``{}`` for an empty file); a missing file is named relative
    to the working directory, and invalid YAML or a non-mapping is a ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
        what = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(f"config file {path} {what}{where}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of RLTrainConfig fields, got {type(data).__name__}")
    return data


def task_preset(task: str, algo: str = "sac") -> dict[str, Any]:
    """The tuned preset of ``(task, algo)`` read from ``PRESET_DIR/<algo>_<task>.yaml`` (``{}`` when there is
    none). ``task`` may be any name ``sim.resolve_task`` accepts (``reach``, ``prism/PandaReach-v0``)."""
    try:
        short = sim.resolve_task(task)
    except ValueError:
        return {}  # an unknown task has no preset; building its env reports the valid names
    path = PRESET_DIR / f"{algo}_{short}.yaml"
    return read_yaml_mapping(path) if path.is_file() else {}


def algo_hyperparams(algo: str) -> dict[str, Any]:
    """The SB3 hyperparameters under every run of ``algo`` (``PRESET_DIR/<algo>_defaults.yaml``); a run's
    own ``hyperparams`` override them key by key."""
    return RLTrainConfig.from_yaml(PRESET_DIR / f"{algo}_defaults.yaml").hyperparams


@dataclass
class RLTrainConfig:
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
    vec_env: Literal["dummy", "subproc", "ray"] = "dummy"
    """Vectorisation: in-process (dummy), one process per env (subproc, forkserver) or Ray rollout
    actors (ray: --ray-workers actors share the envs; policies/ray_rollouts.py)."""
    ray_workers: int = 2
    """--vec-env ray: rollout actors the envs are split among."""
    ray_address: str | None = None
    """Ray cluster for --vec-env ray / --async-reward / serve: rewards (auto: a local `ray start --head`);
    none: Ray starts embedded in this process."""
    async_reward: bool = False
    """SAC: label rewards asynchronously in a Ray actor (env stepping never waits for the reward model;
    transitions are sampled once labelled; same shaped rewards; policies/async_relabel.py)."""
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
    """r_success paid on a successful transition. Any value keeps the shaping policy-invariant; where success
    ends the episode the successful step pays r_success − Φ(s), so 1.0 adds little to the progress already
    paid (policies/shaping.py; README: the prepush recipe with 2.0)."""
    success_source: Literal["env", "model"] = "env"
    """Where r_success comes from: the env's is_success, or the reward model (Φ ≥ 1 − δ)."""
    success_delta: float = 0.05
    """δ of the model success rule Φ ≥ 1 − δ."""
    fusion: str = "fused"
    """Progress fusion of the tracker: fused, mean, incremental, forward, backward."""
    query_every: int = 1
    """Query the reward model every k steps and hold Φ in between (episode ends always query)."""
    normalize_obs: bool = True
    """Normalise the policy's state input by fixed mean/std measured under random actions before
    training (stored inside model.zip; the reward is untouched, so shaping stays exact)."""
    obs_stats_steps: int = 2_000
    """Random-action env steps used to measure those statistics."""
    normalize_reward: bool = False
    """Breaks exact telescoping (policy invariance): VecNormalize the shaped reward. Off by default."""
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
    """Save a checkpoint at least every this many env steps (0: no step-based ones). Checkpoints are
    also saved after every evaluation, every --checkpoint-minutes, on Ctrl-C/SIGTERM and at the end,
    so any run can be resumed; the 3 newest are kept."""
    checkpoint_minutes: float = 10.0
    """Save a checkpoint at least every this many minutes of training (0: no time-based ones)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""
    demo_episodes: int = 0
    """SAC only: roll this many scripted-expert episodes (sim/experts.py) through the shaped training
    env before learning and keep them in a demonstration buffer of their own (policies/expert_demos.py).
    0: none. Their env steps are reported apart (``demo_env_steps`` in train_summary.json)."""
    demo_fraction: float = 0.5
    """Share of every SAC batch drawn from the demonstrations (symmetric sampling, as in RLPD)."""
    bc_weight: float = 1.0
    """Weight of the Q-filtered behaviour-cloning term on the demonstrations in SAC's actor loss
    (policies/expert_demos.py DemoSAC; 0: demonstrations only feed the critics and the actor's Q)."""
    demo_noise: float = 0.1
    """Std of Gaussian noise on the expert's actions (a little spread makes the critic generalise)."""
    demo_max_progress: float = 1.0
    """< 1: partial demonstrations -- each expert episode is stored only until its true progress
    first reaches this value, so the demonstrations show how to start the task but never a success."""
    policy_features: Literal["none", "relative"] = "none"
    """State policies only: ``relative`` appends the task's relative vectors (grip point to pre-push
    point, block to target, ...; policies/features.py) to the normalised state, computed inside the
    policy from the raw state, so model.zip and every consumer stay unchanged."""
    critic_layer_norm: bool = False
    """SAC only: a LayerNorm after every hidden layer of the critics (policies/critics.py), which
    keeps them from diverging when demonstrations fill half of every batch (RLPD)."""
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
        self._check_numbers()
        if self.demo_episodes > 0 and self.algo != "sac":
            raise ValueError("--demo-episodes needs an off-policy learner (--algo sac)")
        if self.policy_features not in ("none", "relative"):
            raise ValueError(f"policy_features must be 'none' or 'relative', got {self.policy_features!r}")
        if self.policy_features == "relative" and (
            self.obs != "state" or not self.normalize_obs or self.obs_stats_steps < 1
        ):
            raise ValueError(
                "--policy-features relative works with --obs state and the policy's state "
                "normalisation (--normalize-obs, --obs-stats-steps >= 1)"
            )
        if self.async_reward and (
            self.algo != "sac" or self.query_every != 1 or self.normalize_reward or self.demo_episodes > 0
        ):
            raise ValueError(
                "--async-reward needs --algo sac, --query-every 1, no --normalize-reward and no --demo-episodes"
            )
        if self.critic_layer_norm and self.algo != "sac":
            raise ValueError("--critic-layer-norm applies to SAC's critics (--algo sac)")
        if self.obs == "pixels" and not self.cameras.strip():
            raise ValueError("--obs pixels needs --cameras (e.g. front or front,wrist)")

    def _check_numbers(self) -> None:
        """Every numeric field (and hyperparameter) finite, whole where it counts, and in range --
        checked once, here, so a NaN never trains silently or fails late inside torch."""
        for name in (*INT_FIELDS, "net_arch"):
            values = getattr(self, name)
            for value in values if name == "net_arch" else [values]:
                if value is None and name == "max_episode_steps":
                    continue
                if not _is_number(value) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(f"--{name.replace('_', '-')}: must be a whole number, got {value!r}")
        for name in FIELD_RANGES:
            if getattr(self, name) is not None and not _is_number(getattr(self, name)):
                raise ValueError(f"--{name.replace('_', '-')}: must be a number, got {getattr(self, name)!r}")
        self.net_arch = tuple(int(x) for x in self.net_arch)
        if not self.net_arch or min(self.net_arch) < 1:
            raise ValueError(f"--net-arch: needs one or more layer sizes >= 1, got {list(self.net_arch)}")
        for name in INT_FIELDS:
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))
        check_numeric_fields(self, FIELD_RANGES)
        if not isinstance(self.hyperparams, dict):
            raise ValueError(f"hyperparams must be a mapping of SB3 constructor arguments, got {self.hyperparams!r}")
        self.hyperparams = dict(self.hyperparams)
        check_hyperparams(self.hyperparams)

    BOOKKEEPING_FIELDS = frozenset(
        {
            "out",
            "config",
            "resume",
            "progress_bar",
            "video_every",
            "checkpoint_every",
            "checkpoint_minutes",
            "steps",
            "device",
            "torch_threads",
            "ray_address",
        }
    )
    """Fields that change neither what a run learns nor how its curve is sampled: two configs that differ
    only in these (another checkpoint cadence, no progress bar, a longer budget) describe the same run."""

    def learning_differences(self, other: RLTrainConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (other's value, this one's)}`` for every field outside ``BOOKKEEPING_FIELDS`` that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {
            k: (theirs[k], mine[k]) for k in sorted(mine) if k not in self.BOOKKEEPING_FIELDS and mine[k] != theirs[k]
        }

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
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RLTrainConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of RLTrainConfig fields, got {type(data).__name__}")
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
    def for_task(cls, task: str, algo: str = "sac", **overrides: Any) -> RLTrainConfig:
        """The task's tuned preset (:func:`task_preset`; plain defaults if it has none) with
        ``overrides`` on top. ``hyperparams`` in ``overrides`` update the preset's, key by key."""
        data = task_preset(task, algo)
        data.update(task=task, algo=algo)
        hyper = dict(data.get("hyperparams", {}))
        hyper.update(overrides.pop("hyperparams", None) or {})
        data.update(overrides)
        data["hyperparams"] = hyper
        return cls.from_dict(data, source=f"preset {task}/{algo}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> RLTrainConfig:
        return cls.from_dict(read_yaml_mapping(path), source=str(path))


@dataclass
class BaseConfigChoice:
    """The options that choose what a ``prism-train`` command line is parsed onto (its first pass)."""

    task: str = RLTrainConfig.task
    algo: str = RLTrainConfig.algo  # an invalid one is left for the full parse to report, with the usage
    config: Path | None = None
    out: Path = RLTrainConfig.out
    resume: bool = False


def parse_train_config(argv: list[str] | None = None, description: str | None = None) -> RLTrainConfig:
    """CLI parsing in two tyro passes: the first reads the options of :class:`BaseConfigChoice` and picks
    the base -- the task's preset, replaced by ``--config FILE`` or, when resuming, by the run's own
    ``config.yaml`` -- and the full parse puts every explicit flag on top of it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        base, _ = parse_config(BaseConfigChoice, argv, return_unknown_args=True, add_help=False, console_outputs=False)
    except SystemExit:  # a malformed option: the full parse below reports it, with the whole usage
        base = BaseConfigChoice()
    default = RLTrainConfig.for_task(base.task, base.algo if base.algo in ALGOS else RLTrainConfig.algo)
    path = base.config
    if path is None and base.resume and (base.out / "config.yaml").is_file():
        path = base.out / "config.yaml"  # resuming: the run's own config is the base
    if path is not None:
        default = RLTrainConfig.from_yaml(path)
        default.config = Path(path)
    return parse_config(RLTrainConfig, argv, default=default, description=description)
