"""Registry credentials from the Docker and Podman credential files, and auth challenges.

Files, first match wins: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
`~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` (default
`~/.docker/config.json`). Entries are matched by `host/repository` prefix, then host
(`https://` prefixes and Docker Hub's `index.docker.io/v1/` key understood). Credential
helpers (`credHelpers`, `credsStore`) are not run: Stockade executes no helper binaries.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from ..display import printable
from ..regularfile import read_regular

__all__ = ["Credentials", "Found", "find_credentials", "credential_files", "parse_challenge",
           "MAX_CREDENTIAL_FILE"]

Credentials = tuple[str, str]
_PARAM = re.compile(r'(\w+)="([^"]*)"')
MAX_CREDENTIAL_FILE = 1024**2  # bytes; a Docker or Podman one holds a few entries


def credential_files() -> list[Path]:
    """The credential files looked at, in order (existing or not)."""
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path.home() / ".config" / "containers" / "auth.json")
    docker = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    files.append(Path(docker) / "config.json")
    return files


def _keys_for(registry: str, repository: str) -> list[str]:
    parts = repository.split("/")
    keys = [f"{registry}/{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)]
    keys.append(registry)
    if registry == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    return keys


def _decode(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            return None
        return (user, password) if sep else None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return _encodable(entry["username"], entry["password"])
    return None


def _encodable(user: str, password: str) -> Credentials | None:
    """The pair, or None when it cannot be sent (a lone surrogate `\\ud800` in the JSON
    raised UnicodeEncodeError as the header was built: found by review)."""
    try:
        f"{user}:{password}".encode()
    except UnicodeEncodeError:
        return None
    return user, password


class Found(NamedTuple):
    """What the credential files hold for a registry: its credentials (None: none), and
    why each file that could not be used was passed over (for the error that follows
    when the registry wants credentials)."""

    credentials: Credentials | None
    passed_over: tuple[str, ...]


def find_credentials(registry: str, repository: str) -> Found:
    """The credentials for `registry/repository`, asked only once a registry wants some.
    A missing or empty file, or one whose `auths` is null, holds none. One that is no
    regular file, larger than `MAX_CREDENTIAL_FILE`, unreadable or not the documented
    JSON (`{"auths": {…}}`) is passed over and said why (a FIFO there hung every pull,
    `/dev/zero` grew it without bound; refusing it refused anonymous pulls too, where
    Docker reads an empty file as no credentials)."""
    keys = _keys_for(registry, repository)
    passed_over = []
    for path in credential_files():
        try:
            auths = _auths(path)
        except ValueError as exc:
            passed_over.append(f"{printable(str(path))}: {exc}")
            continue
        normalised = {key.removeprefix("https://").removeprefix("http://").rstrip("/"): value
                      for key, value in auths.items() if isinstance(key, str)}
        for key in keys:
            found = _decode(normalised.get(key.removeprefix("https://").rstrip("/")))
            if found is not None:
                return Found(found, tuple(passed_over))
    return Found(None, tuple(passed_over))


def _auths(path: Path) -> dict[object, object]:
    """The `auths` table of the credential file at `path` (empty: no file there, an
    empty one, or no entries). Raises ValueError saying why it cannot be used."""
    try:
        data = read_regular(path, MAX_CREDENTIAL_FILE + 1, follow=True)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError("not a regular file" if exc.errno == errno.EINVAL
                         else exc.strerror or str(exc)) from None
    if len(data) > MAX_CREDENTIAL_FILE:
        raise ValueError(f"larger than {MAX_CREDENTIAL_FILE // 1024**2} MiB")
    if not data.strip():
        return {}
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        document = None
    auths = document.get("auths") if isinstance(document, dict) else ()
    if auths is None:
        return {}
    if not isinstance(auths, dict):
        raise ValueError('not a JSON object with an "auths" object')
    return auths


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`WWW-Authenticate: Bearer realm="…",service="…"` to ('bearer', {realm, service, …})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))
