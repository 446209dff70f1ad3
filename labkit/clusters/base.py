"""The one interface every cluster backend implements."""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from labkit.checks import whole
from labkit.clusters.announce import announce, withdraw
from labkit.clusters.credentials import Credentials
from labkit.clusters.mapping import ChunkLost, ItemFailure, plan_chunks
from labkit.errors import (
    ClusterTaskError,
    ConnectError,
    MapItemError,
    NotConnectedError,
    UnsupportedOperationError,
)

if TYPE_CHECKING:
    from labkit.clusters.address import Target

ChunkResult = list[Any] | ItemFailure | ChunkLost


class Cluster(ABC):
    """A cluster this process is attached to: the contract every backend implements.

    Subclasses set ``backend``, implement ``connect`` and the other abstract methods, and are
    registered by name in ``clusters.backends``; ``map`` and the rich display are shared.
    """

    backend: ClassVar[str]

    def __init__(self, address: str, *, local: bool, dashboard_url: str | None = None):
        self.address = address
        self.local = local
        self.dashboard_url = dashboard_url
        self.closed = False
        # per host: what it runs (``versions.check`` at connect to a remote cluster)
        self.versions: dict[str, dict[str, str | None]] = {}

    # -- backend-specific -------------------------------------------------------------
    @classmethod
    @abstractmethod
    def connect(
        cls,
        target: Target,
        *,
        workers: int | None,
        timeout: float,
        credentials: Credentials,
        release_previous: Callable[[], None],
    ) -> Cluster:
        """Attach to ``target``; ``labkit.connect`` calls this once it chose the backend.

        ``target.kind == "local"`` starts an embedded cluster (``workers`` of them, None for
        the backend's default); otherwise connect to ``target.address`` within ``timeout``
        seconds or raise ``ConnectError`` naming it. ``release_previous()`` closes the active
        cluster: call it before starting a local one, and for an address only once that
        answered, so a typo loses nothing. ``credentials``: Ray's token or Dask's TLS; a
        backend refuses the other's.
        """

    @abstractmethod
    def workers(self) -> list[dict[str, Any]]:
        """One dict per worker: id, host, cpus, gpus, memory_bytes."""

    @abstractmethod
    def _scale(self, n: int) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def run_chunks(
        self, fn: Callable[[Any], Any], chunks: list[list[Any]]
    ) -> Iterator[tuple[int, ChunkResult]]:
        """Run each chunk with ``mapping.run_chunk``; yield (chunk index, outcome) as they finish.

        The streaming layer under ``map``, for callers that handle failures per chunk (a
        batch of notebook runs): an outcome is the chunk's results, an ``ItemFailure``, or a
        ``ChunkLost`` when the backend could not run or return it (its worker died after the
        backend's own retries). Closing the generator early cancels outstanding work.
        """

    def run_on_each_host(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """``fn()`` once on every host (a Dask worker, a Ray node), keyed by its address."""
        raise UnsupportedOperationError(f"the {self.backend} backend cannot run on each host")

    # -- shared ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise NotConnectedError(
                f"this {self.backend} cluster ({self.address}) was closed; "
                "connect first with labkit.connect() or %labkit connect"
            )

    def _connection_lost(self, what: str) -> ConnectError:
        """The error for work cut off because ``what`` (the scheduler, the head) went away."""
        return ConnectError(
            f"lost the connection to the {what} at {self.address}: the work still outstanding "
            f"was cancelled (nothing more runs); once the {what.split()[-1]} is back, "
            f"labkit.connect({self.address!r}) again and re-run it",
            address=self.address,
            backend=self.backend,
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
        items = list(items)
        results: list[Any] = [None] * len(items)
        with _progress_bar(len(items), progress, desc or f"{self.backend} map") as bar:
            for index, result in self.imap_unordered(fn, items, chunksize=chunksize):
                results[index] = result
                bar.update(1)
        return results

    def imap_unordered(
        self, fn: Callable[[Any], Any], items: Iterable[Any], *, chunksize: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """``(index, fn(item))`` pairs as workers finish them, errors raised as ``map`` does.

        For consumers that can use each result at once (write it somewhere, place it in a
        larger array) instead of waiting for the slowest chunk. Closing the iterator early
        cancels the work still outstanding.
        """
        self._check_open()
        items = list(items)
        # sizing chunks to the cluster asks it for its slots: skip that when told the size
        slots = 1 if chunksize is not None else max(1, int(self.resources()["cpus"]))
        chunks = plan_chunks(len(items), slots, chunksize)
        stream = self.run_chunks(fn, [items[c.start : c.stop] for c in chunks])
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
                yield from zip(span, outcome, strict=True)
        finally:
            stream.close()

    def scale(self, n: int) -> None:
        """Resize a local cluster to ``n`` workers (see the backend for what a worker is)."""
        self._check_open()
        n = whole("scale() workers", n, 1, error=UnsupportedOperationError)
        if not self.local:
            raise UnsupportedOperationError(
                f"cannot scale the remote {self.backend} cluster at {self.address}: only "
                "clusters labkit started can be scaled; scale it where it was started"
            )
        self._scale(n)
        announce(self)  # the address of a restarted Ray cluster changes

    def close(self) -> None:
        """Detach; a local cluster is shut down with all its processes. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        withdraw(self)
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
        if self.versions:
            info["versions"] = self.versions
        return info

    def _repr_html_(self) -> str:
        info = self.summary()
        heading = f"labkit · {info['backend']} cluster ({info['kind']}) · {info['status']}"
        rows = [("address", html.escape(info["address"]))]
        if info["dashboard"]:
            link = html.escape(info["dashboard"])
            rows.append(("dashboard", f'<a href="{link}" target="_blank">{link}</a>'))
        if not self.closed:
            rows += [(key, str(info[key])) for key in ("workers", "cpus", "gpus")]
            rows.append(("memory", format_bytes(info["memory_bytes"])))
        cells = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{key}</th>"
            f"<td style='text-align:left'>{value}</td></tr>"
            for key, value in rows
        )
        details = "" if self.closed else self._workers_html() + self._versions_html()
        return (
            f"<div class='labkit-cluster'><strong>{html.escape(heading)}</strong>"
            f"<table>{cells}</table>{details}</div>"
        )

    def _versions_html(self) -> str:
        if not self.versions:
            return ""
        packages = list(next(iter(self.versions.values())))
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ["host", *packages])
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='text-align:left'>{html.escape(str(value or '-'))}</td>"
                for value in [host, *(found.get(p) for p in packages)]
            )
            + "</tr>"
            for host, found in sorted(self.versions.items())
        )
        return f"<details><summary>versions</summary><table><tr>{head}</tr>{body}</table></details>"

    def _workers_html(self, limit: int = 16) -> str:
        workers = self.workers()
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in WORKER_COLUMNS)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='text-align:left'>{html.escape(str(value))}</td>"
                for value in (
                    w["id"],
                    w["host"],
                    w["cpus"],
                    w["gpus"],
                    format_bytes(w["memory_bytes"]),
                )
            )
            + "</tr>"
            for w in workers[:limit]
        )
        more = f"<p>… and {len(workers) - limit} more</p>" if len(workers) > limit else ""
        table = f"<table><tr>{head}</tr>{body}</table>"
        return f"<details><summary>workers</summary>{table}{more}</details>"


WORKER_COLUMNS = ("id", "host", "cpus", "gpus", "memory")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled)
