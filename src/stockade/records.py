"""Plain-data classes whose definition costs no code generation at import.

`@dataclass` writes each class's `__init__`, `__repr__`, `__eq__`, `__hash__` and, when
frozen, `__setattr__` as source text and compiles it when the module is imported: about
3-4M instructions per class, and `stockade run` defines eight such records (a tenth of
`import wasmtime`'s whole budget). The public records on that path (`Policy`, `Limits`,
`Invocation`, `Result`, ...) are therefore dataclasses declared with
`@dataclass(init=False, repr=False, eq=False)`, which only records their fields, so
`dataclasses.fields`, `replace`, `asdict` and `is_dataclass` work on them as before, with
an `__init__` written in the class body and the rest from the bases here:

- `Record`: field-wise `__eq__` (same class only) and the dataclass `__repr__`;
  unhashable, like a mutable dataclass.
- `FrozenRecord`: also hashable by its fields, for records declared `frozen=True`
  (the two small functions that makes dataclasses write keep subclasses, frozen
  dataclasses themselves, and type checkers seeing a frozen dataclass; its `__init__`
  sets fields with `object.__setattr__`).

A test holds each record to what `@dataclass` would have made of the same fields.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Record", "FrozenRecord"]


class Record:
    """Equality and repr over the dataclass fields of a subclass (see the module doc)."""

    __slots__ = ()
    __dataclass_fields__: dict[str, Any]

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__dataclass_fields__])

    # Defining __eq__ without __hash__ makes instances unhashable, as with @dataclass.
    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}"
                          for name, item in self.__dataclass_fields__.items() if item.repr)
        return f"{self.__class__.__qualname__}({shown})"


class FrozenRecord(Record):
    """A `Record` of a frozen dataclass: hashable by its fields."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())
