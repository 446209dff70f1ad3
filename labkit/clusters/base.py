"""The one interface every cluster backend implements."""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from labkit.clusters.mapping import ChunkLost, ItemFailure, plan_chunks
from labkit.errors import (
    ClusterTaskError,
    MapItemError,
    NotConnectedError,
    UnsupportedOperation,
)

ChunkResult = list[Any] | ItemFailure | ChunkLost


class Cluster(ABC):
    """A Ray or Dask cluster this process is attached to.

    Subclasses set ``backend`` and implement the abstract methods; ``map`` and the
    rich display are shared.
    """

    backend: ClassVar[str]

    def __init__(self, address: str, *, local: bool, dashboard_url: str | None = None):
        self.address = address
        self.local = local
        self.dashboard_url = dashboard_url
        self.closed = False

    # -- backend-specific -------------------------------------------------------------
    @abstractmethod
    def workers(self) -> list[dict[str, Any]]:
        """One dict per worker: id, host, cpus, gpus, memory_bytes."""

    @abstractmethod
    def _scale(self, n: int) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _run_chunks(
        self, fn: Callable[[Any], Any], chunks: list[list[Any]]
    ) -> Iterator[tuple[int, ChunkResult]]:
        """Run each chunk with ``mapping.run_chunk``; yield (chunk index, result) as they finish.

        A chunk the backend could not run or return (its worker died after the backend's own
        retries) comes back as ``ChunkLost``.

        Must cancel outstanding work when the generator is closed early.
        """

    # -- shared ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise NotConnectedError(
                f"this {self.backend} cluster ({self.address}) was closed; "
                "connect first with labkit.connect() or %labkit connect"
            )

    def resources(self) -> dict[str, Any]:
        """Totals over workers: cpus, gpus, memory_bytes, workers."""
        workers = self.workers()
        return {
            "workers": len(workers),
            "cpus": sum(w["cpus"] for w in workers),
            "gpus": sum(w["gpus"] for w in workers),
            "memory_bytes": sum(w["memory_bytes"] for w in workers),
        }

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        progress: bool = True,
        chunksize: int | None = None,
        desc: str | None = None,
    ) -> list[Any]:
        """``[fn(item) for item in items]`` on the cluster, in order.

        Items travel in chunks sized to the cluster (``chunksize`` overrides). The first
        exception raised by ``fn`` cancels the rest and is re-raised as ``MapItemError``
        naming the item. Ctrl-C / a notebook interrupt cancels outstanding work.
        """
        self._check_open()
        items = list(items)
        slots = max(1, int(self.resources()["cpus"]))
        chunks = plan_chunks(len(items), slots, chunksize)
        results: list[Any] = [None] * len(items)
        with _progress_bar(len(items), progress, desc or f"{self.backend} map") as bar:
            stream = self._run_chunks(fn, [items[c.start : c.stop] for c in chunks])
            try:
                for index, outcome in stream:
                    span = chunks[index]
                    if isinstance(outcome, ItemFailure):
                        position = span.start + outcome.offset
                        raise MapItemError(
                            position, items[position], outcome.error, outcome.traceback
                        ) from outcome.error
                    if isinstance(outcome, ChunkLost):
                        raise ClusterTaskError(
                            f"the {self.backend} cluster could not run items {span.start}-"
                            f"{span.stop - 1}: {type(outcome.error).__name__}: {outcome.error}",
                            span.start,
                            span.stop - 1,
                        ) from outcome.error
                    results[span.start : span.stop] = outcome
                    bar.update(len(span))
            finally:
                stream.close()
        return results

    def scale(self, n: int) -> None:
        """Resize a local cluster to ``n`` workers (see the backend for what a worker is)."""
        self._check_open()
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UnsupportedOperation(f"scale() needs a whole number of workers >= 1, got {n!r}")
        if not self.local:
            raise UnsupportedOperation(
                f"cannot scale the remote {self.backend} cluster at {self.address}: only "
                "clusters labkit started can be scaled; scale it where it was started"
            )
        self._scale(n)

    def close(self) -> None:
        """Detach; a local cluster is shut down with all its processes. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "local" if self.local else "remote"
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {where} {self.address} ({state})>"

    def summary(self) -> dict[str, Any]:
        """What a status display shows: identity plus live resource totals."""
        info: dict[str, Any] = {
            "backend": self.backend,
            "address": self.address,
            "kind": "local" if self.local else "remote",
            "dashboard": self.dashboard_url,
        }
        if self.closed:
            info["status"] = "closed"
            return info
        info["status"] = "connected"
        info.update(self.resources())
        return info

    def _repr_html_(self) -> str:
        info = self.summary()
        rows = []
        for key, value in info.items():
            if key == "dashboard" and value:
                shown = f'<a href="{html.escape(value)}" target="_blank">{html.escape(value)}</a>'
            elif key == "memory_bytes":
                key, shown = "memory", format_bytes(value)
            else:
                shown = html.escape(str(value if value is not None else "—"))
            rows.append(f"<tr><th style='text-align:left'>{key}</th><td>{shown}</td></tr>")
        title = f"labkit {self.backend} cluster"
        return f"<div class='labkit-cluster'><b>{title}</b><table>{''.join(rows)}</table></div>"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled)
