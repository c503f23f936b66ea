"""The attack catalogue: every hostile module, what it needs, what should stop it.

Strategies marked `paper` are those of the resource-isolation study of Wasm runtimes
(arXiv:2509.11242, USENIX Security 2025); `ours` are the other ways a module can push
cost onto its host. Every guest stops on its own (an iteration count or a time bound
given in `args`), so even an uncontained run ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError

__all__ = ["Attack", "ATTACKS", "find_attacks", "PROFILES_EXPECTED"]

PROFILES_EXPECTED = ("strict", "default")

# Outcome groups, as the contract's strings
_CPU = ("timeout", "fuel_exhausted")
_TIME = ("timeout",)
# `refused`: the module could not be loaded at all (Stockade's ModuleError)
_REFUSED = ("denied", "refused")
_INSTANTIATION = ("memory_limit", "trap")
_FLOOD = ("timeout", "hostcall_limit")


@dataclass(frozen=True)
class Attack:
    """One attack: a guest module and how to run it.

    `module` is relative to the built guests directory. `scratch` asks for a fresh
    writable directory at `/scratch`; `devices` for the host's `/dev` preopened
    read-only at `/dev` (as a careless policy might grant it). `fresh` (`link` or `salt`)
    runs a first-sight copy of the module each time (see `modules.fresh_copy`), for
    attacks whose cost is paid while loading. `expected` maps a profile
    to the outcomes that contain the attack there; `exited` means the guest ran to its
    end and found nothing to abuse (its output then says what it tried), `refused` that
    the module could not even be loaded.
    """

    name: str
    strategy: str
    source: str
    module: str
    summary: str
    args: tuple[str, ...] = ()
    scratch: bool = False
    devices: bool = False
    fresh: str = ""
    expected: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def expected_for(self, profile: str) -> tuple[str, ...]:
        """Outcomes that contain this attack under `profile` (empty when not stated)."""
        return self.expected.get(profile, ())


def _both(outcomes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {profile: outcomes for profile in PROFILES_EXPECTED}


def _attack(source: str, name: str, strategy: str, guest: str, summary: str,
            *args: str, scratch: bool = False, devices: bool = False, fresh: str = "",
            expected: dict[str, tuple[str, ...]]) -> Attack:
    return Attack(name=name, strategy=strategy, source=source, module=f"attacks/{guest}.wasm",
                  summary=summary, args=args, scratch=scratch, devices=devices, fresh=fresh,
                  expected=expected)


def _paper(name: str, strategy: str, guest: str, summary: str, *args: str, scratch: bool = False,
           devices: bool = False, expected: dict[str, tuple[str, ...]]) -> Attack:
    return _attack("paper", name, strategy, guest, summary, *args, scratch=scratch,
                   devices=devices, expected=expected)


def _ours(name: str, strategy: str, guest: str, summary: str, *args: str, scratch: bool = False,
          fresh: str = "", expected: dict[str, tuple[str, ...]]) -> Attack:
    return _attack("ours", name, strategy, guest, summary, *args, scratch=scratch, fresh=fresh,
                   expected=expected)


# Writing attacks run with the runner's write allowance (1 MiB, 8 files) under every
# profile, so under strict too the storms reach their calls and are stopped by the
# timeout or the host-call budget; floods of files and bytes hit the allowance's quotas.
_WRITES = {"strict": ("file_quota", "disk_quota")}

ATTACKS: tuple[Attack, ...] = (
    _paper("cpu_loop", "CPU", "cpu_loop", "spin for up to 120 s", "120",
           expected=_both(_CPU)),
    _paper("memory_grow", "memory", "memory_grow", "grow the heap 1 MiB at a time to 4000 MiB",
           "4000", expected=_both(("memory_limit",))),
    _paper("disk_write", "large writes", "disk_write", "write 1 GiB to /scratch in 1 MiB chunks",
           "1024", scratch=True, expected={**_WRITES, "default": ("disk_quota",)}),
    _paper("inode_flood", "inode exhaustion", "inode_flood",
           "create up to 200,000 empty files", "200000", "/scratch", "60", scratch=True,
           expected={**_WRITES, "default": ("file_quota",)}),
    _paper("fsync_storm", "fsync storm", "fsync_storm", "pwrite 1 byte + fsync, for 30 s",
           "fsync", "30", scratch=True, expected=_both(_FLOOD)),
    _paper("fdatasync_storm", "fsync storm", "fsync_storm",
           "pwrite 1 byte + fdatasync, for 30 s", "fdatasync", "30", scratch=True,
           expected=_both(_FLOOD)),
    _paper("tiny_writes", "rapid small I/O", "tiny_io", "1-byte pwrites at full speed, 30 s",
           "write", "30", scratch=True, expected=_both(_FLOOD)),
    _paper("tiny_reads", "rapid small I/O", "tiny_io", "1-byte preads at full speed, 30 s",
           "read", "30", scratch=True, expected=_both(_FLOOD)),
    _paper("entropy_flood", "entropy reads", "entropy_flood",
           "random_get of 4 KiB in a loop, 30 s", "30", "4096", expected=_both(_FLOOD)),
    _paper("device_open", "pseudo-terminals and devices", "device_open",
           "open /dev/ptmx (8 at once), /dev/random, /dev/urandom, ... via a preopened /dev",
           "/dev", "8", devices=True, expected=_both(("exited",))),
    _paper("threads", "multi-threading", "threads", "spawn 64 wasi-threads spinning threads",
           expected=_both(_REFUSED)),
    _paper("net_wasix", "network floods", "net_wasix",
           "WASIX sock_open/sock_connect/sock_send_to: 1M datagrams, 1,000 connections",
           expected=_both(_REFUSED)),
    _paper("net_preview1", "network floods", "net_preview1",
           "sock_accept/sock_send/sock_recv on guessed descriptors 0-63, 10 s", "10", "64",
           expected=_both(("exited",) + _CPU)),
    _ours("stack_recursion", "stack", "stack_recursion", "recurse 10^9 frames deep",
          "1000000000", expected=_both(("trap",))),
    _ours("stdout_flood", "output", "output_flood", "write 1 GiB to stdout", "stdout", "1024",
          "60", expected=_both(("output_limit",))),
    _ours("stderr_flood", "output", "output_flood", "write 1 GiB to stderr", "stderr", "1024",
          "60", expected=_both(("output_limit",))),
    _ours("fd_hoard", "descriptors", "fd_hoard", "open 100,000 descriptors and hold them",
          "100000", "/scratch", expected={"strict": ("file_quota", "fd_quota"),
                                          "default": ("fd_quota",)}, scratch=True),
    _ours("deep_tree", "deep trees", "deep_tree", "nest 100,000 directories",
          "100000", "1", "60", scratch=True, expected={**_WRITES, "default": ("file_quota",)}),
    _ours("long_paths", "long paths", "deep_tree",
          "nest 2,000 directories of 255-character names (paths of 500 KB)",
          "2000", "255", "60", scratch=True,
          expected={**_WRITES, "default": ("file_quota",)}),
    _ours("escape", "preopen escape", "escape",
          "'..', absolute paths, planted symlinks, rename and mkdir outside /scratch",
          "/scratch", scratch=True, expected={"strict": ("exited", "file_quota"),
                                              "default": ("exited",)}),
    _ours("sleep_storm", "poll_oneoff storm", "sleep_storm",
          "1,000,000 sleeps of 100 us", "many", "1000000", "100", expected=_both(_FLOOD)),
    _ours("long_sleep", "poll_oneoff storm", "sleep_storm", "one sleep of 120 s", "long", "120",
          expected=_both(_TIME)),
    _ours("table_grow", "table growth", "table_grow", "grow a table to 50 million elements",
          expected=_both(("trap", "memory_limit", "exited"))),
    _ours("huge_table", "instance growth", "huge_table",
          "declare a table of 10 million elements", expected=_both(_INSTANTIATION)),
    _ours("huge_memory", "instance growth", "huge_memory",
          "declare a 4 GiB linear memory", expected=_both(_INSTANTIATION)),
    _ours("many_tables", "instance growth", "many_tables", "declare 64 tables",
          expected=_both(_INSTANTIATION)),
    _ours("many_memories", "instance growth", "many_memories", "declare 16 linear memories",
          expected=_both(_INSTANTIATION)),
    _ours("huge_data", "huge data segment", "huge_data",
          "a 48 MiB data segment in a 64 MiB memory",
          expected={"strict": _INSTANTIATION, "default": ("exited",)}),
    _ours("compile_bomb", "compile bomb", "compile_bomb",
          "one function of 2,000 live locals and 100,000 multiplications (1 MB)", fresh="salt",
          expected=_both(("exited",) + _TIME)),
    _ours("huge_module", "enormous module", "huge_module",
          "a do-nothing module with a 160 MiB custom section", fresh="link",
          expected=_both(("exited",))),
)


def find_attacks(names: tuple[str, ...] = ()) -> tuple[Attack, ...]:
    """The attacks called `names` (all of them when empty), in catalogue order.
    Raises UsageError naming an unknown attack and the valid names."""
    if not names:
        return ATTACKS
    known = {attack.name: attack for attack in ATTACKS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"--only {unknown[0]!r}: no such attack (choose from: "
                         f"{', '.join(known)})")
    return tuple(attack for attack in ATTACKS if attack.name in names)
