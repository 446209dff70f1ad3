"""Parameter types of a bundle, and checking the values a run is given against them.

papermill infers each parameter's name, default and declared type (an annotation or a
``# type:`` comment); when none is declared, the type of the literal default is used.
Parameters whose default is not a literal (or is ``None``) take any value.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

from labkit.errors import BundleParameterError

TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "str": (str,),
    "list": (list, tuple),
    "dict": (dict,),
}
ANY = "any"

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def parameter_spec(inferred: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Manifest entries from ``papermill.inspect_notebook``: name, type, default, help."""
    spec = []
    for name, info in inferred.items():
        declared = str(info.get("inferred_type_name") or "None")
        spec.append(
            {
                "name": name,
                "type": _effective_type(declared, str(info.get("default", ""))),
                "default": info.get("default"),
                "inferred_type_name": declared,
                "help": info.get("help") or "",
            }
        )
    return spec


def _effective_type(declared: str, default: str) -> str:
    if declared in TYPES:
        return declared
    if declared not in ("None", "NoneType"):
        return ANY  # e.g. Optional[int], a class name: papermill passes it, we do not check it
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return ANY
    for name in ("bool", "int", "float", "str", "list", "dict"):
        if type(value) in TYPES[name][:1] or (name == "list" and isinstance(value, tuple)):
            return name
    return ANY


def check_values(spec: list[dict[str, Any]], values: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values checked against ``spec``; a wrong name or type raises, naming it."""
    by_name = {entry["name"]: entry for entry in spec}
    checked = {}
    for name, value in values.items():
        entry = _entry(by_name, name)
        expected = entry["type"]
        if expected != ANY and not _is_type(value, expected):
            raise BundleParameterError(
                f"parameter {name!r} expects {expected}, got {value!r} ({type(value).__name__})",
                name=name,
                value=value,
            )
        checked[name] = list(value) if isinstance(value, tuple) else value
    return checked


def parse_values(spec: list[dict[str, Any]], pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` strings turned into each parameter's type, then checked."""
    by_name = {entry["name"]: entry for entry in spec}
    return check_values(
        spec, {name: parse_text(_entry(by_name, name), text) for name, text in pairs}
    )


def parse_grid(spec: list[dict[str, Any]], options: Iterable[str]) -> dict[str, list[Any]]:
    """``--grid NAME=V1,V2`` options as typed value lists (commas inside [] {} "" stay)."""
    by_name = {entry["name"]: entry for entry in spec}
    grid: dict[str, list[Any]] = {}
    for option in options:
        name, sep, rest = option.partition("=")
        name = name.strip()
        if not sep or not name:
            raise BundleParameterError(
                f"--grid takes NAME=V1,V2,..., got {option!r}", name=name or option
            )
        entry = _entry(by_name, name)
        texts = split_values(rest)
        if not texts:
            raise BundleParameterError(f"--grid {name}= lists no values", name=name)
        grid[name] = [parse_text(entry, text) for text in texts]
    return check_grid(spec, grid)


def check_grid(spec: list[dict[str, Any]], grid: Mapping[str, Iterable[Any]]) -> dict[str, list]:
    """A grid of typed values, each checked against ``spec``."""
    checked: dict[str, list] = {}
    for name, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise BundleParameterError(
                f"grid values for {name!r} must be a list, got {values!r}", name=name, value=values
            )
        values = list(values)
        if not values:
            raise BundleParameterError(f"the grid lists no values for {name!r}", name=name)
        checked[name] = [check_values(spec, {name: value})[name] for value in values]
    return checked


def parse_text(entry: Mapping[str, Any], text: str) -> Any:
    """One command-line value in the parameter's type; raises naming the parameter."""
    name, expected = entry["name"], entry["type"]
    stripped = text.strip()
    try:
        if expected == "str":
            quoted = len(stripped) > 1 and stripped[0] == stripped[-1] and stripped[0] in "\"'"
            return ast.literal_eval(stripped) if quoted else text
        if expected == "int":
            return int(stripped)
        if expected == "float":
            return float(stripped)
        if expected == "bool":
            lowered = stripped.lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(text)
        if expected in ("list", "dict"):
            return _literal(stripped)
    except (ValueError, SyntaxError) as exc:
        raise BundleParameterError(
            f"parameter {name!r} expects {expected}, got {text!r}", name=name, value=text
        ) from exc
    try:  # any: a literal if it reads as one, else the text itself
        return _literal(stripped)
    except (ValueError, SyntaxError):
        return text


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)


def split_values(text: str) -> list[str]:
    """Split on top-level commas, keeping those inside brackets or quotes."""
    values, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current))
            current = []
            continue
        current.append(char)
    if current or values:
        values.append("".join(current))
    return [value for value in values if value.strip()]


def _entry(by_name: Mapping[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in by_name:
        known = ", ".join(by_name) or "none"
        raise BundleParameterError(
            f"unknown parameter {name!r}; this bundle takes: {known}", name=name
        )
    return by_name[name]


def _is_type(value: Any, expected: str) -> bool:
    if isinstance(value, bool) and expected != "bool":
        return False
    return isinstance(value, TYPES[expected])
