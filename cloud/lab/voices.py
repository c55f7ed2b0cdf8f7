"""The words of the speech-commands task and its two special labels.

The engines that speak them live in ``cloud.lab.engines``; espeak-ng's accents, variants,
speeds and pitches are re-exported here under their old names.
"""
from __future__ import annotations

import logging

from cloud.lab.engines.espeak import ACCENTS, PITCHES, SPEEDS_WPM, VARIANTS  # noqa: F401

log = logging.getLogger(__name__)

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_LABEL = "_unknown_"
SILENCE_LABEL = "_silence_"
LABELS = WORDS + (UNKNOWN_LABEL, SILENCE_LABEL)
# Words the model must answer "_unknown_" to (those of Google's Speech Commands, plus one).
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "learn", "follow", "forward", "backward", "visual", "yellow",
)
