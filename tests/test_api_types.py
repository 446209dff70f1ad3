"""The extension's TypeScript interfaces (extension/src/api.ts) match the Python records.

The Python dataclasses are the definition; their JSON Schema (labkit.schema) is compared
with each ``export interface`` of api.ts: the same field names, the same optionality, and
the same types, with literal strings compared by value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labkit.clusters.slurm import JobState
from labkit.runs.listing import ListedBatch, ListedBundle, ListedRun, ListedSweep
from labkit.schema import json_schema
from labkit.server.models import BackendDescription, ClusterDescription

API_TS = Path(__file__).resolve().parents[1] / "extension" / "src" / "api.ts"
PAIRS = {
    "ICluster": ClusterDescription,
    "IBackend": BackendDescription,
    "IJobState": JobState,
    "IListedBundle": ListedBundle,
    "IListedRun": ListedRun,
    "IListedBatch": ListedBatch,
    "IListedSweep": ListedSweep,
}

_INTERFACE = re.compile(r"export interface (\w+) \{(.*?)\n\}", re.S)
_ALIAS = re.compile(r"export type (\w+) =(.*?);", re.S)
_FIELD = re.compile(r"^\s*(\w+)(\??):\s*(.+?);\s*$")


def _ts_types(text: str, aliases: dict[str, str]) -> frozenset[str]:
    """A TypeScript type as a set of alternatives: 'string', 'number', "'ray'", ..."""
    found: set[str] = set()
    for part in (p.strip() for p in text.split("|")):
        if not part:
            continue
        if part in aliases:
            found |= _ts_types(aliases[part], aliases)
        elif part.startswith("Record<"):
            found.add("object")
        else:
            found.add(part)
    return frozenset(found)


def typescript_interfaces(source: str) -> dict[str, dict[str, tuple[bool, frozenset[str]]]]:
    """Every ``export interface`` of ``source``: field -> (optional, its type alternatives)."""
    aliases = {name: body.strip() for name, body in _ALIAS.findall(source)}
    interfaces = {}
    for name, body in _INTERFACE.findall(source):
        fields = {}
        for line in body.splitlines():
            match = _FIELD.match(line)
            if match:
                field, optional, text = match.groups()
                fields[field] = (optional == "?", _ts_types(text, aliases))
        interfaces[name] = fields
    return interfaces


def _schema_types(schema: dict) -> frozenset[str]:
    """A JSON Schema as the TypeScript alternatives it stands for."""
    if "anyOf" in schema:
        return frozenset().union(*(_schema_types(s) for s in schema["anyOf"]))
    if "enum" in schema:
        return frozenset(f"'{value}'" for value in schema["enum"])
    if not schema:
        return frozenset({"unknown"})
    kind = schema["type"]
    if kind == "array":  # a list of records is IRecord[], of scalars e.g. string[]
        items = schema["items"]
        if "title" in items:
            return frozenset({f"I{items['title']}[]"})
        return frozenset(f"{alternative}[]" for alternative in _schema_types(items))
    return frozenset({"number" if kind == "integer" else kind})


def python_fields(cls: type) -> dict[str, tuple[bool, frozenset[str]]]:
    schema = json_schema(cls)
    return {
        name: (name not in schema["required"], _schema_types(prop))
        for name, prop in schema["properties"].items()
    }


@pytest.mark.parametrize("interface", sorted(PAIRS))
def test_typescript_interface_matches_the_python_record(interface):
    declared = typescript_interfaces(API_TS.read_text())
    assert interface in declared, f"api.ts has no interface {interface}"
    assert declared[interface] == python_fields(PAIRS[interface])


def test_the_run_listing_is_the_union_of_its_kinds():
    aliases = dict(_ALIAS.findall(API_TS.read_text()))
    assert _ts_types(aliases["IRun"], {}) == {
        "IListedBundle",
        "IListedRun",
        "IListedBatch",
        "IListedSweep",
    }


def test_a_drifted_interface_is_caught():
    source = API_TS.read_text().replace("  requested_workers: number | null;\n", "")
    assert typescript_interfaces(source)["ICluster"] != python_fields(ClusterDescription)
