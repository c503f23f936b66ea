"""Turn `run` flags into a `Policy` and an `Invocation`: flag > --policy file > profile."""

from __future__ import annotations

import math
import os
import select
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from ..errors import PolicyError, StdinTimeout, UsageError
from ..invocation import MAX_STDIN, Invocation
from ..policy import DirGrant, Policy, format_duration, profile

__all__ = ["build_policy", "build_invocation", "parse_env", "guest_args", "read_stdin",
           "check_writable"]


def parse_env(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` strings to pairs; UsageError naming the bad one."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r}: expected KEY=VALUE")
        parsed.append((key, value))
    return tuple(parsed)


def build_policy(
    profile_name: str | None,
    policy_file: Path | None,
    limits: Mapping[str, object],
    dirs: tuple[str, ...],
    env: tuple[str, ...],
    env_allow: tuple[str, ...],
    *,
    allow_precompiled: bool = False,
) -> Policy:
    """The run's policy. `limits` maps limit names to raw flag values (None = not given);
    `allow_precompiled` (the flag) turns the policy's opt-in on, never off."""
    # The policy file reader and the limit parsers are imported only for a run that
    # gives a file or a limit flag.
    if policy_file is not None:
        from ..policy.loader import load_policy

        policy = load_policy(policy_file, profile_name)
    else:
        policy = profile(profile_name or "default")
    for key, value in limits.items():
        if value is not None:
            from ..policy.loader import apply_limit

            policy = apply_limit(policy, key, value, f"--{key.replace('_', '-')}")
    grants = list(policy.capabilities.dirs)
    for spec in dirs:
        try:
            grants.append(DirGrant.parse(spec))
        except ValueError as exc:
            raise PolicyError(f"--dir: {exc}") from None
    caps = replace(
        policy.capabilities,
        dirs=tuple(grants),
        env=policy.capabilities.env + parse_env(env),
        env_allow=policy.capabilities.env_allow + env_allow,
        allow_precompiled=policy.capabilities.allow_precompiled or allow_precompiled,
    )
    policy = replace(policy, capabilities=caps)
    check_writable(policy)
    return policy


def check_writable(policy: Policy) -> None:
    """Refuse a writable directory in which nothing could ever be written: with both the
    file quota and the disk quota at 0 (the strict profile), the first write would fail
    inside the guest. Raises PolicyError saying what to add."""
    limits = policy.limits
    if limits.max_files or limits.disk_quota:
        return
    for grant in policy.capabilities.dirs:
        if grant.writable:
            raise PolicyError(
                f"writable directory {grant}: the {policy.profile} profile allows no new files "
                "(max_files 0) and no bytes written (disk_quota 0); add --max-files N and "
                "--disk-quota SIZE, or grant it read-only")


def guest_args(args: tuple[str, ...]) -> tuple[str, ...]:
    """The guest's arguments: everything after MODULE, less one leading `--` (accepted
    for scripts written against the older `MODULE -- ARGS` form)."""
    return args[1:] if args[:1] == ("--",) else args


def read_stdin(stdin: str | None, timeout: float | None = None) -> bytes:
    """The guest's standard input for `--stdin FILE|-|none`.

    Unset: this process's stdin (as wasmtime inherits it), except a terminal, which
    gives empty input (input is read before the guest starts, so a guest that never
    reads would otherwise wait for end-of-file). Input that has not ended within
    `timeout` seconds (the run's) raises StdinTimeout: the run's timeout bounds the
    wait for it too. Raises UsageError past MAX_STDIN.
    """
    if stdin == "none":
        return b""
    if stdin == "":
        raise UsageError("--stdin '': an empty name; give a FILE, - (standard input) or none")
    if stdin is None:
        try:
            if sys.stdin is None or os.isatty(sys.stdin.fileno()):
                return b""
        except (OSError, ValueError, AttributeError):
            return b""
        stdin = "-"
    deadline = None if timeout is None else time.monotonic() + timeout
    if stdin == "-":
        try:
            fd = sys.stdin.fileno()
        except (OSError, ValueError, AttributeError):
            raise UsageError("--stdin -: standard input is closed") from None
        try:
            data = _read_shared(fd, deadline, timeout)
        except OSError as exc:
            raise UsageError(f"--stdin: cannot read standard input: {exc.strerror}") from None
    else:
        try:
            # Not blocking, a description of its own: a FIFO's open waits for a writer,
            # outside any deadline, and a read must never wait past one.
            fd = os.open(stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"--stdin {stdin}: {exc.strerror}") from None
        try:
            data = _read_until(fd, lambda size: os.read(fd, size), deadline, timeout)
        except OSError as exc:
            raise UsageError(f"--stdin {stdin}: {exc.strerror}") from None
        finally:
            os.close(fd)
    if len(data) > MAX_STDIN:
        raise UsageError(f"--stdin: input larger than {MAX_STDIN // 1024**2} MiB")
    return data


def _read_shared(fd: int, deadline: float | None, timeout: float | None) -> bytes:
    """`_read_until` on this process's standard input, which other processes may share:
    read without blocking and without changing its blocking mode for them. A pipe through
    a description of its own, a socket with MSG_DONTWAIT; a file never blocks."""
    kind = os.fstat(fd).st_mode
    if stat.S_ISFIFO(kind):
        try:
            own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            own = None
        if own is not None:
            try:
                return _read_until(own, lambda size: os.read(own, size), deadline, timeout)
            finally:
                os.close(own)
    if stat.S_ISSOCK(kind):
        import socket

        with socket.socket(fileno=os.dup(fd)) as sock:
            return _read_until(fd, lambda size: sock.recv(size, socket.MSG_DONTWAIT),
                               deadline, timeout)
    return _read_until(fd, lambda size: os.read(fd, size), deadline, timeout)


def _read_until(fd: int, read: Callable[[int], bytes], deadline: float | None,
                timeout: float | None) -> bytes:
    """What `read` takes from `fd` up to its end, at most MAX_STDIN + 1 bytes, by
    `deadline` (monotonic seconds; None: no deadline). `read` never blocks: a wake-up
    whose bytes someone else took waits again."""
    waiting = select.poll()  # not select(): a descriptor may be past 1023
    waiting.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_STDIN:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StdinTimeout(
                    f"standard input did not end within the timeout of "
                    f"{format_duration(timeout or 0.0)} (it is read whole before the guest "
                    "starts: give a file with --stdin, or --stdin none)")
            if not waiting.poll(max(1, math.ceil(left * 1000))):
                continue
        else:
            waiting.poll()
        try:
            chunk = read(min(1 << 20, MAX_STDIN + 1 - size))
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def build_invocation(args: tuple[str, ...], stdin: str | None,
                     timeout: float | None = None) -> Invocation:
    """The invocation: guest args and stdin bytes (see `read_stdin`)."""
    return Invocation(args=args, stdin=read_stdin(stdin, timeout))


def with_trust(policy: Policy, trust_keys: tuple[Path, ...], require_signature: bool) -> Policy:
    """`policy` with `--trust-key` files added to its trusted keys; either flag requires a
    signature (flags only narrow: they never lift a policy's own requirement)."""
    keys = policy.trust.keys + tuple(key.absolute() for key in trust_keys)
    required = policy.trust.require_signature or require_signature or bool(trust_keys)
    if required and not keys:
        raise PolicyError("--require-signature: no trusted keys (add --trust-key PUB, or "
                          "keys = [...] under [trust] in the policy)")
    return replace(policy, trust=replace(policy.trust, require_signature=required, keys=keys))
