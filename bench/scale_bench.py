"""Scale-out bench: the Ray Serve reward service, asynchronous relabelling and Ray rollout actors.

    .venv/bin/python bench/scale_bench.py                 # ~5-8 min on 2 CPU cores
    .venv/bin/python bench/scale_bench.py --grm grm       # the shipped GRM instead of an untrained one

Prints each figure and writes ``bench/results/scale_bench.json`` (bench/results_io.py). Measured here:

* reward-service throughput (frames/s) for max batch size 1, 8, 32, 128 x 1, 2, 4, 8 concurrent clients
  (each request is one env step's frame), with request latency p50/p99, beside in-process ``encode`` of
  the same model on the same frames at the same batch sizes;
* the reward model's overhead in the RL loop: env steps/s without a model over with it, synchronous
  (:class:`~policies.shaping.ShapedRewardVecEnv`) and asynchronous (env + replay-buffer ``add``, labels
  from the :class:`~policies.async_relabel.RewardLabeller` actor), same envs and renders, same run;
* rollout throughput of :class:`~policies.ray_rollouts.RayVecEnv` with 1 and 2 workers beside DummyVecEnv.

*Modelled* (not measured): steps/s beyond this machine, from the per-step costs above -- W workers of E
envs each run at W·E / (E·t_env + t_rtt) env steps/s, capped by the reward service's best measured
frames/s per replica times the replicas. It assumes one core per worker and a network round trip like
the local one; it is a planning figure, not a result.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve
from stable_baselines3.common.vec_env import DummyVecEnv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from episodes.cli_errors import parse_config  # noqa: E402
from policies.async_relabel import AsyncRelabelReplayBuffer, AsyncShapedRewardVecEnv  # noqa: E402
from policies.envs import make_env_fns, make_vec_env  # noqa: E402
from policies.ray_rollouts import RayVecEnv  # noqa: E402
from policies.shaping import ModelPotential, ShapedRewardVecEnv, ZeroPotential  # noqa: E402
from reward_models.configuration_grm import GRMConfig  # noqa: E402
from reward_models.modeling_grm import GRM, GRMProgressModel  # noqa: E402
from reward_models.registry import load_progress_model  # noqa: E402
from reward_models.serve import ServedProgressModel, ensure_ray, start_reward_service  # noqa: E402

from results_io import write_bench_result  # noqa: E402  (bench/ is the script's own folder, first on sys.path)


@dataclass
class ScaleBenchArgs:
    """Ray scale-out figures: reward service, async relabelling, rollout actors."""

    grm: str | None = None
    """Model spec to serve (e.g. grm); default: an untrained GRM of the default config (speed only)."""
    task: str = "reach"
    """Sim task for the RL-loop and rollout figures."""
    n_envs: int = 4
    """Envs in the RL-loop and rollout figures."""
    image_size: int = 64
    """Frame size of the reward cameras."""
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    """Service max batch sizes."""
    clients: tuple[int, ...] = (1, 2, 4, 8)
    """Concurrent service clients."""
    seconds: float = 3.0
    """Measuring time per (batch size, clients) cell."""
    loop_steps: int = 150
    """Vectorised steps timed per RL-loop / rollout variant."""
    out: Path | None = None
    """Results directory (default bench/results)."""


def make_model(spec: str | None):
    torch.set_num_threads(1)
    if spec:
        return load_progress_model(spec, device="cpu")
    torch.manual_seed(0)
    return GRMProgressModel(GRM(GRMConfig()), device="cpu")


class ModelFactory:
    """Picklable zero-argument factory (Ray ships it to the replica / labeller)."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec

    def __call__(self):
        return make_model(self.spec)


def random_frames(cameras, rows: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, size=(rows, size, size, 3), dtype=np.uint8) for c in cameras}


