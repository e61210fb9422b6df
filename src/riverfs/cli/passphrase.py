"""Passphrases of encrypted volumes: where they come from, and `riverfs passphrase change`.

First match wins: the file named by `--key-file` (its content, without the final newline);
the environment (`RIVERFS_PASSPHRASE`, or `RIVERFS_NEW_PASSPHRASE` for a new one); a prompt
on the terminal. With none of them (no terminal), a one-line error says how to give one.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from riverfs.errors import RiverError

ENV = "RIVERFS_PASSPHRASE"
NEW_ENV = "RIVERFS_NEW_PASSPHRASE"


def read_passphrase(
    key_file: Path | None, *, env: str = ENV, prompt: str = "Passphrase", confirm: bool = False
) -> str:
    if key_file is not None:
        try:
            text = key_file.read_text()
        except OSError as e:
            raise RiverError(f"cannot read key file {key_file}: {e.strerror}") from e
        return text[:-1] if text.endswith("\n") else text
    if os.environ.get(env):
        return os.environ[env]
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    raise RiverError(f"the volume is encrypted: set {env} or use --key-file to give its passphrase")


@click.group("passphrase")
def passphrase_group() -> None:
    """Manage the passphrase of an encrypted volume."""


@passphrase_group.command("change")
@click.argument("meta_url")
@click.option("--key-file", type=click.Path(path_type=Path), help="File with the passphrase.")
@click.option(
    "--new-key-file", type=click.Path(path_type=Path), help="File with the new passphrase."
)
def change(meta_url: str, key_file: Path | None, new_key_file: Path | None) -> None:
    """Wrap the volume's master key with a new passphrase (no data is rewritten)."""
    from riverfs.vfs.volume import change_passphrase, open_volume

    async def run() -> None:
        volume = await open_volume(meta_url)
        try:
            if not volume.encrypted:
                raise RiverError("the volume is not encrypted: it has no passphrase to change")
            old = read_passphrase(key_file)
            volume.unlock(lambda: old)  # a wrong one stops here
            new = read_passphrase(new_key_file, env=NEW_ENV, prompt="New passphrase", confirm=True)
            await change_passphrase(volume, old, new)
        finally:
            await volume.meta.close()

    asyncio.run(run())
    click.echo("passphrase changed; mount with the new one from now on")
