"""The worker freezes what it holds for its life out of the cyclic collector
(`service._settle`): what a reload replaces must still be freed, not frozen forever."""

from __future__ import annotations

import asyncio
import gc
import warnings
import weakref
from pathlib import Path

from stockade.gateway.service import GatewayService

from .conftest import module

MANIFEST = """\
[server]
telemetry = "off"

[[function]]
name = "hello"
route = "{route}"
module = "{hello}"
"""


def test_a_reload_frees_the_routes_it_replaces(tmp_path: Path) -> None:
    # Earlier tests' garbage (an unclosed file's ResourceWarning) would otherwise be
    # collected, and reported, by the service's own collection below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
    path = tmp_path / "stockade.toml"
    path.write_text(MANIFEST.format(route="/hello", hello=module("hello")))
    service = GatewayService(path)

    async def scenario() -> tuple[bool, int, bool]:
        service.start()
        await service.started()
        frozen = gc.get_freeze_count()
        route = service.registry.routes.match("/hello") if service.registry else None
        assert route is not None
        # A cycle through what the route runs, as engine callbacks and caches make: freed
        # only by the cyclic collector, which a frozen object never meets again.
        route.prepared.cycle = route.prepared  # type: ignore[attr-defined]
        old = weakref.ref(route.prepared)
        del route
        path.write_text(MANIFEST.format(route="/hi", hello=module("hello")))
        reloaded = await service.reload()
        return reloaded, frozen, old() is None

    try:
        reloaded, frozen, freed = asyncio.run(scenario())
    finally:
        service.close()
        gc.unfreeze()  # the rest of the test session collects as before
    assert reloaded
    assert frozen > 0, "the started worker froze nothing"
    assert freed, "the route a reload replaced is still alive (frozen?)"