def bench_service(args: ScaleBenchArgs, model) -> dict:
    cameras = model.cameras or ("front",)
    one = random_frames(cameras, 1, args.image_size)
    in_process = {}
    for b in args.batch_sizes:
        frames = random_frames(cameras, b, args.image_size, seed=b)
        model.encode(frames)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min(args.seconds, 2.0):
            model.encode(frames)
            n += b
        in_process[b] = n / (time.perf_counter() - t0)
        print(f"in-process encode, batch {b:4d}: {in_process[b]:8.1f} frames/s")
    cells = []
    for b in args.batch_sizes:
        start_reward_service(ModelFactory(args.grm), "bench", max_batch_size=b, batch_wait_ms=5, num_cpus=1)
        client = ServedProgressModel("bench", timeout_s=120)
        client.encode(one)
        for c in args.clients:
            latencies: list[list[float]] = [[] for _ in range(c)]
            stop = time.perf_counter() + args.seconds

            def loop(k: int) -> None:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    client.encode(one)
                    latencies[k].append(time.perf_counter() - t)

            threads = [threading.Thread(target=loop, args=(k,)) for k in range(c)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            lat = np.concatenate([np.asarray(x) for x in latencies]) * 1000
            fps = lat.size / (time.perf_counter() - t0)
            cells.append(
                {
                    "max_batch_size": b,
                    "clients": c,
                    "frames_per_s": fps,
                    "latency_ms_p50": float(np.percentile(lat, 50)),
                    "latency_ms_p99": float(np.percentile(lat, 99)),
                }
            )
            print(
                f"service batch {b:4d}, {c} client(s): {fps:8.1f} frames/s, latency p50 "
                f"{cells[-1]['latency_ms_p50']:.1f} ms, p99 {cells[-1]['latency_ms_p99']:.1f} ms"
            )
        serve.delete("bench")
    return {"in_process_frames_per_s": {str(k): v for k, v in in_process.items()}, "service": cells}


def make_loop_env(args: ScaleBenchArgs, cameras):
    return make_vec_env(args.n_envs, 0, task=args.task, image_size=args.image_size, reward_cameras=tuple(cameras))


def bench_overhead(args: ScaleBenchArgs, model) -> dict:
    cameras = tuple(model.cameras or ("front",))
    n = args.n_envs
    rng = np.random.default_rng(0)

    def timed(env, buffer=None) -> float:
        obs = env.reset()
        dim = env.action_space.shape[0]
        for _ in range(5):
            env.step(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
        obs = env.reset()
        t0 = time.perf_counter()
        for _ in range(args.loop_steps):
            action = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
            new_obs, reward, dones, infos = env.step(action)
            if buffer is not None:
                buffer.add(obs, new_obs, action, reward, dones, infos)
            obs = new_obs
        return n * args.loop_steps / (time.perf_counter() - t0)

    base = make_loop_env(args, cameras)
    try:
        without = timed(ShapedRewardVecEnv(base, ZeroPotential(n), gamma=0.95))
        sync = timed(ShapedRewardVecEnv(base, ModelPotential(model, n, cameras), gamma=0.95))
        async_env = AsyncShapedRewardVecEnv(base, cameras, gamma=0.95)
        buffer = AsyncRelabelReplayBuffer(
            10_000,
            base.observation_space,
            base.action_space,
            device="cpu",
            n_envs=n,
            labeller={"reward": "bench:grm", "n_envs": n, "gamma": 0.95, "cameras": cameras},
            model_factory=ModelFactory(args.grm),
            label_batch_steps=64,
            max_pending_chunks=1_000,
            labeller_cpus=1,
        )
        buffer._labeller()  # start the actor (model load) before the clock runs
        ray.get(buffer._actor.stats.remote())
        t0 = time.perf_counter()
        asynchronous = timed(async_env, buffer)
        loop_s = time.perf_counter() - t0
        pending = buffer.n_pending
        t1 = time.perf_counter()
        buffer.collect_labels(wait=True)
        drain_s = time.perf_counter() - t1
    finally:
        base.close()
    out = {
        "task": args.task,
        "n_envs": n,
        "cameras": list(cameras),
        "steps_per_s_without_model": without,
        "steps_per_s_sync": sync,
        "steps_per_s_async": asynchronous,
        "overhead_sync": without / sync,
        "overhead_async": without / asynchronous,
        "async_pending_steps_at_loop_end": pending,
        "async_loop_s": loop_s,
        "async_drain_s": drain_s,
        "labeller_steps_per_s": n * args.loop_steps / (loop_s + drain_s),
    }
    print(
        f"RL loop ({args.task}, {n} envs): {without:.1f} steps/s without model, {sync:.1f} sync "
        f"({out['overhead_sync']:.2f}x), {asynchronous:.1f} async ({out['overhead_async']:.2f}x); "
        f"{pending} vec steps pending at the end, drained in {drain_s:.1f} s"
    )
    return out


def bench_rollouts(args: ScaleBenchArgs, cameras) -> dict:
    n = args.n_envs
    rng = np.random.default_rng(1)
    fns = make_env_fns(n, 0, task=args.task, image_size=args.image_size, reward_cameras=tuple(cameras))

    def timed(env) -> tuple[float, float]:
        env.reset()
        dim = env.action_space.shape[0]
        for _ in range(5):
            env.step(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
        t0 = time.perf_counter()
        for _ in range(args.loop_steps):
            env.step(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
        dt = time.perf_counter() - t0
        return n * args.loop_steps / dt, dt / args.loop_steps

    dummy = DummyVecEnv(fns)
    dummy_sps, dummy_step_s = timed(dummy)
    dummy.close()
    out = {"dummy_steps_per_s": dummy_sps, "t_env_s": dummy_step_s / n}
    print(f"rollouts: DummyVecEnv {dummy_sps:.1f} steps/s ({1000 * dummy_step_s / n:.2f} ms per env step)")
    for workers in (1, 2):
        env = RayVecEnv(fns, n_workers=workers)
        sps, step_s = timed(env)
        env.close()
        out[f"ray_{workers}_workers_steps_per_s"] = sps
        out[f"ray_{workers}_workers_step_s"] = step_s
        print(f"rollouts: RayVecEnv {workers} worker(s) {sps:.1f} steps/s")
    # round-trip overhead per worker call: one worker's step time minus its envs' work
    out["t_rtt_s"] = max(0.0, out["ray_1_workers_step_s"] - n * out["t_env_s"])
    return out


def modelled_scaling(rollouts: dict, service: dict, envs_per_worker: int = 4, replicas: int = 1) -> list[dict]:
    """Env steps/s for W workers (modelled, module docstring)."""
    t_env, t_rtt = rollouts["t_env_s"], rollouts["t_rtt_s"]
    best_service = max(cell["frames_per_s"] for cell in service["service"])
    rows = []
    for workers in (1, 2, 4, 8, 16, 32, 64):
        envs = workers * envs_per_worker
        rollout_cap = envs / (envs_per_worker * t_env + t_rtt)
        rows.append(
            {
                "workers": workers,
                "envs": envs,
                "rollout_steps_per_s": rollout_cap,
                "reward_service_cap_frames_per_s": best_service * replicas,
                "steps_per_s": min(rollout_cap, best_service * replicas),
                "bound_by": "rollouts" if rollout_cap <= best_service * replicas else "reward service",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_config(ScaleBenchArgs, argv, description=__doc__.split("\n\n")[0])
    t_start = time.perf_counter()
    ensure_ray(num_cpus=2)
    model = make_model(args.grm)
    desc = args.grm or "untrained GRM, default GRMConfig (speed only)"
    print(f"model: {desc}; cameras {model.cameras}")
    try:
        service = bench_service(args, model)
        overhead = bench_overhead(args, model)
        rollouts = bench_rollouts(args, model.cameras or ("front",))
        scaling = modelled_scaling(rollouts, service)
    finally:
        ray.shutdown()
    print("modelled (not measured) scaling, 4 envs per worker, 1 reward replica:")
    for row in scaling:
        print(
            f"  {row['workers']:3d} workers / {row['envs']:4d} envs: {row['steps_per_s']:9.1f} steps/s "
            f"(bound by {row['bound_by']})"
        )
    results = {
        "model": desc,
        "measured": {"reward_service": service, "rl_loop_overhead": overhead, "rollouts": rollouts},
        "modelled": {
            "assumptions": "W workers x 4 envs: W*E/(E*t_env + t_rtt), capped by the best measured "
            "service frames/s x replicas; one core per worker; local round trip",
            "scaling": scaling,
        },
        "wall_s": time.perf_counter() - t_start,
    }
    path = write_bench_result("scale_bench", results, results_dir=args.out)
    print(f"wrote {path} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
