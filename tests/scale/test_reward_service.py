"""The Ray Serve reward service: batching across clients, the serve: spec, faults (replica killed,
service gone), and its CLI's input errors."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("ray")

from reward_models.registry import load_progress_model  # noqa: E402
from reward_models.serve import RewardServiceUnavailable, ServedProgressModel, start_reward_service  # noqa: E402
from reward_models.tracker import ProgressTracker  # noqa: E402

from scale_helpers import FrameProgressModel, make_frame_model, make_slow_frame_model  # noqa: E402
from toy_envs import frame_for_state  # noqa: E402

TASK = "walk to the end of the chain"


def frames(states):
    return {"front": np.stack([frame_for_state(int(s)) for s in states])}


@pytest.fixture(scope="module")
def service(local_ray):
    start_reward_service(make_slow_frame_model, "frames", max_batch_size=8, batch_wait_ms=20, num_cpus=0)
    return "frames"


def track(model, episodes):
    """Φ of every step of ``episodes`` (n, T) state sequences through a ProgressTracker."""
    episodes = np.asarray(episodes)
    tracker = ProgressTracker(model, n=len(episodes))
    tracker.reset(range(len(episodes)), [TASK] * len(episodes), start_obs=frames(episodes[:, 0]))
    return np.stack([tracker.step(frames(episodes[:, t])) for t in range(1, episodes.shape[1])])


def test_many_clients_are_batched_and_score_like_the_model_in_process(service):
    rng = np.random.default_rng(0)
    states = [rng.integers(0, 5, size=3) for _ in range(16)]
    results = [None] * len(states)
    client = ServedProgressModel(service, timeout_s=30)

    def ask(i):
        results[i] = client.encode(frames(states[i]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(states))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    local = FrameProgressModel()
    for s, got in zip(states, results):
        np.testing.assert_allclose(got, local.encode(frames(s)).numpy())
    from ray import serve

    sizes = serve.get_app_handle(service).recent_batch_sizes.remote().result(timeout_s=30)
    assert max(sizes) > 1, f"concurrent requests were never batched: {sizes}"
    assert max(sizes) <= 8, f"a batch exceeded --max-batch-size 8: {sizes}"
    # the tracker over the service gives the in-process Φ (embeddings and hops round-trip exactly)
    episodes = rng.integers(0, 5, size=(3, 6))
    np.testing.assert_allclose(track(client, episodes), track(FrameProgressModel(), episodes))


def test_serve_spec_works_through_the_registry(service):
    model = load_progress_model(f"serve:{service}")
    assert model.model_id == f"serve:{service}" and model.cameras == ("front",)
    assert model.config()["served_model_id"] == "frame-progress"
    with pytest.raises(LookupError, match="no reward service named 'nope'"):
        load_progress_model("serve:nope")


def test_a_killed_replica_is_retried_and_nothing_is_mislabelled(service):
    import ray

    client = ServedProgressModel(service, timeout_s=60)
    rng = np.random.default_rng(1)
    episodes = rng.integers(0, 5, size=(4, 12))
    expected = track(FrameProgressModel(), episodes)
    tracker = ProgressTracker(client, n=4)
    tracker.reset(range(4), [TASK] * 4, start_obs=frames(episodes[:, 0]))
    replicas = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(f"SERVE_REPLICA::{service}#")
    ]
    assert replicas

    def kill_replicas():
        for a in replicas:
            ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)

    got = []
    for t in range(1, episodes.shape[1]):
        if t == 5:  # kill the (only) replica while this step's encode request is in flight; Serve starts a new one
            threading.Timer(0.05, kill_replicas).start()
        got.append(tracker.step(frames(episodes[:, t])))
    assert client.n_retries > 0, "the kill did not reach the client (test would not check retries)"
    np.testing.assert_allclose(np.stack(got), expected)


def test_a_service_gone_for_longer_than_the_timeout_is_a_clear_error(local_ray):
    from ray import serve

    start_reward_service(make_frame_model, "short_lived", max_batch_size=4, num_cpus=0)
    client = ServedProgressModel("short_lived", timeout_s=2)
    client.encode(frames([1, 2]))
    serve.delete("short_lived")
    t0 = time.monotonic()
    with pytest.raises(RewardServiceUnavailable) as err:
        client.encode(frames([1, 2]))
    assert time.monotonic() - t0 < 15
    message = str(err.value)
    assert "'short_lived'" in message and "2 s" in message and "\n" not in message


@pytest.mark.parametrize("flag, value", [("--max-batch-size", "0"), ("--batch-wait-ms", "-1")])
def test_serve_cli_rejects_bad_batching_in_one_line(flag, value):
    done = subprocess.run(
        [sys.executable, "-m", "reward_models.cli", "serve", "--model", "oracle", flag, value],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0], done.stderr
