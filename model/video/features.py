"""Per-micro-turn video features: what a session's camera showed in the last 200 ms, as numbers and events.

The interaction model cannot afford a vision network per session every 200 ms on a CPU, and it does not
need one for what the benchmarks ask (count repetitions as they happen, say when a light turns red or the
number on a card changes). :class:`VideoFeatureExtractor` keeps a little state per session and turns each
micro-turn's frames (RGB at the session's ``VIDEO_SIZE``, 160x120) into :class:`VideoFeatures`:

- **flags** -- ``stale`` (no frame for more than 1 s, or none yet), ``frozen`` (identical frames for more
  than 1 s), ``dark`` (a black frame), ``reset`` (the resolution changed: the detectors start over);
- **motion** -- mean absolute change between the last two frames on a 40x30 grid of 4x4-pixel cells;
- **repetitions** -- a 1-D signal (how far the moving cells are from the rest pose) and an online counter
  on it: a repetition is complete when the signal, having risen well above its floor, comes back down and
  stops falling. Thresholds follow the measured amplitude; the period is the median of recent intervals.
  Each completion is a ``rep`` event carrying the count;
- **visual changes** -- a region that was quiet jumps to a new look (at once when nothing near it moves,
  else once the next frame shows the new look held), that no small shift of the old picture explains and
  that does not both cover and uncover background (motion): a ``colour`` event (a light turned red),
  ``appear`` (a red disc/square/triangle on the background) or ``vanish``; the colour of the brightest
  saturated cell is reported every micro-turn as ``light``;
- **numbers** -- 7-segment digits (the font of :mod:`model.video.palette`) read off a card by probing the
  segments; a change of the value is a ``number`` event.

Each session costs about a millisecond of CPU per micro-turn (``python -m model.video.evaluate``); the
extractor takes a whole batch of sessions at once and downsamples their frames in one numpy call.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from model.video.palette import (
    DIGIT_ASPECT,
    DIGIT_GAP,
    MIN_CHROMA,
    SEGMENT_NAMES,
    SEGMENTS_DIGIT,
    colour_name,
    segment_probes,
)
from service.microturn import MICRO_TURN_MS, MicroTurn, VideoFrame

RgbFrame = npt.NDArray[np.uint8]  # [H, W, 3]
Cells = npt.NDArray[np.float32]  # [GRID_ROWS, GRID_COLS, 3] mean RGB of each cell, 0..255
Grid = npt.NDArray[np.float32]  # [GRID_ROWS, GRID_COLS]
Mask = npt.NDArray[np.bool_]  # [GRID_ROWS, GRID_COLS] or [H, W]
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as shares of the frame's width and height
CellBox = tuple[int, int, int, int]  # (r0, r1, c0, c1) grid cells, ends exclusive

GRID_ROWS, GRID_COLS = 30, 40  # cells: 4x4 px at 160x120; fine enough for a limb, coarse enough to be cheap
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

STALE_S = 1.0  # s without a frame: the camera is stale
FROZEN_S = 1.0  # s of identical frames: the camera is frozen
DARK_LUMA = 20.0  # 0..255 mean luma below which a frame is black (lens covered, camera off)

# Repetitions. The signal is a mean absolute difference in levels (0..255) over the moving cells.
REP_WARMUP_S = 0.8  # s after a (re)start during which the rest pose just follows the picture
WEIGHT_SATURATION = 0.3  # a cell moving this share of the most-moving cell's activity weighs fully
ACTIVITY_TAU = 4.0  # s: memory of where things move (which cells the signal watches)
START_RISE = 10.0  # levels above the floor before the first repetition counts as a movement
MIN_RISE = 5.0  # levels: the least rise that starts a repetition once the amplitude is known
RISE_SHARE = 0.45  # a repetition starts when the signal rises this share of the recent amplitude
RETURN_SHARE = 0.5  # ... and is returning when it falls below this share of its own peak
FALL_LEVELS = 0.3  # levels: a fall of the signal this small still counts as falling
SETTLED_SHARE = 0.2  # ... unless the signal is within this share of the rise above the floor
SETTLED_FALL = 0.05  # ... and falls by less than this share of the rise per frame
STILL_MOVE = 2.0  # levels per frame: the figure is still (at rest) below this
STILL_S = 0.8  # s still before the rest pose is re-learnt (between sets, before the first)
REST_TAU = 1.0  # s: how fast the rest pose follows slow changes while still
OUT_TIMEOUT_S = 4.0  # s away from the rest pose: no repetition (they last <= 3 s); the rest pose is stale
MIN_MOVING_FRAMES = 3  # frames of movement in a repetition: a light switching there and back has two
MIN_MOVING_SHARE = 0.5  # ... and most of its frames move: steps with still plateaus are switches, not a body
MIN_OUT_S = 0.3  # s from leaving the rest pose to being back: a one-frame blip is a camera jolt, not a rep
REFRACTORY = 0.35  # a completion sooner than this share of the period after the last is a double dip
MAX_INTERVAL_S = 4.0  # s: a longer interval is a pause between sets, not a period

# Visual changes.
WARMUP_S = 1.0  # s after the first frame before changes count: what moves in the scene is not known yet
CHANGE_TAU = 8.0  # s: memory of where things moved (moving regions do not "change", they move)
JUMP_LEVELS = 30.0  # levels (max over channels) a cell must jump by
STABLE_LEVELS = 15.0  # levels: the changed region holds still in the next frame within this
STABLE_SHARE = 0.35  # ... or within this share of its jump
QUIET_LEVELS = 8.0  # levels of recent continuous motion below which a cell was quiet before the jump
BUSY_LEVELS = 16.0  # levels of recent continuous motion at which a cell is moving (more than camera jitter)
MIN_CELLS = 3  # cells (48 px at 160x120): smaller changes are noise or a far-away detail
MAX_SHARE = 0.4  # share of the frame: a larger change is the camera or the lighting, not an object
PIXEL_CHANGE = 40  # levels: a pixel of a confirmed region that changed this much belongs to the object
SAME_COLOUR = 45.0  # RGB distance within which a pixel looks like the background around the change
MIXED = 0.2  # share of changed pixels both uncovering and covering background: that is motion
BUSY_RING = 0.4  # share of the cells around a change that may move at the same time
RING_CELLS = 2  # cells: how far around a change to look for motion
QUICK_RING_CELLS = 4  # cells: a jump with nothing lively this far around is reported without waiting
MAX_SHIFT = 5  # px at 160 wide: a shift of the picture this small that explains a change means motion
MOVED_SHARE = 0.5  # ... if it leaves less than this share of the unshifted difference

# Numbers.
INK_CONTRAST = 70.0  # levels darker than the brightest pixel nearby: a stroke on a card
STROKE_REACH = 6  # px at 120 high: how far to each side of a stroke the card must show
MIN_DIGIT_PX = 14  # px: digits shorter than this cannot be probed reliably (a card's are 20 and more)
DIGIT_PITCH = DIGIT_ASPECT + DIGIT_GAP  # a digit's width and the space after it, as a share of its height
CARD_CONTRAST = 100.0  # levels between a card and its ink; a dark limb on a wall has less
CARD_SPREAD = 45.0  # levels between the 10th and 90th percentile of the card around the digits: plain
RING_INK = 0.04  # share of ink allowed around a number: digits sit on a clean card, limbs do not
SEARCH_S = 0.6  # s between looks for a card while none is in view
LOST_S = 3.0  # s without a reading after which the card counts as out of view (looked for less often)
CONFIDENT = 0.15  # segment probe margin (0..0.5) at which one reading suffices to report a change


@dataclass(frozen=True)
class VideoEvent:
    """Something the camera showed happening."""

    kind: str  # "rep" | "colour" | "appear" | "vanish" | "number"
    t_ms: int  # session time of the frame it was first seen in
    value: str  # rep: the count ("3"); colour: the new colour; appear: "red disc"; vanish: its colour;
    #             number: the value ("42")
    previous: str | None = None  # colour: the old colour; number: the old value
    region: Box | None = None


@dataclass
class VideoInput:
    """One session's camera frames of one micro-turn [t_ms, t_ms + 200)."""

    session_id: str
    t_ms: int
    frames: Sequence[VideoFrame] = ()
    closing: bool = False  # the session ends: release its state after this micro-turn

    @classmethod
    def from_turn(cls, mt: MicroTurn) -> VideoInput:
        """A micro-turn carries at most its latest frame today (service/assembler.py)."""
        return cls(mt.session_id, mt.t_ms, [mt.video] if mt.video is not None else [], mt.closing)


