"""Route matching costs what the routes cost, not what the path costs: `Routes.match`
walked back one segment at a time, slicing the path anew at each, so a 64 KiB path of
32,000 one-character segments cost ~450 ms of the event loop per request (quadratic),
stalling every tenant of the worker (found by review)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stockade.gateway.registry import Routes


class CountingDict(dict[str, Any]):
    """The routes by prefix, counting the lookups `match` makes."""

    lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.lookups += 1
        return super().get(key, default)


def routes(*prefixes: str) -> Routes:
    made = [SimpleNamespace(spec=SimpleNamespace(route=prefix, name=prefix or "/"))
            for prefix in prefixes]
    table = Routes(made)  # type: ignore[arg-type]
    table._by_prefix = CountingDict(table._by_prefix)
    return table


def test_a_long_path_costs_a_lookup_per_route_length_at_most() -> None:
    table = routes("/hello", "/api/v1", "/")
    for path in ("/a" * 32_000, "/hello" + "/a" * 32_000, "/api/v1" + "/" + "b" * 60_000):
        table._by_prefix.lookups = 0  # type: ignore[attr-defined]
        table.match(path)
        assert table._by_prefix.lookups <= 4, path[:20]  # type: ignore[attr-defined]


def test_the_longest_whole_segment_prefix_still_wins() -> None:
    table = routes("/hello", "/hello/world", "/api/v1", "/")
    assert table.match("/hello/world/x").spec.route == "/hello/world"  # type: ignore[union-attr]
    assert table.match("/hello/worlds").spec.route == "/hello"  # type: ignore[union-attr]
    assert table.match("/hello/").spec.route == "/hello"  # type: ignore[union-attr]
    assert table.match("/helloo").spec.route == "/"  # type: ignore[union-attr]
    assert table.match("/api/v1/x/y").spec.route == "/api/v1"  # type: ignore[union-attr]
    assert table.match("/api/v2").spec.route == "/"  # type: ignore[union-attr]
    assert routes("/hello").match("/helloo") is None
    assert routes("/hello").match("/") is None
    assert routes("/hello").match("/hello").spec.route == "/hello"  # type: ignore[union-attr]
