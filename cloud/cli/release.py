"""Release commands for `harken model`: release (what may reach devices) and revoke.

The lab's key signs a bundle's manifest when it is trained; ``release`` adds release metadata
signed with a release key (name, monotonic version, expiry, automation cap, probation floor),
``revoke`` keeps a signed revocation list and publishes it retained on
``{prefix}/model/revocations``. See docs/security.md (item 10).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from shared import keys
from shared.errors import ConfigError
from shared.messages import AUTOMATION_LEVELS
from shared.release import (DEFAULT_MAX_AUTOMATION, PROBATION_KEYS, make_revocations, parse_revocations,
                            release_file, when)

RELEASE_KEY_ENV = "HARKEN_RELEASE_KEY"


def _release_key(path: str | None):
    key_file = Path(path) if path else (Path(os.environ[RELEASE_KEY_ENV]).expanduser() if os.environ.get(
        RELEASE_KEY_ENV) else Path.home() / ".harken" / "keys" / f"{keys.RELEASE_NAME}.key")
    if not key_file.is_file():
        raise ConfigError(f"release key {key_file} not found; create one with `harken keys generate DIR --name "
                          "release` (keep it apart from the lab's signing key) or pass --release-key")
    return keys.load_private_key(key_file)


def _probation_floor(pairs: tuple[str, ...]) -> dict:
    floor = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in PROBATION_KEYS or not value:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE with KEY one of {', '.join(PROBATION_KEYS)}",
                                     param_hint="--probation-floor")
        try:
            floor[key] = PROBATION_KEYS[key](value)
        except ValueError:
            raise click.BadParameter(f"{pair!r}: {value!r} is not a number", param_hint="--probation-floor") from None
        if floor[key] < 0:
            raise click.BadParameter(f"{pair!r} must not be negative", param_hint="--probation-floor")
    return floor


@click.command("release")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--release-key", "release_key", type=click.Path(dir_okay=False),
              help=f"Release private key (default ${RELEASE_KEY_ENV} or ~/.harken/keys/release.key).")
@click.option("--version", "version", required=True, type=click.IntRange(1, 2 ** 63 - 1),
              help="Release version: an integer, higher than every earlier release of this model name.")
@click.option("--expires", default="30d", show_default=True,
              help="How long devices may install it (e.g. 30d, 12h); installed models keep running after.")
@click.option("--max-automation", type=click.Choice(AUTOMATION_LEVELS), default=DEFAULT_MAX_AUTOMATION,
              show_default=True, help="Highest automation level a desired state may set while this model runs.")
@click.option("--probation-floor", "probation_floor", multiple=True, metavar="KEY=VALUE",
              help="Loosest probation a desired state may ask for: utterances=N, seconds=S, max_error_rate=R, "
                   "latency_budget_ms=L (repeatable; default: none looser than the device's own settings).")
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="The lab's signing.pub: check the lab signature before releasing (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the released bundle here (default: in place).")
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
def release(bundle, release_key, version, expires, max_automation, probation_floor, public_keys, out,
            as_json) -> None:
    """Sign release metadata into BUNDLE: what devices may install (the model sha256 is unchanged)."""
    from cloud.rollout.plan import parse_duration
    from shared.bundle import load_bundle

    if public_keys:
        load_bundle(bundle, [keys.load_public_key(p) for p in public_keys])  # provenance first
    now = time.time()
    rel, data = release_file(bundle, _release_key(release_key), out=out, version=version,
                             expires_t=now + parse_duration(expires), now=now, max_automation=max_automation,
                             probation_floor=_probation_floor(probation_floor))
    if as_json:
        click.echo(json.dumps({**rel.as_dict(), "path": out or bundle, "bundle_bytes": len(data)}, indent=1))
        return
    click.echo(f"released {rel.label} (model {rel.model_sha256[:12]}, key {rel.key_id}) until "
               f"{when(rel.expires_t)}; automation up to {rel.max_automation}"
               + (f", probation floor {rel.probation_floor}" if rel.probation_floor else "")
               + ("" if public_keys else "; lab signature not checked (pass --public-key)")
               + f" → {out or bundle}")


@click.command("revoke")
@click.argument("models", nargs=-1)
@click.option("--key-id", "key_ids", multiple=True, help="Also revoke this release key id (`harken keys id`).")
@click.option("--list", "list_path", required=True, type=click.Path(dir_okay=False),
              help="The revocation list file: read, extended, signed again, written back.")
@click.option("--release-key", "release_key", type=click.Path(dir_okay=False),
              help=f"Release private key (default ${RELEASE_KEY_ENV} or ~/.harken/keys/release.key).")
@click.option("--broker", help="Also publish it, retained, to this broker (mqtt://host:port, mqtts://...).")
@click.option("--username", default=lambda: os.environ.get("HARKEN_MQTT_USERNAME"), help="MQTT user name.")
@click.option("--password", default=lambda: os.environ.get("HARKEN_MQTT_PASSWORD"),
              help="MQTT password (prefer --password-file or $HARKEN_MQTT_PASSWORD: flags show in `ps`).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
              help="File holding the MQTT password (first line).")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False), help="CA certificate for mqtts://.")
@click.option("--prefix", default="harken/v1", show_default=True, help="Topic prefix.")
def revoke(models, key_ids, list_path, release_key, broker, username, password, password_file, ca_file,
           prefix) -> None:
    """Add MODELS (sha256s) and release keys to the signed revocation list; devices stop running them."""
    from shared.files import atomic_write

    path = Path(list_path)
    old = parse_revocations(path.read_bytes(), None, label=str(path)) if path.exists() else None
    all_models = set(models) | set(old.models if old else ())
    all_keys = set(key_ids) | set(old.keys if old else ())
    try:
        payload = make_revocations(_release_key(release_key), models=all_models, keys=all_keys,
                                   seq=(old.seq if old else 0) + 1)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}: give full 64-hex model sha256s and 16-hex key ids") from None
    atomic_write(path, payload)
    seq = (old.seq if old else 0) + 1
    click.echo(f"revocation list {path} #{seq}: {len(all_models)} model(s), {len(all_keys)} key(s)")
    if broker:
        if password_file:
            password = (Path(password_file).read_text().splitlines() or [""])[0]
        _publish(payload, broker, username, password, ca_file, prefix)
        click.echo(f"published retained on {prefix}/model/revocations at {broker}")


def _publish(payload: bytes, broker, username, password, ca_file, prefix) -> None:
    from cloud.delivery import Delivery, MqttPublisher
    from shared.topics import Topics

    publisher = MqttPublisher(broker, username=username, password=password, ca_file=ca_file)
    try:
        Delivery(publisher, None, Topics(prefix)).publish_revocations(payload)
    finally:
        publisher.close()


def add_release_commands(group: click.Group) -> click.Group:
    for command in (release, revoke):
        group.add_command(command)
    return group
