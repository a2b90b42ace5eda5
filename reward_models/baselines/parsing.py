"""Robust parsing of generative VLM answers into numbers.

Generative models answer in free text: ``"73%"``, ``"about seventy percent"``,
``"<score>+12%</score>"``, ``"Score: 4/5"`` -- or garbage. Every parser returns ``None`` when it
cannot find a usable number, and :class:`ParseStats` counts those failures so a report can say
how often a model's answer was replaced by the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER_WORDS = {
    "zero": 0,
    "none": 0,
    "no": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
}
_SPECIAL_PERCENT = {"half": 50.0, "complete": 100.0, "completed": 100.0, "finished": 100.0, "done": 100.0}
_NUM = r"[+-]?\d+(?:\.\d+)?"


@dataclass
class ParseStats:
    """How many answers were parsed and how many fell back."""

    total: int = 0
    failures: int = 0
    examples: list[str] = field(default_factory=list)
    """Up to 5 unparseable answers, for the report."""

    def record(self, ok: bool, text: str) -> None:
        self.total += 1
        if not ok:
            self.failures += 1
            if len(self.examples) < 5:
                self.examples.append(text[:120])

    def as_dict(self) -> dict:
        return {
            "answers": self.total,
            "parse_failures": self.failures,
            "failure_rate": (self.failures / self.total) if self.total else None,
            "failed_examples": list(self.examples),
        }


def words_to_number(text: str) -> float | None:
    """``"seventy five"`` -> 75, ``"one hundred"`` -> 100; ``None`` if no number words."""
    tokens = re.findall(r"[a-z]+", text.lower().replace("-", " "))
    value, found, current = 0, False, 0
    for tok in tokens:
        if tok not in _NUMBER_WORDS:
            if found:
                break  # stop at the first non-number word after a number
            continue
        found = True
        n = _NUMBER_WORDS[tok]
        if n == 100:
            current = max(current, 1) * 100
        else:
            current += n
    if not found:
        return None
    return float(value + current)


def parse_percent(text: str) -> float | None:
    """A completion percentage in [0, 100] from free text.

    Order of preference: a number followed by ``%``/``percent``; a fraction ``0.7`` when it is
    the only number and ≤ 1; any number in [0, 100]; number words (``"seventy percent"``,
    ``"half"``). Values are clipped to [0, 100].
    """
    if not text:
        return None
    t = text.strip()
    m = re.search(rf"({_NUM})\s*(?:%|percent|pct)", t, flags=re.IGNORECASE)
    if m:
        return min(100.0, max(0.0, float(m.group(1))))
    numbers = [float(x) for x in re.findall(_NUM, t)]
    if len(numbers) == 1 and 0.0 < numbers[0] <= 1.0 and "." in t:
        return numbers[0] * 100.0
    for x in numbers:
        if 0.0 <= x <= 100.0:
            return x
    w = words_to_number(t)
    if w is not None and 0 <= w <= 100:
        return w
    low = t.lower()
    for word, value in _SPECIAL_PERCENT.items():
        if re.search(rf"\b{word}\b", low):
            return value
    return None


def parse_frame_percents(text: str, n_frames: int) -> list[float | None]:
    """GVL answers: ``"Frame 1: 20%\\nFrame 2: 85%"`` -> one percent (or ``None``) per frame.

    Lines naming a frame number win; without any, the first ``n_frames`` percentages in order
    are used.
    """
    out: list[float | None] = [None] * n_frames
    found = False
    for m in re.finditer(rf"frame\s*#?\s*(\d+)\s*[:=\-]?\s*(?:is\s*)?({_NUM})\s*%?", text, flags=re.IGNORECASE):
        k = int(m.group(1)) - 1
        if 0 <= k < n_frames and out[k] is None:
            out[k] = min(100.0, max(0.0, float(m.group(2))))
            found = True
    if found:
        return out
    values = [min(100.0, max(0.0, float(x))) for x in re.findall(rf"({_NUM})\s*%", text)]
    for k, v in enumerate(values[:n_frames]):
        out[k] = v
    return out


def parse_rubric(text: str, low: int = 1, high: int = 5) -> int | None:
    """A rubric score in [low, high]: ``"ANSWER: 4"``, ``"4/5"``, ``"score of four"``."""
    if not text:
        return None
    t = text.strip()
    for pattern in (
        r"(?:answer|score|rating)\s*[:=]?\s*(?:is\s*)?(\d+)",
        r"(\d+)\s*/\s*5\b",
        r"<score>\s*(\d+)\s*</score>",
    ):
        m = re.search(pattern, t, flags=re.IGNORECASE)
        if m and low <= int(m.group(1)) <= high:
            return int(m.group(1))
    for x in re.findall(r"(?<![\d.])(\d+)(?![\d.])", t):
        if low <= int(x) <= high:
            return int(x)
    w = words_to_number(t)
    if w is not None and low <= w <= high:
        return int(w)
    return None


def parse_signed_percent(text: str) -> float | None:
    """Robo-Dopamine GRM answers: ``"<score>+35%</score>"`` -> 0.35, in [-1, 1].

    The ``<score>`` tag wins; otherwise the *last* signed percentage in the text is used (the
    released evaluation code reads answers this way). ``None`` when neither is present.
    """
    if not text:
        return None
    m = re.search(r"<score>(.*?)</score>", text, flags=re.IGNORECASE | re.DOTALL)
    if m:
        inner = re.search(_NUM, m.group(1).replace(" ", ""))
        if inner:
            return max(-100.0, min(100.0, float(inner.group(0)))) / 100.0
    matches = re.findall(rf"({_NUM})\s*%", text)
    if matches:
        return max(-100.0, min(100.0, float(matches[-1]))) / 100.0
    return None
