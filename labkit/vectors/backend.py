"""Reaching Milvus: one ``MilvusClient`` for a ``*.db`` file (milvus-lite in this process) or a
server URI, with bounded timeouts and pymilvus failures turned into labkit errors.

pymilvus logs every failed RPC with a full traceback before raising; labkit re-raises those
failures as one-line ``LabkitError`` messages, so while labkit makes a call the log records are
dropped (on this thread only; other pymilvus users keep theirs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from labkit.errors import IndexUnreachableError, ParameterError, VectorIndexError
from labkit.log import logger

T = TypeVar("T")

SERVER_SCHEMES = ("http://", "https://", "tcp://")
# pymilvus loggers that report failures labkit re-raises in its own words
_NOISY_LOGGERS = ("pymilvus.decorators", "pymilvus.client.iterator.query_iterator")
# gRPC status names that mean "nobody answered", as opposed to "the server said no"
_UNREACHABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "Fail connecting to server")


@dataclass(frozen=True)
class Endpoint:
    """Where an index lives: ``uri`` as the user wrote it, and how to reach it."""

    uri: str
    embedded: bool  # a *.db file served by milvus-lite inside this process
    path: Path | None = None  # the data directory of an embedded index

    @property
    def shown(self) -> str:
        return str(self.path) if self.path is not None else self.uri


def parse_uri(uri: str | os.PathLike) -> Endpoint:
    """A ``*.db`` path (its folder is created) or an ``http(s)://`` / ``tcp://`` server URI."""
    text = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    if not isinstance(text, str) or not text.strip():
        raise ParameterError(f"index URI must be a *.db path or http://host:port, got {uri!r}")
    text = text.strip()
    if text.lower().startswith(SERVER_SCHEMES):
        return Endpoint(text, embedded=False)
    if "://" in text:
        raise ParameterError(
            f"index URI {text!r}: unknown scheme; use a *.db file path (milvus-lite, embedded) "
            "or http(s)://host:port (a Milvus server)"
        )
    if not text.endswith(".db"):
        raise ParameterError(
            f"index URI {text!r} is neither a *.db file (milvus-lite, embedded) nor "
            "http(s)://host:port (a Milvus server)"
        )
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ParameterError(
            f"index URI {text!r}: {path} exists and is not a milvus-lite data directory"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"index URI {text!r}: cannot create its folder: {exc}") from None
    return Endpoint(text, embedded=True, path=path)


class _QuietOnThisThread(logging.Filter):
    """Drops records logged while labkit, on this thread, is making the call."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "depth", 0)


_quiet = _QuietOnThisThread()
for _name in _NOISY_LOGGERS:
    logging.getLogger(_name).addFilter(_quiet)


@contextlib.contextmanager
def quiet_pymilvus() -> Iterator[None]:
    _quiet.local.depth = getattr(_quiet.local, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet.local.depth -= 1


def server_message(exc: BaseException) -> str:
    """The server's own words from a pymilvus exception, without the wrapper."""
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())


def is_unreachable(exc: BaseException) -> bool:
    text = f"{getattr(exc, 'code', '')} {exc}"
    code = getattr(exc, "code", None)
    if callable(code):  # a raw grpc.RpcError
        text += f" {code()}"
    return any(marker in text for marker in _UNREACHABLE)


class Connection:
    """A ``MilvusClient`` whose every call is bounded and speaks labkit errors."""

    def __init__(self, endpoint: Endpoint, collection: str, timeout: float, token: str = ""):
        self.endpoint = endpoint
        self.collection = collection
        self.timeout = timeout
        if endpoint.embedded:
            _check_not_locked(endpoint, collection)
            address = str(endpoint.path)
        else:
            address = endpoint.uri
        from pymilvus import MilvusClient

        try:
            with quiet_pymilvus():
                self.client = MilvusClient(uri=address, token=token, timeout=timeout)
                self.server_version = str(self.client.get_server_version(timeout=timeout))
        except Exception as exc:
            raise IndexUnreachableError(
                f"cannot reach a Milvus server at {endpoint.shown} within {timeout:g} s: "
                f"{server_message(exc)}",
                uri=endpoint.uri,
                collection=collection,
            ) from None

    @property
    def lite(self) -> bool:
        """milvus-lite (embedded or its gRPC server), which supports fewer index types."""
        return self.server_version.startswith("milvus_lite")

    def call(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        retries: int = 0,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)`` with a timeout; failures become ``VectorIndexError``.

        ``retries``: for idempotent calls (an upsert by id), how many more tries, each with
        twice the time, after the server did not answer in time (milvus-lite can stall for
        tens of seconds while it seals and compacts a large collection).
        """
        limit = self.timeout if timeout is None else timeout
        for attempt in range(retries + 1):
            try:
                with quiet_pymilvus():
                    return fn(*args, timeout=limit, **kwargs)
            except VectorIndexError:
                raise
            except Exception as exc:
                if attempt < retries and is_unreachable(exc):
                    logger.warning("%s: no answer within %g s; trying again", what, limit)
                    limit *= 2
                    continue
                raise self.error(what, exc, limit) from None
        raise AssertionError("unreachable")

    def error(self, what: str, exc: BaseException, limit: float | None = None) -> Exception:
        where = {"uri": self.endpoint.uri, "collection": self.collection}
        if is_unreachable(exc):
            limit = self.timeout if limit is None else limit
            return IndexUnreachableError(
                f"{what}: no answer from the Milvus server at {self.endpoint.shown} within "
                f"{limit:g} s ({server_message(exc)})",
                **where,
            )
        return VectorIndexError(
            f"{what} failed on collection {self.collection!r} at {self.endpoint.shown}: "
            f"{server_message(exc)}",
            **where,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception), quiet_pymilvus():
            self.client.close()


def _check_not_locked(endpoint: Endpoint, collection: str) -> None:
    """milvus-lite opens a data directory in one process only; say which one holds it."""
    from milvus_lite.server_manager import server_manager_instance

    if str(endpoint.path) in server_manager_instance._servers:  # already open here: fine
        return
    lock_path = endpoint.path / "LOCK"
    if not lock_path.exists():
        return
    import fcntl

    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexUnreachableError(
                f"the index {endpoint.path} is open in another process (milvus-lite lets one "
                "process at a time use a *.db); close it there, or serve it with "
                "`milvus-lite server --data-dir ...` and use its http:// URI",
                uri=endpoint.uri,
                collection=collection,
            ) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def wait_for_embedded_indexing(endpoint: Endpoint, collection: str, timeout: float) -> bool:
    """Wait for milvus-lite's background compaction and index builds of an embedded index.

    milvus-lite reports no progress on those over gRPC, but in this process its collection
    object can be asked; returns False when that is not possible (other milvus-lite
    versions), and the caller falls back to a public, slower route.
    """
    try:
        from milvus_lite.server_manager import server_manager_instance

        entry = server_manager_instance._servers.get(str(endpoint.path))
        wait = entry[1].get_collection(collection)._wait_for_bg
    except Exception:
        return False
    try:
        wait(timeout=timeout)
    except TimeoutError:
        raise VectorIndexError(
            f"milvus-lite did not finish indexing {collection!r} at {endpoint.shown} within "
            f"{timeout:g} s (build_timeout)",
            uri=endpoint.uri,
            collection=collection,
        ) from None
    return True


def release_embedded(endpoint: Endpoint) -> None:
    """Stop this process's milvus-lite server for ``endpoint``, releasing its file lock."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(endpoint.path))
