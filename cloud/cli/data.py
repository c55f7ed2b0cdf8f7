"""``harken data``: synthesize, import, merge, check and split speech-command datasets."""
from __future__ import annotations

import json
import sys
import logging
import time

import click

from cloud.lab import check as check_mod
from cloud.lab import dataset as dataset_mod
from cloud.lab import cast, engines, importer, splits, synth, voices
from cloud.lab import merge as merge_mod
from shared.errors import DatasetError

log = logging.getLogger(__name__)



@click.group(name="data")
def group() -> None:
    """Synthesize, import, merge, check and split speech datasets."""


def _csv(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else default


@group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-word", default=synth.DEFAULT_PER_WORD, show_default=True, type=click.IntRange(1, 100000),
              help="Clips per word and for _silence_; _unknown_ gets twice as many.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same dataset hash.")
@click.option("--engines", "engine_names", default=",".join(engines.ENGINES), show_default=True,
              help="Comma-separated speech engines (each a Debian package).")
@click.option("--shares", default=None,
              help="Engine shares of the clips, e.g. espeak-ng=0.5,festival=0.25,flite=0.25 (normalised; "
                   "default: espeak-ng 0.25, rhvoice 0.2, mbrola, festival and flite 0.15, pico 0.1).")
@click.option("--accents", default=None, help="Comma-separated espeak-ng languages (default: 8 English accents).")
@click.option("--variants", default=None, help="Comma-separated espeak-ng voice variants (default: 31).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Parallel synthesis processes.")
def synth_cmd(out, per_word, seed, engine_names, shares, accents, variants, workers) -> None:
    """Synthesize a speech-commands dataset into OUT with every English speech engine Debian
    packages (espeak-ng, mbrola, festival, flite, pico, rhvoice; --engines picks fewer)."""
    accents, variants = _csv(accents, voices.ACCENTS), _csv(variants, voices.VARIANTS)
    parts = cast.default_cast(_csv(engine_names, engines.ENGINES), accents, variants, _shares(shares))
    total = sum(synth.clips_per_label(per_word).values())
    t0 = time.perf_counter()
    with click.progressbar(length=total, label="synthesizing", file=sys.stderr) as bar:
        manifest = synth.synthesize(out, per_word=per_word, seed=seed, workers=workers, progress=bar.update,
                                    cast_parts=parts)
    speakers = sum(len(p.speakers()) for p in parts)
    click.echo(f"{len(manifest['clips'])} clips, {speakers} speakers from "
               f"{', '.join(p.engine for p in parts)} in {out} ({time.perf_counter() - t0:.1f} s); "
               f"dataset hash {manifest['dataset_hash']}")


def _shares(value: str | None) -> dict[str, float] | None:
    if not value:
        return None
    out = {}
    for item in _csv(value, ()):
        name, sep, number = item.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"{item!r}: write ENGINE=SHARE, e.g. festival=0.25", param_hint="--shares")
    return out


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


@group.command("import")
@click.argument("source_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset directory to write.")
@click.option("--source", default="import", show_default=True,
              help="Prefix of the speaker names (e.g. speech-commands, field); splits stratify on it.")
@click.option("--labels", "label_mode", default="task", show_default=True, type=click.Choice(importer.LABEL_MODES),
              help="task: the 12 task labels (other words become _unknown_); folders: one label per folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_cmd(source_dir, out, source, label_mode, as_json) -> None:
    """Import a folder-per-label tree of WAVs (and its samples.json) as a dataset.

    DIR/<label>/*.wav; DIR/_background_noise_/*.wav is cut into 1 s _silence_ clips;
    DIR/samples.json (optional) gives each file's sample id, device and label history.
    Files are resampled to 16 kHz mono and made 1 s long; files that cannot be used are
    listed and counted, and the rest are imported.
    """
    with click.progressbar(length=importer.count_files(source_dir), label="importing", file=sys.stderr) as bar:
        manifest, report = importer.run(importer.ImportRequest(source_dir, out, source, label_mode, bar.update))
    summary = report.to_dict()
    if as_json:
        click.echo(json.dumps({"dataset_hash": manifest["dataset_hash"], "out": out, **summary}, indent=1))
        return
    for item in report.rejected:
        click.echo(f"rejected: {item['code']}: {item['detail']}")  # the detail names the file
    click.echo(f"{len(manifest['clips'])} clips into {out} "
               f"({summary['resampled']} resampled, {summary['padded']} padded, {summary['trimmed']} trimmed, "
               f"{summary['rejected']} rejected); dataset hash {manifest['dataset_hash']}")
    click.echo(f"next: `harken data check {out}`")


@group.command("merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New dataset directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def merge_cmd(parts, out, as_json) -> None:
    """Make a new dataset version from several; its lineage records the parts and sample ids."""
    total = sum(len(dataset_mod.load(p).clips) for p in parts)
    with click.progressbar(length=total, label="merging", file=sys.stderr) as bar:
        manifest, summary = merge_mod.merge(parts, out, progress=bar.update)
    if as_json:
        click.echo(json.dumps({**summary, "lineage": manifest["lineage"]}, indent=1))
        return
    click.echo(f"{summary['clips']} clips from {summary['parts']} datasets into {out} "
               f"({summary['duplicates_dropped']} duplicates dropped); dataset hash {summary['dataset_hash']}")
    for part in manifest["lineage"]["parts"]:
        click.echo(f"  part {part['dataset_hash'][:16]}  {part['clips']} clips  {part['path']}")
