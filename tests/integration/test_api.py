"""The /distributed/ HTTP API on a real master: validation, safety against other origins, hand edits."""

from __future__ import annotations

import json

from tests.conftest import OUTPUT_ROOT, Cluster, mutate_headers
from tests.harness import ComfyInstance, http_json, reset_dir


def test_worker_can_be_added_edited_and_deleted_through_the_api(cluster: Cluster) -> None:
    cluster.registry([])
    url = cluster.master.url
    body = {"name": "Box 2", "host": "127.0.0.1", "port": cluster.workers["a"].port}
    status, created = http_json("POST", f"{url}/distributed/workers", body)
    assert status == 201 and created["id"] == "box-2"

    status, patched = http_json("PATCH", f"{url}/api/distributed/workers/box-2", {"enabled": False})
    assert status == 200 and patched["enabled"] is False and patched["name"] == "Box 2"
    assert json.loads(cluster.workers_file.read_text())["workers"][0]["enabled"] is False

    status, _ = http_json("DELETE", f"{url}/distributed/workers/box-2")
    assert status == 200 and json.loads(cluster.workers_file.read_text())["workers"] == []


def test_bad_port_is_refused_with_the_field_named_and_nothing_written(cluster: Cluster) -> None:
    cluster.use_workers("a")
    before = cluster.workers_file.read_text()
    status, body = http_json("POST", f"{cluster.master.url}/distributed/workers", {"name": "x", "host": "h", "port": 70000})

    assert status == 400 and body["field"] == "port"
    assert cluster.workers_file.read_text() == before


def test_missing_port_for_a_remote_worker_names_the_port_field(cluster: Cluster) -> None:
    cluster.registry([])
    status, body = http_json("POST", f"{cluster.master.url}/distributed/workers", {"name": "x", "type": "remote"})

    assert status == 400 and body["field"] == "port"


def test_body_that_is_not_json_gets_a_400(cluster: Cluster) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{cluster.master.url}/distributed/workers", data=b"{nope", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected a 400")
    except urllib.error.HTTPError as error:
        assert error.code == 400 and "not valid JSON" in json.loads(error.read())["error"]


def test_unknown_worker_is_a_404(cluster: Cluster) -> None:
    status, body = http_json("PATCH", f"{cluster.master.url}/distributed/workers/nope", {"enabled": True})
    assert status == 404 and "nope" in body["error"]


def test_changes_from_another_web_origin_are_refused(cluster: Cluster) -> None:
    cluster.registry([])
    before = cluster.workers_file.read_text()
    headers = {"Origin": "http://evil.example", **mutate_headers()}
    status, _ = http_json("POST", f"{cluster.master.url}/distributed/workers", {"name": "x", "port": 1}, headers=headers)

    assert status == 403
    assert cluster.workers_file.read_text() == before


def test_same_origin_browser_change_needs_the_request_header(cluster: Cluster) -> None:
    cluster.registry([])
    host = cluster.master.url.removeprefix("http://")
    same_origin = {"Origin": cluster.master.url, "Host": host}
    refused, _ = http_json("PATCH", f"{cluster.master.url}/distributed/config", {"settings": {"worker_timeout": 9}}, headers=same_origin)
    accepted, body = http_json("PATCH", f"{cluster.master.url}/distributed/config", {"settings": {"worker_timeout": 9}},
                               headers={**same_origin, **mutate_headers()})

    assert refused == 403
    assert accepted == 200 and body["settings"]["worker_timeout"] == 9


def test_hand_edit_of_workers_json_is_picked_up_without_restart(cluster: Cluster) -> None:
    cluster.registry([cluster.entry("a", name="Before")])
    data = json.loads(cluster.workers_file.read_text())
    data["workers"][0]["name"] = "After"
    cluster.workers_file.write_text(json.dumps(data))

    assert cluster.master.get("/distributed/workers")[1]["workers"][0]["name"] == "After"


def test_invalid_hand_edit_is_reported_kept_and_blocks_api_writes(cluster: Cluster) -> None:
    cluster.registry([cluster.entry("a")])
    broken = '{"version": 1, "workers": [{"id": "a", "name": "A", "port": "not a port"}]}'
    cluster.workers_file.write_text(broken)
    status, body = cluster.master.get("/distributed/workers")
    write_status, write_body = http_json("POST", f"{cluster.master.url}/distributed/workers", {"name": "n", "port": 5})

    assert status == 200 and "workers.0.port" in body["registry_error"]
    assert [w["id"] for w in body["workers"]] == ["a"]
    assert write_status == 409 and "invalid" in write_body["error"]
    assert cluster.workers_file.read_text() == broken
    cluster.registry([])


def test_master_with_invalid_workers_json_starts_reports_it_and_never_overwrites_it() -> None:
    base = reset_dir(OUTPUT_ROOT / "invalid-registry")
    workers_file = base / "workers.json"
    workers_file.write_text("{ this is not json")
    master = ComfyInstance("master-invalid", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    try:
        master.start().wait_ready()
        status, body = master.get("/distributed/workers")

        assert status == 200 and "not valid JSON" in body["registry_error"]
        assert "workers.json is invalid" in master.log_tail(200)
        assert workers_file.read_text() == "{ this is not json"
    finally:
        master.stop()


def test_missing_workers_json_is_created_with_defaults() -> None:
    base = reset_dir(OUTPUT_ROOT / "missing-registry")
    workers_file = base / "sub" / "workers.json"
    master = ComfyInstance("master-missing", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    try:
        master.start().wait_ready()
        data = json.loads(workers_file.read_text())
        assert data["version"] == 1 and data["workers"] == [] and data["master"]["participate"] is True
    finally:
        master.stop()
