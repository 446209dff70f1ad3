"""Dask clients and TLS with mutual authentication: the client's certificates, checked at once.

A Dask client given the wrong certificates, none, or a plaintext ``tcp://`` address for a TLS
scheduler fails with a bare ``TimeoutError`` or ``CommClosedError`` that never says why. labkit
first talks to the scheduler itself: over TLS with the client's own files, or (for ``tcp://``)
waiting for the greeting a plaintext scheduler sends at once, so each such case fails within a
second with an error that names the cause and the file at fault.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from labkit.clusters.address import split_host_port
from labkit.errors import AuthError, ConnectError

CONFIG_KEYS = {
    "ca_file": "distributed.comm.tls.ca-file",
    "cert": "distributed.comm.tls.client.cert",
    "key": "distributed.comm.tls.client.key",
}


def dask_security(
    ca_file: str | os.PathLike, cert: str | os.PathLike, key: str | os.PathLike | None = None
) -> Any:
    """A client ``distributed.Security`` from the three files, each checked to exist."""
    from distributed.security import Security

    files = {"tls-ca-file": ca_file, "tls-cert": cert, "tls-key": key}
    for name, path in files.items():
        if path is not None and not Path(path).is_file():
            raise AuthError(f"the TLS file given as {name} does not exist: {path}")
    return Security(
        tls_ca_file=os.fspath(ca_file),
        tls_client_cert=os.fspath(cert),
        tls_client_key=os.fspath(key) if key is not None else None,
        require_encryption=True,
    )


TLS_FILES = ("ca_file", "cert", "key")


def check_tls_files(tls: Any) -> dict[str, str]:
    """``{"ca_file", "cert", "key"}`` as absolute paths, each checked to exist (key optional)."""
    if (
        not isinstance(tls, dict)
        or set(tls) - set(TLS_FILES)
        or not {"ca_file", "cert"} <= set(tls)
    ):
        raise AuthError(
            f"tls must be an object with ca_file, cert and (optionally) key; got {tls!r}"
        )
    checked = {}
    for name, path in tls.items():
        if path is None:
            continue
        if not isinstance(path, str) or not Path(path).expanduser().is_file():
            raise AuthError(f"the TLS {name} file {path!r} does not exist")
        checked[name] = str(Path(path).expanduser().resolve())
    return checked


def security_from_files(tls: dict[str, str]) -> Any:
    return dask_security(tls["ca_file"], tls["cert"], tls.get("key"))


def configured_security() -> Any:
    """The ``distributed.Security`` Dask's own configuration (and its env variables) give."""
    from distributed.security import Security

    return Security()


def check_scheduler(address: str, security: Any, timeout: float) -> None:
    """Talk to the scheduler at ``address`` the way its client will, and say what is wrong.

    ``ConnectError`` when nothing answers (or a ``tls://`` address is not a TLS scheduler);
    ``AuthError`` when a ``tcp://`` address is a TLS scheduler, when the client has no CA or
    certificate, when the scheduler's certificate is not signed by the client's CA, or when
    the scheduler refuses the client's certificate.
    """
    raw = _open(address, timeout)
    with raw:
        if address.startswith("tls://"):
            _check_tls(address, raw, security)
            return
        raw.settimeout(GREETING_WAIT)
        try:
            raw.recv(1)  # a plaintext scheduler greets first; a TLS one waits for our hello
            return
        except TimeoutError:
            pass
    if speaks_tls(address, timeout):
        tls_address = "tls://" + address.split("://", 1)[-1]
        raise AuthError(
            f"the Dask scheduler at {address} only speaks TLS: connect to {tls_address} with "
            f"the cluster's certificates ({_HOW_TO_GIVE})"
        )


GREETING_WAIT = 0.5  # seconds a scheduler gets to send its first bytes
_HOW_TO_GIVE = (
    f"set {CONFIG_KEYS['ca_file']} and {CONFIG_KEYS['cert']} (and .key) in Dask's "
    "configuration, pass security=labkit.clusters.dask_auth.dask_security(ca, cert, key), "
    "or %labkit connect ADDRESS --tls-ca-file F --tls-cert F --tls-key F"
)


def _open(address: str, timeout: float) -> socket.socket:
    host, port = split_host_port(address)
    try:
        return socket.create_connection((host, port), timeout=min(timeout, 5.0))
    except OSError as exc:
        raise ConnectError(
            f"cannot reach the Dask scheduler at {address} within {min(timeout, 5.0):g} s: "
            f"{exc.strerror or exc}",
            address=address,
            backend="dask",
        ) from None


def _check_tls(address: str, raw: socket.socket, security: Any) -> None:
    ca_file, cert, key = security.tls_ca_file, security.tls_client_cert, security.tls_client_key
    if not ca_file or not cert:
        missing = " or ".join(
            name for name, value in (("CA file", ca_file), ("certificate", cert)) if not value
        )
        raise AuthError(
            f"{address} is a TLS scheduler but this client has no {missing}: {_HOW_TO_GIVE}"
        )
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False  # Dask checks the CA, not host names
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise AuthError(f"cannot use the TLS certificate {cert} (key {key}): {exc}") from None
    not_tls = (
        f"the Dask scheduler at {address} does not speak TLS; is it a plaintext scheduler (tcp://)?"
    )
    try:
        with context.wrap_socket(raw) as tls:
            # TLS 1.3 reports a refused client certificate after the handshake, as an alert;
            # an accepted client gets the scheduler's greeting instead
            tls.settimeout(GREETING_WAIT)
            with contextlib.suppress(TimeoutError):
                tls.recv(1)
    except ssl.SSLCertVerificationError as exc:
        raise AuthError(
            f"the Dask scheduler at {address} presents a certificate the CA file {ca_file} did "
            f"not sign ({exc.verify_message}); use the CA of that cluster"
        ) from None
    except ssl.SSLError as exc:
        if "CERTIFICATE" in (exc.reason or "").upper():
            raise AuthError(
                f"the Dask scheduler at {address} refused this client's certificate {cert} "
                f"({exc.reason}): it takes only certificates signed by the cluster's CA"
            ) from None
        raise ConnectError(f"{not_tls} ({exc.reason})", address=address, backend="dask") from None
    except OSError as exc:
        raise ConnectError(f"{not_tls} ({exc})", address=address, backend="dask") from None


def speaks_tls(address: str, timeout: float = 1.0) -> bool:
    """Whether the server at ``address`` answers a TLS hello (if only to refuse us)."""
    host, port = split_host_port(address)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=min(timeout, 2.0)) as raw,
            context.wrap_socket(raw),
        ):
            return True
    except ssl.SSLError:
        return True
    except OSError:
        return False
