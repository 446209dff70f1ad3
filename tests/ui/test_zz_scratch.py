import json, urllib.request, time
from tests.conftest import wait_for

def _post(lab, body):
    req = urllib.request.Request(f"{lab.url}/labkit/api/clusters", method="POST", data=json.dumps(body).encode(), headers={"Authorization": f"token {lab.token}"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())

def test_scratch(lab, browser_page, tmp_path):
    page = browser_page
    ray = _post(lab, {"backend": "ray", "workers": 1})
    dask = _post(lab, {"backend": "dask", "workers": 1})
    wait_for(lambda: all(c["status"] == "running" for c in lab.api("/labkit/api/clusters")), 120, "up")
    cards = lab.api("/labkit/api/clusters")
    for c in cards:
        page.goto(f"{lab.url}{c['dashboard_url']}?token={lab.token}")
        time.sleep(8)
        page.screenshot(path=f"/tmp/labkit-dash-{c['backend']}.png")
    page.goto(lab.page_url("/lab"))
    page.locator(".jp-SideBar [data-id='labkit-clusters']").click(timeout=90_000)
    page.locator("#labkit-clusters .labkit-card[data-status='running']").first.wait_for()
    page.locator("#labkit-clusters .labkit-card[data-cluster-id='ray-1'] .labkit-open-dashboard").click()
    time.sleep(8)
    page.screenshot(path="/tmp/labkit-dash-tab.png")
