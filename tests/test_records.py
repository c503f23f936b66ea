"""The public records built without `@dataclass` code generation (`stockade.records`)
behave as the dataclasses they were: the same fields, signature, defaults, repr, equality,
hash, frozenness and slots as `@dataclass` makes of the same field list."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from stockade.cli.runspec import Option
from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastResult, RunPlan
from stockade.engine.loader import LoadedModule
from stockade.engine.traps import Ending
from stockade.envblock import EnvBlock
from stockade.invocation import Invocation
from stockade.isolate.protections import Protection
from stockade.observe import RunInfo
from stockade.policy import Capabilities, DirGrant, Limits, Policy, Trust
from stockade.records import FieldTuple
from stockade.result import Outcome, Result, Usage
from stockade.sandbox.provenance import Gate
from stockade.telemetry.decision import Decision
from stockade.telemetry.environment import Environment
from stockade.telemetry.instruments import AttributeSet, Instrument
from stockade.telemetry.profiles import ExportProfile
from stockade.telemetry.record import LogEvent, ParentContext, SpanData, SpanEvent
from stockade.telemetry.settings import ExportSettings

# class -> (frozen, slots) as declared before, and values for its required fields
RECORDS: dict[type, tuple[bool, bool]] = {
    Invocation: (True, False), Limits: (True, False), DirGrant: (True, False),
    Capabilities: (True, False), Trust: (True, False), Policy: (True, False),
    Usage: (False, True), Result: (False, True), RunInfo: (False, True),
    FastResult: (False, True), Ending: (True, True), Gate: (True, False),
    EngineConfig: (True, False), LoadedModule: (True, False),
}
REQUIRED: dict[str, Any] = {
    "host": Path("/data"), "guest": "/d", "module": "m.wasm", "sha256": "ab" * 32,
    "outcome": Outcome.TRAP, "exit_code": 134, "message": "trap", "data": b"\0asm",
    "name": "m.wasm", "invocation": Invocation(invocation_id="1" * 32), "policy": Policy(),
    "started": 1.0, "pid": 1, "guest_exit_code": None, "stdout": b"", "stderr": b"",
    "stdout_truncated": False, "stderr_truncated": False, "fuel_consumed": None,
    "wall_s": 0.5, "cpu_s": 0.25, "memory_bytes": 65536, "from_cache": False,
    "compile_ms": 12.5}
# A value of each field's type unlike its default, to tell fields apart.
OTHER: dict[str, Any] = {
    "args": ("x",), "stdin": b"in", "env": (("K", "V"),), "name": "n", "tenant": "t",
    "invocation_id": "0" * 32, "traceparent": "tp", "breaker": "b", "fuel": 5,
    "timeout": 2.0, "hostcall_caps": (("random_get", 3),), "sync": "allow", "max_stack": 512 * 1024,
    # Within their ceilings (a module declares at most 100 of each): not doubled past them.
    "max_tables": 99, "max_instances": 99, "max_memories": 3,
    "writable": True, "dirs": (DirGrant(Path("/a"), "/a"),), "env_allow": ("HOME",),
    "scratch": "/s", "keep_scratch": True, "allow_precompiled": True, "wasm_gc": True, "gc": True,
    "require_signature": True, "keys": (Path("k.pub"),), "require_image_signature": True,
    "vouched": ("cd" * 32,), "limits": Limits(fuel=7), "capabilities": Capabilities(
        env_allow=("A",)), "profile": "strict", "trust": Trust(require_signature=True),
    "wall_ms": 1.5, "cpu_ms": 1.0, "fuel_consumed": 9, "peak_memory_bytes": 65536,
    "files_created": 1, "bytes_written": 2, "hostcalls": {"fd_write": 1},
    "guest_exit_code": 3, "message": "m", "stdout": b"o", "stderr": b"e",
    "stdout_truncated": True, "stderr_truncated": True, "usage": Usage(wall_ms=3.0),
    "coldstart": True, "cleanup_error": "c", "module": "other.wasm", "sha256": "ef" * 32,
    "outcome": Outcome.EXITED, "exit_code": 0, "host": Path("/b"), "guest": "/e",
    "data": None, "refusal": "unsigned", "invocation": Invocation(args=("y",)),
    "policy": Policy(profile="strict"), "writable_dirs": (Path("/w"),),
    "events": [("warning", {"k": 1})], "strategy": "pulley", "source": Path("/granted"),
}


def reference(cls: type) -> type:
    """What `@dataclass` makes of `cls`'s fields with its declared flags."""
    frozen, slots = RECORDS[cls]
    spec = []
    for item in dataclasses.fields(cls):
        made = dataclasses.field(default=item.default, default_factory=item.default_factory)
        spec.append((item.name, item.type, made))
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=frozen, slots=slots)


def build(cls: type, **changes: Any) -> Any:
    required = {item.name: REQUIRED[item.name] for item in dataclasses.fields(cls)
                if item.default is dataclasses.MISSING
                and item.default_factory is dataclasses.MISSING}
    return cls(**{**required, **changes})


