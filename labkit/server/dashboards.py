"""Cluster dashboards served through the Jupyter server, at ``/labkit/dashboard/{id}/``.

Built on jupyter-server-proxy's proxy handler (HTTP and websockets, Jupyter's authentication
on every request), so a dashboard works where only Jupyter's port is reachable (Binder). The
route is by cluster id rather than port, so an open dashboard tab survives a Ray restart, and
requests to a token-protected Ray dashboard carry the cluster's token, so it opens without
asking for one.
"""

from __future__ import annotations

from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web

from labkit.errors import ClusterNotFoundError

DASHBOARD_ROUTE = "labkit/dashboard"


class DashboardProxyHandler(ProxyHandler):
    """Proxies ``/labkit/dashboard/{cluster_id}/{path}`` to that cluster's dashboard."""

    async def _resolve(self, cluster_id: str):
        manager = self.settings["labkit_cluster_manager"]
        try:
            target = await manager.dashboard_target(cluster_id)
        except ClusterNotFoundError as exc:
            raise web.HTTPError(404, str(exc)) from exc
        if target is None:
            raise web.HTTPError(
                404, f"cluster {cluster_id!r} has no dashboard this server can reach"
            )
        self._target = target
        self.proxy_base = f"{DASHBOARD_ROUTE}/{cluster_id}"  # for rewritten redirects
        return target

    def _check_host_allowlist(self, host: str) -> bool:
        # The host comes from the manager's own record, never from the URL.
        return host == self._target.host

    def get_request_headers_override(self) -> dict[str, str]:
        token = self._target.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _forward(self, cluster_id: str, proxied_path: str):
        target = await self._resolve(cluster_id)
        return await self.proxy(target.host, target.port, proxied_path)

    async def http_get(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)

    async def open(self, cluster_id: str, proxied_path: str = "/"):
        target = await self._resolve(cluster_id)
        return await self.proxy_open(target.host, target.port, proxied_path)

    async def post(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)

    async def put(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)

    async def delete(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)

    async def head(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)

    async def patch(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)

    async def options(self, cluster_id: str, proxied_path: str = "/"):
        return await self._forward(cluster_id, proxied_path)
