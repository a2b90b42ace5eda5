"""Regenerate ``lerobot_0.4.4_written/``: a tiny dataset written by LeRobot itself.

``test_lerobot_dataset.py`` reads it to prove our reader handles what real LeRobot writes (its
episode stats columns, unnamed task index, an ``image`` feature stored as PNG bytes in parquet)
without needing LeRobot installed. LeRobot 0.4.x pins torch<2.11, so run this in its own venv::

    python3 -m venv /tmp/lr && /tmp/lr/bin/pip install "lerobot>=0.4,<0.5"
    /tmp/lr/bin/pip install --no-deps -e .
    /tmp/lr/bin/python tests/episodes/data/make_lerobot_fixture.py
"""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from conftest import make_episode  # noqa: E402

ROOT = HERE / "lerobot_0.4.4_written"
FEATURES = {
    "observation.state": {"dtype": "float32", "shape": (5,), "names": [f"q{i}" for i in range(5)]},
    "action": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
    "observation.images.front": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
    "observation.images.wrist": {"dtype": "image", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
    "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    "next.done": {"dtype": "bool", "shape": (1,), "names": None},
}
# (length, seed, task): make_episode is deterministic, so the test rebuilds the same episodes.
EPISODES = [(9, 0, "reach the red cube"), (6, 1, "push the cube to the goal"), (7, 2, "reach the red cube")]


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ds = LeRobotDataset.create(
        "local/prism_fixture", fps=10, root=ROOT, features=FEATURES, use_videos=True, robot_type="panda", vcodec="h264"
    )
    for length, seed, task in EPISODES:
        ep = make_episode(length, seed=seed, task=task)
        for k in range(length):
            ds.add_frame(
                {
                    "observation.state": ep.state[k],
                    "action": ep.action[k],
                    "observation.images.front": ep.frames["front"][k],
                    "observation.images.wrist": ep.frames["wrist"][k],
                    "next.reward": ep.reward[k : k + 1],
                    "next.done": ep.done[k : k + 1],
                    "task": task,
                }
            )
        ds.save_episode()
    ds.finalize()
    print(f"wrote {ROOT}")


if __name__ == "__main__":
    main()
