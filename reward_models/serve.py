"""A reward model as a Ray Serve service: many clients, one batched model (``prism-reward serve``).

    prism-reward serve --model grm --name grm --max-batch-size 32 --batch-wait-ms 5     # embedded Ray
    prism-reward serve --model grm --name grm --ray-address auto                        # a `ray start --head` cluster
    prism-train --reward serve:grm ...          # any place a model spec is taken
    prism-reward eval --model serve:grm@auto --data data/push --out reports/push

**What runs where.** The service is *stateless*: it computes ``encode`` (the expensive part, dynamically
batched across all clients with ``@serve.batch``) and ``hop_and_std_from_embeddings`` (batched the same
way); the client (:class:`ServedProgressModel`, a :class:`~reward_models.base.ProgressModel`) keeps the
per-episode :class:`~reward_models.tracker.ProgressTracker` state, embeddings included. Why: every reply
is a pure function of its request, so replicas are interchangeable, a replica restart loses nothing and
a retried request gives the same answer -- the client simply re-sends after a failure, and a transition
can never be labelled with another episode's history. The price is that embeddings travel twice (back to
the client, then with the hop request); they are a few KB per frame against the frames' tens of KB.

**Faults.** A request that fails for a *transport* reason (replica killed or restarting, service being
redeployed) is retried with backoff until ``timeout_s`` has passed since the first try; then the client
raises :class:`RewardServiceUnavailable` (one line, naming the service). An error raised by the model
itself (bad input) is not retried: it is re-raised as it is.

Embeddings cross the wire as numpy (torch tensors are moved to CPU); the service turns them back into
tensors on its own device before scoring. OOD calibration (``state_features``) stays server-side and is
not offered through the service.

Spec: ``serve:NAME`` finds the application NAME in the Ray cluster this process is connected to (or
``RAY_ADDRESS``, or a local ``ray start --head`` cluster); ``serve:NAME@ADDRESS`` names the cluster.
Ray Serve's HTTP proxy is not started: clients use Serve's Python handles, nothing listens on a port.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.exceptions
from ray import serve
from ray.serve.exceptions import RayServeException

from episodes.cli_errors import check_numeric_fields, parse_config
from reward_models.base import Observation, ProgressModel
from reward_models.registry import load_progress_model
from reward_models.tracker import emb_concat, emb_len, emb_take, obs_batch_size, obs_concat

SPEC_PREFIX = "serve:"
DEFAULT_TIMEOUT_S = 60.0
"""How long a client keeps retrying a request before it says the service is gone."""


class RewardServiceUnavailable(ConnectionError):
    """The reward service did not answer within the client's timeout (it is gone or keeps failing)."""


# --------------------------------------------------------------------------------------------
# Ray session (shared with policies.ray_rollouts and policies.async_relabel).
# --------------------------------------------------------------------------------------------


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at ``address`` (``auto``: the local ``ray start --head`` one), or, with
    no address and no ``RAY_ADDRESS``, start Ray embedded in this process. No-op when already connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        raise ConnectionError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc


def parse_serve_spec(spec: str) -> tuple[str, str | None]:
    """``serve:NAME[@ADDRESS]`` -> ``(NAME, ADDRESS or None)``."""
    if not spec.startswith(SPEC_PREFIX):
        raise ValueError(f"not a reward-service spec (serve:NAME[@ADDRESS]): {spec!r}")
    name, _, address = spec[len(SPEC_PREFIX) :].partition("@")
    if not name:
        raise ValueError(f"reward-service spec {spec!r} names no service: use serve:NAME[@ADDRESS]")
    return name, address or None


# --------------------------------------------------------------------------------------------
# Wire format: embeddings as numpy on the wire, back to the model's tensors on the server.
# --------------------------------------------------------------------------------------------


def to_wire(emb: Any) -> Any:
    """Embeddings (torch/numpy, possibly a mapping of them) as numpy arrays."""
    if emb is None:
        return None
    if isinstance(emb, Mapping):
        return {k: to_wire(v) for k, v in emb.items()}
    if hasattr(emb, "detach"):
        return emb.detach().cpu().numpy()
    return np.asarray(emb)


