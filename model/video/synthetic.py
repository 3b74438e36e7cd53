"""Synthetic camera clips with ground truth: exercise (repetition counting) and visual-event scenes.

Nothing can be downloaded here, so the vision work trains and measures on clips drawn with numpy:

- **exercise clips** (``pushups``, ``squats``, ``jumping_jacks``): a figure of filled discs and thick
  lines doing repetitions of 0.8-3 s, the speed drifting within a clip, in sets with pauses, at a varied
  size and place, over a flat, gradient or textured background with an optional slowly moving distractor,
  with camera noise, flicker and shake. Truth: the time each repetition completes (the figure is back in
  its rest pose).
- **visual-event scenes** (``light``, ``appear``, ``number``): a lamp changing colour, an object appearing,
  a card whose number (7-segment digits, :mod:`model.video.palette`) changes. Truth: each event's time and
  its answer ("red", "blue square", "42").

Everything follows from ``(kind, split, seed)`` and the options: the same arguments draw the same pixels.
``split="train"`` and ``split="bench"`` draw from disjoint colour shades, background hues and textures,
distractor shapes and card colours, so that what a model is trained on is never what it is measured on.
Speeds, sizes and timings overlap: the benchmark has to cover the whole 0.8-3 s range.

Writers: ``.y4m`` (raw I420, what Chromium's ``--use-file-for-fake-video-capture`` plays) and ``.mp4`` /
``.webm`` through PyAV. The ground truth goes next to the clip as JSON::

    python -m model.video.synthetic --kind pushups --reps 8 --out clip.y4m   # + clip.json
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from model.video.palette import DIGIT_ASPECT, DIGIT_GAP, DIGIT_SEGMENTS, NAMED_COLOURS, segment_boxes

RgbFrame = npt.NDArray[np.uint8]  # [H, W, 3]
Canvas = npt.NDArray[np.float32]  # [H, W, 3], 0..255 while drawing
Point = tuple[float, float]  # (x, y) in pixels, y downwards

Split = Literal["train", "bench"]
SPLITS: tuple[str, ...] = get_args(Split)
EXERCISES = ("pushups", "squats", "jumping_jacks")
SCENES = ("light", "appear", "number")
KINDS = EXERCISES + SCENES
SHAPES = ("disc", "square", "triangle")

MIN_REP_S = 0.8  # s: the fastest repetition drawn
MAX_REP_S = 3.0  # s: the slowest
DEFAULT_FPS = 15.0  # frames/s: what the fake camera plays; the media node samples ~10 of them a second
DEFAULT_SIZE = (320, 240)  # (width, height) px: a small webcam; the media node downscales to 160x120
REFERENCE_WIDTH = 160  # px: sizes below are tuned at this width and scaled with the clip's width
CONTRAST = 110.0  # RGB distance at which a figure or object stands out from its background
SHAKE_PX = 0.5  # px at REFERENCE_WIDTH: how far a jolt of the camera moves the picture at most


@dataclass(frozen=True)
class VisualEvent:
    """Something that happens on screen at ``t`` and the answer that names it."""

    t: float  # s from the clip's first frame
    kind: str  # "colour" (a light turned this colour) | "appear" | "number" (the card now shows it)
    answer: str  # "red", "blue square", "42"
    region: tuple[float, float, float, float]  # (x0, y0, x1, y1) where it happens, as shares of W and H


@dataclass
class Clip:
    """One generated clip: how to draw each frame, and what happens in it.

    Frames are drawn on demand (:meth:`frames`, :meth:`render`): a 30 s clip at 320x240 and 15 fps is
    100 MB as an array, and writers and replays only need one frame at a time.
    """

    kind: str
    split: str
    seed: int
    fps: float
    size: tuple[int, int]  # (width, height) px
    duration: float  # s
    rep_times: list[float]  # s: when each repetition completes (exercise clips; empty for scenes)
    events: list[VisualEvent]  # visual events (scenes; empty for exercise clips)
    params: dict[str, Any]  # what was drawn: speeds, sets, colours... (for the JSON and for debugging)
    _draw: Callable[[float, int], RgbFrame] = field(repr=False)  # (t, frame index) -> frame

    @property
    def n_frames(self) -> int:
        return math.floor(self.duration * self.fps + 1e-9)

    def frame(self, i: int) -> RgbFrame:
        """Frame ``i``, shown at ``i / fps`` s."""
        return self._draw(i / self.fps, i)

    def frames(self) -> Iterator[RgbFrame]:
        for i in range(self.n_frames):
            yield self.frame(i)

    def render(self) -> npt.NDArray[np.uint8]:
        """All frames at once, [T, H, W, 3]."""
        return np.stack(list(self.frames()))

    def truth(self) -> dict[str, Any]:
        """The ground truth as JSON-able data."""
        return {
            "kind": self.kind,
            "split": self.split,
            "seed": self.seed,
            "fps": self.fps,
            "width": self.size[0],
            "height": self.size[1],
            "duration": round(self.duration, 3),
            "frames": self.n_frames,
            "reps": len(self.rep_times),
            "rep_times": [round(t, 3) for t in self.rep_times],
            "events": [
                {
                    "t": round(e.t, 3),
                    "kind": e.kind,
                    "answer": e.answer,
                    "region": [round(v, 3) for v in e.region],
                }
                for e in self.events
            ],
            "params": self.params,
        }


def make_clip(
    kind: str,
    *,
    seed: int = 0,
    split: Split = "train",
    reps: int | None = None,
    fps: float = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    duration: float | None = None,
    noise: float | None = None,
    clean: bool = False,
    period: float | None = None,
) -> Clip:
    """Draw the parameters of one clip from ``(kind, split, seed)``.

    ``reps``: repetitions of an exercise clip (default 4-12). ``duration``: length of a scene (default
    8-12 s; exercise clips last as long as their repetitions take). ``noise``: camera noise sigma in
    levels of 0..255 (default drawn per split). ``clean=True``: flat background, no distractor, noise,
    flicker or shake -- the easy case the counting must get exactly right. ``period``: the repetitions'
    base period in s (default drawn in 0.9-2.6); the drift and jitter around it stay, within 0.8-3 s.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    width, height = size
    if width % 2 or height % 2 or width < 32 or height < 24:
        raise ValueError(f"size must be even and at least 32x24, got {width}x{height}")
    if not 1.0 <= fps <= 60.0:
        raise ValueError(f"fps must be in [1, 60], got {fps}")
    rng = np.random.default_rng(_seed(kind, split, seed))
    look = _Look.draw(rng, split, width, height, clean=clean, noise=noise)
    if kind in EXERCISES:
        return _exercise_clip(kind, rng, look, seed, split, fps, size, reps, period)
    return _scene_clip(kind, rng, look, seed, split, fps, size, duration)


