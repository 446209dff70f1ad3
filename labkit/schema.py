"""JSON Schema of the dataclasses that cross the wire, and their JSON form.

The records the server and ``results.json`` hand out (cluster descriptions, run entries) are
dataclasses; the extension's TypeScript interfaces are checked against the schema made here, so
the two sides cannot drift apart. Only the types those records use are supported: ``str``,
``int``, ``float``, ``bool``, ``None``, ``Literal``, unions, ``list``, ``dict`` and ``Any``.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (an object with ``properties`` and ``required``) of dataclass ``cls``.

    A field is required unless it has a default; a field that may be None has ``null``
    among its types. Raises TypeError for a type this module does not know.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    properties = {}
    required = []
    for item in dataclasses.fields(cls):
        properties[item.name] = type_schema(hints[item.name])
        no_default = item.default is dataclasses.MISSING
        if no_default and item.default_factory is dataclasses.MISSING:
            required.append(item.name)
    return {"title": cls.__name__, "type": "object", "properties": properties, "required": required}


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one type hint."""
    if hint is Any:
        return {}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin = get_origin(hint)
    if origin is Literal:
        return {"enum": list(get_args(hint))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [type_schema(arg) for arg in get_args(hint)]}
    if origin is list:
        (item,) = get_args(hint) or (Any,)
        return {"type": "array", "items": type_schema(item)}
    if origin is dict:
        _, value = get_args(hint) or (str, Any)
        return {"type": "object", "additionalProperties": type_schema(value)}
    if dataclasses.is_dataclass(hint):
        return json_schema(hint)
    raise TypeError(f"no JSON Schema for the type {hint!r}")


def to_json(record: Any) -> dict[str, Any]:
    """A dataclass record as a plain dict, fields in declaration order."""
    return dataclasses.asdict(record)
