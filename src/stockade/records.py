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
  (its `__init__` sets fields with `object.__setattr__`).

`record` stands in for `dataclasses.dataclass` on these classes. Type checkers see
`dataclass` itself (so a record declared `frozen=True` is a frozen dataclass to them);
at run time a frozen record gets `__setattr__`/`__delattr__` as closures instead of the
two functions `dataclass(frozen=True)` would compile, with the same behaviour (a field,
or any attribute of the record class itself, raises `FrozenInstanceError`), and its
`__dataclass_params__` say frozen, so frozen dataclasses may subclass it.

`FieldTuple` stands in for `typing.NamedTuple` the same way: `class P(FieldTuple)` with
annotated fields (defaults last), a docstring and methods makes the same
`collections.namedtuple` class `NamedTuple` would, without `typing` checking each
annotation (it compiles every annotation's text into a `ForwardRef`: ~45k instructions
a field). `__annotations__` keep the source's text; `typing.get_type_hints` reads both.

A test holds each record to what `@dataclass` (or `NamedTuple`) would have made of the
same fields.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["Record", "FrozenRecord", "record", "FieldTuple"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")
    from dataclasses import dataclass as record
    from typing import NamedTuple as FieldTuple
else:

    def record(*, frozen: bool = False, init: bool = False, repr: bool = False,
               eq: bool = False, slots: bool = False) -> Callable[[type[_T]], type[_T]]:
        """`dataclasses.dataclass` for a `Record` (see the module docstring)."""

        def wrap(cls: type[_T]) -> type[_T]:
            made = _dataclasses().dataclass(init=init, repr=repr, eq=eq, slots=slots)(cls)
            if frozen:
                _freeze(made)
            return made

        return wrap


def _dataclasses() -> Any:
    """`dataclasses`, imported when a record is first made: a program that only makes
    `FieldTuple`s never loads it (nor `inspect`, which it imports at its top)."""
    import dataclasses

    return dataclasses


def _freeze(cls: type) -> None:
    fields = frozenset(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    dataclasses = _dataclasses()

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in fields:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)  # type: ignore[arg-type]

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in fields:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)  # type: ignore[arg-type]

    for function in (__setattr__, __delattr__):
        function.__qualname__ = f"{cls.__qualname__}.{function.__name__}"
        setattr(cls, function.__name__, function)
    cls.__dataclass_params__.frozen = True  # type: ignore[attr-defined]


class Record:
    """Equality and repr over the dataclass fields of a subclass (see the module doc)."""

    __slots__ = ()
    if TYPE_CHECKING:  # for type checkers only: `get_type_hints` has no `Any` to read here
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


# What typing.NamedTuple refuses in a class body, and what it does not copy onto the class.
_PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                         "_field_defaults", "_make", "_replace", "_asdict", "_source"})
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})
_NAMEDTUPLE: Any = collections.namedtuple  # called with names only known at run time


def _field_tuple(name: str, namespace: dict[str, Any]) -> type:
    """The `collections.namedtuple` class `typing.NamedTuple` makes of a class body."""
    annotations = namespace.get("__annotations__", {})
    fields = tuple(annotations)
    defaults = [namespace[field] for field in fields if field in namespace]
    if any(field not in namespace for field in fields[len(fields) - len(defaults):]):
        missing = next(field for field in fields[len(fields) - len(defaults):]
                       if field not in namespace)
        raise TypeError(f"Non-default namedtuple field {missing} cannot follow default "
                        f"field{'s' if len(defaults) > 1 else ''}")
    made: type = _NAMEDTUPLE(name, fields, defaults=defaults, module=namespace["__module__"])
    made.__annotations__ = dict(annotations)
    for key, value in namespace.items():
        if key in _PROHIBITED:
            raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
        if key not in _SPECIAL and key not in fields:
            setattr(made, key, value)
    return made


if not TYPE_CHECKING:

    class _FieldTupleMeta(type):
        def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
            if bases:
                return _field_tuple(name, namespace)
            return super().__new__(cls, name, bases, namespace)

    class FieldTuple(metaclass=_FieldTupleMeta):
        """Base of a named tuple made without `typing` (see the module docstring)."""