def _seed(kind: str, split: str, seed: int) -> int:
    # hashlib, not hash(): Python salts str hashes per process, and a clip must be the same everywhere.
    digest = hashlib.sha256(f"microturn-video:{split}:{kind}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


# -- colours ---------------------------------------------------------------------------------------------
# Shades of the named colours per split: saturation and value ranges do not overlap, so the benchmark's
# red is a red the train split never drew (but still red to the namer).
_SHADES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "train": ((0.80, 0.92), (0.86, 0.97)),  # (saturation range, value range)
    "bench": ((0.66, 0.79), (0.72, 0.85)),
}
_SKIN = ((224, 188, 160), (198, 150, 112), (150, 104, 72), (96, 66, 46))
_TROUSERS = {
    "train": ((40, 40, 48), (48, 62, 110), (90, 90, 96)),
    "bench": ((30, 30, 30), (70, 50, 40), (60, 70, 60)),
}
# Background hues: train draws from the even 30-degree bands, bench from the odd ones.
_BAND_OFFSET = {"train": 0, "bench": 1}
_CARD = {  # (card, ink)
    "train": (((240, 240, 232), (20, 20, 24)), ((238, 230, 205), (30, 30, 60))),
    "bench": (((236, 232, 190), (25, 35, 90)), ((214, 226, 240), (60, 30, 20))),
}
_DISTRACTOR_SHAPES = {"train": ("disc",), "bench": ("square", "triangle")}


def shade(name: str, split: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """An RGB shade of the named colour for ``split``: the palette's hue +-4 degrees, the split's saturation
    and value."""
    r, g, b = (c / 255 for c in NAMED_COLOURS[name])
    hue = colorsys.rgb_to_hsv(r, g, b)[0] + rng.uniform(-4.0, 4.0) / 360
    (s0, s1), (v0, v1) = _SHADES[split]
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return (rgb[0] * 255, rgb[1] * 255, rgb[2] * 255)


def _distance(a: Iterable[float], b: Iterable[float]) -> float:
    return float(np.linalg.norm(np.subtract(tuple(a), tuple(b))))


# -- drawing primitives (anti-aliased, on a float canvas) ------------------------------------------------
def _blend(canvas: Canvas, x0: int, y0: int, alpha: npt.NDArray[np.float32], colour: Iterable[float]) -> None:
    h, w = alpha.shape
    region = canvas[y0 : y0 + h, x0 : x0 + w]  # [h, w, 3] view
    a = alpha[..., None]
    region += a * (np.asarray(tuple(colour), dtype=np.float32) - region)


def _grid(canvas: Canvas, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, Any, Any] | None:
    """Pixel centres of [x0, x1] x [y0, y1] clipped to the canvas: (ix0, iy0, xs [1, w], ys [h, 1])."""
    h, w = canvas.shape[:2]
    ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    ix1, iy1 = min(w, math.ceil(x1) + 1), min(h, math.ceil(y1) + 1)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    xs = np.arange(ix0, ix1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(iy0, iy1, dtype=np.float32)[:, None] + 0.5
    return ix0, iy0, xs, ys


def capsule(canvas: Canvas, p0: Point, p1: Point, radius: float, colour: Iterable[float]) -> None:
    """A thick line with round ends (a limb); ``p0 == p1`` draws a disc."""
    r = max(radius, 0.7)  # px: thinner than this vanishes at 160x120
    g = _grid(
        canvas,
        min(p0[0], p1[0]) - r - 1,
        min(p0[1], p1[1]) - r - 1,
        max(p0[0], p1[0]) + r + 1,
        max(p0[1], p1[1]) + r + 1,
    )
    if g is None:
        return
    ix0, iy0, xs, ys = g
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = vx * vx + vy * vy
    dx, dy = xs - p0[0], ys - p0[1]
    t = np.clip((dx * vx + dy * vy) / length2, 0.0, 1.0) if length2 > 1e-9 else np.zeros_like(dx * dy)
    dist = np.hypot(dx - t * vx, dy - t * vy)  # [h, w] px to the segment
    _blend(canvas, ix0, iy0, np.clip(r + 0.5 - dist, 0.0, 1.0).astype(np.float32), colour)


def disc(canvas: Canvas, centre: Point, radius: float, colour: Iterable[float]) -> None:
    capsule(canvas, centre, centre, radius, colour)


def rect(canvas: Canvas, x0: float, y0: float, x1: float, y1: float, colour: Iterable[float]) -> None:
    """A filled axis-aligned box, edges anti-aliased."""
    g = _grid(canvas, x0 - 1, y0 - 1, x1 + 1, y1 + 1)
    if g is None:
        return
    ix0, iy0, xs, ys = g
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    sd = np.maximum(np.abs(xs - cx) - hw, np.abs(ys - cy) - hh)  # [h, w] signed px outside the box
    _blend(canvas, ix0, iy0, np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32), colour)


def polygon(canvas: Canvas, points: list[Point], colour: Iterable[float]) -> None:
    """A filled convex polygon (points in either winding)."""
    xs_, ys_ = [p[0] for p in points], [p[1] for p in points]
    g = _grid(canvas, min(xs_) - 1, min(ys_) - 1, max(xs_) + 1, max(ys_) + 1)
    if g is None:
        return
    ix0, iy0, xs, ys = g
    area = sum(
        xs_[i] * ys_[(i + 1) % len(points)] - xs_[(i + 1) % len(points)] * ys_[i] for i in range(len(points))
    )
    sign = 1.0 if area > 0 else -1.0
    sd = np.full(np.broadcast_shapes(xs.shape, ys.shape), -1e9, dtype=np.float32)
    for i, (ax, ay) in enumerate(points):
        bx, by = points[(i + 1) % len(points)]
        ex, ey = bx - ax, by - ay
        norm = math.hypot(ex, ey) or 1.0
        # Signed distance outside this edge's line (positive outside); the max over edges: outside the shape.
        sd = np.maximum(sd, sign * ((xs - ax) * ey - (ys - ay) * ex) / norm)
    _blend(canvas, ix0, iy0, np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32), colour)


