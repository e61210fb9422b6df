"""Credentials for remote stores: from arguments, a profiles file, or the environment.

The profiles file is TOML, `$XDG_CONFIG_HOME/riverfs/credentials.toml` (normally
`~/.config/riverfs/credentials.toml`; `RIVERFS_CREDENTIALS_FILE` names another), one table a
profile:

    [default]
    access_key_id = "AKIA..."
    secret_access_key = "..."
    session_token = "..."        # optional
    region = "us-east-1"          # optional
    endpoint = "http://127.0.0.1:9000"   # optional, for S3-compatible servers

Which one is used, first match wins:
1. the profile named by the caller (`Client(..., profile="x")`, `--profile x`);
2. the profile named by `RIVERFS_PROFILE`;
3. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
   `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`;
4. the `[default]` profile of the file, if the file has one;
5. nothing: the store's own discovery (instance metadata, ...).

This module and the CLI entry point are the only places that read the environment. Secrets are
never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from riverfs.objects.errors import ConfigurationError

log = logging.getLogger(__name__)

_FIELDS = ("access_key_id", "secret_access_key", "session_token", "region", "endpoint")


@dataclass(slots=True, frozen=True)
class Credentials:
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None
    source: str = "none"  # where they came from, for messages: "profile x", "environment", ...

    def __repr__(self) -> str:
        key = self.access_key_id
        shown = f"{key[:4]}…" if key else None
        secret = "<redacted>" if self.secret_access_key else None
        return (
            f"Credentials(access_key_id={shown!r}, secret_access_key={secret!r}, "
            f"region={self.region!r}, endpoint={self.endpoint!r}, source={self.source!r})"
        )

    __str__ = __repr__

    @property
    def empty(self) -> bool:
        return not self.access_key_id


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("RIVERFS_CREDENTIALS_FILE"):
        return Path(env["RIVERFS_CREDENTIALS_FILE"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "riverfs" / "credentials.toml"


def load_profiles(path: Path) -> dict[str, dict]:
    """Every profile in the file; {} when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigurationError(f"cannot read credentials file {path}: {e.strerror}") from None
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("credentials file %s is readable by others; chmod 600 it", path)
    except OSError:
        pass
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        # The parser's message can quote the offending line: a secret. Give the position only.
        where = getattr(e, "lineno", None)
        at = f" (line {where})" if where else ""
        raise ConfigurationError(
            f"credentials file {path} is not valid TOML{at}", reason="InvalidCredentialsFile"
        ) from None
    profiles = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigurationError(
                f"credentials file {path}: [{name}] must be a table of settings",
                reason="InvalidCredentialsFile",
            )
        unknown = sorted(set(table) - set(_FIELDS))
        if unknown:
            raise ConfigurationError(
                f"credentials file {path}: profile [{name}] has unknown settings "
                f"{', '.join(unknown)} (known: {', '.join(_FIELDS)})",
                reason="InvalidCredentialsFile",
            )
        profiles[name] = {k: str(v) for k, v in table.items()}
    return profiles


def resolve_credentials(
    profile: str | None = None, env: Mapping[str, str] | None = None
) -> Credentials:
    """The credentials to use, following the order in this module's docstring."""
    env = os.environ if env is None else env
    path = credentials_path(env)
    chosen = profile or env.get("RIVERFS_PROFILE") or None
    if chosen:
        profiles = load_profiles(path)
        if chosen not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigurationError(
                f"no profile [{chosen}] in {path} (profiles there: {known})",
                reason="UnknownProfile",
            )
        return Credentials(**profiles[chosen], source=f"profile {chosen} of {path}")
    if env.get("AWS_ACCESS_KEY_ID"):
        if not env.get("AWS_SECRET_ACCESS_KEY"):
            raise ConfigurationError(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not", reason="Incomplete"
            )
        return Credentials(
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            endpoint=env.get("AWS_ENDPOINT_URL") or None,
            source="environment",
        )
    profiles = load_profiles(path)
    if "default" in profiles:
        return Credentials(**profiles["default"], source=f"profile default of {path}")
    return Credentials(
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        endpoint=env.get("AWS_ENDPOINT_URL") or None,
        source="none",
    )
