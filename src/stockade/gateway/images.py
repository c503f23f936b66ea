"""`Images`: a manifest's `oci://` modules, pinned by digest in its lock file.

The first start resolves each reference (pulling once into the local store) and writes
the manifest digests to the lock, `stockade.lock` beside `stockade.toml` (or, where that
directory is not writable, `<state dir>/gateway/<hash of the manifest path>.lock`).
Later starts, and the gateway's worker processes, run exactly those digests, from the
store, without asking the registry what a tag means now. A reload by SIGHUP (or
`--reload`) re-resolves every tag and rewrites the lock (`refresh`). Under a `[trust]`
that requires signatures, each image's signatures are checked against the cosign keys
of its function's trust (`oci.trusted.vouch`); a reload that finds a tag moved to an
image its function's trust refuses keeps the locked image that trust admits (a warning
says so), so a pushed unsigned image does not take a serving function down.

The lock decides which bytes run, so it is trusted only as far as the manifest is: a
lock that is a symlink, not a regular file, owned by another uid than this process's or
the manifest's, or writable by group or others is ignored (logged; tags are resolved
again and the lock rewritten). It is written through a new file (`O_EXCL`, no symlink
followed), renamed over the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import StockadeError
from ..paths import state_dir
from ..policy import Trust

__all__ = ["Images", "lock_paths"]

logger = logging.getLogger("stockade.gateway")
_MAX_LOCK = 1024 * 1024


def lock_paths(manifest: Path) -> tuple[Path, Path]:
    """(beside the manifest, in the state directory): where the lock may be."""
    manifest = manifest.resolve()
    tag = hashlib.sha256(str(manifest).encode()).hexdigest()[:16]
    return (manifest.with_suffix(".lock"), state_dir() / "gateway" / f"{tag}.lock")


class Images:
    """The `oci://` modules of one manifest load: resolved, pinned, and vouched for."""

    def __init__(self, manifest: Path, refresh: bool = False) -> None:
        self.manifest = manifest
        self.refresh = refresh
        self._locked = self._read()
        self._pinned: dict[str, str] = {} if refresh else dict(self._locked)
        self._used: dict[str, dict[str, str]] = {}
        self._resolved: dict[str, Any] = {}
        self._vouched: dict[tuple[str, Trust], Trust] = {}

    def _owners(self) -> set[int]:
        """The uids whose lock files are believed: this process's and the manifest's."""
        owners = {os.geteuid()}
        with contextlib.suppress(OSError):
            owners.add(os.stat(self.manifest).st_uid)
        return owners

    def _read(self) -> dict[str, str]:
        for path in lock_paths(self.manifest):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("%s: unreadable lock file (%s); resolving tags again",
                               path, exc.strerror)
                return {}
            try:
                with os.fdopen(fd, "rb") as handle:
                    why = _untrusted(os.fstat(handle.fileno()), self._owners())
                    if why:
                        logger.warning("%s: lock file ignored: %s; resolving tags again",
                                       path, why)
                        return {}
                    data = json.loads(handle.read(_MAX_LOCK))
                images = data["images"]
                return {str(ref): str(entry["digest"]) for ref, entry in images.items()
                        if str(entry.get("digest", "")).startswith("sha256:")}
            except (OSError, ValueError, KeyError, TypeError, AttributeError,
                    RecursionError) as exc:  # nested too deep: a traceback at start (review)
                logger.warning("%s: unreadable lock file (%s); resolving tags again",
                               path, type(exc).__name__ if isinstance(exc, RecursionError)
                               else exc)
                return {}
        return {}

    def module(self, text: str, trust: Trust | None = None) -> tuple[Path, str]:
        """(module file, pinned `REF@sha256:…`) of `oci://REF`: the locked digest when
        there is one, else what the tag means now (on a refresh, unless `trust` refuses
        that image and admits the locked one). Raises the OCI errors."""
        from ..oci import parse_reference, resolve

        ref = parse_reference(text)
        locked = self._pinned.get(text)
        if locked is not None and ref.digest is None:
            resolved = resolve(f"oci://{ref.with_digest(locked)}")
        else:
            resolved = resolve(text, refresh=self.refresh)
            previous = self._locked.get(text)
            if (trust is not None and trust.require_signature and ref.digest is None
                    and previous not in (None, resolved.pulled.digest)
                    and self._refusal(resolved, trust) is not None):
                kept = resolve(f"oci://{ref.with_digest(str(previous))}")
                if self._refusal(kept, trust) is None:
                    logger.warning("%s now names %s, which this function's trust refuses; "
                                   "still serving %s from the lock", text,
                                   resolved.pulled.digest, previous)
                    resolved = kept
        pinned = str(resolved.pinned)
        self._resolved[pinned] = resolved
        self._used[text] = {"digest": resolved.pulled.digest,
                            "module": resolved.pulled.module_digest}
        return resolved.path, pinned

    def vouch(self, pinned: str, trust: Trust) -> Trust:
        """`trust` with the image's module vouched for when a trusted cosign key signed it
        (a line in the log says why not otherwise)."""
        resolved = self._resolved.get(pinned)
        return trust if resolved is None else self._vouch(resolved, trust)

    def _vouch(self, resolved: Any, trust: Trust) -> Trust:
        """`vouch` of one resolved image, its registry round trips made once per load."""
        from ..oci.trusted import vouch

        key = (str(resolved.pinned), trust)
        if key not in self._vouched:
            vouched, note = vouch(resolved, trust)
            if note is not None:
                (logger.info if vouched is not trust else logger.warning)("%s", note)
            self._vouched[key] = vouched
        return self._vouched[key]

    def _refusal(self, resolved: Any, trust: Trust) -> str | None:
        """Why `trust` would refuse this image's module, or None (the gate's own check)."""
        from ..trust.enforce import refusal

        try:
            data = Path(resolved.path).read_bytes()
        except OSError as exc:
            return exc.strerror or str(exc)
        return refusal(data, self._vouch(resolved, trust))

    def save(self) -> Path | None:
        """Write the lock when it changed (the digests used by this load); returns where,
        or None when nothing needed writing or no place was writable."""
        if not self._used or {r: e["digest"] for r, e in self._used.items()} == self._pinned:
            return None
        body = json.dumps({"version": 1, "manifest": self.manifest.name,
                           "images": dict(sorted(self._used.items()))}, indent=2) + "\n"
        for path in lock_paths(self.manifest):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "w") as handle:
                    handle.write(body)
                os.replace(tmp, path)
            except FileExistsError:  # planted, maybe a symlink: not ours to write or remove
                logger.warning("%s: cannot write the image lock (%s exists)", path, tmp.name)
                continue
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                logger.warning("%s: cannot write the image lock (%s)", path, exc.strerror)
                continue
            self._pinned = {r: e["digest"] for r, e in self._used.items()}
            return path
        return None


def _untrusted(info: os.stat_result, owners: set[int]) -> str:
    """Why a lock file with status `info` is not believed ("" when it is)."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_uid not in owners:
        return f"owned by uid {info.st_uid}, not by this user or the manifest's owner"
    if info.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return ""


def named(exc: StockadeError, where: str) -> StockadeError:
    """`exc` with its message prefixed by `where` (file and key)."""
    exc.message = f"{where}: {exc.message}"
    exc.args = (exc.message,)
    return exc


def with_vouched(images: Images | None, pinned: str | None, trust: Trust) -> Trust:
    """The trust of a function whose module is image `pinned` (unchanged for files)."""
    if images is None or pinned is None:
        return trust
    return replace(trust, vouched=images.vouch(pinned, trust).vouched)