def _from_wire(emb: Any, device: Any) -> Any:
    """numpy -> torch on ``device`` (None: the model works on numpy; leave it)."""
    if emb is None or device is None:
        return emb
    if isinstance(emb, Mapping):
        return {k: _from_wire(v, device) for k, v in emb.items()}
    import torch  # torch: only for a model that works on torch tensors

    return torch.as_tensor(np.asarray(emb), device=device)


def _embedding_device(emb: Any) -> Any:
    if isinstance(emb, Mapping):
        return _embedding_device(next(iter(emb.values())))
    return getattr(emb, "device", None) if hasattr(emb, "detach") else None


# --------------------------------------------------------------------------------------------
# The deployment.
# --------------------------------------------------------------------------------------------


def load_served_model(model: str | Callable[[], ProgressModel], device: str) -> ProgressModel:
    """The model a replica serves: a registry spec, or a zero-argument factory (tests, benches)."""
    if callable(model):
        return model()
    if model.startswith(SPEC_PREFIX):
        raise ValueError(f"--model {model!r}: a reward service cannot serve another service; name the model itself")

    return load_progress_model(model, device=device)


class RewardService:
    """One replica: the model, with ``encode`` and ``hop`` dynamically batched across clients
    (``@serve.batch``; the sizes given to the decorator are replaced per replica in ``__init__``)."""

    def __init__(
        self,
        model: str | Callable[[], ProgressModel],
        device: str = "auto",
        max_batch_size: int = 32,
        batch_wait_ms: float = 5.0,
    ) -> None:
        self.model = load_served_model(model, device)
        self.device: Any = None  # the device of the model's tensor embeddings (None: numpy embeddings)
        for method in (self.encode, self.hop):
            method.set_max_batch_size(int(max_batch_size))
            method.set_batch_wait_timeout_s(float(batch_wait_ms) / 1000.0)
        self.batch_sizes: list[int] = []

    def info(self) -> dict[str, Any]:
        """The model's id, cameras and config (the client mirrors them)."""
        return {
            "model_id": self.model.model_id,
            "cameras": list(self.model.cameras) if self.model.cameras else None,
            "config": self.model.config(),
        }

    def recent_batch_sizes(self) -> list[int]:
        """Sizes (in requests) of the encode batches run so far (for tests and benches)."""
        return list(self.batch_sizes)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def encode(self, requests: list[Observation]) -> list[Any]:
        self.batch_sizes.append(len(requests))
        rows = [obs_batch_size(r) for r in requests]
        emb = self.model.encode(obs_concat(requests) if len(requests) > 1 else requests[0])
        self.device = _embedding_device(emb)
        bounds = np.cumsum([0, *rows])
        return [to_wire(emb_take(emb, np.arange(bounds[i], bounds[i + 1]))) for i in range(len(requests))]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def hop(self, requests: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Requests ``(before, after, tasks, start, goal)``; those with the same context kinds (start
        and goal given or not) go through one model call."""
        out: list[Any] = [None] * len(requests)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, (_, _, _, start, goal) in enumerate(requests):
            groups.setdefault((start is None, goal is None), []).append(i)
        for (no_start, no_goal), idx in groups.items():
            parts = [requests[i] for i in idx]

            def cat(k: int, parts=parts) -> Any:
                return _from_wire(emb_concat([p[k] for p in parts]), self.device)

            tasks = [t for p in parts for t in p[2]]
            hops, std = self.model.hop_and_std_from_embeddings(
                cat(0), cat(1), tasks, None if no_start else cat(3), None if no_goal else cat(4)
            )
            hops, std = np.asarray(hops, dtype=np.float64), np.asarray(std, dtype=np.float64)
            bounds = np.cumsum([0, *(emb_len(p[0]) for p in parts)])
            for j, i in enumerate(idx):
                out[i] = (hops[bounds[j] : bounds[j + 1]], std[bounds[j] : bounds[j + 1]])
        return out


def build_reward_app(
    model: str | Callable[[], ProgressModel],
    *,
    device: str = "auto",
    max_batch_size: int = 32,
    batch_wait_ms: float = 5.0,
    replicas: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
):
    """The Serve application of :class:`RewardService` (bind it with ``serve.run(app, name=...)``)."""
    ServeConfig(
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        replicas=replicas,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    ).check()
    deployment = serve.deployment(
        RewardService,
        name="RewardService",
        num_replicas=int(replicas),
        # A replica must hold a whole batch of requests at once, from every client.
        max_ongoing_requests=max(2 * int(max_batch_size), 16),
        ray_actor_options={"num_cpus": float(num_cpus), "num_gpus": float(num_gpus)},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    return deployment.bind(model, device, int(max_batch_size), float(batch_wait_ms))


def start_reward_service(model: str | Callable[[], ProgressModel], name: str, **options: Any):
    """Deploy the service as application ``name`` in the connected Ray cluster; returns its handle."""
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    return serve.run(build_reward_app(model, **options), name=name, route_prefix=None)


# --------------------------------------------------------------------------------------------
# The client.
# --------------------------------------------------------------------------------------------


def _transport_errors() -> tuple[type[BaseException], ...]:
    return (ray.exceptions.RayError, RayServeException, TimeoutError)


class ServedProgressModel(ProgressModel):
    """A :class:`ProgressModel` whose ``encode``/``hop`` run in a reward service (module docstring).

    The tracker state lives here, in the client; every request is idempotent and is retried until
    ``timeout_s`` has passed without an answer."""

    def __init__(self, name: str, address: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ValueError(f"reward service timeout must be > 0 s, got {timeout_s}")
        self.name = name
        self.address = address
        self.timeout_s = float(timeout_s)
        self.n_retries = 0
        """Requests re-sent after a transport failure (replica restart, redeploy)."""
        self._handle: Any = None
        try:  # a service that does not exist at all is a wrong spec, not an outage: no retries
            self._get_handle()
        except RayServeException as exc:
            raise LookupError(
                f"no reward service named {name!r} in the Ray cluster ({str(exc).splitlines()[0]}); "
                f"start it with `prism-reward serve --name {name} --model SPEC`"
            ) from None
        info = self._call("info")
        self.model_id = f"{SPEC_PREFIX}{name}"
        self.served_model_id = str(info["model_id"])
        self.cameras = tuple(info["cameras"]) if info["cameras"] else None
        self._config = dict(info["config"])

    def _get_handle(self) -> Any:
        if self._handle is None:
            ensure_ray(self.address)
            self._handle = serve.get_app_handle(self.name)
        return self._handle

    def _call(self, method: str, *args: Any) -> Any:
        transport = _transport_errors()
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return getattr(self._get_handle(), method).remote(*args).result(timeout_s=remaining)
            except ray.exceptions.RayTaskError as exc:  # the model itself failed: not a transport problem
                raise exc.as_instanceof_cause() from None
            except transport as exc:
                last = exc
                self.n_retries += 1
                self._handle = None  # look the application up again (it may have been redeployed)
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(2 * delay, 1.0)
        why = f"{type(last).__name__}: {last}".splitlines()[0] if last is not None else "no answer"
        raise RewardServiceUnavailable(
            f"reward service {self.name!r} did not answer {method} within "
            f"{self.timeout_s:g} s ({why}); is `prism-reward serve --name {self.name}` running?"
        )

    def encode(self, obs: Observation) -> Any:
        return self._call("encode", {k: np.asarray(v) for k, v in obs.items()})

    def hop_and_std_from_embeddings(self, before, after, tasks, start=None, goal=None) -> tuple[np.ndarray, np.ndarray]:
        hops, std = self._call("hop", (to_wire(before), to_wire(after), list(tasks), to_wire(start), to_wire(goal)))
        return np.asarray(hops, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None) -> np.ndarray:
        return self.hop_and_std_from_embeddings(before, after, tasks, start, goal)[0]

    def config(self) -> dict[str, Any]:
        return {**self._config, "model_id": self.model_id, "served_model_id": self.served_model_id}

    def __getstate__(self) -> dict[str, Any]:  # a Ray handle is re-fetched after unpickling
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


def load_served_progress_model(spec: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ServedProgressModel:
    """The client for ``serve:NAME[@ADDRESS]``, with clear errors when Ray or the service is missing."""
    name, address = parse_serve_spec(spec)
    try:
        ensure_ray(address or os.environ.get("RAY_ADDRESS") or "auto")
    except ConnectionError as exc:
        raise ConnectionError(
            f"model spec {spec!r}: no Ray cluster to find reward service {name!r} in ({exc}); "
            f"start one with `prism-reward serve --name {name} --ray-address auto` after "
            "`ray start --head`, or run in the same process that serves it"
        ) from None
    return ServedProgressModel(name, address, timeout_s)


# --------------------------------------------------------------------------------------------
# `prism-reward serve`
# --------------------------------------------------------------------------------------------


@dataclass
class ServeConfig:
    """Serve a progress model to many clients (envs, trainers, monitors) with dynamic batching."""

    model: str = "grm"
    """Model spec to serve (grm, grm:DIR, clip:..., vlm:..., oracle)."""
    name: str = "grm"
    """Service name; clients use the model spec serve:NAME (or serve:NAME@RAY_ADDRESS)."""
    max_batch_size: int = 32
    """Most requests one model call batches together."""
    batch_wait_ms: float = 5.0
    """Longest a request waits for others to fill its batch."""
    replicas: int = 1
    """Replicas of the model (interchangeable: the service keeps no episode state)."""
    num_cpus: float = 1.0
    """CPUs reserved per replica."""
    num_gpus: float = 0.0
    """GPUs per replica (use with --device cuda)."""
    device: str = "auto"
    """Torch device of the model inside each replica."""
    ray_address: str | None = None
    """Ray cluster to deploy into (auto: a local `ray start --head`); none: Ray embedded in this process,
    serving only clients of this process's Ray session until Ctrl-C."""
    detach: bool = False
    """With --ray-address: return once deployed, leaving the service running in the cluster."""

    def check(self) -> None:
        """Range-check every option (one-line ``ValueError`` naming the flag) before anything starts."""
        check_numeric_fields(
            self,
            {
                "max_batch_size": "[1, inf)",
                "batch_wait_ms": "[0, inf)",
                "replicas": "[1, inf)",
                "num_cpus": "[0, inf)",
                "num_gpus": "[0, inf)",
            },
        )
        if self.detach and not self.ray_address:
            raise ValueError("--detach needs --ray-address (an embedded Ray ends with this process)")


def main(argv: Sequence[str] | None = None) -> int:
    """``prism-reward serve``: deploy, then block until Ctrl-C (or return with --detach)."""
    cfg = parse_config(ServeConfig, argv, description=ServeConfig.__doc__)
    cfg.check()
    ensure_ray(cfg.ray_address)
    start_reward_service(
        cfg.model,
        cfg.name,
        device=cfg.device,
        max_batch_size=cfg.max_batch_size,
        batch_wait_ms=cfg.batch_wait_ms,
        replicas=cfg.replicas,
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus,
    )
    where = f"@{cfg.ray_address}" if cfg.ray_address else ""
    print(
        f"serving {cfg.model} as model spec serve:{cfg.name}{where} (max batch {cfg.max_batch_size}, "
        f"wait {cfg.batch_wait_ms:g} ms, {cfg.replicas} replica(s))",
        flush=True,
    )
    if cfg.detach:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print(f"stopping reward service {cfg.name!r}", file=sys.stderr)
        serve.delete(cfg.name)
        return 0


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RewardService",
    "RewardServiceUnavailable",
    "ServeConfig",
    "ServedProgressModel",
    "build_reward_app",
    "ensure_ray",
    "load_served_progress_model",
    "parse_serve_spec",
    "start_reward_service",
    "to_wire",
]
