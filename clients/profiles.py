"""Saved sessions of ``medhub-chat``: one file per profile, so several people share a machine.

A profile remembers the server, the email, who signed in (user, organisation,
role) and the bearer session token. The default profile is
``$XDG_CONFIG_HOME/medhub/session.json`` (``XDG_CONFIG_HOME`` defaults to
``~/.config``); a named one (``--profile NAME``, or ``MEDHUB_PROFILE``) is
``$XDG_CONFIG_HOME/medhub/profiles/NAME.json``. Files are created with mode
0600 in a 0700 directory and hold no password or TOTP secret.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

DEFAULT = "default"
#: What a profile name may be (it becomes a file name).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Profile:
    """One saved sign-in; ``token`` is empty once signed out."""

    name: str = DEFAULT
    server: str = ""
    email: str = ""
    token: str = ""
    user_id: str = ""
    org_id: str = ""
    role: str = ""


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/medhub`` (``~/.config/medhub`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "medhub"


def path_of(name: str) -> Path:
    """The file of profile ``name``; raises ValueError for a name that is not allowed."""
    if name == DEFAULT:
        return config_dir() / "session.json"
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"profile names are letters, digits, '.', '_' and '-' (at most 64): {name!r}"
        )
    return config_dir() / "profiles" / f"{name}.json"


def load(name: str) -> Profile | None:
    """Profile ``name``, or None when it was never saved (or cannot be read)."""
    try:
        data = json.loads(path_of(name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    known = {f.name for f in fields(Profile)}
    values = {k: str(v) for k, v in data.items() if k in known and v is not None}
    values["name"] = name
    return Profile(**values)


def save(profile: Profile) -> Path:
    """Write ``profile`` (mode 0600, never world-readable, not even while written)."""
    path = path_of(profile.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        data = asdict(profile)
        del data["name"]
        json.dump(data, fh, indent=1)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def names() -> list[str]:
    """Every saved profile's name (the default first when saved)."""
    found = [DEFAULT] if path_of(DEFAULT).exists() else []
    folder = config_dir() / "profiles"
    if folder.is_dir():
        found += sorted(p.stem for p in folder.glob("*.json") if NAME_PATTERN.match(p.stem))
    return found