def shape(canvas: Canvas, kind: str, centre: Point, size: float, colour: Iterable[float]) -> None:
    """A disc, square or triangle whose bounding box is ``2 * size`` across."""
    cx, cy = centre
    if kind == "disc":
        disc(canvas, centre, size, colour)
    elif kind == "square":
        rect(canvas, cx - size * 0.9, cy - size * 0.9, cx + size * 0.9, cy + size * 0.9, colour)
    elif kind == "triangle":
        polygon(canvas, [(cx, cy - size), (cx + size, cy + size * 0.8), (cx - size, cy + size * 0.8)], colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def digits(canvas: Canvas, text: str, x0: float, y0: float, height: float, ink: Iterable[float]) -> None:
    """Draw ``text`` (digits) in the 7-segment font of :mod:`model.video.palette`, top-left at (x0, y0)."""
    boxes = segment_boxes()
    ink = tuple(ink)
    x = x0
    for ch in text:
        for seg in DIGIT_SEGMENTS[ch]:
            bx0, by0, bx1, by1 = boxes[seg]
            rect(canvas, x + bx0 * height, y0 + by0 * height, x + bx1 * height, y0 + by1 * height, ink)
        x += (DIGIT_ASPECT + DIGIT_GAP) * height


def digits_width(text: str, height: float) -> float:
    """Width in px of ``text`` drawn by :func:`digits`."""
    return (len(text) * DIGIT_ASPECT + (len(text) - 1) * DIGIT_GAP) * height


# -- the look of a clip: background, distractor, camera --------------------------------------------------
@dataclass
class _Distractor:
    shape: str
    colour: tuple[float, float, float]
    size: float  # px, half the bounding box
    start: Point  # px
    velocity: Point  # px/s

    def position(self, t: float, width: int, height: int) -> Point:
        # Bounces inside the frame: a triangle wave of the straight path.
        def bounce(v: float, lo: float, hi: float) -> float:
            span = hi - lo
            u = (v - lo) % (2 * span)
            return lo + (u if u < span else 2 * span - u)

        m = self.size
        return (
            bounce(self.start[0] + self.velocity[0] * t, m, width - m),
            bounce(self.start[1] + self.velocity[1] * t, m, height - m),
        )


@dataclass
class _Look:
    background: Canvas  # [H, W, 3]
    background_style: str
    background_mean: tuple[float, float, float]
    distractor: _Distractor | None
    noise: float  # camera noise sigma, levels of 0..255
    flicker: float  # relative amplitude of the brightness flicker
    flicker_period: float  # s
    shake: float  # probability per frame of a 1 px camera jump

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        split: str,
        width: int,
        height: int,
        *,
        clean: bool,
        noise: float | None,
    ) -> _Look:
        style = "flat" if clean else str(rng.choice(["flat", "gradient", "texture"]))
        bg = _background(rng, split, style, width, height)
        mean = tuple(float(c) for c in bg.reshape(-1, 3).mean(axis=0))
        distractor = None
        if not clean and rng.random() < 0.5:
            size = rng.uniform(0.04, 0.08) * height
            speed = rng.uniform(0.02, 0.06) * width  # px/s: slow, a pet or a swaying plant, not an exercise
            angle = rng.uniform(0, 2 * math.pi)
            colour = _contrasting(rng, split, mean)
            distractor = _Distractor(
                shape=str(rng.choice(_DISTRACTOR_SHAPES[split])),
                colour=colour,
                size=size,
                start=(rng.uniform(size, width - size), rng.uniform(size, height * 0.5)),
                velocity=(speed * math.cos(angle), speed * math.sin(angle)),
            )
        if clean:
            sigma, flicker, shake = 0.0, 0.0, 0.0
        else:
            lo, hi = (0.0, 7.0) if split == "train" else (1.0, 9.0)
            sigma = float(rng.uniform(lo, hi)) if noise is None else noise
            flicker = float(rng.uniform(0.0, 0.03))
            shake = float(rng.choice([0.0, 0.0, 0.1]))
        if noise is not None:
            sigma = noise
        return cls(
            background=bg,
            background_style=style,
            background_mean=(mean[0], mean[1], mean[2]),
            distractor=distractor,
            noise=sigma,
            flicker=flicker,
            flicker_period=float(rng.uniform(2.0, 6.0)),
            shake=shake,
        )

    def canvas(self, t: float) -> Canvas:
        canvas = self.background.copy()
        if self.distractor is not None:
            h, w = canvas.shape[:2]
            d = self.distractor
            shape(canvas, d.shape, d.position(t, w, h), d.size, d.colour)
        return canvas

    def finish(self, canvas: Canvas, t: float, i: int, seed: int) -> RgbFrame:
        """Camera: flicker, shake and noise, then 8 bits. Noise is seeded per frame: any frame can be drawn
        alone and is the same as in a full render."""
        if self.flicker:
            canvas *= 1.0 + self.flicker * math.sin(2 * math.pi * t / self.flicker_period)
        rng = np.random.default_rng((seed, i))
        if self.shake and rng.random() < self.shake:
            # A jolt of the camera: the picture moves by up to SHAKE_PX (at REFERENCE_WIDTH) for one frame.
            reach = SHAKE_PX * canvas.shape[1] / REFERENCE_WIDTH
            canvas = _translate(canvas, rng.uniform(-reach, reach), rng.uniform(-reach, reach))
        if self.noise:
            canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(self.noise)
        return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)  # [H, W, 3]

    def params(self) -> dict[str, Any]:
        return {
            "background": self.background_style,
            "background_mean": [round(c) for c in self.background_mean],
            "distractor": None if self.distractor is None else self.distractor.shape,
            "noise": round(self.noise, 2),
            "flicker": round(self.flicker, 3),
            "shake": self.shake,
        }


