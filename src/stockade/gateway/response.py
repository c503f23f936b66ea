"""`Response` and `Headers`: the leaf the gateway's messages and problems share.

Headers are lists of `(name, value)` byte pairs, names lower-case. `messages.py`
re-exports both beside `Request`; `problem.py` builds its responses from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Response", "Headers"]

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Response:
    """One HTTP response; `content-length` is added by the adapter."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
