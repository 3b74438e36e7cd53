"""Hand a clip to a consumer the way the media node delivers camera frames: sampled, downscaled, windowed.

``service/session.py`` keeps a camera frame only if at least ``VIDEO_SAMPLE_INTERVAL`` passed since the
last one it kept, converts it to RGB at ``VIDEO_SIZE`` (``VideoFrame.reformat``: swscale), and
``service/assembler.py`` gives each 200 ms micro-turn the *latest* frame that arrived in its window. So a
15 fps camera reaches the model as ~7.5 frames/s sampled and 5 frames/s delivered. :func:`replay` does the
same to a generated clip, so the features are measured on what the model will actually see.

The constants mirror the service's (tests/test_video.py checks that they agree): importing
``service.session`` here would pull aiortc into every model process for two numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

from service.microturn import MICRO_TURN_MS, VideoFrame

VIDEO_SAMPLE_INTERVAL = 0.1  # s: service/session.py keeps at most ~10 camera frames per second
VIDEO_SIZE = (160, 120)  # (width, height) px the model sees, as service/session.py

RgbFrame = npt.NDArray[np.uint8]  # [H, W, 3]
Keep = Literal["latest", "all"]


@dataclass
class Window:
    """The camera frames of one micro-turn [t_ms, t_ms + 200)."""

    index: int
    t_ms: int
    frames: list[VideoFrame] = field(default_factory=list)


def downscale(rgb: RgbFrame, size: tuple[int, int] = VIDEO_SIZE) -> RgbFrame:
    """What the session makes of a camera frame: I420 (as decoded from the wire), then RGB at ``size``
    through the same swscale call (``reformat``). Frames already at ``size`` still lose their chroma
    resolution, as they would on the wire."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
    small = frame.reformat(width=size[0], height=size[1], format="rgb24")
    return np.asarray(small.to_ndarray(), dtype=np.uint8)  # [h, w, 3]


def replay(
    frames: Iterable[RgbFrame],
    fps: float,
    *,
    keep: Keep = "latest",
    start_s: float = 0.0,
    jitter_s: float = 0.0,
    seed: int = 0,
    sample_interval: float = VIDEO_SAMPLE_INTERVAL,
    size: tuple[int, int] | None = VIDEO_SIZE,
) -> list[Window]:
    """Deliver ``frames`` (shown at ``i / fps`` s of the clip) to micro-turn windows.

    ``start_s``: session time at which the clip's first frame arrives (the clip's time t arrives at
    ``start_s + t``). ``jitter_s``: standard deviation of the network delay added to each arrival (never
    reordering). ``keep="latest"``: each window keeps its last frame, as the assembler does today;
    ``"all"``: every sampled frame (what the features would get if a micro-turn carried all its frames).
    ``size=None`` skips the downscale (frames are already what the model sees).
    """
    rng = np.random.default_rng(seed)
    windows: list[Window] = []
    next_sample = 0.0
    last_arrival = -1.0
    for i, rgb in enumerate(frames):
        arrival = start_s + i / fps + (abs(rng.normal(0.0, jitter_s)) if jitter_s > 0 else 0.0)
        arrival = max(arrival, last_arrival + 1e-4)
        last_arrival = arrival
        if arrival < next_sample:
            continue  # the session drops it: it keeps one frame per VIDEO_SAMPLE_INTERVAL
        next_sample = arrival + sample_interval
        small = downscale(rgb, size) if size is not None else rgb
        t_ms = int(arrival * 1000)
        index = t_ms // MICRO_TURN_MS
        while len(windows) <= index:
            windows.append(Window(len(windows), len(windows) * MICRO_TURN_MS))
        window = windows[index]
        frame = VideoFrame(t_ms=t_ms, rgb=small)
        if keep == "latest":
            window.frames = [frame]
        else:
            window.frames.append(frame)
    return windows
