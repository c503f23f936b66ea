from __future__ import annotations

import pytest

from stockade.policy import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("16MiB", 16 * 1024**2), ("512k", 512 * 1024), ("1GB", 10**9), ("1GiB", 1024**3),
    ("100", 100), (4096, 4096), ("1.5MiB", int(1.5 * 1024**2)), (" 2 KiB ", 2048),
])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "16 parsecs", "-1", True])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1.5", 1.5), (3, 3.0), ("250us", 0.00025),
])
def test_parse_duration(text: str | int, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["soon", "0s", "-2s", "1 fortnight", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_round_trip() -> None:
    assert format_size(16 * 1024**2) == "16MiB"
    assert format_size(1536) == "1.5KiB"
    assert format_duration(0.5) == "500ms"
    assert format_duration(90) == "1m30s"
