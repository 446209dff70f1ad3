"""Every ``/labkit/api`` route and its refusals, without starting a local cluster."""

from __future__ import annotations

import json

import pytest

from labkit.clusters.registry import read_registry
from tests.conftest import free_port

ROUTES = [
    ("GET", ("clusters",), None),
    ("POST", ("clusters",), {"backend": "dask", "workers": 1}),
    ("GET", ("clusters", "dask-1"), None),
    ("PATCH", ("clusters", "dask-1"), {"workers": 2}),
    ("DELETE", ("clusters", "dask-1"), None),
    ("GET", ("runs",), None),
    ("GET", ("backends",), None),
]


async def test_empty_listing(api):
    assert await api("GET", "clusters") == (200, [])


async def test_backends_name_what_the_sidebar_shows(api):
    status, backends = await api("GET", "backends")
    assert status == 200
    by_name = {backend["name"]: backend for backend in backends if backend["on"] == "local"}
    assert set(by_name) >= {"ray", "dask"}
    assert by_name["ray"]["label"] == "Ray" and by_name["ray"]["worker_unit"] == "nodes"
    assert by_name["dask"]["scale_label"] == "Workers"


async def test_runs_lists_frozen_bundles_under_the_server_root(api, jp_root_dir, monkeypatch):
    import nbformat

    from labkit.runs import freeze

    monkeypatch.delenv("LABKIT_RUNS_DIR", raising=False)
    assert await api("GET", "runs") == (200, [])
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell("alpha = 1", metadata={"tags": ["parameters"]}))
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, jp_root_dir / "study.ipynb")
    freeze(jp_root_dir / "study.ipynb", name="study-v1", out=jp_root_dir / "runs")

    status, runs = await api("GET", "runs")
    assert status == 200
    [bundle] = runs
    assert (bundle["kind"], bundle["name"], bundle["status"]) == ("bundle", "study-v1", "frozen")
    assert bundle["path"] == "runs/study-v1"
    assert bundle["parameters"] == {"alpha": "1"}


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_no_token_is_refused(api, manager, method, path, body):
    status, reply = await api(method, *path, body=body, headers={"Authorization": ""})
    assert status == 403
    assert manager.managed_pids() == []  # nothing was started for an anonymous caller


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_malformed_json_is_400(api, raw):
    for method, path in (("POST", ("clusters",)), ("PATCH", ("clusters", "any"))):
        status, reply = await api(method, *path, raw=raw)
        assert status == 400, (method, raw)
        assert "JSON" in reply["message"]


async def test_unknown_dashboard_is_404(jp_fetch):
    response = await jp_fetch("labkit", "dashboard", "nosuch-7", "status", raise_error=False)
    assert response.code == 404


async def test_dashboard_proxy_needs_jupyter_auth(jp_fetch):
    path = ("labkit", "dashboard", "nosuch-7", "status")
    anonymous = {"Authorization": ""}
    response = await jp_fetch(*path, headers=anonymous, raise_error=False, follow_redirects=False)
    assert response.code == 302  # a browser is sent to log in first
    assert "/login" in response.headers["Location"]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_unknown_id_is_404(api, method):
    body = {"workers": 2} if method == "PATCH" else None
    status, reply = await api(method, "clusters", "nosuch-7", body=body)
    assert status == 404
    assert "nosuch-7" in reply["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"backend": "spark"}, ["spark", "ray", "dask"]),
        ({"backend": "dask", "workers": 0}, ["workers", "between 1"]),
        ({"backend": "dask", "workers": "two"}, ["workers", "whole number"]),
        ({"backend": "dask", "workers": 10_000}, ["workers", "between 1"]),
        ({"backend": "dask", "name": "has space"}, ["name", "not allowed"]),
        ({"workers": 2}, ["backend", "address"]),
        ({"backend": "dask", "colour": "red"}, ["unknown field", "colour"]),
        ({"address": "tcp://127.0.0.1:1", "workers": 2}, ["workers", "address"]),
        ({"address": "not-an-address"}, ["not a cluster address"]),
        ({"address": "http://127.0.0.1:8786"}, ["unknown scheme", "http"]),
        ({"address": "tcp://127.0.0.1:1", "backend": "ray"}, ["backend"]),
        ({"address": ""}, ["address"]),
    ],
)
async def test_bad_input_is_400_with_a_message(api, manager, body, words):
    status, reply = await api("POST", "clusters", body=body)
    assert status == 400
    for word in words:
        assert word in reply["message"], reply["message"]
    assert manager.managed_pids() == []
    assert (await api("GET", "clusters"))[1] == []


