"""`harken keys`: the lab's signing keys and release keys."""
from __future__ import annotations

import re

import click

from shared import keys


@click.group("keys")
def group() -> None:
    """Generate signing and release keys; show key ids."""


@group.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", default="signing", show_default=True,
              help="File name stem: signing (the lab's key, signs manifests) or release (signs what may reach "
                   "devices; keep it apart).")
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def generate(directory: str, name: str, force: bool) -> None:
    """Write an Ed25519 key pair (NAME.key, NAME.pub) into DIRECTORY."""
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
        raise click.BadParameter("use letters, digits, _ and -", param_hint="--name")
    priv, pub = keys.generate_keypair(directory, overwrite=force, name=name)
    key_id = keys.public_key_id(keys.load_public_key(pub))
    click.echo(f"private key: {priv} (keep it secret)\npublic key:  {pub} (give it to devices), key id {key_id}")


@group.command("id")
@click.argument("public_keys", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def key_id(public_keys) -> None:
    """Print the key id of each public key (releases and revocation lists name keys by it)."""
    for path in public_keys:
        click.echo(f"{keys.public_key_id(keys.load_public_key(path))}  {path}")
