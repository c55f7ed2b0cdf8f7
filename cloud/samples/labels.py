"""Labelling a field sample: which labels it may get, who gave it, when.

A label must be one of the labels of the model that judged the sample (its registered
manifest), so a typo never becomes a class; ``allow_new`` admits another one on purpose (a new
word for the next model). It must also be a safe folder name (``shared.samples.check_label``),
since an export files each sample under its label. Who labelled is the API token's name or the
CLI's ``--by`` (default the login name): the store keeps every label with it and the time.
"""
from __future__ import annotations

import re
import time

from shared.errors import ConfigError
from shared.samples import check_label

_BY_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


def model_labels(registry, model: str | None) -> list[str] | None:
    """The label list of ``model`` from the registry (None when it is not registered)."""
    if registry is None or not model:
        return None
    rec = registry.get(model)
    labels = (rec.manifest.get("labels") if rec is not None else None) or None
    return [str(x) for x in labels] if labels else None


def label_sample(store, ref: str, label: str, *, by: str, registry=None, allow_new: bool = False,
                 now: float | None = None) -> dict:
    """Give sample ``ref`` the label ``label`` as ``by``; returns the sample with its history."""
    try:
        check_label(label)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(by, str) or not _BY_RE.match(by.strip() or "\x00"):
        raise ConfigError(f"labeller {by!r}: give a name of 1-64 printable characters (--by NAME)")
    sample = store.sample(ref)
    if sample is None:
        raise ConfigError(f"no sample {ref!r}; `harken samples list` shows them")
    allowed = model_labels(registry, sample["model"])
    if allowed is not None and label not in allowed and not allow_new:
        raise ConfigError(f"{label!r} is not a label of model {sample['model'][:12]} ({', '.join(allowed)}); "
                          "pick one of them, or allow a new label on purpose (--new-label)")
    return store.label_sample(sample["sha256"], label, by.strip(), time.time() if now is None else now)
