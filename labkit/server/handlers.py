"""REST handlers of ``/labkit/api``: parse the request, call the manager, serialise the answer.

Errors: a ``LabkitError`` (bad input the user can act on) is 400 with its message, an unknown
cluster id 404, malformed JSON 400; Jupyter's own authentication refuses anonymous requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from labkit.errors import ClusterNotFoundError, LabkitError
from labkit.schema import to_json
from labkit.server.runs import runs_for_server


def _labkit_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @wraps(method)
    async def wrapper(self: LabkitHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except ClusterNotFoundError as exc:
            raise web.HTTPError(404, str(exc)) from exc
        except LabkitError as exc:
            raise web.HTTPError(400, str(exc)) from exc

    return wrapper


class LabkitHandler(APIHandler):
    @property
    def manager(self):
        return self.settings["labkit_cluster_manager"]

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPError(400, f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))


class ClustersHandler(LabkitHandler):
    """``GET`` lists clusters; ``POST`` starts a local one or registers a remote address."""

    @web.authenticated
    @_labkit_errors
    async def get(self) -> None:
        self.reply([to_json(cluster) for cluster in await self.manager.list_clusters()])

    @web.authenticated
    @_labkit_errors
    async def post(self) -> None:
        body = self.json_body()
        fields = {"backend", "workers", "address", "name", "token_file", "tls"}
        unknown = set(body) - fields - {"on", "jobs", "profile"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if body.get("address") is not None:
            if "workers" in body:
                raise web.HTTPError(400, "'workers' applies to local clusters, not to an address")
            cluster = await self.manager.register_cluster(
                body["address"],
                body.get("name"),
                body.get("backend"),
                body.get("token_file"),
                body.get("tls"),
            )
        else:
            if "backend" not in body:
                raise web.HTTPError(400, "give 'backend' to start a local cluster or 'address'")
            if "jobs" in body and body.get("on") != "slurm":
                raise web.HTTPError(400, '\'jobs\' counts SLURM jobs: add "on": "slurm"')
            if "jobs" in body and "workers" in body:
                raise web.HTTPError(400, "give 'jobs' or 'workers', not both")
            cluster = await self.manager.start_cluster(
                body["backend"],
                body.get("jobs", body.get("workers")),
                body.get("name"),
                on=body.get("on"),
                profile=body.get("profile"),
            )
        self.reply(to_json(cluster), 201)


class ClusterHandler(LabkitHandler):
    """One cluster: ``GET`` it, ``PATCH {"workers": N}`` to scale, ``DELETE`` to stop/forget."""

    @web.authenticated
    @_labkit_errors
    async def get(self, cluster_id: str) -> None:
        self.reply(to_json(await self.manager.get_cluster(cluster_id)))

    @web.authenticated
    @_labkit_errors
    async def patch(self, cluster_id: str) -> None:
        body = self.json_body()
        if set(body) != {"workers"}:
            raise web.HTTPError(400, 'PATCH takes exactly {"workers": N}')
        cluster = await self.manager.scale_cluster(cluster_id, body["workers"])
        self.reply(to_json(cluster))

    @web.authenticated
    @_labkit_errors
    async def delete(self, cluster_id: str) -> None:
        await self.manager.remove_cluster(cluster_id)
        self.set_status(204)
        self.finish()


class BackendsHandler(LabkitHandler):
    """``GET``: the backends the server starts clusters of, with the words the sidebar uses."""

    @web.authenticated
    @_labkit_errors
    async def get(self) -> None:
        self.reply([to_json(backend) for backend in self.manager.backends()])


class RunsHandler(LabkitHandler):
    """Frozen bundles and batches under the server's root directory, with their status."""

    @web.authenticated
    @_labkit_errors
    async def get(self) -> None:
        root = self.settings.get("server_root_dir", ".")
        self.reply(await asyncio.to_thread(runs_for_server, root))