def _translate(canvas: Canvas, dx: float, dy: float) -> Canvas:
    """``canvas`` moved by (dx, dy) px, sub-pixel by bilinear interpolation, edges repeated."""
    out = canvas
    for axis, d in ((1, dx), (0, dy)):
        whole = math.floor(d)
        frac = np.float32(d - whole)
        pad = [(0, 0)] * 3
        pad[axis] = (abs(whole) + 1, abs(whole) + 1)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        start = abs(whole) + 1 - whole  # padded index of source pixel x - whole for output pixel 0
        a = np.take(padded, np.arange(start, start + n), axis=axis)
        b = np.take(padded, np.arange(start - 1, start - 1 + n), axis=axis)
        out = (1 - frac) * a + frac * b
    return out


def _background_colour(rng: np.random.Generator, split: str) -> tuple[float, float, float]:
    band = 2 * int(rng.integers(0, 6)) + _BAND_OFFSET[split]
    hue = (band + rng.uniform(0.1, 0.9)) * 30.0 / 360.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.45), rng.uniform(0.35, 0.85))
    return (rgb[0] * 255, rgb[1] * 255, rgb[2] * 255)


def _background(rng: np.random.Generator, split: str, style: str, width: int, height: int) -> Canvas:
    a = np.asarray(_background_colour(rng, split), dtype=np.float32)
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = a
    if style == "gradient":
        b = np.asarray(_background_colour(rng, split), dtype=np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        u = xs * math.cos(angle) / width + ys * math.sin(angle) / height
        u = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)  # [H, W] 0..1 along the gradient
        canvas = a + u[..., None] * (b - a)
    elif style == "texture":
        # Low-frequency blotches (a wall, a carpet) plus fine grain; the cell sizes differ per split.
        cell = rng.uniform(6, 12) if split == "train" else rng.uniform(14, 24)  # px at REFERENCE_WIDTH
        cell *= width / REFERENCE_WIDTH
        gh, gw = int(height / cell) + 2, int(width / cell) + 2
        coarse = rng.standard_normal((gh, gw, 3)).astype(np.float32) * np.float32(rng.uniform(10, 25))
        ys = np.linspace(0, gh - 1.001, height, dtype=np.float32)
        xs = np.linspace(0, gw - 1.001, width, dtype=np.float32)
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
        bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
        grain = rng.standard_normal((height, width, 1)).astype(np.float32) * np.float32(rng.uniform(2, 6))
        canvas = canvas + top * (1 - fy) + bottom * fy + grain
    return np.clip(canvas, 0, 255).astype(np.float32)


def _named_contrasting(
    rng: np.random.Generator, split: str, against: tuple[float, ...], avoid: tuple[str, ...] = ()
) -> tuple[str, tuple[float, float, float]]:
    """A named colour and a shade of it that stands out from ``against`` (the background's mean colour):
    the first of 20 draws far enough from it, else the farthest."""
    names = [n for n in NAMED_COLOURS if n not in avoid]
    best = (names[0], shade(names[0], split, rng))
    for _ in range(20):
        name = str(rng.choice(names))
        colour = shade(name, split, rng)
        if _distance(colour, against) > CONTRAST:
            return name, colour
        if _distance(colour, against) > _distance(best[1], against):
            best = (name, colour)
    return best


def _contrasting(
    rng: np.random.Generator, split: str, against: tuple[float, ...], avoid: tuple[str, ...] = ()
) -> tuple[float, float, float]:
    return _named_contrasting(rng, split, against, avoid)[1]


# -- exercise clips --------------------------------------------------------------------------------------
Joints = dict[str, tuple[float, float]]  # name -> (x, y) in figure units: x forward/right, y up, feet at 0


def _arm(shoulder: Point, angle_deg: float, length: float = 0.30) -> tuple[Point, Point]:
    a = math.radians(angle_deg)
    ux, uy = math.cos(a), math.sin(a)
    return (
        (shoulder[0] + ux * length / 2, shoulder[1] + uy * length / 2),
        (shoulder[0] + ux * length, shoulder[1] + uy * length),
    )


def _pushup(d: float) -> Joints:
    """Side view, facing +x: d=0 arms straight (rest), d=1 chest near the floor."""
    hand = (0.30, 0.0)
    shoulder = (0.30, 0.27 - 0.16 * d)
    foot = (-0.55, 0.03)
    bx, by = shoulder[0] - foot[0], shoulder[1] - foot[1]
    norm = math.hypot(bx, by)
    hip = (foot[0] + 0.52 * bx, foot[1] + 0.52 * by - 0.01 * d)
    knee = ((foot[0] + hip[0]) / 2, (foot[1] + hip[1]) / 2)
    head = (shoulder[0] + 0.12 * bx / norm, shoulder[1] + 0.12 * by / norm + 0.03)
    # Elbow by two-link inverse kinematics (upper arm = forearm = 0.16): it folds back towards the feet.
    half = shoulder[1] / 2
    out = math.sqrt(max(0.0, 0.16**2 - half**2))
    elbow = (shoulder[0] - out, half)
    return {
        "head": head,
        "shoulder": shoulder,
        "hip": hip,
        "knee": knee,
        "foot": foot,
        "elbow": elbow,
        "hand": hand,
    }


