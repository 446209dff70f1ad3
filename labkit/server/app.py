"""The labkit Jupyter server extension: the ``/labkit/api`` REST routes over a cluster manager."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp
from traitlets import Type

from labkit.server.dashboards import DASHBOARD_ROUTE, DashboardProxyHandler
from labkit.server.handlers import (
    BackendsHandler,
    ClusterHandler,
    ClustersHandler,
    RunsHandler,
)
from labkit.server.manager import ClusterManager

API = "/labkit/api"
CLUSTER_ID = r"(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9_.-]*)"

ROUTES = [
    (rf"{API}/clusters/?", ClustersHandler),
    (rf"{API}/clusters/{CLUSTER_ID}/?", ClusterHandler),
    (rf"{API}/runs/?", RunsHandler),
    (rf"{API}/backends/?", BackendsHandler),
    (rf"/{DASHBOARD_ROUTE}/{CLUSTER_ID}(?P<proxied_path>/.*)", DashboardProxyHandler),
]


class LabkitServerApp(ExtensionApp):
    """Serves ``/labkit/api/*`` and stops the clusters it started when the server stops."""

    name = "labkit"
    load_other_extensions = True

    cluster_manager_class = Type(
        default_value=ClusterManager,
        klass=ClusterManager,
        config=True,
        help="The class that starts, registers, scales and stops clusters.",
    )

    def initialize_settings(self) -> None:
        manager = self.cluster_manager_class(parent=self, log=self.log)
        manager.base_url = self.serverapp.base_url
        manager.proxy_available = True  # DashboardProxyHandler is in ROUTES
        self.cluster_manager = manager
        self.settings["labkit_cluster_manager"] = manager

    def initialize_handlers(self) -> None:
        self.handlers.extend(ROUTES)

    async def stop_extension(self) -> None:
        await self.cluster_manager.shutdown()