async def test_unreachable_remote_shows_its_error_and_cannot_scale(api, jp_fetch):
    port = free_port()  # nothing listens here
    address = f"tcp://127.0.0.1:{port}"
    status, card = await api("POST", "clusters", body={"address": address, "name": "ghost"})
    assert status == 201
    assert card["status"] == "unreachable"
    assert card["managed"] is False and card["origin"] == "registered"
    assert str(port) in card["error"]
    assert card["connect"] == "%labkit connect ghost"
    assert [entry.name for entry in read_registry()] == ["ghost"]

    status, listing = await api("GET", "clusters")
    assert [(c["name"], c["status"]) for c in listing] == [("ghost", "unreachable")]

    dashboard = await jp_fetch("labkit", "dashboard", "ghost", "status", raise_error=False)
    assert dashboard.code == 404

    status, reply = await api("PATCH", "clusters", "ghost", body={"workers": 3})
    assert status == 400
    assert "cannot scale" in reply["message"] and "remote" in reply["message"]

    status, reply = await api("POST", "clusters", body={"address": address})
    assert status == 400 and "already listed" in reply["message"]

    assert (await api("DELETE", "clusters", "ghost"))[0] == 204
    assert await api("GET", "clusters") == (200, [])
    assert read_registry() == []


async def test_registered_dask_scheduler_reports_live_figures(api, jp_fetch, dask_scheduler):
    body = {"address": dask_scheduler.address, "name": "shared-dask"}
    status, card = await api("POST", "clusters", body=body)
    assert status == 201
    assert card["status"] == "running", card
    assert (card["workers"], card["cpus"]) == (1, 2)
    assert card["memory_bytes"] == 2 * 2**30
    assert card["dashboard_url"] == "/a%40b/labkit/dashboard/shared-dask/status"
    page = await jp_fetch("labkit", "dashboard", "shared-dask", "status")
    assert page.code == 200 and b"Dask" in page.body
    entry = read_registry()[0]
    assert (entry.name, entry.address, entry.managed) == ("shared-dask", body["address"], False)
    # Forgetting a registered cluster leaves it running.
    assert (await api("DELETE", "clusters", "shared-dask"))[0] == 204
    assert dask_scheduler.scheduler.poll() is None


async def test_a_tls_scheduler_registered_with_its_files_is_probed_and_connected_by_name(
    api, dask_tls_scheduler
):
    import labkit

    files = dask_tls_scheduler.client
    plain = {"address": dask_tls_scheduler.address, "name": "no-certs"}
    status, card = await api("POST", "clusters", body=plain)
    assert status == 201 and card["status"] == "unreachable", card
    assert "has no CA file or certificate" in card["error"]

    tls = {"ca_file": str(files.ca_file), "cert": str(files.cert), "key": str(files.key)}
    body = {"address": dask_tls_scheduler.address.replace("127.0.0.1", "localhost")}
    body |= {"name": "secure", "tls": tls}
    status, card = await api("POST", "clusters", body=body)
    assert status == 201 and card["status"] == "running", card
    assert card["workers"] == 1
    [entry] = [e for e in read_registry() if e.name == "secure"]
    assert entry.tls == tls
    cluster = labkit.connect("secure")  # the registry's files, no security= needed
    assert cluster.map(abs, [-1, -2], progress=False) == [1, 2]

    bad = {"address": "tls://127.0.0.1:1", "tls": {"ca_file": "/nowhere/ca.pem", "cert": "x"}}
    status, reply = await api("POST", "clusters", body=bad)
    assert status == 400 and "/nowhere/ca.pem" in reply["message"]


async def test_registry_keeps_entries_of_other_servers(api, jp_runtime_dir):
    other = {
        "id": "elsewhere",
        "name": "elsewhere",
        "backend": "dask",
        "address": "tcp://10.1.2.3:8786",
        "managed": False,
    }
    (jp_runtime_dir / "labkit-clusters.json").write_text(
        json.dumps({"version": 1, "clusters": [other]})
    )
    body = {"address": "tcp://127.0.0.1:1", "name": "elsewhere"}
    status, reply = await api("POST", "clusters", body=body)
    assert status == 400 and "already exists" in reply["message"]
    status, card = await api("POST", "clusters", body={"address": "tcp://127.0.0.1:1"})
    assert status == 201 and card["name"] == "dask-1"
    assert sorted(entry.name for entry in read_registry()) == ["dask-1", "elsewhere"]
