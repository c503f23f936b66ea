"""Trees a guest leaves behind are measured and removed however deep, never followed."""

from __future__ import annotations

import os
from pathlib import Path

from stockade.attacks.tree import remove_tree, tree_usage


def nest(root: Path, depth: int, name: str) -> None:
    """`depth` nested directories, each made relative to the previous (as guests do)."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("leaf", os.O_CREAT | os.O_WRONLY, dir_fd=fd), "wb") as leaf:
            leaf.write(b"12345")
    finally:
        os.close(fd)


def test_usage_and_removal_past_path_max_and_the_recursion_limit(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    root.mkdir()
    nest(root, 3000, "d" * 100)  # 300 KB paths, 3,000 levels
    usage = tree_usage(root)
    assert (usage.inodes, usage.bytes, usage.depth) == (3001, 5, 3000)
    remove_tree(root)
    assert not root.exists()


def test_symlinks_are_counted_and_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    root = tmp_path / "scratch"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "up").symlink_to(outside)
    (root / "abs").symlink_to("/etc")
    usage = tree_usage(root)
    assert (usage.inodes, usage.symlinks) == (3, 2)
    remove_tree(root)
    assert not root.exists()
    assert (outside / "precious").read_text() == "keep me"


def test_missing_roots_are_empty_and_removal_is_quiet(tmp_path: Path) -> None:
    assert tree_usage(tmp_path / "absent").inodes == 0
    remove_tree(tmp_path / "absent")
