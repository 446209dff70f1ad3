"""What a client shows a cluster to be let in, as one record.

Ray authenticates clients by a token (a file), Dask by mutual TLS (a client's CA, certificate
and key files, or a ``distributed.Security`` built from them). Each backend takes its own
credentials and refuses the other's, so a Ray token sent to a Dask scheduler fails loudly
rather than being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Credentials:
    token_file: str | None = None  # Ray's token
    tls: dict[str, str] | None = None  # Dask client's files: ca_file, cert, key (optional)
    security: Any = None  # a distributed.Security given as such (wins over ``tls``)

    @property
    def for_dask(self) -> bool:
        return self.security is not None or bool(self.tls)

    def dask_security(self) -> Any:
        """The ``distributed.Security`` to connect with: given, built from ``tls``, or None."""
        if self.security is not None:
            return self.security
        if self.tls:
            from labkit.clusters.dask_auth import security_from_files

            return security_from_files(self.tls)
        return None


NONE = Credentials()
