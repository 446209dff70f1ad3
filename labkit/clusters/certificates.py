"""Certificates for a Dask cluster with mutual TLS: one CA, one certificate per party.

What the multi-host tests use, and what a cluster that takes remote worker nodes hands out.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TlsFiles:
    """The files of one party: the CA that signs everyone, its certificate and private key."""

    ca_file: Path
    cert: Path
    key: Path

    def dask_flags(self) -> list[str]:
        """``dask scheduler`` / ``dask worker`` options that use these files."""
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert)] + [
            "--tls-key",
            str(self.key),
        ]

    def security(self) -> Any:
        """A ``distributed.Security`` that requires TLS and presents these files."""
        from labkit.clusters.dask_auth import dask_security

        return dask_security(self.ca_file, self.cert, self.key)


def make_certificates(folder: str | os.PathLike, hosts: list[str], names: list[str]) -> dict:
    """A CA and, for each of ``names``, a certificate valid for ``hosts`` (IPs or DNS names).

    Returns ``{name: TlsFiles}``; the files are written under ``folder`` (keys mode 0600).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))

    def write_key(key: Any, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def builder(subject: str, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labkit cluster CA")])
    ca = (
        builder("labkit cluster CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    files = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(name, ca_name, key.public_key())
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        cert_file, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, key_file)
        files[name] = TlsFiles(ca_file, cert_file, key_file)
    return files
