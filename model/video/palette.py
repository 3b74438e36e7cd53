"""What the generator draws and the features name: colour names, and a 7-segment digit font.

Both sides share this module so that a colour the generator calls "red" is read back as "red", and the
digit reader matches the very segments the generator draws. The namer works on any RGB, not only on the
palette: it names hue bands, so a camera's red is red too.
"""

from __future__ import annotations

import colorsys

import numpy as np
import numpy.typing as npt

# Saturated colours the scenes use for lights, objects and figures, by the name the namer gives them.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (235, 215, 40),
    "green": (40, 175, 60),
    "blue": (40, 90, 215),
    "purple": (135, 55, 190),
    "pink": (235, 90, 170),
}

# Hue bands in degrees [start, end) -> name; red wraps around 0. Chosen between the palette's hues so
# that camera noise and chroma subsampling (a few degrees) never move a palette colour to another band.
HUE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0.0, 18.0, "red"),
    (18.0, 42.0, "orange"),
    (42.0, 75.0, "yellow"),
    (75.0, 175.0, "green"),
    (175.0, 255.0, "blue"),
    (255.0, 300.0, "purple"),
    (300.0, 345.0, "pink"),
    (345.0, 360.0, "red"),
)
MIN_CHROMA = 60  # 0..255: below it a colour is a grey (black/grey/white), not a hue
DARK_VALUE = 60  # 0..255: an unsaturated colour this dark or darker is "black"
LIGHT_VALUE = 190  # 0..255: an unsaturated colour this bright or brighter is "white"


def colour_name(rgb: npt.ArrayLike) -> str:
    """The name of one RGB colour (0..255 per channel): a hue band, or black/grey/white."""
    r, g, b = (float(c) for c in np.asarray(rgb, dtype=np.float64).reshape(3))
    hi, lo = max(r, g, b), min(r, g, b)
    if hi - lo < MIN_CHROMA:
        if hi <= DARK_VALUE:
            return "black"
        return "white" if lo >= LIGHT_VALUE else "grey"
    hue = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 360.0
    for start, end, name in HUE_BANDS:
        if start <= hue < end:
            return name
    return "red"  # hue == 360.0 by rounding


# -- 7-segment font --------------------------------------------------------------------------------------
#  aaa
# f   b
#  ggg
# e   c
#  ddd
SEGMENT_NAMES = "abcdefg"
DIGIT_SEGMENTS: dict[str, str] = {
    "0": "abcdef",
    "1": "bc",
    "2": "abdeg",
    "3": "abcdg",
    "4": "bcfg",
    "5": "acdfg",
    "6": "acdefg",
    "7": "abc",
    "8": "abcdefg",
    "9": "abcdfg",
}
SEGMENTS_DIGIT: dict[str, str] = {segs: d for d, segs in DIGIT_SEGMENTS.items()}
DIGIT_ASPECT = 0.55  # width / height of a digit cell
STROKE = 0.16  # stroke thickness as a share of the digit height
DIGIT_GAP = 0.35  # space between two digits as a share of the digit height


def segment_boxes(stroke: float = STROKE, aspect: float = DIGIT_ASPECT) -> dict[str, tuple[float, ...]]:
    """Each segment as a box (x0, y0, x1, y1) in digit-cell units: x in [0, aspect], y in [0, 1] downwards."""
    t, w = stroke, aspect
    return {
        "a": (0.0, 0.0, w, t),
        "b": (w - t, 0.0, w, 0.5 + t / 2),
        "c": (w - t, 0.5 - t / 2, w, 1.0),
        "d": (0.0, 1.0 - t, w, 1.0),
        "e": (0.0, 0.5 - t / 2, t, 1.0),
        "f": (0.0, 0.0, t, 0.5 + t / 2),
        "g": (0.0, 0.5 - t / 2, w, 0.5 + t / 2),
    }


def segment_probes(stroke: float = STROKE, aspect: float = DIGIT_ASPECT) -> dict[str, tuple[float, float]]:
    """Where to look for each segment: its centre (x, y) as shares of the digit cell's width and height.

    The vertical segments are probed at a quarter and three quarters of the height, away from the
    corners every neighbouring segment shares.
    """
    t = stroke / aspect / 2  # half a stroke as a share of the width
    return {
        "a": (0.5, stroke / 2),
        "b": (1.0 - t, 0.27),
        "c": (1.0 - t, 0.73),
        "d": (0.5, 1.0 - stroke / 2),
        "e": (t, 0.73),
        "f": (t, 0.27),
        "g": (0.5, 0.5),
    }
