"""Similarity and anomaly search over latent vectors of spectra, stored in Milvus."""

from labkit.vectors.build import build_index, embed, top_anomalies
from labkit.vectors.index import Hit, SpectrumIndex
from labkit.vectors.projection import LatentProjection
from labkit.vectors.schema import FIELD_NAMES, build_filter

__all__ = [
    "FIELD_NAMES",
    "Hit",
    "LatentProjection",
    "SpectrumIndex",
    "build_filter",
    "build_index",
    "embed",
    "top_anomalies",
]
