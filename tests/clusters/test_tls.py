"""Dask over mutual TLS on loopback: the ways to give certificates, and clear refusals.

The same across separate hosts, with strangers on the network, is in test_multinode.py.
"""

from __future__ import annotations

import time

import pytest

import labkit
from labkit.clusters.dask_auth import dask_security
from labkit.errors import AuthError, ParameterError


def test_security_argument_attaches_and_maps(dask_tls_scheduler):
    files = dask_tls_scheduler.client
    cluster = labkit.connect(dask_tls_scheduler.address, security=files.security())
    assert cluster.backend == "dask" and cluster.address == dask_tls_scheduler.address
    assert cluster.map(lambda x: x + 1, range(50), progress=False) == list(range(1, 51))
    assert [w["host"] for w in cluster.workers()] == ["127.0.0.1"]


def test_dask_configuration_gives_the_certificates(dask_tls_scheduler):
    import dask

    files = dask_tls_scheduler.client
    config = {
        "distributed.comm.tls.ca-file": str(files.ca_file),
        "distributed.comm.tls.client.cert": str(files.cert),
        "distributed.comm.tls.client.key": str(files.key),
    }
    with dask.config.set(config):
        cluster = labkit.connect(dask_tls_scheduler.address)
        assert cluster.map(str, [1, 2], progress=False) == ["1", "2"]


@pytest.mark.parametrize(
    "security, expected",
    [
        (None, "has no CA file or certificate"),
        ("stranger", "did not sign"),
    ],
)
def test_wrong_or_missing_certificates_fail_at_once_naming_why(
    dask_tls_scheduler, security, expected
):
    given = dask_tls_scheduler.stranger.security() if security else None
    started = time.perf_counter()
    with pytest.raises(AuthError, match=expected) as caught:
        labkit.connect(dask_tls_scheduler.address, security=given)
    assert dask_tls_scheduler.address in str(caught.value)
    assert time.perf_counter() - started < 10  # not Dask's 30 s of retries


def test_plaintext_address_of_a_tls_scheduler_says_so(dask_tls_scheduler):
    plain = dask_tls_scheduler.address.replace("tls://", "tcp://")
    with pytest.raises(AuthError, match="only speaks TLS: connect to tls://"):
        labkit.connect(plain)


def test_missing_tls_file_is_named(tmp_path):
    (tmp_path / "ca.pem").write_text("a CA")
    with pytest.raises(AuthError, match="tls-cert does not exist: .*nope.pem"):
        dask_security(tmp_path / "ca.pem", tmp_path / "nope.pem")


def test_each_backend_refuses_the_other_ones_credentials(dask_tls_scheduler, ray_head):
    with pytest.raises(ParameterError, match="token_file= is Ray's"):
        labkit.connect(dask_tls_scheduler.address, token_file=ray_head.token_file)
    with pytest.raises(ParameterError, match="security= holds Dask's TLS settings"):
        labkit.connect(ray_head.gcs_address, security=dask_tls_scheduler.client.security())