def _squat_side(d: float) -> Joints:
    """Side view, facing +x: d=0 standing, d=1 thighs near horizontal, arms reaching forward."""
    ankle = (0.0, 0.03)
    a_s, a_t, a_b = math.radians(30 * d), math.radians(85 * d), math.radians(40 * d)
    knee = (ankle[0] + 0.24 * math.sin(a_s), ankle[1] + 0.24 * math.cos(a_s))
    hip = (knee[0] - 0.25 * math.sin(a_t), knee[1] + 0.25 * math.cos(a_t))
    shoulder = (hip[0] + 0.30 * math.sin(a_b), hip[1] + 0.30 * math.cos(a_b))
    head = (shoulder[0] + 0.11 * math.sin(a_b), shoulder[1] + 0.11 * math.cos(a_b))
    elbow, hand = _arm(shoulder, -90 + 85 * d)
    return {
        "head": head,
        "shoulder": shoulder,
        "hip": hip,
        "knee": knee,
        "foot": ankle,
        "toe": (0.09, 0.01),
        "elbow": elbow,
        "hand": hand,
    }


def _squat_front(d: float) -> Joints:
    """Front view: knees out, hips and upper body down, hands rising to the chest."""
    drop = 0.22 * d
    j: Joints = {"head": (0.0, 0.93 - drop), "neck": (0.0, 0.82 - drop), "pelvis": (0.0, 0.52 - drop)}
    for side, s in (("r", 1.0), ("l", -1.0)):
        j[f"foot_{side}"] = (s * 0.09, 0.03)
        j[f"knee_{side}"] = (s * (0.08 + 0.09 * d), 0.27 - 0.05 * d)
        j[f"hip_{side}"] = (s * 0.06, 0.52 - drop)
        shoulder = (s * 0.10, 0.82 - drop)
        j[f"shoulder_{side}"] = shoulder
        hand = (s * (0.14 - 0.07 * d), shoulder[1] - 0.30 * (1 - d) - 0.03 * d)
        j[f"hand_{side}"] = hand
        j[f"elbow_{side}"] = ((shoulder[0] + hand[0]) / 2 + s * 0.04, (shoulder[1] + hand[1]) / 2)
    return j


def _jumping_jack(d: float) -> Joints:
    """Front view: d=0 feet together and arms down, d=1 feet apart and arms overhead; a hop in between."""
    hop = 0.04 * math.sin(math.pi * d)
    j: Joints = {"head": (0.0, 0.93 + hop), "neck": (0.0, 0.82 + hop), "pelvis": (0.0, 0.52 + hop)}
    for side, s in (("r", 1.0), ("l", -1.0)):
        foot = (s * (0.07 + 0.18 * d), 0.03 + hop)
        hip = (s * 0.06, 0.52 + hop)
        j[f"foot_{side}"], j[f"hip_{side}"] = foot, hip
        j[f"knee_{side}"] = ((foot[0] + hip[0]) / 2 + s * 0.01, (foot[1] + hip[1]) / 2)
        shoulder = (s * 0.10, 0.82 + hop)
        j[f"shoulder_{side}"] = shoulder
        elbow, hand = _arm((0.0, 0.0), -75 + 155 * d)
        j[f"elbow_{side}"] = (shoulder[0] + s * elbow[0], shoulder[1] + elbow[1])
        j[f"hand_{side}"] = (shoulder[0] + s * hand[0], shoulder[1] + hand[1])
    return j


_POSES: dict[str, Callable[[float], Joints]] = {
    "pushups": _pushup,
    "squats:side": _squat_side,
    "squats:front": _squat_front,
    "jumping_jacks": _jumping_jack,
}
# Limbs as (joint, joint, radius in figure units, part) in drawing order; part picks the colour.
_SIDE_LIMBS = (
    ("foot", "knee", 0.040, "legs"),
    ("knee", "hip", 0.045, "legs"),
    ("hip", "shoulder", 0.060, "shirt"),
    ("shoulder", "elbow", 0.032, "shirt"),
    ("elbow", "hand", 0.028, "skin"),
)
_LEGS = (("foot", "knee", 0.035, "legs"), ("knee", "hip", 0.040, "legs"))
_ARMS = (("shoulder", "elbow", 0.030, "shirt"), ("elbow", "hand", 0.026, "skin"))
_FRONT_LIMBS = (
    *((f"{a}_{s}", f"{b}_{s}", r, part) for s in ("l", "r") for a, b, r, part in _LEGS),
    ("neck", "pelvis", 0.085, "shirt"),
    *((f"{a}_{s}", f"{b}_{s}", r, part) for s in ("l", "r") for a, b, r, part in _ARMS),
)


