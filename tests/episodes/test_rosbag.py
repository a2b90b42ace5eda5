"""rosbag2 ingest: real MCAP and sqlite3 bags written with ``rosbags`` and read back."""

import io

import numpy as np
import pytest

pytest.importorskip("rosbags")
from PIL import Image as PILImage  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

import episodes  # noqa: E402
from episodes.rosbag import BagError, ingest_bags, parse_topics, read_bag  # noqa: E402

TS = get_typestore(Stores.ROS2_HUMBLE)
Image = TS.types["sensor_msgs/msg/Image"]
CImage = TS.types["sensor_msgs/msg/CompressedImage"]
JointState = TS.types["sensor_msgs/msg/JointState"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
T0 = 5_000_000_000


def _hdr(ns):
    return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")


def write_bag(path, plugin=StoragePlugin.MCAP, n=45, period=33_333_333, backwards_at=None, bgr=True):
    """Front camera raw (bgr8) at 30 Hz whose value encodes the message number, a compressed
    wrist camera, and joint states at 100 Hz with position = time in seconds."""
    with Writer(path, version=9, storage_plugin=plugin) as w:
        front = w.add_connection("/cam/front/image_raw", Image.__msgtype__, typestore=TS)
        wrist = w.add_connection("/cam/wrist/image_raw/compressed", CImage.__msgtype__, typestore=TS)
        joints = w.add_connection("/joint_states", JointState.__msgtype__, typestore=TS)
        for k in range(n):
            ns = log_ns = T0 + k * period
            if backwards_at is not None and k == backwards_at:
                ns -= 3 * period  # the header stamp jumps back; the bag's receive time does not
            rgb = np.zeros((24, 32, 3), np.uint8)
            rgb[..., 0] = k  # red channel = message number
            data = rgb[..., ::-1] if bgr else rgb
            msg = Image(
                header=_hdr(ns),
                height=24,
                width=32,
                encoding="bgr8" if bgr else "rgb8",
                is_bigendian=0,
                step=96,
                data=np.ascontiguousarray(data).ravel(),
            )
            w.write(front, log_ns, TS.serialize_cdr(msg, Image.__msgtype__))
            buf = io.BytesIO()
            PILImage.fromarray(rgb).save(buf, format="PNG")
            cmsg = CImage(header=_hdr(ns + 1000), format="png", data=np.frombuffer(buf.getvalue(), np.uint8))
            w.write(wrist, log_ns + 1000, TS.serialize_cdr(cmsg, CImage.__msgtype__))
        for k in range(int(n * period / 10_000_000) + 2):
            ns = T0 + k * 10_000_000
            js = JointState(
                header=_hdr(ns),
                name=["j1", "j2"],
                position=np.array([k * 0.01, 1.0]),
                velocity=np.zeros(2),
                effort=np.zeros(0),
            )
            w.write(joints, ns, TS.serialize_cdr(js, JointState.__msgtype__))
    return path


TOPICS = "/cam/front/image_raw,/cam/wrist/image_raw/compressed"


@pytest.mark.parametrize("plugin", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_resampling_onto_one_clock(tmp_path, plugin):
    bag = write_bag(tmp_path / "bag", plugin)
    ep = read_bag(bag, TOPICS, fps=10, task="push")
    assert ep.cameras == ["front", "wrist"]
    # 45 frames at 30 Hz span 1.467 s -> ticks every 0.1 s plus the final instant
    assert ep.length == 16
    k = ep.frames["front"][:, 0, 0, 0].astype(int)  # bgr8 decoded to RGB: red = message number
    assert k[0] == 0 and k[-1] == 44
    assert np.all(np.diff(k) >= 0) and k[3] == 9  # tick 0.3 s -> message 9 (zero-order hold)
    # the wrist message of the last tick was stamped 1 µs later: never take a frame from the future
    assert ep.frames["wrist"][-1, 0, 0, 0] == 43
    t = np.asarray(ep.meta["timestamps_s"])
    np.testing.assert_allclose(ep.state[:, 0], t, atol=1e-5)  # interpolated joint positions
    assert ep.meta["joint_names"] == ["j1", "j2"]


def test_ingest_writes_a_lerobot_dataset(tmp_path):
    bags = [write_bag(tmp_path / "a"), write_bag(tmp_path / "b", StoragePlugin.SQLITE3, n=30)]
    out = ingest_bags(bags, tmp_path / "ds", TOPICS, fps=10, task="push the block")
    ds = episodes.open_dataset(out)
    assert len(ds) == 2 and ds.cameras == ["front", "wrist"] and ds.fps == 10
    ep = ds.load_episode(1)
    assert ep.task == "push the block" and ep.state.shape == (ep.length, 2)


def test_bad_bags_name_the_bag_and_topic(tmp_path):
    with pytest.raises(BagError, match="timestamps go backwards on /cam/front/image_raw"):
        read_bag(write_bag(tmp_path / "back", backwards_at=10), TOPICS)
    bag = write_bag(tmp_path / "ok", n=10)
    with pytest.raises(BagError, match="/cam/top/image_raw not in bag"):
        read_bag(bag, "/cam/top/image_raw")
    with pytest.raises(BagError, match="expected one of"):
        read_bag(bag, "/joint_states")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(BagError, match="junk.mcap"):
        read_bag(junk, TOPICS)
    short = write_bag(tmp_path / "short", n=1)
    with pytest.raises(BagError, match="short: .*(overlap|fewer than 2)"):
        read_bag(short, TOPICS, fps=10)


def test_topic_names():
    cams = parse_topics("/cam/front/image_raw, side=/x/color/image_raw/compressed, /wrist_camera/image")
    assert [(c.name, c.topic) for c in cams] == [
        ("front", "/cam/front/image_raw"),
        ("side", "/x/color/image_raw/compressed"),
        ("wrist_camera", "/wrist_camera/image"),
    ]
    with pytest.raises(ValueError, match="collide"):
        parse_topics("/a/cam/image_raw,/b/cam/image_raw")
