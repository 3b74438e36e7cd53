"""Tools the background model can call: a calculator, a clock with timers, and local document search.

Every tool is a small class with a ``name``, a one-line ``description`` and ``run(args) -> str``. The
arguments are a JSON-like mapping (what an LLM's function call, or :mod:`model.background`'s router,
produces); bad input raises :class:`ToolError` whose message is short and speakable, because the agent
may say it to the user. Results are plain sentences or passages, readable by a person and by an LLM.

Speech recognisers spell numbers as words ("twelve times thirteen"), so :func:`words_to_numbers` and
:func:`spoken_to_expression` turn spoken arithmetic into a Python-syntax expression, and
:func:`parse_duration` turns "a minute and a half" into 90 seconds.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

ToolArgs = Mapping[str, object]


class ToolError(Exception):
    """Bad input or an impossible request; the message is meant to be read out to the user."""


class Tool(Protocol):
    """What the background agent needs of a tool. Read-only attributes, so plain class attributes do."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def run(self, args: ToolArgs) -> str: ...


def _str_arg(args: ToolArgs, key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"The {key!r} argument must be a non-empty string.")
    return value.strip()


def _number_arg(args: ToolArgs, key: str) -> float:
    value = args.get(key)
    # bool is an int subclass; True seconds is a caller bug, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"The {key!r} argument must be a number.")
    return float(value)


# ----------------------------------------------------------------------------------------------------
# Spoken numbers


def _words(text: str) -> list[str]:
    """A word list written as one string, which is easier to read and edit than a list of literals."""
    return text.split()


