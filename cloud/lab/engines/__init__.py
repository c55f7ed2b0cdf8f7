"""Speech engines the model lab synthesizes with, and how a speaker is named.

Every engine is a Debian package that speaks English: espeak-ng (its accents and voice
variants), mbrola (its diphone voices, spoken through espeak-ng), festival (the festvox kal
and ked diphone voices and the slt HTS voice), flite (its built-in kal16, awb, rms and slt
voices), pico (SVOX Pico, US and British) and rhvoice (six HTS-style voices); the last three
are in Debian's contrib and non-free components. A model trained on one synthesizer
collapses on voices it never heard, so a dataset mixes them and the evaluation holds each
one out.

A *speaker* is ``"{engine}:{voice}+{variant}"`` (``espeak-ng:en-us+m3``,
``festival:ked+lo-l``): the unit speaker-disjoint splits keep together. Datasets written
before engines were named use ``"{accent}+{variant}"`` (espeak-ng) and still read.

Each engine renders a word as a pure function of (word, voice, variant, rng): the rng picks
the per-clip speed and pitch the engine allows, and ``Rendered.tags`` records them.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shared.errors import DatasetError

log = logging.getLogger(__name__)

ENGINES = ("espeak-ng", "mbrola", "festival", "flite", "pico", "rhvoice")
SEPARATOR = ":"


@dataclass(frozen=True)
class Rendered:
    samples: np.ndarray  # float32 mono, at ``rate``
    rate: int
    tags: dict = field(default_factory=dict)  # per-clip settings the engine applied


class Engine(Protocol):
    name: str

    def voices(self) -> tuple[str, ...]: ...

    def variants(self) -> tuple[str, ...]: ...

    def accent(self, voice: str) -> str: ...

    def version(self) -> str: ...

    def check(self, voices) -> None: ...

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered: ...

    def close(self) -> None: ...


def speaker_name(engine: str, voice: str, variant: str) -> str:
    return f"{engine}{SEPARATOR}{voice}+{variant}"


def parse_speaker(name: str) -> tuple[str | None, str, str | None]:
    """(engine, voice, variant) of a speaker name; engine None for names without one
    (espeak-ng names from before engines, imported speakers), variant None without ``+``."""
    engine, sep, rest = name.partition(SEPARATOR)
    if not sep:
        engine, rest = None, name
    voice, plus, variant = rest.partition("+")
    return engine, voice, (variant if plus else None)


def source_of(speaker: str) -> str | None:
    """The engine (or import source) of a speaker: what splits stratify on and LOEO holds out."""
    return parse_speaker(speaker)[0]


def create(name: str, scratch: str | os.PathLike | None = None) -> Engine:
    """A fresh engine by name (temporary files under ``scratch``); its ``check`` says how to
    install one that is missing."""
    if name == "espeak-ng":
        from cloud.lab.engines.espeak import Espeak

        return Espeak()
    if name not in ENGINES:
        raise DatasetError(f"unknown speech engine {name!r}; use one of {', '.join(ENGINES)}")
    module = importlib.import_module(f".{name}", __name__)  # relative: works in the wheel too
    return getattr(module, name.capitalize())(scratch)


class Engines:
    """The engines of one process, created on first use and closed together."""

    def __init__(self, scratch: str | os.PathLike | None = None):
        self.scratch = scratch
        self._engines: dict[str, Engine] = {}

    def get(self, name: str) -> Engine:
        if name not in self._engines:
            self._engines[name] = create(name, self.scratch)
        return self._engines[name]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
