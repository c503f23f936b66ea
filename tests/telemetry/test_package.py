"""The public surface of `stockade.telemetry` is deliberate and loads lazily."""

from __future__ import annotations

import pytest

import stockade.telemetry as telemetry


def test_every_public_name_resolves_to_its_module() -> None:
    assert telemetry.__all__ == sorted(telemetry._EXPORTS)
    for name in telemetry.__all__:
        value = getattr(telemetry, name)
        module = getattr(value, "__module__", None) or type(value).__module__
        if module != "builtins":  # e.g. the INSTRUMENTS dict
            assert module == f"stockade.telemetry.{telemetry._EXPORTS[name]}"


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        telemetry.Nothing  # noqa: B018
    assert "open_telemetry" in dir(telemetry)
