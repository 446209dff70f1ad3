"""Ray token authentication for clients: find the token, check it, hand it to Ray.

A Ray client that lacks the token a cluster wants retries for 20-30 s and then fails with a
message that never mentions authentication. labkit asks the cluster first, with one cheap
gRPC call that carries the token, so a missing or refused token fails at once and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import AuthError, ConnectError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
MODE_ENV = "RAY_AUTH_MODE"


@dataclass(frozen=True)
class RayToken:
    value: str
    source: str  # where it came from, for error messages: an env var name or a file path
    path: Path | None = None


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


def _read_token_file(path: Path, how: str) -> RayToken:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise AuthError(f"cannot read the Ray token file {path} ({how}): {exc.strerror}") from exc
    if not value:
        raise AuthError(f"the Ray token file {path} ({how}) is empty")
    return RayToken(value, str(path), path)


def find_token(token_file: str | os.PathLike | None = None) -> RayToken | None:
    """The token a client should send, looked up where Ray keeps it.

    Order: ``token_file``, ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.
    """
    if token_file is not None:
        return _read_token_file(Path(token_file).expanduser(), "token_file")
    if os.environ.get(TOKEN_ENV, "").strip():
        return RayToken(os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    if os.environ.get(TOKEN_PATH_ENV):
        return _read_token_file(Path(os.environ[TOKEN_PATH_ENV]).expanduser(), f"${TOKEN_PATH_ENV}")
    path = default_token_path()
    if path.is_file():
        return _read_token_file(path, "Ray's default token file")
    return None


def check_access(address: str, client: bool, token: RayToken | None, timeout: float) -> bool:
    """Ask the cluster at ``address`` whether it accepts ``token``; True when it wants a token.

    ``client`` selects the Ray Client server (``ray://``) rather than the GCS.
    Raises ConnectError when nothing answers, AuthError when the token is missing or refused.
    """
    import grpc

    target = address.removeprefix("ray://")
    metadata = [("authorization", f"Bearer {token.value}")] if token else []
    with grpc.insecure_channel(target) as channel:
        try:
            _ping(channel, client, metadata, timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise _auth_error(address, token) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectError(
                    f"cannot reach the Ray cluster at {address} within {timeout:g} s: "
                    f"nothing answered ({code.name.lower()})",
                    address=address,
                    backend="ray",
                ) from None
            raise ConnectError(
                f"the Ray cluster at {address} answered with an error: {exc.details()}",
                address=address,
                backend="ray",
            ) from None
    return token is not None


def _ping(channel, client: bool, metadata: list, timeout: float) -> None:
    if client:
        from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

        request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
        ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
            request, metadata=metadata, timeout=timeout
        )
    else:
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=timeout
        )


def _auth_error(address: str, token: RayToken | None) -> AuthError:
    if token is None:
        return AuthError(
            f"the Ray cluster at {address} requires token authentication and no token was "
            f"found (looked in ${TOKEN_ENV}, ${TOKEN_PATH_ENV} and {default_token_path()}); "
            "pass token_file= (or --token-file) with the cluster's token "
            "(`ray get-auth-token` on the head node prints it)",
            address=address,
            backend="ray",
        )
    return AuthError(
        f"the Ray cluster at {address} refused the authentication token from {token.source}; "
        "pass token_file= (or --token-file) with the cluster's own token",
        address=address,
        backend="ray",
    )


def use_token(token: RayToken | None) -> Callable[[], None]:
    """Point this process's Ray client (and the workers it starts) at ``token``; returns what
    puts the previous settings back (call it once the connection is closed, so that a later
    cluster, e.g. an embedded one, does not inherit a token file that may be gone).

    Ray caches the token per process, so the cache is dropped here; otherwise a second
    connection with another token would silently reuse the first one.
    """
    saved = {name: os.environ.get(name) for name in (MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV)}
    if token is None:
        return lambda: None
    os.environ[MODE_ENV] = "token"
    if token.path is not None:
        os.environ.pop(TOKEN_ENV, None)
        os.environ[TOKEN_PATH_ENV] = str(token.path.resolve())
    elif token.source == f"${TOKEN_ENV}":
        os.environ.pop(TOKEN_PATH_ENV, None)
    reset_token_cache()

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_token_cache()

    return restore


def reset_token_cache() -> None:
    # Ray's own tests do the same between clusters; there is no public API for it yet.
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # pragma: no cover - older or newer Ray without these hooks
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
