"""Episode data model and its on-disk formats (LeRobot v3.0 datasets, mp4 video).

``episodes`` imports nothing else of ours; sim, reward models and the ROS bridge all build on it.
"""

from episodes.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_parquet, atomic_write_text
from episodes.camera_map import CameraMapError, apply_camera_map, parse_camera_map
from episodes.dopamine import load_dopamine_episode
from episodes.episode import OUTCOMES, Episode
from episodes.lerobot import (
    CODEBASE_VERSION,
    EpisodeDataset,
    LeRobotWriter,
    NotALeRobotDatasetError,
    open_dataset,
    write_dataset,
)
from episodes.rosbag import BagError, ingest_bags, read_bag
from episodes.video import VideoError, VideoWriter, read_video, video_info, write_video
from episodes.video_folder import EpisodeSourceError, load_video_source, write_episode_folder

__all__ = [
    "CODEBASE_VERSION",
    "BagError",
    "CameraMapError",
    "OUTCOMES",
    "Episode",
    "EpisodeDataset",
    "EpisodeSourceError",
    "LeRobotWriter",
    "NotALeRobotDatasetError",
    "VideoError",
    "VideoWriter",
    "apply_camera_map",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "ingest_bags",
    "load_dopamine_episode",
    "load_video_source",
    "open_dataset",
    "parse_camera_map",
    "read_bag",
    "read_video",
    "video_info",
    "write_dataset",
    "write_episode_folder",
    "write_video",
]
