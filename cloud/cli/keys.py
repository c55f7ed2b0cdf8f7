"""`harken keys`: bundle-signing keys."""
from __future__ import annotations

import click

from shared import keys


@click.group("keys")
def group() -> None:
    """Generate bundle-signing keys."""


@group.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def generate(directory: str, force: bool) -> None:
    """Write an Ed25519 key pair (signing.key, signing.pub) into DIRECTORY."""
    priv, pub = keys.generate_keypair(directory, overwrite=force)
    click.echo(f"private key: {priv} (keep it secret)\npublic key:  {pub} (give it to devices)")
