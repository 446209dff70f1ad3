import os
import time

import pytest

import labkit
from labkit.clusters.ray_auth import find_token
from labkit.errors import AuthError, ConnectError


def test_token_lookup_order(monkeypatch, tmp_path, no_ray_token):
    assert find_token() is None
    home_token = tmp_path / ".ray" / "auth_token"
    home_token.parent.mkdir()
    home_token.write_text("from-home\n")
    assert find_token().value == "from-home"
    path_token = tmp_path / "other"
    path_token.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_token))
    assert find_token().value == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token().value == "from-env"
    given = tmp_path / "given"
    given.write_text("given")
    assert find_token(given).value == "given"


def test_unreadable_or_empty_token_file_names_it(tmp_path):
    with pytest.raises(AuthError, match="cannot read the Ray token file .*missing"):
        find_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AuthError, match="empty"):
        find_token(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["gcs", "client"])
def test_missing_token_fails_fast_and_says_so(ray_head, no_ray_token, kind):
    address = ray_head.gcs_address if kind == "gcs" else ray_head.client_address
    started = time.monotonic()
    with pytest.raises(AuthError, match="requires token authentication and no token was found"):
        labkit.connect(address, backend="ray", timeout=5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["gcs", "client"])
def test_refused_token_fails_fast_and_names_its_source(ray_head, tmp_path, kind):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("not-the-token")
    address = ray_head.gcs_address if kind == "gcs" else ray_head.client_address
    started = time.monotonic()
    with pytest.raises(AuthError, match=f"refused the authentication token from {wrong}"):
        labkit.connect(address, token_file=wrong, timeout=5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("address", "backend"),
    [
        ("127.0.0.1:{port}", "ray"),
        ("ray://127.0.0.1:{port}", None),
        ("tcp://127.0.0.1:{port}", None),
    ],
)
def test_unreachable_address_fails_within_timeout_naming_address_and_backend(address, backend):
    from tests.conftest import free_port

    address = address.format(port=free_port())
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        labkit.connect(address, backend=backend, timeout=3)
    assert time.monotonic() - started < 3
    assert address in str(info.value)
    assert info.value.backend in ("ray", "dask")
    assert info.value.backend in str(info.value).lower()


def test_closing_puts_the_token_settings_of_this_process_back(ray_head, monkeypatch, tmp_path):
    # a cluster whose token file goes with it (Ray on SLURM) must not leave a later embedded
    # cluster pointed at that file: Ray refuses to start one with a token path that is gone
    before = tmp_path / "before"
    before.write_text("the user's own token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(before))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    cluster = labkit.connect(ray_head.client_address, token_file=ray_head.token_file)
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(ray_head.token_file.resolve())
    cluster.close()
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(before)
    assert "RAY_AUTH_MODE" not in os.environ
    assert find_token().value == "the user's own token"


def test_a_client_server_that_dies_starting_is_tried_once_more(monkeypatch):
    """Ray's own message when the head's per-client server process dies at once (a stand-in
    for ray.init: heads labkit starts no longer lose them, see ``ray_processes``)."""
    import ray

    from labkit.clusters import ray as ray_module

    died = ConnectionAbortedError(
        "Initialization failure from server:\nRuntimeError: Starting Ray client server failed."
    )
    calls: list[str] = []
    answers = iter([died, "context"])

    def init(address, **_):
        calls.append(address)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    with pytest.warns(UserWarning, match="could not start this client's server; trying again"):
        assert ray_module._init_remote("ray://127.0.0.1:1", 5) == "context"
    assert calls == ["ray://127.0.0.1:1", "shutdown", "ray://127.0.0.1:1"]

    answers = iter([died, died])
    with pytest.warns(UserWarning), pytest.raises(ConnectionAbortedError, match="client server"):
        ray_module._init_remote("ray://127.0.0.1:1", 5)
    answers = iter([ConnectionAbortedError("Initialization failure from server: bad token")])
    with pytest.raises(ConnectionAbortedError, match="bad token"):  # not retried
        ray_module._init_remote("ray://127.0.0.1:1", 5)


def test_a_lost_server_is_told_from_other_client_errors():
    """``ray.nodes()`` on a Ray Client whose head died raises gRPC's UNAVAILABLE, not the
    ConnectionError of the calls Ray retries: both are the head lost, nothing else is."""
    import grpc

    from labkit.clusters.ray import lost_server

    class RpcFailure(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode):
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    assert lost_server(RpcFailure(grpc.StatusCode.UNAVAILABLE))
    assert lost_server(ConnectionError("Ray client connection timed out"))
    assert not lost_server(RpcFailure(grpc.StatusCode.UNAUTHENTICATED))
    assert not lost_server(ValueError("bad item"))
