"""``harken data``: synthesize, check and split speech-command datasets."""
from __future__ import annotations

import json
import sys
import logging
import time

import click

from cloud.lab import check as check_mod
from cloud.lab import dataset as dataset_mod
from cloud.lab import splits, synth, voices
from shared.errors import DatasetError

log = logging.getLogger(__name__)



@click.group(name="data")
def group() -> None:
    """Synthesize, check and split speech datasets."""


def _csv(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else default


@group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-word", default=synth.DEFAULT_PER_WORD, show_default=True, type=click.IntRange(1, 100000),
              help="Clips per word and for _silence_; _unknown_ gets twice as many.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same dataset hash.")
@click.option("--accents", default=None, help="Comma-separated espeak-ng languages (default: 8 English accents).")
@click.option("--variants", default=None, help="Comma-separated espeak-ng voice variants (default: 31).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Parallel synthesis processes.")
def synth_cmd(out, per_word, seed, accents, variants, workers) -> None:
    """Synthesize a speech-commands dataset with espeak-ng into OUT."""
    accents, variants = _csv(accents, voices.ACCENTS), _csv(variants, voices.VARIANTS)
    total = sum(synth.clips_per_label(per_word).values())
    t0 = time.perf_counter()
    with click.progressbar(length=total, label="synthesizing", file=sys.stderr) as bar:
        manifest = synth.synthesize(out, per_word=per_word, seed=seed, accents=accents,
                                    variants=variants, workers=workers, progress=bar.update)
    click.echo(f"{len(manifest['clips'])} clips, {len(accents) * len(variants)} speakers in {out} "
               f"({time.perf_counter() - t0:.1f} s); dataset hash {manifest['dataset_hash']}")


@group.command("check")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_cmd(directory, as_json) -> None:
    """Report label conflicts and quality problems; exit 1 when there are errors."""
    dataset = dataset_mod.load(directory)
    with click.progressbar(length=len(dataset.clips), label="checking", file=sys.stderr) as bar:
        report = check_mod.check(dataset, progress=bar.update)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(f"{report['clips']} clips, dataset hash {report['dataset_hash']}")
        click.echo("labels: " + ", ".join(f"{k}={v}" for k, v in report["labels"].items()))
        for kind in ("errors", "warnings"):
            for item in report[kind]:
                click.echo(f"{kind[:-1]}: {item['code']}: {item['path']} {item['detail']}".rstrip())
        click.echo(f"{len(report['errors'])} error(s), {len(report['warnings'])} warning(s)")
    if not report["ok"]:
        raise DatasetError(f"{len(report['errors'])} error(s) in {directory}; fix or remove those clips "
                           "(or re-synthesize) before training")


@group.command("split")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int, help="Split seed (training uses its --seed).")
@click.option("--json", "as_json", is_flag=True, help="Print the distribution as JSON.")
def split_cmd(directory, seed, as_json) -> None:
    """Show the speaker-disjoint split and the label distribution of each side."""
    dataset = dataset_mod.load(directory)
    sp = splits.split(dataset.clips, dataset.labels, seed=seed)
    rows = splits.distribution(dataset.clips, dataset.labels, sp)
    if as_json:
        click.echo(json.dumps({"split": sp.summary(), "speakers": sp.speakers, "labels": rows}, indent=1))
        return
    head = f"{'label':<12}" + "".join(f"{k:>16}" for k in ("all", *splits.SPLITS))
    click.echo(head)
    for row in rows:
        click.echo(f"{row['label']:<12}" + "".join(
            f"{row[k]:>8} ({row[k + '_pct']:4.1f}%)" for k in ("all", *splits.SPLITS)))
    sizes = sp.summary()
    click.echo(f"{'total':<12}{len(dataset.clips):>16}" + "".join(
        f"{sizes['sizes'][k]:>16}" for k in splits.SPLITS))
    click.echo("speakers: " + ", ".join(f"{k} {len(v)}" for k, v in sp.speakers.items())
               + " (disjoint)")
