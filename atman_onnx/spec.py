"""Fields declared once: each field's type, default, bounds, choices and one-line doc in its dataclass declaration
(``spec``), and what is derived from them (``declared``): the check and its one-line messages, the JSON Schema, the
command-line flag and the reference table's row. ``ExplainRequest`` is declared this way, so its validation, the
CLI's flags, the service's OpenAPI schema and docs/reference/request.md cannot disagree.

A field's type is read from its annotation through ``Kind`` (how one type is checked, named, described in JSON
Schema and read from a flag's word); ``X | None`` and unions of known types are composed from the kinds of their
arms.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from numbers import Integral, Real
from typing import Any

from atman_onnx.core.errors import InputError


def spec(
    doc: str,
    *,
    default: Any = MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    label: str | None = None,
    flag: str | None = None,
) -> Any:
    """A declared field: its one-line doc, its default (none: required), its bounds (``ge``, ``gt``, ``le``) or
    ``choices``, the noun its range messages use (``label``; default: its name) and its flag (default: --its-name)."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "choices": choices, "label": label, "flag": flag}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Kind:
    """How values of one type are checked, named in messages, described in JSON Schema and read from a flag."""

    what: str  # completes "field 'x' must be ...", e.g. "an integer"
    ok: Callable[[Any], bool]
    schema: dict[str, Any]
    parse: Callable[[str], Any] | None = None  # a flag's word to a value (ValueError if it is not one); None: a switch
    metavar: str | None = None  # the word's form in the help, where not the field's name or choices
    many: bool = False  # the flag repeats, each word one item of the value


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


KINDS: dict[Any, Kind] = {
    str: Kind("a string", lambda v: isinstance(v, str), {"type": "string"}, str),
    bool: Kind("true or false", lambda v: isinstance(v, bool), {"type": "boolean"}),
    int: Kind("an integer", _is_int, {"type": "integer"}, int),
    float: Kind("a number", _is_number, {"type": "number"}, float),
}


def _either(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema taking any of these: a list of types when each is a bare type, else ``anyOf``."""
    if all(list(s) == ["type"] for s in schemas):
        return {"type": [t for s in schemas for t in (s["type"] if isinstance(s["type"], list) else [s["type"]])]}
    return {"anyOf": schemas}


def _union(arms: list[Kind]) -> Kind:
    """A value of any of these kinds; on the command line, the first that has a word form."""
    checks = tuple(arm.ok for arm in arms)

    def ok(value: Any) -> bool:
        return any(check(value) for check in checks)

    word = next((arm for arm in arms if arm.parse is not None), arms[0])
    return Kind(
        " or ".join(arm.what for arm in arms),
        ok,
        _either([arm.schema for arm in arms]),
        word.parse,
        word.metavar,
        word.many,
    )


def kind_of(annotation: Any, kinds: dict[Any, Kind]) -> tuple[Kind, bool]:
    """The kind of a resolved annotation, and whether it also takes None; a type with no kind is a TypeError."""
    if annotation in kinds:
        return kinds[annotation], False
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        raise TypeError(f"no Kind for {annotation!r}: give one in the kinds of its declaration")
    arms = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = len(arms) < len(typing.get_args(annotation))
    kind = kind_of(arms[0], kinds)[0] if len(arms) == 1 else _union([kind_of(a, kinds)[0] for a in arms])
    return kind, optional


@dataclass(frozen=True)
class Field:
    """One declared field as its check, schema, flag and reference row read it."""

    name: str
    kind: Kind
    optional: bool
    doc: str
    default: Any  # MISSING: required
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    label: str | None = None
    flag_name: str | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def what(self) -> str:
        """The values it takes, in words: "an integer or null"."""
        return self.kind.what + (" or null" if self.optional else "")

    @property
    def flag(self) -> str:
        """Its command-line flag: as declared, else --its-name."""
        return self.flag_name or "--" + self.name.replace("_", "-")

    @property
    def noun(self) -> str:
        """What its range and choice messages call it: its label, else its name in words."""
        return self.label or self.name.replace("_", " ")

    def range(self) -> str:
        """The bounds in words ("from 0 to 1e+06", "in (0, 1]", "at least 1"); empty when unbounded."""
        low = self.ge if self.ge is not None else self.gt
        if low is not None and self.le is not None:
            return f"from {low:g} to {self.le:g}" if self.gt is None else f"in ({low:g}, {self.le:g}]"
        if low is not None:
            return f"at least {low:g}" if self.gt is None else f"above {low:g}"
        return "" if self.le is None else f"at most {self.le:g}"

    def _range_error(self, value: Any) -> str:
        bounds = self.range()
        if bounds.startswith("in "):
            must = f"lie {bounds}"
        elif bounds.startswith("from "):
            must = f"be {self.kind.what} {bounds}"
        else:
            must = f"be {bounds}"
        try:
            shown = f"{float(value):g}"
        except OverflowError:  # an integer past float's range
            shown = "a larger one" if value > 0 else "a smaller one"
        return f"field {self.name!r}: {self.noun} must {must}, got {shown}"

    def checker(self) -> Callable[[Any], None]:
        """The field's check as one function: its type, then its bounds and choices; each error one line naming it."""
        ok, optional, choices = self.kind.ok, self.optional, self.choices
        ge, gt, le = self.ge, self.gt, self.le
        bounded = not (ge is None and gt is None and le is None)

        def check(value: Any) -> None:
            if value is None and optional:
                return
            if not ok(value):
                raise InputError(f"field {self.name!r} must be {self.what}, got {value!r} ({type(value).__name__})")
            if bounded and not (
                (ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
            ):  # written so that NaN fails
                raise InputError(self._range_error(value))
            if choices is not None and value not in choices:
                raise InputError(f"field {self.name!r}: unknown {self.noun} {value!r}; available: {', '.join(choices)}")

        return check

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema: type, bounds, choices as an enum, description and default."""
        schema = _either([self.kind.schema, {"type": "null"}]) if self.optional else dict(self.kind.schema)
        bounds = {"minimum": self.ge, "exclusiveMinimum": self.gt, "maximum": self.le}
        schema.update({key: bound for key, bound in bounds.items() if bound is not None})
        if self.choices is not None:
            schema["enum"] = [*self.choices, *([None] if self.optional else [])]
        schema["description"] = self.doc
        if not self.required:
            schema["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        return schema


def declared(cls: type, kinds: dict[Any, Kind]) -> dict[str, Field]:
    """Each field of a dataclass declared with ``spec``, by name in declaration order; its annotation is read with
    ``kinds`` (``KINDS`` and the types particular to the class)."""
    hints, kinds = typing.get_type_hints(cls), {**KINDS, **kinds}
    out = {}
    for f in dataclasses.fields(cls):
        kind, optional = kind_of(hints[f.name], kinds)
        meta = f.metadata
        out[f.name] = Field(
            f.name,
            kind,
            optional,
            meta["doc"],
            f.default,
            meta["ge"],
            meta["gt"],
            meta["le"],
            meta["choices"],
            meta["label"],
            meta["flag"],
        )
    return out