@pytest.mark.parametrize("cls", list(RECORDS), ids=lambda c: c.__name__)
def test_a_record_behaves_as_its_dataclass(cls: type) -> None:
    ref = reference(cls)
    ours, theirs = build(cls), build(ref)
    if cls is Invocation:  # a fresh id each: compare the rest
        ours = dataclasses.replace(ours, invocation_id=theirs.invocation_id)
    names = [item.name for item in dataclasses.fields(cls)]
    assert list(inspect.signature(cls).parameters) == names
    assert cls.__match_args__ == ref.__match_args__  # type: ignore[attr-defined]
    assert repr(ours) == repr(theirs)
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert ours == dataclasses.replace(ours) and ours != theirs  # another class
    theirs_signature = inspect.signature(ref).parameters
    for name, parameter in inspect.signature(cls).parameters.items():
        if repr(theirs_signature[name].default) != "<factory>":
            assert parameter.default == theirs_signature[name].default, name
    for name in names:  # each field counts in equality (and the hash)
        other = OTHER[name] if name in OTHER else getattr(ours, name) * 2 + 65536
        changed = dataclasses.replace(ours, **{name: other})
        assert getattr(changed, name) == other
        assert changed != ours, name
        if RECORDS[cls][0]:
            assert hash(changed) != hash(ours), name
    frozen, slots = RECORDS[cls]
    assert cls.__dataclass_params__.frozen is frozen  # type: ignore[attr-defined]
    if frozen:
        assert hash(ours) == hash(theirs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ours, names[0], OTHER[names[0]])
    else:
        with pytest.raises(TypeError, match="unhashable"):
            hash(ours)
    assert hasattr(ours, "__dict__") is not slots


def test_mutable_defaults_are_not_shared() -> None:
    first, second = Usage(), Usage()
    first.hostcalls["fd_write"] = 1
    assert second.hostcalls == {}
    assert build(Result).limits is not build(Result).limits


def test_frozen_records_subclass_as_frozen_dataclasses_do() -> None:
    @dataclasses.dataclass(frozen=True)
    class Labelled(Invocation):  # what the gateway's HttpInvocation is
        label: str = "x"

    made = Labelled(args=("a",), label="y")
    assert (made.args, made.label) == (("a",), "y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.label = "z"  # type: ignore[misc]

    class Plain(Policy):  # not a dataclass: only the fields are frozen
        pass

    plain = Plain()
    plain.note = "free"  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.profile = "strict"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Policy().note = "x"  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del Policy().profile  # type: ignore[misc]


# Named tuples made by `stockade.records.FieldTuple` instead of `typing.NamedTuple`.
FIELD_TUPLES = [RunPlan, Option, EnvBlock, Protection, Decision, Environment, Instrument,
                AttributeSet, ExportProfile, ParentContext, SpanData, SpanEvent, LogEvent,
                ExportSettings]


def typing_reference(cls: type) -> type:
    """What `typing.NamedTuple` makes of `cls`'s class body."""
    body: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                            "__doc__": cls.__doc__,
                            "__annotations__": dict(cls.__annotations__),
                            **cls._field_defaults}  # type: ignore[attr-defined]
    return types.new_class(cls.__name__, (typing.NamedTuple,),
                           exec_body=lambda namespace: namespace.update(body))


@pytest.mark.parametrize("cls", FIELD_TUPLES, ids=lambda c: c.__name__)
def test_a_field_tuple_is_the_named_tuple_typing_makes(cls: Any) -> None:
    ref: Any = typing_reference(cls)
    assert cls.__mro__[1:] == ref.__mro__[1:] == (tuple, object)
    for name in ("_fields", "_field_defaults", "__match_args__", "__doc__", "__module__",
                 "__qualname__", "__slots__"):
        assert getattr(cls, name) == getattr(ref, name), name
    assert list(cls.__annotations__) == list(ref.__annotations__)
    values = [f"v{index}" for index in range(len(cls._fields))]
    ours, theirs = cls(*values), ref(*values)
    assert ours == theirs == tuple(values) and hash(ours) == hash(theirs)
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    assert ours._asdict() == theirs._asdict()
    assert ours._replace(**{cls._fields[0]: 1}) == theirs._replace(**{ref._fields[0]: 1})
    assert inspect.signature(cls).parameters.keys() == inspect.signature(ref).parameters.keys()
    required = len(cls._fields) - len(cls._field_defaults)
    assert cls(*values[:required]) == ref(*values[:required])
    with pytest.raises(AttributeError):
        ours.extra = 1


def test_option_type_hints_are_typings() -> None:
    assert typing.get_type_hints(Option) == typing.get_type_hints(typing_reference(Option))


def test_a_field_tuple_refuses_what_named_tuple_refuses() -> None:
    body = "    a: int = 1\n    b: str\n"
    for base in ("FieldTuple", "typing.NamedTuple"):
        with pytest.raises(TypeError, match="Non-default namedtuple field b"):
            exec(f"class Bad({base}):\n{body}", {"FieldTuple": FieldTuple, "typing": typing})
        with pytest.raises(AttributeError, match="Cannot overwrite NamedTuple attribute"):
            exec(f"class Bad({base}):\n    a: int\n    def _replace(self): pass\n",
                 {"FieldTuple": FieldTuple, "typing": typing})

    class Kept(FieldTuple):
        """Doc."""

        a: int
        b: int = 2

        def total(self) -> int:
            return self.a + self.b

    assert Kept(1).total() == 3 and Kept.__doc__ == "Doc." and Kept(1, 5)._fields == ("a", "b")
