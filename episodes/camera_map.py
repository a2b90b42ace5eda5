"""Camera mapping: give a recording's cameras the view names a model reads.

Real recordings name their cameras after the rig (``cam_high``, ``cam_left_wrist``) or the ROS
topic (``/cam/front/image_raw``); a model reads the views it was trained on (``front``,
``wrist``). ``--camera-map cam_high=front,cam_left_wrist=wrist`` renames the data's cameras onto
the model's views; cameras it does not name keep their names. The same two functions serve every
consumer of frames keyed by camera (evaluation, training, adaptation, the ROS reward monitor):
:func:`parse_camera_map` reads the flag, :func:`apply_camera_map` renames one ``{camera: value}``
dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from episodes.episode import Episode

V = TypeVar("V")

FLAG = "--camera-map"


class CameraMapError(ValueError):
    """The camera map is malformed or does not fit the data: a configuration error, never a bad
    episode (so ``--skip-bad`` does not skip past it)."""


def parse_cameras(cameras: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"front,wrist"``, ``["front", "wrist"]`` or ``["front,wrist"]`` (repeated flags) ->
    ``("front", "wrist")``; empty for ``None``/``""``. Callers decide what an empty list means."""
    items = [cameras] if isinstance(cameras, str) else list(cameras or ())
    return tuple(name.strip() for item in items for name in str(item).split(",") if name.strip())


def parse_camera_map(spec: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``"cam_high=front,cam_left_wrist=wrist"`` (or a list of such strings, as repeated flags give)
    -> ``{"cam_high": "front", "cam_left_wrist": "wrist"}``; empty for ``None``/``""``. An already
    parsed ``{camera: view}`` mapping is checked and copied.

    Raises :class:`CameraMapError` for an item that is not ``DATA_CAMERA=VIEW``, a camera mapped to
    two names, or two cameras mapped onto one name.
    """
    if isinstance(spec, Mapping):
        spec = [f"{source}={view}" for source, view in spec.items()]
    items = [spec] if isinstance(spec, str) else list(spec or ())
    mapping: dict[str, str] = {}
    for item in items:
        for pair in str(item).split(","):
            if not pair.strip():
                continue
            source, sep, view = (part.strip() for part in pair.partition("="))
            if not sep or not source or not view or "=" in view:
                raise CameraMapError(
                    f"{FLAG}: expected DATA_CAMERA=MODEL_VIEW pairs separated by commas, got {pair.strip()!r}"
                )
            if mapping.get(source, view) != view:
                raise CameraMapError(f"{FLAG}: camera {source!r} is mapped twice ({mapping[source]!r} and {view!r})")
            mapping[source] = view
    by_view: dict[str, list[str]] = {}
    for source, view in mapping.items():
        by_view.setdefault(view, []).append(source)
    for view, sources in by_view.items():
        if len(sources) > 1:
            raise CameraMapError(f"{FLAG}: cameras {sources} are all mapped onto {view!r}; one view takes one camera")
    return mapping


def apply_camera_map(frames: Mapping[str, V], mapping: Mapping[str, str]) -> dict[str, V]:
    """``frames`` with its cameras renamed by ``mapping`` (insertion order kept; unmapped cameras
    keep their names).

    Raises :class:`CameraMapError` when the map names a camera ``frames`` does not have, or when a
    renamed camera would take the name of another camera of ``frames``.
    """
    missing = [source for source in mapping if source not in frames]
    if missing:
        raise CameraMapError(
            f"{FLAG} names camera(s) {missing} that the data does not have (its cameras: {list(frames)})"
        )
    renamed: dict[str, V] = {}
    origin: dict[str, str] = {}
    for camera, value in frames.items():
        name = mapping.get(camera, camera)
        if name in renamed:
            raise CameraMapError(
                f"{FLAG} gives two cameras the name {name!r} ({origin[name]!r} and {camera!r}); "
                f"map one of them elsewhere or leave it out with --cameras"
            )
        renamed[name], origin[name] = value, camera
    return renamed


def source_camera_names(names: Sequence[str], mapping: Mapping[str, str]) -> list[str]:
    """The data's camera names for ``names``, which may be view names the map produces (``front``
    -> ``cam_high``) or the data's own names (kept)."""
    to_source = {view: source for source, view in mapping.items()}
    return [to_source.get(name, name) for name in names]


def map_episode_cameras(episode: Episode, mapping: Mapping[str, str]) -> Episode:
    """``episode`` with its cameras renamed (see :func:`apply_camera_map`); the map is recorded in
    ``meta["camera_map"]``. The episode itself is returned when the map is empty."""
    if not mapping:
        return episode
    return replace(
        episode, frames=apply_camera_map(episode.frames, mapping), meta={**episode.meta, "camera_map": dict(mapping)}
    )


__all__ = [
    "CameraMapError",
    "apply_camera_map",
    "map_episode_cameras",
    "parse_camera_map",
    "parse_cameras",
    "source_camera_names",
]
