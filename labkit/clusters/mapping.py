"""What ``Cluster.map`` sends to workers: chunks of items, and per-item failures.

Sending one task per item costs a scheduler round trip per item; sending chunks sized to
the cluster (as ``multiprocessing.Pool.map``'s ``chunksize`` does) keeps that cost per
chunk while leaving several chunks per worker slot, so slow items still balance.
"""

from __future__ import annotations

import math
import pickle
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
CHUNKS_PER_SLOT = 4


def plan_chunks(n_items: int, slots: int, chunksize: int | None = None) -> list[range]:
    """Split ``range(n_items)`` into contiguous chunks, about CHUNKS_PER_SLOT per slot."""
    if n_items == 0:
        return []
    if chunksize is None:
        chunksize = max(1, math.ceil(n_items / (max(1, slots) * CHUNKS_PER_SLOT)))
    return [range(start, min(start + chunksize, n_items)) for start in range(0, n_items, chunksize)]


@dataclass
class ItemFailure:
    """An exception raised by ``fn`` on one item, carried back from the worker."""

    offset: int  # position inside the chunk
    error: BaseException
    traceback: str


@dataclass
class ChunkLost:
    """The backend could not return a chunk at all: a worker died, or the task failed to run."""

    error: BaseException


def run_chunk(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any] | ItemFailure:
    """Run ``fn`` on each item in order (on a worker); stop at the first failure."""
    results = []
    for offset, item in enumerate(items):
        try:
            results.append(fn(item))
        except Exception as exc:
            return ItemFailure(offset, _picklable(exc), traceback.format_exc())
    return results


def _picklable(exc: Exception) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def in_order(pairs: Iterable[tuple[int, T]]) -> Iterator[T]:
    """Values of ``(index, value)`` pairs that arrive in any order (``imap_unordered``),
    handed out in index order 0, 1, 2, ... as soon as each one's turn comes."""
    waiting: dict[int, T] = {}
    following = 0
    for index, value in pairs:
        waiting[index] = value
        while following in waiting:
            yield waiting.pop(following)
            following += 1
