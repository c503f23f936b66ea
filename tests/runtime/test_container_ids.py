"""Container ids name directories under the runtime's state root: a plain name, whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.errors import UsageError
from stockade.runtime.state import container_dir


@pytest.mark.parametrize("container_id", ["abc\n", "../abc", "a/b", "", ".hidden", "a" * 129])
def test_an_id_that_is_not_a_plain_name_is_refused(container_id: str, tmp_path: Path) -> None:
    # `$` matched before a final newline: "abc\n" named a directory with a newline.
    with pytest.raises(UsageError, match="container id"):
        container_dir(tmp_path, container_id)


def test_a_plain_id_names_its_directory(tmp_path: Path) -> None:
    assert container_dir(tmp_path, "wasm-1.2_a+b") == tmp_path / "wasm-1.2_a+b"