_SMALL = {
    w: n
    for n, w in enumerate(
        _words(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen"
        )
    )
}
_TENS = {w: 10 * n for n, w in enumerate(_words("twenty thirty forty fifty sixty seventy eighty ninety"), 2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
_NUMBER_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
# Numbers (with thousands separators), words (hyphenated compounds split below), ** and //, any other
# character.
_TOKEN = re.compile(rf"{_NUMBER_TOKEN.pattern}|[A-Za-z]+(?:['-][A-Za-z]+)*|\*\*|//|[^\sA-Za-z\d]")


def _split_compounds(tokens: list[str]) -> list[str]:
    """Split "twenty-one" into "twenty", "one" (the hyphen would otherwise read as a minus)."""
    out: list[str] = []
    for token in tokens:
        parts = token.lower().split("-")
        if len(parts) > 1 and all(p in _SMALL or p in _TENS for p in parts):
            out.extend(parts)
        else:
            out.append(token)
    return out


def _is_digit_word(word: str) -> bool:
    return _SMALL.get(word, 10) < 10


def _read_number(tokens: list[str], start: int) -> tuple[Decimal, int] | None:
    """The number spelled by ``tokens[start:]`` and the index after it, or None when none starts there.

    Grammar: [digits | words below a hundred] ["hundred"] [["and"] words below a hundred], repeated for
    each descending scale (thousand, million, billion), then an optional "point" and digit words. "a"
    counts as one only before a scale ("a hundred"), never before other words ("a timer").
    """
    total, current = Decimal(0), Decimal(0)
    last = ""  # kind of the last token taken: "", "a", "digits", "small", "teen", "tens", "hundred", ...
    last_scale = 10**12
    i = start
    n = len(tokens)

    def word(k: int) -> str:
        return tokens[k].lower() if k < n else ""

    while i < n:
        w = word(i)
        if w in ("a", "an") and not last and word(i + 1) in ("hundred", *_SCALES):
            current, last = Decimal(1), "a"
        elif _NUMBER_TOKEN.fullmatch(w) and not last:
            current, last = Decimal(w.replace(",", "")), "digits"
        elif w in _SMALL and last in ("", "tens", "hundred", "scale", "and"):
            current += _SMALL[w]
            last = "small" if _SMALL[w] < 10 else "teen"
        elif w in _TENS and last in ("", "hundred", "scale", "and"):
            current += _TENS[w]
            last = "tens"
        elif w == "hundred" and last in ("a", "digits", "small", "teen", "tens") and current < 100:
            current *= 100
            last = "hundred"
        elif w in _SCALES and last in ("a", "digits", "small", "teen", "tens", "hundred"):
            if _SCALES[w] >= last_scale:
                break  # "two thousand thousand" is two numbers, not one
            total += current * _SCALES[w]
            current, last, last_scale = Decimal(0), "scale", _SCALES[w]
        elif w == "and" and last in ("hundred", "scale") and (word(i + 1) in _SMALL or word(i + 1) in _TENS):
            last = "and"
        elif w == "point" and last not in ("", "a", "and") and _is_digit_word(word(i + 1)):
            digits = ""
            while _is_digit_word(word(i + 1)):
                digits += str(_SMALL[word(i + 1)])
                i += 1
            current += Decimal("0." + digits)
            i += 1
            break
        else:
            break
        i += 1
    if not last or last == "a":
        return None
    return total + current, i


def format_number(value: Decimal | float | int) -> str:
    """Digits as a person would write them: no exponent, no trailing zeros, integers without a point."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"  # 10 significant digits: 1/3 -> 0.3333333333, float noise hidden
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def words_to_numbers(text: str) -> str:
    """Lower-case ``text`` with every spelled number as digits: "twenty-one point five" -> "21.5".

    Tokens come back separated by single spaces ("what's 2+2" -> "what's 2 + 2"), which is all the
    parsers below need.
    """
    tokens = _split_compounds(_TOKEN.findall(text))
    out: list[str] = []
    i = 0
    while i < len(tokens):
        number = _read_number(tokens, i)
        if number is None:
            out.append(tokens[i].lower())
            i += 1
        else:
            out.append(format_number(number[0]))
            i = number[1]
    return " ".join(out)


# ----------------------------------------------------------------------------------------------------
# Calculator

MAX_EXPRESSION_CHARS = 200  # longer input is not a spoken question; also bounds parse and evaluation time
MAX_EXPONENT = 10_000  # |b| in a ** b
# Largest integer magnitude, in bits, of any intermediate value: 1024 bits ~ 308 digits, the range of a
# float. Bounds the time of every operation (2 ** 10_000 ** 10_000 would otherwise never finish).
MAX_INT_BITS = 1024
MAX_ROUND_DIGITS = 15  # round(x, n): float has ~15-17 significant digits, more is noise

_BINARY_OPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}
_OP_WORDS: dict[type[ast.operator], str] = {
    ast.Add: "plus",
    ast.Sub: "minus",
    ast.Mult: "times",
    ast.Div: "divided by",
    ast.Mod: "modulo",
    ast.Pow: "to the power of",
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}


def _check_magnitude(value: float) -> float:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("That number is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("That number is too large.")
    if not isinstance(value, int | float):  # (-8) ** 0.5 is a complex number
        raise ToolError("The result is not a real number.")
    return value


def _evaluate(node: ast.AST) -> float:
    """Value of a whitelisted expression tree; anything else is rejected, never executed."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):  # str, bytes, complex, None
            raise ToolError(f"{value!r} is not a number.")
        return _check_magnitude(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise ToolError(f"Exponents are limited to {MAX_EXPONENT}.")
            # Exact integer powers cost time with the result's size: refuse them before computing.
            exact = isinstance(left, int) and isinstance(right, int) and abs(left) > 1
            if exact and (abs(int(left)).bit_length() - 1) * right > MAX_INT_BITS:
                raise ToolError("That number is too large.")
        return _check_magnitude(_BINARY_OPS[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not 1 <= len(node.args) <= (2 if node.func.id == "round" else 1):
            raise ToolError(f"Wrong arguments for {node.func.id}.")
        args = [_evaluate(a) for a in node.args]
        if len(args) == 2 and (not isinstance(args[1], int) or abs(args[1]) > MAX_ROUND_DIGITS):
            raise ToolError(f"round takes a whole number of digits up to {MAX_ROUND_DIGITS}.")
        return _check_magnitude(_FUNCTIONS[node.func.id](*args))
    if isinstance(node, ast.Call):
        raise ToolError(
            f"{ast.unparse(node.func)!r} is not an allowed function; use one of {', '.join(_FUNCTIONS)}."
        )
    if isinstance(node, ast.Name):
        raise ToolError(f"{node.id!r} is not allowed in a calculation.")
    raise ToolError(f"{type(node).__name__} is not allowed in a calculation.")


# Binding strength, to know when an operand needs brackets: "(2 + 3) * 4" must not read as "2 + 3 * 4".
_PRECEDENCE: dict[type[ast.operator], int] = {
    ast.Add: 1,
    ast.Sub: 1,
    ast.Mult: 2,
    ast.Div: 2,
    ast.FloorDiv: 2,
    ast.Mod: 2,
    ast.Pow: 4,
}
_UNARY_PRECEDENCE = 3


def _operand_in_words(parent: ast.BinOp, child: ast.expr) -> str:
    """An operand in words, bracketed where the expression had to bracket it.

    Spoken input never has brackets; typed input may, and its answer is shown as text too.
    """
    words = _in_words(child)
    outer = _PRECEDENCE[type(parent.op)]
    if isinstance(child, ast.BinOp):
        inner = _PRECEDENCE[type(child.op)]
        # Same strength: the right operand of a left-associative operator needs brackets (a - (b - c)),
        # and so does the left operand of the right-associative power ((a ** b) ** c).
        is_right = child is parent.right
        if inner < outer or (inner == outer and is_right != isinstance(parent.op, ast.Pow)):
            return f"({words})"
    elif isinstance(child, ast.UnaryOp) and outer > _UNARY_PRECEDENCE and child is parent.left:
        return f"({words})"  # (-2) ** 2
    return words


def _in_words(node: ast.AST) -> str:
    """The expression read aloud: "12 * 13" -> "12 times 13", "20 / 100 * 80" -> "20 percent of 80".

    Echoing the operands lets the listener hear what was recognised ("thirty" instead of "thirteen").
    """
    if isinstance(node, ast.Expression):
        return _in_words(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return format_number(node.value)
    if isinstance(node, ast.UnaryOp):
        return ("minus " if isinstance(node.op, ast.USub) else "") + _in_words(node.operand)
    if isinstance(node, ast.BinOp):
        left, right = _operand_in_words(node, node.left), _operand_in_words(node, node.right)
        if isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) and node.right.value == 100:
            return f"{left} percent"  # x / 100 *is* x percent, whichever way it was asked
        if isinstance(node.op, ast.Mult) and left.endswith(" percent"):
            return f"{left} of {right}"
        if isinstance(node.op, ast.FloorDiv):
            return f"{left} divided by {right} rounded down"
        return f"{left} {_OP_WORDS[type(node.op)]} {right}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_in_words(a) for a in node.args]
        name = node.func.id
        if name == "round" and len(args) == 2:
            return f"{args[0]} rounded to {args[1]} decimal places"
        return {
            "sqrt": "the square root of {}",
            "abs": "the absolute value of {}",
            "round": "{} rounded",
            "floor": "{} rounded down",
            "ceil": "{} rounded up",
        }[name].format(args[0])
    return ast.unparse(node)


def evaluate_expression(expression: str) -> tuple[float, str]:
    """(value, the expression in words) of a Python-syntax arithmetic expression; ToolError if unsafe.

    Parsed with :mod:`ast` and walked over a whitelist (numbers, + - * / // % **, unary minus, sqrt, abs,
    round, floor, ceil); nothing is ever executed, so ``__import__('os')`` is just a rejected Call.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"Expressions are limited to {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.replace("^", "**").strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ToolError(f"I can't read {expression!r} as arithmetic.") from e
    try:
        value = _evaluate(tree)
    except ZeroDivisionError as e:
        raise ToolError("You can't divide by zero.") from e
    except OverflowError as e:
        raise ToolError("That number is too large.") from e
    except ValueError as e:  # sqrt(-1): "math domain error"
        raise ToolError(f"That has no real answer ({e}).") from e
    except RecursionError as e:
        raise ToolError("That expression is nested too deeply.") from e
    return value, _in_words(tree)


# Spoken phrasing -> Python syntax, applied in order to words_to_numbers' output.
_N = r"(\d+(?:\.\d+)?)"
_SPOKEN_REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"\badd {_N} (?:and|to) {_N}"), r"\1 + \2"),
    (re.compile(rf"\bsubtract {_N} from {_N}"), r"\2 - \1"),
    (re.compile(rf"\bmultiply {_N} (?:by|and) {_N}"), r"\1 * \2"),
    (re.compile(rf"\bdivide {_N} by {_N}"), r"\1 / \2"),
    (re.compile(r"\bsquare root of\b"), " sqrt "),
    (re.compile(r"\babsolute value of\b"), " abs "),
    (re.compile(r"\b(?:raised )?to the power of\b|\braised to\b|\^"), " ** "),
    (re.compile(r"\bsquared\b"), " ** 2 "),
    (re.compile(r"\bcubed\b"), " ** 3 "),
    (re.compile(r"\bmultiplied by\b|\btimes\b|×"), " * "),
    (re.compile(r"\bdivided by\b|\bover\b|÷"), " / "),
    (re.compile(r"\bplus\b"), " + "),
    (re.compile(r"\bminus\b|\bnegative\b"), " - "),
    # Percent before modulo: "20 % of 80" and "15 %" are percentages, "10 % 3" stays a modulo.
    (re.compile(r"(?:\bpercent\b|%)\s*of\b"), " / 100 * "),
    (re.compile(r"\bpercent\b|%(?=\s*(?:$|[-+*/)?!.,]))"), " / 100 "),
    (re.compile(r"\bmod(?:ulo)?\b"), " % "),
    (re.compile(r"\bhalf of\b"), " 0.5 * "),
]
# Words around a spoken calculation that carry no arithmetic. Any *other* word means the text is not a
# calculation ("how many days are in 2 weeks" goes to the LLM, not to "2").
_FILLER_WORDS = frozenset(
    _words(
        "what what's whats is are was how much calculate compute work out the equals equal to be would will "
        "does do please can could you tell me hey ok okay so and answer result of value solve evaluate i "
        "want know need quick question math maths a an it that"
    )
)
_OPERATOR_TOKENS = frozenset({"**", "//", "+", "-", "*", "/", "%", "(", ")"})
_EXPR_TOKEN = re.compile(r"\d+(?:\.\d+)?|\.\d+|\*\*|//|[-+*/%()]|[a-z']+|\S")


def spoken_to_expression(text: str) -> str | None:
    """A Python-syntax expression for spoken or typed arithmetic, or None when ``text`` is not one.

    "what is twelve times thirteen" -> "12 * 13"; "square root of 144" -> "sqrt ( 144 )";
    "twenty percent of 80" -> "20 / 100 * 80". The result is only *parsed* here; evaluate it with
    :func:`evaluate_expression`.
    """
    if len(text) > 2 * MAX_EXPRESSION_CHARS:  # spelled-out numbers are long, but not this long
        return None
    normalized = words_to_numbers(text)
    for pattern, replacement in _SPOKEN_REWRITES:
        normalized = pattern.sub(replacement, normalized)
    tokens: list[str] = []
    for token in _EXPR_TOKEN.findall(normalized):
        if token in _FILLER_WORDS or token in ("?", "!", ",", ".", "="):
            continue
        if token == "x" and tokens and (tokens[-1] == ")" or _NUMBER_TOKEN.fullmatch(tokens[-1])):
            tokens.append("*")  # "7 x 8"
        elif _NUMBER_TOKEN.fullmatch(token) or token in _OPERATOR_TOKENS or token in _FUNCTIONS:
            tokens.append(token)
        else:
            return None
    # "sqrt 144" -> "sqrt ( 144 )": a spoken function applies to the number right after it.
    applied: list[str] = []
    for i, token in enumerate(tokens):
        applied.append(token)
        if i and tokens[i - 1] in _FUNCTIONS and token != "(":
            applied[-2:] = [tokens[i - 1], "(", token, ")"]
    numbers = sum(1 for t in applied if _NUMBER_TOKEN.fullmatch(t))
    operators = sum(1 for t in applied if not _NUMBER_TOKEN.fullmatch(t) and t not in "()")
    if not numbers or not operators:
        return None
    expression = " ".join(applied)
    try:
        ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    return expression


class Calculator:
    """Safe arithmetic. ``run({"expression": "12 * 13"})`` -> "12 times 13 is 156."."""

    name = "calculator"
    description = (
        "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, sqrt, abs, round, "
        "floor, ceil. Argument: expression (Python syntax)."
    )

    def run(self, args: ToolArgs) -> str:
        value, words = evaluate_expression(_str_arg(args, "expression"))
        return f"{words[:1].upper()}{words[1:]} is {format_number(value)}."


# ----------------------------------------------------------------------------------------------------
# Clock and timers

MAX_TIMER_S = 24 * 3600  # a day; longer is a calendar reminder, not a kitchen timer
MIN_TIMER_S = 1

_UNIT_SECONDS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "hr": 3600}
_UNIT = r"(?P<unit>hours?|hrs?|minutes?|mins?|seconds?|secs?)\b"
# "10 minutes", "1.5 hours", "a minute", "1 and a half minutes", "an hour and a half"
_DURATION_PART = re.compile(
    rf"(?<!half )\b(?P<n>\d+(?:\.\d+)?|an?)(?P<half1> and a half)?[\s-]*{_UNIT}(?P<half2> and a half)?"
)
_HALF_UNIT = re.compile(r"\bhalf an? (?P<unit>hour|minute)\b")
# A label is one to three words, ending before a word that starts another part of the request.
_LABEL_WORDS = r"(?P<label>[a-z]+(?: (?!(?:for|in|to|and|please|that)\b)[a-z]+){0,2})"
_LABEL_NAMED = re.compile(rf"\b(?:called|named|labell?ed) {_LABEL_WORDS}")
_LABEL_FOR = re.compile(rf"{_UNIT} for (?:the |my |a )?{_LABEL_WORDS}")
_LABEL_BEFORE = re.compile(r"\b(?P<label>[a-z]+) timer\b")
_NOT_LABELS = frozenset(
    _words(
        "a an the my new set start another one second seconds minute minutes hour hours min mins sec secs "
        "hr hrs half kitchen countdown"
    )
)


def parse_duration(text: str) -> float | None:
    """Seconds in a spoken duration ("ten minutes", "an hour and a half", "1 hour 30 minutes"), or None."""
    normalized = words_to_numbers(text)
    seconds = 0.0
    found = False
    for match in _DURATION_PART.finditer(normalized):
        n = 1.0 if match["n"] in ("a", "an") else float(match["n"])
        if match["half1"] or match["half2"]:
            n += 0.5
        seconds += n * _UNIT_SECONDS[match["unit"].rstrip("s")]
        found = True
    for match in _HALF_UNIT.finditer(normalized):
        seconds += 0.5 * _UNIT_SECONDS[match["unit"]]
        found = True
    return seconds if found else None


def parse_timer_label(text: str) -> str:
    """The timer's name in "set a pasta timer ...", "... for 5 minutes for the eggs", "... called tea"."""
    normalized = " ".join(re.findall(r"[a-z]+|[.?!]", text.lower()))
    for pattern in (_LABEL_NAMED, _LABEL_FOR):
        match = pattern.search(normalized)
        if match:
            return match["label"].strip()
    for match in _LABEL_BEFORE.finditer(normalized):
        if match["label"] not in _NOT_LABELS:
            return match["label"]
    return ""


def _spoken_duration(seconds: float) -> str:
    """90 -> "1 minute and 30 seconds"."""
    whole = round(seconds)
    if not whole:
        return "0 seconds"
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


@dataclass(frozen=True)
class Timer:
    """A timer the caller schedules: it ends ``seconds`` after it was set."""

    seconds: float
    label: str = ""  # "" for an unnamed timer

    @classmethod
    def from_args(cls, args: ToolArgs) -> Timer:
        """Validated from the clock tool's arguments (``seconds``, optional ``label``)."""
        if "seconds" not in args:
            raise ToolError("How long should the timer run? For example: set a timer for 5 minutes.")
        seconds = _number_arg(args, "seconds")
        if not MIN_TIMER_S <= seconds <= MAX_TIMER_S:
            raise ToolError(f"Timers can run from {MIN_TIMER_S} second to {MAX_TIMER_S // 3600} hours.")
        label = args.get("label", "")
        if not isinstance(label, str):
            raise ToolError("The timer's label must be a string.")
        return cls(seconds=seconds, label=label.strip())

    def _name(self) -> str:
        return f"{self.label} timer" if self.label else "timer"

    def confirmation(self) -> str:
        """Said when the timer is set."""
        name = self._name()
        return f"{name[:1].upper()}{name[1:]} set for {_spoken_duration(self.seconds)}."

    def done_message(self) -> str:
        """Said when the timer ends."""
        return f"Your {_spoken_duration(self.seconds)} {self._name()} is done."


@cache
def _zones_by_place() -> dict[str, str]:
    """Place -> zone from the tz database: "new york" -> "America/New_York", "utc" -> "UTC"."""
    zones: dict[str, str] = {}
    for zone in sorted(zoneinfo.available_timezones()):
        if zone.startswith(("Etc/", "SystemV/", "posix/", "right/")):
            continue
        zones.setdefault(zone.rsplit("/", 1)[-1].replace("_", " ").lower(), zone)
        zones[zone.lower()] = zone
    return zones


def resolve_place(place: str) -> zoneinfo.ZoneInfo:
    """The time zone of a city or zone name; ToolError when the tz database has no such place."""
    zone = _zones_by_place().get(place.strip().lower().removeprefix("the "))
    if zone is None:
        raise ToolError(f"I don't know the time zone of {place.strip()}.")
    return zoneinfo.ZoneInfo(zone)


def _clock_time(moment: datetime) -> str:
    """Twelve-hour "3:07 PM", because that is how the time is usually said in English."""
    return f"{moment.hour % 12 or 12}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


class Clock:
    """Current time and date in a configured time zone (default: the machine's), and timers.

    ``run`` takes ``action``: "time" or "date" (optional ``place``: a city or zone name), or "timer"
    (``seconds``, optional ``label``; see :class:`Timer`). ``now`` is injectable for tests.
    """

    name = "clock"
    description = (
        "Tell the current time or date (action 'time' or 'date', optional place), or set a timer "
        "(action 'timer', seconds, optional label)."
    )

    def __init__(self, timezone: str | None = None, now: Callable[[], float] = time.time) -> None:
        # Invalid configuration fails here, at start-up, rather than on the first question.
        self.timezone: tzinfo | None = zoneinfo.ZoneInfo(timezone) if timezone else None
        self._now = now

    def run(self, args: ToolArgs) -> str:
        action = _str_arg(args, "action")
        if action == "timer":
            return Timer.from_args(args).confirmation()
        if action not in ("time", "date"):
            raise ToolError(f"Unknown clock action {action!r}; use time, date or timer.")
        place = args.get("place")
        if place is not None and not isinstance(place, str):
            raise ToolError("The place must be a string.")
        zone = resolve_place(place) if place else self.timezone
        # astimezone(None) is the machine's local zone, so "default local" follows the host's setting.
        moment = datetime.fromtimestamp(self._now()).astimezone(zone)
        where = f"In {place.strip().title()} it" if place else "It"
        if action == "time":
            day = f" on {moment:%A}" if place else ""
            return f"{where}'s {_clock_time(moment)}{day}."
        today = "Today is" if not place else f"{where} is"
        return f"{today} {moment:%A}, {moment:%B} {moment.day}, {moment.year}."


# ----------------------------------------------------------------------------------------------------
# Document search

DOCS_ENV = "MICROTURN_DOCS"
DOC_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst"})
MAX_DOC_BYTES = 2 * 1024 * 1024  # larger files are logs or dumps, not documents someone asks about
MAX_DOC_FILES = 5000  # indexed per folder; beyond that a stat of every file on every query gets slow
PASSAGE_TARGET_WORDS = 80  # paragraphs are merged until a passage has this many words
PASSAGE_MAX_WORDS = 160  # longer paragraphs are cut into pieces of this many words
DEFAULT_TOP_K = 3  # passages returned
# BM25 parameters, the usual defaults: k1 saturates term frequency, b normalises by passage length.
BM25_K1 = 1.2
BM25_B = 0.75

_STOPWORDS = frozenset(
    _words(
        "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
        "that these those i you he she we they me my your our their what which who whom when where why how "
        "do does did doing have has had can could would should will shall may might must not no so than too "
        "very just about into over under again there here then once all any both each few more most other "
        "some such only own same s t say says said tell please"
    )
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s+")
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+>]\s+|\d+[.)]\s+)")  # heading, list item, quote


def _stem(word: str) -> str:
    """A deliberately crude suffix stripper: "timers" = "timer", "opening" = "opens" = "open".

    It only has to map a query word and a document word to the same key; both go through it.
    """
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + replacement
    return word


def terms(text: str) -> list[str]:
    """Index terms of ``text``: lower-case words and numbers, stop words dropped, stemmed."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


@dataclass(frozen=True)
class Passage:
    file: str  # path relative to the document folder
    text: str  # one line, whitespace collapsed


@dataclass(frozen=True)
class _IndexedFile:
    """One file's passages and their index terms, kept until the file's (mtime, size) changes."""

    signature: tuple[int, int]  # (mtime_ns, size)
    passages: list[Passage]
    counts: list[Counter[str]]  # index terms of each passage


def chunk_document(text: str) -> list[str]:
    """Passages of about :data:`PASSAGE_TARGET_WORDS` words, at paragraph boundaries where possible.

    A heading starts a new passage, so it stays with the text it introduces. Headings and list items get
    a full stop when they have none, so that they read as sentences of their own once lines are joined.
    """
    paragraphs: list[tuple[bool, str]] = []  # (is a heading, text)
    for block in re.split(r"\n\s*\n", text):
        lines: list[str] = []
        for line in block.splitlines():
            stripped = _MARKUP.sub("", line).strip()
            if not stripped:
                continue
            if _MARKUP.match(line) and stripped[-1] not in ".!?:;":
                stripped += "."
            if _HEADING.match(line):
                if lines:
                    paragraphs.append((False, " ".join(lines)))
                    lines = []
                paragraphs.append((True, stripped))
            else:
                lines.append(stripped)
        if lines:
            paragraphs.append((False, " ".join(lines)))

    passages: list[str] = []
    current: list[str] = []  # words of the passage being filled
    for is_heading, paragraph in paragraphs:
        if current and (is_heading or len(current) >= PASSAGE_TARGET_WORDS):
            passages.append(" ".join(current))
            current = []
        for word in paragraph.split():
            if len(current) == PASSAGE_MAX_WORDS:  # a paragraph too long for one passage
                passages.append(" ".join(current))
                current = []
            current.append(word)
    if current:
        passages.append(" ".join(current))
    return passages


class BM25Index:
    """Okapi BM25 over passages, with an inverted index of numpy arrays (one entry per term occurrence
    in a passage), so a query touches only the postings of its own terms."""

    def __init__(self, documents: Sequence[Counter[str]]) -> None:
        """``documents``: each passage's term counts (kept per file, so re-indexing recounts nothing)."""
        self.size = len(documents)
        lengths = np.array([d.total() for d in documents], dtype=np.float64)  # [N] terms per passage
        self.avg_length = float(lengths.mean()) if self.size else 0.0
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for index, counts in enumerate(documents):
            for term, count in counts.items():
                ids, tfs = postings.setdefault(term, ([], []))
                ids.append(index)
                tfs.append(count)
        self.postings = {
            term: (np.array(ids, dtype=np.int64), np.array(tfs, dtype=np.float64))
            for term, (ids, tfs) in postings.items()
        }
        # The length normaliser of each passage, precomputed: k1 * (1 - b + b * |d| / avg|d|)  [N]
        self.norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / max(self.avg_length, 1e-9))

    def scores(self, query: list[str]) -> npt.NDArray[np.float64]:
        """BM25 score of every passage [N] for the (unique) query terms."""
        scores = np.zeros(self.size, dtype=np.float64)
        for term in set(query):
            if term not in self.postings:
                continue
            ids, tf = self.postings[term]
            # Lucene's idf, which stays positive for terms in more than half of the passages.
            idf = math.log(1 + (self.size - len(ids) + 0.5) / (len(ids) + 0.5))
            scores[ids] += idf * tf * (BM25_K1 + 1) / (tf + self.norm[ids])
        return scores


class DocumentSearch:
    """BM25 search over the text and markdown files of a folder (``folder`` or ``$MICROTURN_DOCS``).

    Each search stats the folder's files and re-reads only those whose modification time or size
    changed, so edits, new files and deletions are seen by the next question. Thread-safe.
    ``run({"query": ...})`` returns the best passages, one per line: ``[file] passage``.
    """

    name = "documents"
    description = (
        "Search the operator's local documents (text and markdown) for passages matching a query. "
        "Argument: query."
    )

    def __init__(self, folder: str | Path | None = None, top_k: int = DEFAULT_TOP_K) -> None:
        configured = folder if folder is not None else os.environ.get(DOCS_ENV)
        self.folder = Path(configured).expanduser() if configured else None
        self.top_k = top_k
        self._lock = threading.Lock()
        self._files: dict[Path, _IndexedFile] = {}
        self._passages: list[Passage] = []
        self._index = BM25Index([])

    def _scan(self) -> dict[Path, tuple[int, int]]:
        """(mtime_ns, size) of every document file under the folder, hidden directories skipped."""
        if self.folder is None:
            raise ToolError(f"No document folder is configured (set {DOCS_ENV}).")
        if not self.folder.is_dir():
            raise ToolError(f"The document folder {self.folder} does not exist.")
        found: dict[Path, tuple[int, int]] = {}
        for root, dirs, names in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(root, name)
                if path.suffix.lower() not in DOC_SUFFIXES or name.startswith("."):
                    continue
                try:
                    stat = path.stat()
                except OSError:  # deleted between listing and stat
                    continue
                if stat.st_size <= MAX_DOC_BYTES:
                    found[path] = (stat.st_mtime_ns, stat.st_size)
                if len(found) >= MAX_DOC_FILES:
                    log.warning("indexing only the first %d files of %s", MAX_DOC_FILES, self.folder)
                    return found
        return found

    def refresh(self) -> None:
        """Re-index if any file was added, removed or changed since the last search."""
        current = self._scan()
        unchanged = current.keys() == self._files.keys() and all(
            self._files[path].signature == signature for path, signature in current.items()
        )
        if unchanged:
            return
        files: dict[Path, _IndexedFile] = {}
        for path, signature in current.items():
            cached = self._files.get(path)
            if cached is not None and cached.signature == signature:
                files[path] = cached  # only changed files are read and tokenised again
                continue
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                log.warning("skipping unreadable document %s: %s", path, e)
                continue
            relative = path.relative_to(self.folder).as_posix() if self.folder else path.name
            passages = [Passage(relative, p) for p in chunk_document(text)]
            # The file name is indexed with every passage: "pool.md" answers "when does the pool open".
            counts = [Counter(terms(f"{path.stem} {p.text}")) for p in passages]
            files[path] = _IndexedFile(signature, passages, counts)
        self._files = files
        self._passages = [p for f in files.values() for p in f.passages]
        self._index = BM25Index([c for f in files.values() for c in f.counts])

    def search(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The best passages for ``query``, best first; only passages sharing a term with it."""
        with self._lock:
            self.refresh()
            if not self._passages:
                raise ToolError(f"There are no text or markdown documents in {self.folder}.")
            scores = self._index.scores(terms(query))
            passages = self._passages
        k = top_k if top_k is not None else self.top_k
        best = np.argsort(-scores, kind="stable")[:k]  # stable: ties keep file order
        return [passages[i] for i in best if scores[i] > 0]

    def run(self, args: ToolArgs) -> str:
        query = _str_arg(args, "query")
        passages = self.search(query)
        if not passages:
            return f"Nothing in the documents matches {query!r}."
        return "\n".join(f"[{p.file}] {p.text}" for p in passages)