@dataclass
class VideoFeatures:
    """What one session's camera showed in one micro-turn."""

    session_id: str
    t_ms: int  # the micro-turn's start
    frames: int  # frames that arrived in it
    has_video: bool  # a frame ever arrived for this session
    stale: bool  # no frame for more than STALE_S (or none yet)
    frozen: bool  # identical frames for more than FROZEN_S
    dark: bool  # the latest frame is black
    reset: bool  # the resolution changed in this micro-turn: detectors started over
    motion: float  # 0..1: mean absolute change between the last two frames
    rep_signal: float  # 0..~1: how far from the rest pose, as a share of the repetition amplitude
    reps: int  # repetitions counted so far
    period_s: float | None  # s: the current repetition period, once two repetitions were seen
    light: str | None  # colour of the brightest saturated blob; None if nothing is saturated
    number: str | None  # the number on a card, as last read
    events: list[VideoEvent] = field(default_factory=list)
    ms: float = 0.0  # CPU time (thread time) spent on this session's micro-turn


def cells_of(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Mean colour of each grid cell: [..., H, W, 3] -> [..., GRID_ROWS, GRID_COLS, 3]; the frame is
    cropped to a multiple of the grid (a frame smaller than the grid is repeated up to it)."""
    h, w = rgb.shape[-3], rgb.shape[-2]
    if h < GRID_ROWS or w < GRID_COLS:
        rgb = np.repeat(np.repeat(rgb, -(-GRID_ROWS // h), axis=-3), -(-GRID_COLS // w), axis=-2)
        h, w = rgb.shape[-3], rgb.shape[-2]
    cy, cx = h // GRID_ROWS, w // GRID_COLS
    crop = rgb[..., : cy * GRID_ROWS, : cx * GRID_COLS, :]
    shape = (*crop.shape[:-3], GRID_ROWS, cy, GRID_COLS, cx, 3)
    return crop.reshape(shape).mean(axis=(-4, -2), dtype=np.float32)


def _median(grid: Grid) -> float:
    flat = grid.ravel()
    k = flat.size // 2
    return float(np.partition(flat, k)[k])


def _components(mask: Mask) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """8-connected components of a small boolean grid, each as (rows, cols)."""
    seen = np.zeros_like(mask)
    rows, cols = mask.shape
    out = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        stack, rs, cs = [(int(r0), int(c0))], [], []
        while stack:
            r, c = stack.pop()
            rs.append(r)
            cs.append(c)
            for rr in (r - 1, r, r + 1):
                for cc in (c - 1, c, c + 1):
                    if 0 <= rr < rows and 0 <= cc < cols and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        out.append((np.array(rs), np.array(cs)))
    return out


# -- repetitions -----------------------------------------------------------------------------------------
class RepCounter:
    """Online repetition counting on one session's cell grids."""

    REST, OUT, RETURN = "rest", "out", "return"

    def __init__(self) -> None:
        self.count = 0
        self.intervals: deque[float] = deque(maxlen=6)  # s between recent completions
        self.amplitude: float | None = None  # levels: typical rise of the signal in a repetition
        self.floor = 0.0  # levels: the signal at rest (noise, sway)
        self.last_completion: float | None = None  # s
        self.restart()

    def restart(self) -> None:
        """Forget the pictures (after a gap, a black frame, a new resolution); keep count and tempo."""
        self.ref: Cells | None = None  # the rest pose
        self.prev: Cells | None = None
        self.activity: Grid | None = None  # [R, C] levels: how much each cell changes lately
        self.last_t = 0.0
        self.started = 0.0  # s: the first frame since the last restart
        self.state = self.REST
        self.since = 0.0  # s: when the current state began
        self.peak = 0.0
        self.out_t = 0.0  # s: when the signal left the rest pose
        self.moving = 0  # frames with movement since then, up to the lowest point of the return
        self.min_moving = 0
        self.frames_out = 0  # frames since then, up to the lowest point of the return
        self._frames = 0
        self.min_s = 0.0
        self.min_t = 0.0
        self.min_cells: Cells | None = None
        self.still_s = 0.0
        self.signal = 0.0

    @property
    def period(self) -> float | None:
        return float(np.median(self.intervals)) if len(self.intervals) >= 2 else None

    def push(self, t: float, cells: Cells) -> bool:
        """Add the frame seen at ``t`` (s); True when it completes a repetition."""
        if self.ref is None or self.prev is None or self.activity is None:
            self.ref, self.prev = cells.copy(), cells
            self.activity = np.zeros(cells.shape[:2], dtype=np.float32)
            self.last_t = self.since = self.started = t
            return False
        dt = max(t - self.last_t, 1e-3)
        self.last_t = t
        step = np.abs(cells - self.prev).mean(axis=-1)  # [R, C] levels
        self.prev = cells
        self.activity += (1.0 - math.exp(-dt / ACTIVITY_TAU)) * (step - self.activity)
        # Watch the cells that move more than the typical (camera-noise) cell: the exercising body. The
        # weights saturate: a cell a limb sweeps through twice a repetition must not outweigh the cells of
        # the rest pose and of the far pose, or the signal dips at the far pose as if back at rest.
        excess = np.maximum(self.activity - _median(self.activity), 0.0)
        top = float(excess.max())
        weights = np.minimum(excess / (WEIGHT_SATURATION * top), 1.0) if top > 0 else excess
        total = float(weights.sum())
        if total < 1e-6:
            self.signal = 0.0
            return False
        s = float((weights * np.abs(cells - self.ref).mean(axis=-1)).sum()) / total
        move = float((weights * step).sum()) / total
        self.signal = s
        return self._advance(t, dt, s, move, cells)

    def _advance(self, t: float, dt: float, s: float, move: float, cells: Cells) -> bool:
        rise_needed = START_RISE if self.amplitude is None else max(MIN_RISE, RISE_SHARE * self.amplitude)
        if self.state == self.REST:
            if t - self.started < REP_WARMUP_S and self.ref is not None:
                self.ref = cells.copy()  # which cells matter is not known yet: follow whatever is there
                return False
            if s > self.floor + rise_needed:
                self._enter(self.OUT, t)
                self.peak, self.out_t, self.moving, self._frames = s, t, 1, 1
                return False
            # At rest: let the rest pose follow slow changes (light, a distractor, the person settling).
            self.still_s = self.still_s + dt if move < STILL_MOVE else 0.0
            if self.still_s >= STILL_S and self.ref is not None:
                k = 1.0 - math.exp(-dt / REST_TAU)
                self.ref += k * (cells - self.ref)
                self.floor += k * (s - self.floor)
            return False
        self.moving += move >= STILL_MOVE
        self._frames += 1
        if self.state == self.OUT:
            self.peak = max(self.peak, s)
            if s < self.floor + RETURN_SHARE * (self.peak - self.floor):
                self._enter(self.RETURN, t)
                self._keep_min(s, t, cells)
            elif t - self.since > OUT_TIMEOUT_S:
                self.ref = cells.copy()  # never came back: this is where the person is now
                self._enter(self.REST, t)
            return False
        # RETURN: the repetition is complete when the signal stops falling -- however slowly it falls (a
        # slow repetition creeps into its rest pose), it is not complete while it still falls. Only at the
        # rest level a slow drift (light, noise) does not hold it up.
        rise = self.peak - self.floor
        settled = s < self.floor + SETTLED_SHARE * rise and self.min_s - s < SETTLED_FALL * rise
        if s < self.min_s - FALL_LEVELS and not settled:
            self._keep_min(s, t, cells)
            return False
        if s < self.min_s:
            self._keep_min(s, t, cells)
        completed = self._complete()
        if s > self.floor + (max(MIN_RISE, RISE_SHARE * self.amplitude) if self.amplitude else START_RISE):
            self._enter(self.OUT, t)  # already on the way out again: the next repetition began
            self.peak, self.out_t, self.moving, self._frames = s, t, 1, 1
        else:
            self._enter(self.REST, t)
        return completed

    def _keep_min(self, s: float, t: float, cells: Cells) -> None:
        self.min_s, self.min_t, self.min_cells = s, t, cells
        self.min_moving, self.frames_out = self.moving, self._frames

    def _complete(self) -> bool:
        frames = self.frames_out
        if (
            not MIN_OUT_S <= self.min_t - self.out_t <= OUT_TIMEOUT_S
            or self.min_moving < MIN_MOVING_FRAMES
            or self.min_moving < MIN_MOVING_SHARE * frames
        ):
            # Out and back in a jolt, in steps (a light switching) or in a slow drift: not a movement.
            return False
        period = self.period
        if (
            self.last_completion is not None
            and period is not None
            and self.min_t - self.last_completion < REFRACTORY * period
        ):
            return False  # a dip within a repetition, not a new one
        rise = self.peak - self.min_s
        self.amplitude = rise if self.amplitude is None else 0.5 * (self.amplitude + rise)
        self.floor += 0.3 * (self.min_s - self.floor)
        if self.ref is not None and self.min_cells is not None:
            self.ref = 0.5 * (self.ref + self.min_cells)  # the rest pose as it is now (drift, sway)
        if self.last_completion is not None and self.min_t - self.last_completion < MAX_INTERVAL_S:
            self.intervals.append(self.min_t - self.last_completion)
        self.last_completion = self.min_t
        self.count += 1
        return True

    def _enter(self, state: str, t: float) -> None:
        self.state = state
        self.since = t
        self.still_s = 0.0

    def normalised_signal(self) -> float:
        return (self.signal - self.floor) / self.amplitude if self.amplitude else 0.0


# -- visual changes --------------------------------------------------------------------------------------
@dataclass
class _Jump:
    t: float
    mask: Mask  # [R, C] cells that jumped
    step: Grid  # [R, C] levels: how much every cell changed in the jump
    before_cells: Cells
    before_rgb: RgbFrame


class ChangeDetector:
    """Sudden, lasting changes of a quiet region: a light changing colour, an object appearing."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.prev: Cells | None = None
        self.prev_rgb: RgbFrame | None = None
        self.activity: Grid | None = None  # [R, C] levels: recent continuous motion, decaying peak
        self.prev_step: Grid | None = None
        self.last_t = 0.0
        self.started = 0.0  # s: the first frame since the last restart
        self.pending: _Jump | None = None

    def push(self, t: float, cells: Cells, rgb: RgbFrame, ignore: Box | None = None) -> list[VideoEvent]:
        """Add the frame seen at ``t``; returns the changes it confirms. Nothing is reported inside
        ``ignore`` (a card the number reader watches)."""
        if (
            self.prev is None
            or self.prev_rgb is None
            or self.activity is None
            or self.prev_step is None
            or self.prev_rgb.shape != rgb.shape
        ):
            self.prev, self.prev_rgb = cells, rgb
            self.activity = np.zeros(cells.shape[:2], dtype=np.float32)
            self.prev_step = np.zeros(cells.shape[:2], dtype=np.float32)
            self.last_t = self.started = t
            return []
        dt = max(t - self.last_t, 1e-3)
        self.last_t = t
        step = np.abs(cells - self.prev).max(axis=-1)  # [R, C] levels, the most-changed channel
        noise = _median(step)
        jump_levels = max(JUMP_LEVELS, 5.0 * noise)
        events: list[VideoEvent] = []
        if self.pending is not None:
            p = self.pending
            # Held: it moves now by little next to how much it jumped (edges still jitter with the camera).
            stable = step < np.maximum(max(STABLE_LEVELS, 3.0 * noise), STABLE_SHARE * p.step)
            kept = np.abs(cells - p.before_cells).max(axis=-1) > jump_levels
            # Motion next to it, now or lately, means a moving body, not a light or an object put down. (What
            # jumped along with it is the same change: a lamp's rim, an object's edge.)
            busy = (step > jump_levels) | (self.activity >= BUSY_LEVELS)
            self._report(p, p.mask & stable & kept, busy, jump_levels, rgb, ignore, events)
            self.pending = None
        jumped = (step > jump_levels) & (self.activity < QUIET_LEVELS)
        n = int(jumped.sum())
        if MIN_CELLS <= n <= MAX_SHARE * jumped.size and t - self.started >= WARMUP_S:
            jump = _Jump(t, jumped, step, self.prev, self.prev_rgb)
            # A jump in a still neighbourhood is reported at once; near anything that moves or changed too,
            # the next frame must show it held first (a limb pauses; a lamp stays lit).
            lively = (self.activity >= QUIET_LEVELS) | (step > jump_levels)  # a ring leaves its own cells out
            quick = np.zeros_like(jumped)
            for rows, cols in _components(jumped):
                if _ring(rows, cols, lively, grow=QUICK_RING_CELLS) == 0.0:
                    quick[rows, cols] = True
            if quick.any():
                self._report(jump, quick, lively, jump_levels, rgb, ignore, events, held=False)
            if (jumped & ~quick).sum() >= MIN_CELLS:
                jump.mask = jumped & ~quick
                self.pending = jump
        # Motion is change in consecutive frames; a light switching changes in one frame only. Cells that
        # moved stay "moving" for a while (a decaying peak), through the pauses of an exercise.
        continuous = np.minimum(step, self.prev_step)
        self.activity = np.maximum(self.activity * math.exp(-dt / CHANGE_TAU), continuous)
        self.prev, self.prev_rgb, self.prev_step = cells, rgb, step
        return events

    def _report(
        self,
        p: _Jump,
        candidates: Mask,
        busy: Mask,
        jump_levels: float,
        rgb: RgbFrame,
        ignore: Box | None,
        events: list[VideoEvent],
        held: bool = True,
    ) -> None:
        """Add an event for each region of ``candidates`` that is a change, not motion."""
        for rows, cols in _components(candidates):
            if len(rows) < MIN_CELLS or _ring(rows, cols, busy) > BUSY_RING:
                continue
            own = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
            near = _with_neighbours(own, p.step > jump_levels)
            jumped_rgb = self.prev_rgb if held and self.prev_rgb is not None else rgb
            event = self._describe(p, own, near, rgb, jumped_rgb)
            if event is None or (ignore is not None and _overlap(event.region, ignore) > 0.3):
                continue
            if not any(_overlap(event.region, e.region) > 0.5 for e in events if e.region is not None):
                events.append(event)

    @staticmethod
    def _describe(
        p: _Jump, own: CellBox, near: CellBox, rgb: RgbFrame, jumped: RgbFrame
    ) -> VideoEvent | None:
        """What changed in the cells ``own`` (r0, r1, c0, c1); None if, seen with what jumped ``near`` it,
        it was something moving after all."""
        h, w = rgb.shape[:2]
        cy, cx = h // GRID_ROWS, w // GRID_COLS

        def pixels(box: CellBox) -> tuple[int, int, int, int]:
            return (
                max(0, (box[0] - 1) * cy),
                min(h, (box[1] + 1) * cy),
                max(0, (box[2] - 1) * cx),
                min(w, (box[3] + 1) * cx),
            )

        def looks(box: CellBox) -> tuple[Mask, Any, Any, Any] | None:
            """(changed pixels, new, old, the background around them) in the pixels of ``box``."""
            y0, y1, x0, x1 = pixels(box)
            new = rgb[y0:y1, x0:x1].astype(np.int16)  # [h', w', 3]
            old = p.before_rgb[y0:y1, x0:x1].astype(np.int16)
            changed = np.abs(new - old).max(axis=-1) > PIXEL_CHANGE  # [h', w']
            if changed.sum() < MIN_CELLS * cy * cx // 2 or changed.all():
                return None
            return changed, new, old, np.median(new[~changed], axis=0)

        if _moved(p.before_rgb, jumped, *pixels(near)):
            return None
        seen = looks(near)
        if seen is None:
            return None
        changed, new, old, around = seen
        # Background uncovered in one place and covered in another: something moved.
        if _share_like(old[changed], around) >= MIXED and _share_like(new[changed], around) >= MIXED:
            return None
        seen = looks(own)
        if seen is None:
            return None
        changed, new, old, around = seen
        appeared, vanished = _share_like(old[changed], around), _share_like(new[changed], around)
        new_colour, old_colour = np.median(new[changed], axis=0), np.median(old[changed], axis=0)
        y0, _, x0, _ = pixels(own)
        ys, xs = np.nonzero(changed)
        region = ((x0 + xs.min()) / w, (y0 + ys.min()) / h, (x0 + xs.max() + 1) / w, (y0 + ys.max() + 1) / h)
        t_ms = round(p.t * 1000)
        if vanished >= 1.0 - MIXED:
            return VideoEvent("vanish", t_ms, colour_name(old_colour), None, region)
        if appeared >= 1.0 - MIXED:
            form = _shape_name(changed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
            return VideoEvent("appear", t_ms, f"{colour_name(new_colour)} {form}", None, region)
        new_name, old_name = colour_name(new_colour), colour_name(old_colour)
        if new_name == old_name:
            return None  # a shade, a shadow, an edge: nothing anyone would name
        return VideoEvent("colour", t_ms, new_name, old_name, region)


def _share_like(colours: Any, background: Any) -> float:
    """Share of ``colours`` [n, 3] that look like ``background`` [3]."""
    return float((np.linalg.norm(colours - background, axis=-1) < SAME_COLOUR).mean())


def _with_neighbours(own: CellBox, jumped: Mask) -> CellBox:
    """The component's cell box grown to take in what jumped with it close by.

    A limb that left its place and one that arrived in another jump together: seen together, the change
    both covers and uncovers background -- motion (see ``MIXED``), where either alone looks like a change.
    """
    r0, r1, c0, c1 = own
    grow = max(RING_CELLS, r1 - r0, c1 - c0)
    g0, g1 = max(0, r0 - grow), min(jumped.shape[0], r1 + grow)
    h0, h1 = max(0, c0 - grow), min(jumped.shape[1], c1 + grow)
    near_r, near_c = np.nonzero(jumped[g0:g1, h0:h1])
    if len(near_r):
        r0, r1 = min(r0, g0 + int(near_r.min())), max(r1, g0 + int(near_r.max()) + 1)
        c0, c1 = min(c0, h0 + int(near_c.min())), max(c1, h0 + int(near_c.max()) + 1)
    return r0, r1, c0, c1


def _moved(old: RgbFrame, new: RgbFrame, y0: int, y1: int, x0: int, x1: int) -> bool:
    """Is new[y0:y1, x0:x1] old's content shifted by a few pixels (a slow object, a swaying body)?

    A lamp that changes colour or an object put down is explained by no shift of the picture before it.
    """
    h, w = old.shape[:2]
    d = max(1, round(MAX_SHIFT * w / 160))  # px at this resolution
    d = min(d, y0, x0, h - y1, w - x1)  # near the edge: search what is there
    if d <= 0:
        return False
    # Luma over every other pixel of the patch: 121 shifts must stay cheap, and a shift is plain in it.
    before = old[y0 - d : y1 + d, x0 - d : x1 + d].astype(np.float32) @ LUMA  # [h' + 2d, w' + 2d]
    patch = (new[y0:y1, x0:x1].astype(np.float32) @ LUMA)[::2, ::2]  # [h'/2, w'/2]
    ph, pw = y1 - y0, x1 - x0

    def err(dy: int, dx: int) -> float:
        return float(np.abs(patch - before[d + dy : d + dy + ph : 2, d + dx : d + dx + pw : 2]).mean())

    still = err(0, 0)
    best = min(err(dy, dx) for dy in range(-d, d + 1) for dx in range(-d, d + 1) if dx or dy)
    return best < MOVED_SHARE * still


def _ring(
    rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp], busy: Mask, grow: int = RING_CELLS
) -> float:
    """Share of the cells around a component (its bounding box grown by ``grow`` cells) that are ``busy``."""
    r0, r1 = max(0, int(rows.min()) - grow), min(busy.shape[0], int(rows.max()) + grow + 1)
    c0, c1 = max(0, int(cols.min()) - grow), min(busy.shape[1], int(cols.max()) + grow + 1)
    around = np.ones((r1 - r0, c1 - c0), dtype=bool)
    around[rows - r0, cols - c0] = False
    n = int(around.sum())
    return float((busy[r0:r1, c0:c1] & around).sum()) / n if n else 0.0


def _shape_name(mask: Mask) -> str:
    """disc, square or triangle from how much of its bounding box a blob fills (pi/4, 1, 1/2)."""
    fill = float(mask.mean())
    if fill > 0.88:
        return "square"
    return "disc" if fill > 0.64 else "triangle"


def _overlap(a: Box | None, b: Box) -> float:
    """Share of ``a``'s area inside ``b``."""
    if a is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
    return ix * iy / area


def salient_colour(cells: Cells) -> str | None:
    """The colour of the cell that is brightest and most saturated at once (a lit lamp), if any is."""
    hi, lo = cells.max(axis=-1), cells.min(axis=-1)
    chroma = hi - lo
    i = int(np.argmax(chroma * hi))
    r, c = divmod(i, cells.shape[1])
    if chroma[r, c] < MIN_CHROMA:
        return None
    return colour_name(cells[r, c])


# -- numbers ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NumberReading:
    value: str  # "42"
    region: Box
    margin: float  # 0..0.5: how clearly the weakest segment probe was on or off


_PROBES = segment_probes()


def _strokes(luma: Grid, reach: int) -> Mask:
    """Pixels darker by INK_CONTRAST than the brightest pixel within ``reach`` on *both* sides, across or
    along: a stroke on a card. The dark side of an edge (the wall around a light card) has light on one
    side only."""
    windows = np.lib.stride_tricks.sliding_window_view
    padded = np.pad(luma, reach, mode="edge")
    h, w = luma.shape
    rows = windows(padded[reach : reach + h], reach, axis=1).max(axis=-1)  # [h, w + reach + 1]
    cols = windows(padded[:, reach : reach + w], reach, axis=0).max(axis=-1)  # [h + reach + 1, w]
    left, right = rows[:, :w], rows[:, reach + 1 : reach + 1 + w]
    up, down = cols[:h], cols[reach + 1 : reach + 1 + h]
    across = np.minimum(left, right)
    along = np.minimum(up, down)
    return (luma < across - INK_CONTRAST) | (luma < along - INK_CONTRAST)


def read_number(rgb: RgbFrame) -> NumberReading | None:
    """Read 7-segment digits (dark on a light card) anywhere in the frame; the most digits win."""
    h, w = rgb.shape[:2]
    cy, cx = h // GRID_ROWS, w // GRID_COLS
    if cy < 1 or cx < 1:
        return None
    frame = rgb[: cy * GRID_ROWS, : cx * GRID_COLS].astype(np.float32)
    luma = frame @ LUMA  # [h', w']
    ink = _strokes(luma, max(2, round(STROKE_REACH * h / 120)))  # [h', w']
    ink_cells = ink.reshape(GRID_ROWS, cy, GRID_COLS, cx).sum(axis=(1, 3)) >= 2
    if ink_cells.mean() > MAX_SHARE:
        return None  # dark clutter all over: no card to read
    comps = [
        (int(r.min()), int(r.max()) + 1, int(c.min()), int(c.max()) + 1) for r, c in _components(ink_cells)
    ]
    best: NumberReading | None = None
    tried: set[tuple[int, ...]] = set()
    for seed in comps:
        tall = seed[1] - seed[0]  # cells
        if tall * cy < MIN_DIGIT_PX or tall > GRID_ROWS // 2:
            continue
        # The seed's neighbours on its line: similar height, overlapping rows, close beside it.
        group = tuple(
            sorted(
                k
                for k, (r0, r1, c0, c1) in enumerate(comps)
                if min(r1, seed[1]) - max(r0, seed[0]) >= 0.5 * min(r1 - r0, tall)
                and 0.6 <= (r1 - r0) / tall <= 1.67
                and max(c0 - seed[3], seed[2] - c1) <= DIGIT_PITCH * tall
            )
        )
        if group in tried:
            continue
        tried.add(group)
        r0, r1 = min(comps[k][0] for k in group), max(comps[k][1] for k in group)
        c0, c1 = min(comps[k][2] for k in group), max(comps[k][3] for k in group)
        reading = _read_line(ink, luma, r0 * cy, r1 * cy, c0 * cx, c1 * cx)
        if reading is None:
            continue
        value, (x0, y0, x1, y1), margin = reading
        candidate = NumberReading(value, (x0 / w, y0 / h, x1 / w, y1 / h), margin)
        if best is None or (len(value), margin) > (len(best.value), best.margin):
            best = candidate
    return best


def _read_line(
    ink: Mask, luma: Grid, y0: int, y1: int, x0: int, x1: int
) -> tuple[str, tuple[int, int, int, int], float] | None:
    """Digits in ink[y0:y1, x0:x1]: (value, pixel box of the digits, weakest probe margin) or None."""
    sub = ink[y0:y1, x0:x1]
    columns = [bool(v) for v in np.any(sub, axis=0)]  # [w'] a column has ink
    boxes = []
    c = 0
    while c < len(columns):
        if not columns[c]:
            c += 1
            continue
        start = c
        while c < len(columns) and columns[c]:
            c += 1
        rows = np.nonzero(sub[:, start:c].any(axis=1))[0]
        boxes.append((x0 + start, y0 + int(rows.min()), x0 + c, y0 + int(rows.max()) + 1))  # (x0, y0, x1, y1)
    tall = max((b[3] - b[1] for b in boxes), default=0)
    if tall < MIN_DIGIT_PX:
        return None
    # The digits: boxes nearly as tall as the tallest; specks of noise are ignored, anything else fails.
    line = [b for b in boxes if b[3] - b[1] >= 0.8 * tall]
    if any(0.3 * tall < b[3] - b[1] < 0.8 * tall for b in boxes) or len(line) > 4:
        return None
    top, bottom = min(b[1] for b in line), max(b[3] for b in line)
    left, right = min(b[0] for b in line), max(b[2] for b in line)
    # The digits sit on a clean card: little ink in a margin around them (a limb is attached to a body).
    m = max(2, int(0.25 * tall))
    ry0, ry1 = top - m, bottom + m
    rx0, rx1 = left - m, right + m
    if ry0 < 0 or rx0 < 0 or ry1 > ink.shape[0] or rx1 > ink.shape[1]:
        return None  # cut by the frame's edge
    ring = ink[ry0:ry1, rx0:rx1].copy()
    for b in line:
        ring[b[1] - ry0 : b[3] - ry0, b[0] - rx0 : b[2] - rx0] = False
    ring_area = (ry1 - ry0) * (rx1 - rx0) - sum((b[2] - b[0]) * (b[3] - b[1]) for b in line)
    if ring_area <= 0 or ring.sum() > RING_INK * ring_area:
        return None
    # ... and a card is light and plain: its ink stands out far more than a dark limb from a wall, and
    # nothing else (a shirt, a shadow) is drawn next to the digits.
    around = luma[ry0:ry1, rx0:rx1][~_dilate(ink[ry0:ry1, rx0:rx1], 2)]  # the card, stroke edges left out
    strokes = luma[top:bottom, left:right][ink[top:bottom, left:right]]
    if not len(around) or not len(strokes) or np.median(around) - np.median(strokes) < CARD_CONTRAST:
        return None
    low, high = np.percentile(around, [10, 90])
    if high - low > CARD_SPREAD:
        return None
    # The font's pitch: every digit's right edge (a "1" is drawn on the right of its cell) one pitch apart.
    pitch = DIGIT_PITCH * tall
    if any(not 0.75 <= (b[2] - a[2]) / pitch <= 1.25 for a, b in pairwise(line)):
        return None
    value, margin = "", 0.5
    for bx0, by0, bx1, by1 in line:
        digit = _read_digit(ink[by0:by1, bx0:bx1])
        if digit is None:
            return None
        value += digit[0]
        margin = min(margin, digit[1])
    return value, (left, top, right, bottom), margin


def _dilate(mask: Mask, r: int) -> Mask:
    """``mask`` grown by ``r`` px in every direction (a square)."""
    padded = np.pad(mask, r)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def _read_digit(box: Mask) -> tuple[str, float] | None:
    """One digit from its ink box: probe the seven segments. A "1" is the only narrow digit."""
    h, w = box.shape
    if w <= 0.35 * h:
        fill = float(box.mean())
        return ("1", min(0.5, fill - 0.5)) if fill > 0.7 else None
    if not 0.4 * h <= w <= 0.85 * h:
        return None
    r = max(1, round(0.05 * h))  # px: half the probe's width along the segment
    slack_y, slack_x = max(1, round(0.08 * h)), max(1, round(0.12 * w))  # px: where across it may lie
    on, margin = "", 0.5
    for seg in SEGMENT_NAMES:
        fx, fy = _PROBES[seg]
        px, py = round(fx * (w - 1)), round(fy * (h - 1))
        if seg in "adg":  # horizontal: the best row near the expected one, over a short run of columns
            rows = box[max(0, py - slack_y) : py + slack_y + 1, max(0, px - r) : px + r + 1]
            frac = float(rows.mean(axis=1).max())
        else:  # vertical: the best column near the expected one, over a short run of rows
            cols = box[max(0, py - r) : py + r + 1, max(0, px - slack_x) : px + slack_x + 1]
            frac = float(cols.mean(axis=0).max())
        if frac >= 0.5:
            on += seg
        margin = min(margin, abs(frac - 0.5))
    # Between the segments a 7-segment digit is empty (the two counters of an 8); a bent limb is not.
    for fy in (0.27, 0.73):
        cy, cx = round(fy * (h - 1)), round(0.5 * (w - 1))
        if box[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1].mean() > 0.2:
            return None
    digit = SEGMENTS_DIGIT.get(on)
    return None if digit is None else (digit, margin)


class NumberTracker:
    """The card's number over time: a change is reported once it is read clearly (or twice alike).

    Reading costs more than everything else together, so without a card in view it looks only every
    SEARCH_S; once a card was read, every frame (a change must be reported within half a second).
    """

    def __init__(self) -> None:
        self.value: str | None = None
        self.region: Box | None = None
        self._candidate: str | None = None
        self._last_look: float | None = None
        self._last_read: float | None = None

    def push(self, t: float, rgb: RgbFrame) -> VideoEvent | None:
        recently_read = self._last_read is not None and t - self._last_read < LOST_S
        if not recently_read and self._last_look is not None and t - self._last_look < SEARCH_S:
            return None
        self._last_look = t
        reading = read_number(rgb)
        if reading is not None:
            self._last_read = t
        if reading is None:
            return None  # blank (being turned over), covered or unreadable: the value stands
        if reading.value == self.value:
            self.region = reading.region
            self._candidate = None
            return None
        if self.region is not None and _overlap(reading.region, _grow(self.region, 0.05)) < 0.5:
            return None  # digits somewhere else: not the card whose number we follow
        seen_before = reading.value == self._candidate
        self._candidate = reading.value
        if self.value is None:
            if seen_before:  # the first value: nothing changed yet, so no event
                self.value, self.region = reading.value, reading.region
            return None
        if reading.margin < CONFIDENT and not seen_before:
            return None
        previous, self.value, self.region = self.value, reading.value, reading.region
        self._candidate = None
        return VideoEvent("number", round(t * 1000), reading.value, previous, reading.region)


# -- one session -----------------------------------------------------------------------------------------
class SessionVideo:
    """The video state of one session."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.reps = RepCounter()
        self.changes = ChangeDetector()
        self.numbers = NumberTracker()
        self.shape: tuple[int, ...] | None = None
        self.last_frame_t: float | None = None  # s
        self.frozen_since: float | None = None  # s
        self.prev_rgb: RgbFrame | None = None
        self.dark = False
        self.motion = 0.0
        self.light: str | None = None
        self.prev_cells: Cells | None = None

    def step(self, inp: VideoInput, cells: Sequence[Cells | None]) -> VideoFeatures:
        events: list[VideoEvent] = []
        reset = False
        for frame, c in zip(inp.frames, cells, strict=True):
            if c is None:
                continue  # not an [H, W, 3] uint8 picture: ignored
            reset |= self._frame(frame, c, events)
        end = (inp.t_ms + MICRO_TURN_MS) / 1000.0
        stale = self.last_frame_t is None or end - self.last_frame_t > STALE_S
        frozen = self.frozen_since is not None and end - self.frozen_since > FROZEN_S
        period = self.reps.period
        return VideoFeatures(
            session_id=self.session_id,
            t_ms=inp.t_ms,
            frames=len(inp.frames),
            has_video=self.last_frame_t is not None,
            stale=stale,
            frozen=frozen,
            dark=self.dark,
            reset=reset,
            motion=self.motion,
            rep_signal=self.reps.normalised_signal(),
            reps=self.reps.count,
            period_s=round(period, 3) if period is not None else None,
            light=self.light,
            number=self.numbers.value,
            events=events,
        )

    def _restart(self) -> None:
        self.reps.restart()
        self.changes.restart()
        self.prev_cells = None

    def _frame(self, frame: VideoFrame, cells: Cells, events: list[VideoEvent]) -> bool:
        t = frame.t_ms / 1000.0
        rgb = frame.rgb
        reset = self.shape is not None and rgb.shape != self.shape
        if reset:
            self._restart()
            self.prev_rgb = None
            self.frozen_since = None
        self.shape = rgb.shape
        if self.last_frame_t is not None and t - self.last_frame_t > STALE_S:
            self._restart()  # the pictures before the gap say nothing about the ones after it
        self.last_frame_t = t
        same = self.prev_rgb is not None and np.array_equal(rgb, self.prev_rgb)
        self.prev_rgb = rgb
        # The same picture again: a frozen camera, or a perfectly still scene without sensor noise. Either way
        # it is news to the counter (a repetition that ended in a still pose is complete), not a change.
        if not same:
            self.frozen_since = None
        elif self.frozen_since is None:
            self.frozen_since = t
        self.dark = float(cells.mean(axis=(0, 1)) @ LUMA) < DARK_LUMA
        if self.dark:
            self._restart()  # a black frame is no picture; what follows starts afresh
            self.motion = 0.0
            return reset
        self.motion = (
            float(np.abs(cells - self.prev_cells).mean()) / 255.0 if self.prev_cells is not None else 0.0
        )
        self.prev_cells = cells
        self.light = salient_colour(cells)
        if self.reps.push(t, cells):
            events.append(VideoEvent("rep", frame.t_ms, str(self.reps.count)))
        number = self.numbers.push(t, rgb)
        card = self.numbers.region if self.numbers.value is not None else None
        ignore = _grow(card, 0.05) if card else None
        events.extend(self.changes.push(t, cells, rgb, ignore=ignore))
        if number is not None:
            events.append(number)
        return reset


def _grow(box: Box, by: float) -> Box:
    return (box[0] - by, box[1] - by, box[2] + by, box[3] + by)


def _valid(rgb: object) -> bool:
    return isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


class VideoFeatureExtractor:
    """Video features for a batch of sessions' micro-turns, one result per input, in order."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionVideo] = {}

    def step(self, batch: Sequence[VideoInput]) -> list[VideoFeatures]:
        # CPU time of this thread, not wall time: what a session costs, whatever else shares the cores.
        t0 = time.thread_time()
        cells = self._cells(batch)
        shared = (time.thread_time() - t0) * 1000.0 / max(len(batch), 1)  # ms: the batched downsampling
        out = []
        for inp, c in zip(batch, cells, strict=True):
            t1 = time.thread_time()
            session = self.sessions.get(inp.session_id)
            if session is None:
                session = self.sessions[inp.session_id] = SessionVideo(inp.session_id)
            features = session.step(inp, c)
            features.ms = shared + (time.thread_time() - t1) * 1000.0
            out.append(features)
            if inp.closing:
                self.close_session(inp.session_id)
        return out

    def step_turns(self, turns: Sequence[MicroTurn]) -> list[VideoFeatures]:
        return self.step([VideoInput.from_turn(mt) for mt in turns])

    def close_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    @staticmethod
    def _cells(batch: Sequence[VideoInput]) -> list[list[Cells | None]]:
        """Every frame's cell grid; the frames of the common size go through one numpy call together."""
        out: list[list[Cells | None]] = [[None] * len(inp.frames) for inp in batch]
        by_shape: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for i, inp in enumerate(batch):
            for j, frame in enumerate(inp.frames):
                if _valid(frame.rgb) and frame.rgb.shape[0] > 0 and frame.rgb.shape[1] > 0:
                    by_shape.setdefault(frame.rgb.shape, []).append((i, j))
        for where in by_shape.values():
            stack = np.stack([batch[i].frames[j].rgb for i, j in where])  # [N, H, W, 3]
            for (i, j), c in zip(where, cells_of(stack), strict=True):
                out[i][j] = c
        return out
