"""Invocation ids are unique within and across processes."""

from __future__ import annotations

import os
import re
import warnings

from stockade.invocation import Invocation, new_invocation_id


def test_ids_are_32_hex_digits_and_unique() -> None:
    ids = {Invocation().invocation_id for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_draws_a_new_prefix() -> None:
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:
        os.write(write, new_invocation_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[:16] != new_invocation_id()[:16]
