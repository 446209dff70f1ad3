"""The collection layout: target id, latent vector, and the spectra metadata worth filtering on.

Filters are written in Milvus syntax against these field names (``z > 1.5``,
``spectype == "QSO"``, ``label in ["lensed", "blend"]``, ``anomaly_score > 3``), so the names
are part of labkit's contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labkit.errors import ParameterError

PRIMARY = "id"
VECTOR = "vector"
MAX_K = 16384  # Milvus's limit on top-k and on queries per search request


@dataclass(frozen=True)
class ScalarField:
    name: str
    kind: str  # "float" | "str"
    max_length: int = 0
    aliases: tuple[str, ...] = ()

    @property
    def missing(self) -> float | str:
        return math.nan if self.kind == "float" else ""


SCALAR_FIELDS = (
    ScalarField("z", "float", aliases=("Z",)),
    ScalarField("spectype", "str", 64, aliases=("SPECTYPE",)),
    ScalarField("label", "str", 64),
    ScalarField("anomaly_score", "float"),
    ScalarField("source_file", "str", 1024, aliases=("source", "filename", "path")),
)
FIELD_NAMES = tuple(f.name for f in SCALAR_FIELDS)


def milvus_schema(dim: int):
    """A pymilvus ``CollectionSchema`` for vectors of length ``dim``."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(PRIMARY, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dim)
    for field in SCALAR_FIELDS:
        if field.kind == "float":
            schema.add_field(field.name, DataType.DOUBLE)
        else:
            schema.add_field(field.name, DataType.VARCHAR, max_length=field.max_length)
    return schema


def meta_columns(meta: Any, n: int) -> dict[str, list]:
    """Column values for ``n`` rows from an astropy Table, pandas DataFrame or mapping.

    Columns not in the schema (``targetid``, ``is_anomaly``, ...) are ignored; absent ones are
    stored as NaN or "". Masked entries (e.g. spectra without a redshift) become NaN / "".
    """
    names = _column_names(meta)
    columns: dict[str, list] = {}
    for field in SCALAR_FIELDS:
        source = next((c for c in (field.name, *field.aliases) if c in names), None)
        if source is None:
            columns[field.name] = [field.missing] * n
            continue
        values = meta[source]
        if len(values) != n:
            raise ParameterError(
                f"meta column {source!r} has {len(values)} rows but there are {n} vectors"
            )
        columns[field.name] = _clean(field, source, values)
    return columns


def _column_names(meta: Any) -> set[str]:
    if meta is None:
        return set()
    if hasattr(meta, "colnames"):  # astropy Table
        return set(meta.colnames)
    if hasattr(meta, "columns"):  # pandas DataFrame
        return {str(c) for c in meta.columns}
    if isinstance(meta, Mapping):
        return set(meta)
    raise ParameterError(
        f"meta must be an astropy Table, a pandas DataFrame or a dict of columns, "
        f"got {type(meta).__name__}"
    )


def _clean(field: ScalarField, source: str, values: Any) -> list:
    mask = np.asarray(getattr(values, "mask", np.zeros(len(values), bool)), dtype=bool)
    mask = np.broadcast_to(mask, (len(values),))
    raw = np.asarray(getattr(values, "data", values))
    if field.kind == "float":
        try:
            numbers = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise ParameterError(
                f"meta column {source!r} must hold numbers for {field.name!r}"
            ) from None
        numbers[mask] = np.nan
        return numbers.tolist()
    texts = [
        "" if hidden else (v.decode() if isinstance(v, bytes) else str(v)).strip()
        for v, hidden in zip(raw.tolist(), mask.tolist(), strict=True)
    ]
    too_long = next((t for t in texts if len(t) > field.max_length), None)
    if too_long is not None:
        raise ParameterError(
            f"meta column {source!r}: value {too_long[:60]!r} is longer than the "
            f"{field.max_length} characters {field.name!r} holds"
        )
    return texts


def row_meta(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of one stored row, in schema order."""
    return {name: entity.get(name) for name in FIELD_NAMES}


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def build_filter(
    z_range: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    class_field: str = "spectype",
    extra: str | None = None,
) -> str | None:
    """A Milvus filter for a redshift range and a set of classes (None: no restriction)."""
    parts = []
    if z_range is not None:
        low, high = z_range
        if low is not None:
            parts.append(f"z >= {float(low)!r}")
        if high is not None:
            parts.append(f"z <= {float(high)!r}")
    if classes is not None:
        if class_field not in FIELD_NAMES:
            raise ParameterError(f"class field must be one of {FIELD_NAMES}, got {class_field!r}")
        parts.append(f"{class_field} in [{', '.join(quote(c) for c in classes)}]")
    if extra:
        parts.append(f"({extra})")
    return " and ".join(parts) or None
