"""The labkit Jupyter server extension: REST routes of DESIGN §5 over a cluster manager."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp
from traitlets import Type

from labkit.server.handlers import ClusterHandler, ClustersHandler, RunsHandler
from labkit.server.manager import ClusterManager

API = "/labkit/api"
CLUSTER_ID = r"(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9_.-]*)"

ROUTES = [
    (rf"{API}/clusters/?", ClustersHandler),
    (rf"{API}/clusters/{CLUSTER_ID}/?", ClusterHandler),
    (rf"{API}/runs/?", RunsHandler),
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
        extensions = self.serverapp.extension_manager.extensions
        proxy = extensions.get("jupyter_server_proxy")
        manager.proxy_available = bool(proxy and proxy.enabled)
        self.cluster_manager = manager
        self.settings["labkit_cluster_manager"] = manager

    def initialize_handlers(self) -> None:
        self.handlers.extend(ROUTES)

    async def stop_extension(self) -> None:
        await self.cluster_manager.shutdown()
