"""Session fixtures of the OCI tests: one real docker-registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fixtures import Registry, start_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1, storage in a temp dir."""
    yield from start_registry(tmp_path_factory.mktemp("registry"))