@dataclass
class _Figure:
    pose: str  # key of _POSES
    scale: float  # px per figure unit
    anchor: Point  # px: where figure (0, 0) -- the floor under it -- is
    facing: float  # +1 faces right, -1 left (side views)
    colours: dict[str, tuple[float, float, float]]  # shirt, legs, skin
    sway_phase: float

    def draw(self, canvas: Canvas, d: float, t: float) -> None:
        j = _POSES[self.pose](d)
        # Breathing and balance: the upper body never stands perfectly still, even between sets.
        sway = 0.006 * math.sin(2 * math.pi * t / 3.1 + self.sway_phase)

        def px(name: str) -> Point:
            x, y = j[name]
            if y > 0.45 and self.pose != "pushups":
                x += sway
            return (self.anchor[0] + self.facing * x * self.scale, self.anchor[1] - y * self.scale)

        limbs = _FRONT_LIMBS if ":front" in self.pose or self.pose == "jumping_jacks" else _SIDE_LIMBS
        if "toe" in j:
            capsule(canvas, px("foot"), px("toe"), 0.03 * self.scale, self.colours["legs"])
        for a, b, radius, part in limbs:
            capsule(canvas, px(a), px(b), radius * self.scale, self.colours[part])
        disc(canvas, px("head"), 0.075 * self.scale, self.colours["skin"])

    def extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) px the figure covers over its whole movement (for placing other things)."""
        xs, ys = [], []
        for d in np.linspace(0, 1, 5):
            for x, y in _POSES[self.pose](float(d)).values():
                xs.append(self.anchor[0] + self.facing * x * self.scale)
                ys.append(self.anchor[1] - y * self.scale)
        m = 0.09 * self.scale
        return (min(xs) - m, min(ys) - m, max(xs) + m, max(ys) + m)


def _figure(rng: np.random.Generator, split: str, pose: str, look: _Look, width: int, height: int) -> _Figure:
    if pose == "pushups":
        scale = rng.uniform(0.50, 0.85) * width
        scale = min(scale, 2.4 * height)
        ground = rng.uniform(0.72, 0.93) * height
        facing = float(rng.choice([-1.0, 1.0]))
        # Keep the body (-0.55 .. 0.45 figure units) inside the frame.
        lo, hi = 0.58 * scale, width - 0.48 * scale
        cx = (
            rng.uniform(min(lo, hi), max(lo, hi))
            if facing > 0
            else rng.uniform(min(width - lo, width - hi), max(width - lo, width - hi))
        )
    else:
        scale = rng.uniform(0.45, 0.80) * height
        ground = rng.uniform(max(0.75 * height, scale * 1.02 + 0.02 * height), 0.97 * height)
        ground = min(ground, height - 2.0)
        facing = float(rng.choice([-1.0, 1.0]))
        cx = rng.uniform(0.3, 0.7) * width
    shirt = _contrasting(rng, split, look.background_mean)
    legs = tuple(float(c) for c in _TROUSERS[split][int(rng.integers(0, len(_TROUSERS[split])))])
    skin = tuple(float(c) for c in _SKIN[int(rng.integers(0, len(_SKIN)))])
    return _Figure(
        pose=pose,
        scale=float(scale),
        anchor=(float(cx), float(ground)),
        facing=facing,
        colours={"shirt": shirt, "legs": (legs[0], legs[1], legs[2]), "skin": (skin[0], skin[1], skin[2])},
        sway_phase=float(rng.uniform(0, 2 * math.pi)),
    )


@dataclass(frozen=True)
class _Rep:
    start: float  # s
    end: float  # s: the repetition is complete (back in the rest pose)
    depth: float  # 0..1: how far this repetition goes
    down_share: float  # share of the repetition spent going away from the rest pose

    def depth_at(self, t: float) -> float:
        phase = (t - self.start) / (self.end - self.start)
        q = self.down_share
        warped = 0.5 * phase / q if phase < q else 0.5 + 0.5 * (phase - q) / (1 - q)
        return self.depth * (1 - math.cos(2 * math.pi * warped)) / 2


def _schedule(
    rng: np.random.Generator, reps: int, period: float | None = None
) -> tuple[list[_Rep], float, dict[str, Any]]:
    """Repetitions with a drifting period, split into sets with pauses; returns (reps, duration, params)."""
    drawn = rng.uniform(0.9, 2.6)  # s; drawn even when given, so the rest of the clip stays the same
    base = drawn if period is None else period
    drift = rng.uniform(-0.35, 0.35)  # relative change of the period from the first rep to the last
    periods = []
    for i in range(reps):
        x = 2 * i / (reps - 1) - 1 if reps > 1 else 0.0
        p = base * (1 + drift * x) * (1 + rng.normal(0, 0.06))
        periods.append(float(np.clip(p, MIN_REP_S, MAX_REP_S)))
    sets = 1 if reps < 4 or rng.random() < 0.5 else int(rng.integers(2, 4 if reps >= 6 else 3))
    breaks = sorted(rng.choice(np.arange(1, reps), size=sets - 1, replace=False).tolist()) if sets > 1 else []
    t = float(rng.uniform(0.8, 2.0))  # s at rest before the first repetition
    lead = t
    out: list[_Rep] = []
    pauses = []
    for i, p in enumerate(periods):
        if i in breaks:
            pause = float(rng.uniform(1.5, 4.0))
            pauses.append(round(pause, 2))
            t += pause
        out.append(_Rep(t, t + p, float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.4, 0.6))))
        t += p
    duration = t + float(rng.uniform(0.8, 1.5))
    params = {
        "periods": [round(p, 2) for p in periods],
        "drift": round(drift, 3),
        "sets": sets,
        "pauses": pauses,
        "lead": round(lead, 2),
    }
    return out, duration, params


def _exercise_clip(
    kind: str,
    rng: np.random.Generator,
    look: _Look,
    seed: int,
    split: str,
    fps: float,
    size: tuple[int, int],
    reps: int | None,
    period: float | None,
) -> Clip:
    width, height = size
    n = int(rng.integers(4, 13)) if reps is None else reps
    if n < 1:
        raise ValueError(f"reps must be >= 1, got {n}")
    pose = f"squats:{rng.choice(['side', 'front'])}" if kind == "squats" else kind
    figure = _figure(rng, split, pose, look, width, height)
    schedule, duration, params = _schedule(rng, n, period)
    starts = np.array([r.start for r in schedule])
    key = _seed(kind, split, seed)

    def draw(t: float, i: int) -> RgbFrame:
        canvas = look.canvas(t)
        k = int(np.searchsorted(starts, t, side="right")) - 1
        d = schedule[k].depth_at(t) if k >= 0 and t < schedule[k].end else 0.0
        figure.draw(canvas, d, t)
        return look.finish(canvas, t, i, key)

    params.update(look.params())
    params.update(
        {"pose": pose, "figure_px": round(figure.scale, 1), "anchor": [round(v) for v in figure.anchor]}
    )
    return Clip(kind, split, seed, fps, size, duration, [r.end for r in schedule], [], params, draw)


# -- visual-event scenes ---------------------------------------------------------------------------------
def _free_spot(
    rng: np.random.Generator,
    width: int,
    height: int,
    radius: float,
    avoid: tuple[float, float, float, float] | None,
) -> Point:
    """A centre for something ``radius`` px across that stays clear of ``avoid`` (x0, y0, x1, y1)."""
    best: Point = (width / 2, height / 2)
    for _ in range(50):
        c = (rng.uniform(radius + 2, width - radius - 2), rng.uniform(radius + 2, height - radius - 2))
        best = c
        if avoid is None:
            return c
        x0, y0, x1, y1 = avoid
        if c[0] + radius < x0 or c[0] - radius > x1 or c[1] + radius < y0 or c[1] - radius > y1:
            return c
    return best


def _event_times(rng: np.random.Generator, duration: float, count: int) -> list[float]:
    """``count`` unannounced times, the first after 2 s, >= 1.5 s apart, the last >= 1.5 s before the end."""
    times: list[float] = []
    t = 2.0
    for k in range(count):
        room = duration - 1.5 - 1.5 * (count - k - 1) - t
        t += float(rng.uniform(0.0, max(room, 0.0)) * (0.6 if k < count - 1 else 1.0))
        times.append(round(t, 3))
        t += 1.5
    return times


def _scene_clip(
    kind: str,
    rng: np.random.Generator,
    look: _Look,
    seed: int,
    split: str,
    fps: float,
    size: tuple[int, int],
    duration: float | None,
) -> Clip:
    width, height = size
    length = float(rng.uniform(8.0, 12.0)) if duration is None else duration
    if length < 4.0:
        raise ValueError(f"a scene lasts at least 4 s, got {length}")
    key = _seed(kind, split, seed)
    # Half the scenes have someone on camera who is not exercising: a swaying figure is motion to ignore.
    person = None
    if rng.random() < 0.5:
        person = _figure(rng, split, "squats:front", look, width, height)
        person.scale *= 0.8
        person.anchor = (float(rng.choice([0.2, 0.8])) * width, person.anchor[1])
    avoid = person.extent() if person is not None else None
    params: dict[str, Any] = {"person": person is not None}
    events: list[VisualEvent] = []
    draw_thing: Callable[[Canvas, float], None]

    if kind == "light":
        radius = float(rng.uniform(0.06, 0.10) * height)
        centre = _free_spot(rng, width, height, radius * 1.5, avoid)
        times = _event_times(rng, length, int(rng.integers(1, 4)))
        state = "off" if rng.random() < 0.5 else str(rng.choice(list(NAMED_COLOURS)))
        states: list[tuple[float, str, tuple[float, float, float]]] = [
            (-1.0, state, (70.0, 70.0, 72.0) if state == "off" else shade(state, split, rng))
        ]
        for t in times:
            name = str(rng.choice([n for n in NAMED_COLOURS if n != states[-1][1]]))
            states.append((t, name, shade(name, split, rng)))
        region = _region(centre, radius, width, height)
        events = [VisualEvent(t, "colour", name, region) for t, name, _ in states[1:]]
        housing = (38.0, 38.0, 42.0) if split == "train" else (60.0, 48.0, 40.0)

        def draw_light(canvas: Canvas, t: float) -> None:
            colour = next(c for start, _, c in reversed(states) if t >= start)
            if split == "train":
                rect(
                    canvas,
                    centre[0] - 1.4 * radius,
                    centre[1] - 1.4 * radius,
                    centre[0] + 1.4 * radius,
                    centre[1] + 1.4 * radius,
                    housing,
                )
            else:
                disc(canvas, centre, 1.35 * radius, housing)
            disc(canvas, centre, radius, colour)

        draw_thing = draw_light
        params.update({"initial": state, "radius_px": round(radius, 1)})
    elif kind == "appear":
        size_px = float(rng.uniform(0.06, 0.11) * height)
        centre = _free_spot(rng, width, height, size_px, avoid)
        local = tuple(float(c) for c in look.background[int(centre[1]), int(centre[0])])
        name, colour = _named_contrasting(rng, split, local)
        form = str(rng.choice(SHAPES))
        t_on = _event_times(rng, length, 1)[0]
        events = [VisualEvent(t_on, "appear", f"{name} {form}", _region(centre, size_px, width, height))]

        def draw_object(canvas: Canvas, t: float) -> None:
            if t >= t_on:
                shape(canvas, form, centre, size_px, colour)

        draw_thing = draw_object
        params.update({"shape": form, "size_px": round(size_px, 1)})
    else:  # number
        card_h = float(rng.uniform(0.28, 0.40) * height)
        digit_h = 0.62 * card_h
        card_w = digits_width("88", digit_h) + 0.5 * card_h
        centre = _free_spot(rng, width, height, max(card_w, card_h) / 2, avoid)
        card, ink = _CARD[split][int(rng.integers(0, 2))]
        times = _event_times(rng, length, int(rng.integers(1, 4)))
        values = [str(int(rng.integers(0, 100)))]
        for _ in times:
            values.append(str(rng.choice([v for v in map(str, range(100)) if v != values[-1]])))
        flips = [float(rng.choice([0.0, 0.0, rng.uniform(0.1, 0.3)])) for _ in times]  # s of blank card
        x0, y0 = centre[0] - card_w / 2, centre[1] - card_h / 2
        region = (x0 / width, y0 / height, (x0 + card_w) / width, (y0 + card_h) / height)
        events = [VisualEvent(t, "number", v, region) for t, v in zip(times, values[1:], strict=True)]

        def draw_card(canvas: Canvas, t: float) -> None:
            rect(canvas, x0, y0, x0 + card_w, y0 + card_h, card)
            k = int(np.searchsorted(times, t, side="right"))
            if k < len(times) and t >= times[k] - flips[k]:
                return  # being turned over: blank until the new number shows at times[k]
            text = values[k]
            tw = digits_width(text, digit_h)
            digits(canvas, text, centre[0] - tw / 2, centre[1] - digit_h / 2, digit_h, ink)

        draw_thing = draw_card
        params.update({"values": values, "card_px": [round(card_w), round(card_h)]})

    def draw(t: float, i: int) -> RgbFrame:
        canvas = look.canvas(t)
        if person is not None:
            person.draw(canvas, 0.0, t)
        draw_thing(canvas, t)
        return look.finish(canvas, t, i, key)

    params.update(look.params())
    return Clip(kind, split, seed, fps, size, length, [], events, params, draw)


def _region(centre: Point, radius: float, width: int, height: int) -> tuple[float, float, float, float]:
    return (
        max(0.0, (centre[0] - radius) / width),
        max(0.0, (centre[1] - radius) / height),
        min(1.0, (centre[0] + radius) / width),
        min(1.0, (centre[1] + radius) / height),
    )


# -- writers ---------------------------------------------------------------------------------------------
def rgb_to_i420(rgb: RgbFrame) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """BT.601 limited range, chroma averaged over 2x2: the planes (Y [H, W], U [H/2, W/2], V [H/2, W/2])."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    h, w = y.shape

    def half(p: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    def u8(p: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        return np.clip(p + 0.5, 0, 255).astype(np.uint8)

    return u8(y), u8(half(u)), u8(half(v))


def i420_to_rgb(y: npt.NDArray[np.uint8], u: npt.NDArray[np.uint8], v: npt.NDArray[np.uint8]) -> RgbFrame:
    """The inverse of :func:`rgb_to_i420` (chroma repeated over 2x2)."""
    yf = (y.astype(np.float32) - 16.0) * (255.0 / 219.0)
    uf = np.repeat(np.repeat(u.astype(np.float32) - 128.0, 2, axis=0), 2, axis=1) * (255.0 / 224.0)
    vf = np.repeat(np.repeat(v.astype(np.float32) - 128.0, 2, axis=0), 2, axis=1) * (255.0 / 224.0)
    r = yf + 1.402 * vf
    g = yf - 0.344136 * uf - 0.714136 * vf
    b = yf + 1.772 * uf
    return np.clip(np.stack([r, g, b], axis=-1) + 0.5, 0, 255).astype(np.uint8)  # [H, W, 3]


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_y4m(path: str | Path, frames: Iterable[RgbFrame], fps: float) -> int:
    """Write raw I420 frames as YUV4MPEG2 (what Chromium's fake camera plays, looping); returns the count."""
    rate = _fps_fraction(fps)
    count = 0
    with open(path, "wb") as f:
        for rgb in frames:
            if count == 0:
                h, w = rgb.shape[:2]
                f.write(
                    f"YUV4MPEG2 W{w} H{h} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n".encode()
                )
            f.write(b"FRAME\n")
            for plane in rgb_to_i420(rgb):
                f.write(plane.tobytes())
            count += 1
    return count


def read_y4m(path: str | Path) -> tuple[npt.NDArray[np.uint8], float]:
    """Read a file written by :func:`write_y4m` (any 4:2:0 YUV4MPEG2): ([T, H, W, 3], fps)."""
    data = Path(path).read_bytes()
    header_end = data.index(b"\n")
    tags = data[:header_end].decode().split()
    if tags[0] != "YUV4MPEG2":
        raise ValueError(f"{path}: not a YUV4MPEG2 file")
    fields = {t[0]: t[1:] for t in tags[1:]}
    if not fields.get("C", "420").startswith("420"):
        raise ValueError(f"{path}: only 4:2:0 chroma is supported, got C{fields['C']}")
    w, h = int(fields["W"]), int(fields["H"])
    num, den = (int(x) for x in fields.get("F", "25:1").split(":"))
    y_size, c_size = w * h, (w // 2) * (h // 2)
    frames = []
    pos = header_end + 1
    while pos < len(data):
        pos = data.index(b"\n", pos) + 1  # "FRAME[ params]\n"
        buf = np.frombuffer(data, dtype=np.uint8, count=y_size + 2 * c_size, offset=pos)
        y = buf[:y_size].reshape(h, w)
        u = buf[y_size : y_size + c_size].reshape(h // 2, w // 2)
        v = buf[y_size + c_size :].reshape(h // 2, w // 2)
        frames.append(i420_to_rgb(y, u, v))
        pos += y_size + 2 * c_size
    return np.stack(frames), num / den


_CODECS = {".mp4": ("libx264", {"crf": "23", "preset": "veryfast"}), ".webm": ("libvpx", {"b": "1M"})}


def write_video(path: str | Path, frames: Iterable[RgbFrame], fps: float) -> int:
    """Encode frames with PyAV: ``.mp4`` as H.264, ``.webm`` as VP8 (what WebRTC sends); returns the count."""
    import av  # here, not at import: generating frames and .y4m files needs no codecs

    suffix = Path(path).suffix.lower()
    if suffix not in _CODECS:
        raise ValueError(f"{path}: write .mp4 or .webm (or .y4m with write_y4m)")
    codec, options = _CODECS[suffix]
    count = 0
    with av.open(str(path), mode="w") as container:
        stream: Any = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=_fps_fraction(fps), options=options)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    return count


def write_clip(clip: Clip, path: str | Path) -> Path:
    """Write ``clip`` to ``path`` (.y4m, .mp4 or .webm) and its ground truth next to it as .json."""
    path = Path(path)
    if path.suffix.lower() == ".y4m":
        write_y4m(path, clip.frames(), clip.fps)
    else:
        write_video(path, clip.frames(), clip.fps)
    truth = path.with_suffix(".json")
    truth.write_text(json.dumps(clip.truth(), indent=1) + "\n")
    return truth


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.video.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--out", required=True, help="clip path: .y4m, .mp4 or .webm; the truth goes to .json")
    p.add_argument("--reps", type=int, default=None, help="repetitions (exercise kinds; default 4-12)")
    p.add_argument("--duration", type=float, default=None, help="s (scene kinds; default 8-12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS)
    p.add_argument("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", help="WIDTHxHEIGHT, even")
    p.add_argument("--clean", action="store_true", help="flat background, no distractor or camera noise")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = make_clip(
        args.kind,
        seed=args.seed,
        split=args.split,
        reps=args.reps,
        fps=args.fps,
        size=(width, height),
        duration=args.duration,
        clean=args.clean,
    )
    truth = write_clip(clip, args.out)
    what = f"{len(clip.rep_times)} reps" if clip.rep_times else f"{len(clip.events)} events"
    print(
        f"{args.out}: {clip.n_frames} frames {width}x{height} at {clip.fps:g} fps, {clip.duration:.1f} s, "
        f"{what}; truth in {truth}"
    )


if __name__ == "__main__":
    main()
