"""Hostile input against a real master: other web origins (also with --enable-cors-header), DNS
rebinding, the API token, extra_args that try to reach a shell or other folders, internal nodes
queued by another client, fuzzed requests, concurrent edits."""

from __future__ import annotations

import json
import stat
import string
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import OUTPUT_ROOT, Cluster, mutate_headers
from tests.harness import ComfyInstance, free_port, http_json, reset_dir, wait_until
from tests.integration.workflows import error_message, seed_stamp_prompt

TOKEN = "master-api-token-0123456789"
EVIL = "http://evil.example"
ALLOWED_NAME = "studio.lan"


@pytest.fixture(scope="module")
def cors_master() -> Iterator[ComfyInstance]:
    """A master run with `--enable-cors-header` (ComfyUI's own origin check off) and an API token."""
    base = reset_dir(OUTPUT_ROOT / "cors-master")
    workers_file = base / "workers.json"
    workers_file.write_text(json.dumps({"version": 1, "workers": [
        {"id": "r1", "name": "Remote 1", "type": "remote", "host": "127.0.0.1", "port": free_port()},
        {"id": "l1", "name": "Local 1", "type": "local", "host": "127.0.0.1", "port": free_port(), "enabled": False},
    ], "pools": [
        {"name": "p1", "start_command": ["/bin/false"], "stop_command": ["/bin/true"], "budget_hours_per_day": 1},
    ]}, indent=2))
    master = ComfyInstance("master-cors", base / "master", with_extension=True, with_node_pack=False,
                           env={"DISTRIBUTED_WORKERS_FILE": str(workers_file), "DISTRIBUTED_API_TOKEN": TOKEN,
                                "DISTRIBUTED_ALLOWED_HOSTS": ALLOWED_NAME},
                           extra_args=["--enable-cors-header"])
    try:
        yield master.start().wait_ready()
    finally:
        master.stop()


def _workers_file(master: ComfyInstance) -> Path:
    return Path(master.env["DISTRIBUTED_WORKERS_FILE"])


def _request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


STATE_CHANGING = [
    ("POST", "/distributed/workers", {"name": "x", "port": 1}),
    ("PATCH", "/distributed/workers/r1", {"enabled": False}),
    ("DELETE", "/distributed/workers/r1", None),
    ("PATCH", "/distributed/config", {"settings": {"worker_timeout": 9}}),
    ("POST", "/distributed/workers/r1/test", None),
    ("POST", "/distributed/test-connection", {"name": "x", "port": 1}),
    ("POST", "/distributed/workers/l1/launch", None),
    ("POST", "/distributed/workers/l1/stop", None),
    ("POST", "/distributed/workers/l1/restart", None),
    ("POST", "/api/distributed/workers", {"name": "x", "port": 1}),
    ("POST", "/distributed/pools", {"name": "p2", "start_command": ["/bin/true"], "stop_command": ["/bin/true"],
                                    "budget_hours_per_day": 1}),
    ("PATCH", "/distributed/pools/p1", {"max": 2}),
    ("DELETE", "/distributed/pools/p1", None),
    ("POST", "/distributed/pools/p1/start", None),
    ("POST", "/distributed/pools/p1/members/p1-abc123/stop", None),
]


# --- other web origins, with ComfyUI's CORS header on ----------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGING, ids=[f"{m} {p}" for m, p, _ in STATE_CHANGING])
def test_state_changing_route_refuses_another_origin_even_with_cors_enabled_and_the_token(
    cors_master: ComfyInstance, method: str, path: str, body: Any
) -> None:
    before = _workers_file(cors_master).read_bytes()
    headers = {"Origin": EVIL, "Authorization": f"Bearer {TOKEN}", **mutate_headers()}
    status, _ = http_json(method, cors_master.url + path, body, headers=headers)

    assert status == 403
    assert _workers_file(cors_master).read_bytes() == before


def test_cors_preflight_from_another_origin_never_grants_the_panel_header(cors_master: ComfyInstance) -> None:
    status, headers, _ = _request("OPTIONS", f"{cors_master.url}/distributed/workers", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-distributed-request,x-distributed-token",
    })
    allowed = {h.strip().lower() for h in headers.get("Access-Control-Allow-Headers", "").split(",")}

    assert status == 200  # ComfyUI's CORS middleware answers every preflight itself
    assert "x-distributed-request" not in allowed and "x-distributed-token" not in allowed


def test_change_without_the_token_is_refused_with_401_and_nothing_written(cors_master: ComfyInstance) -> None:
    before = _workers_file(cors_master).read_bytes()
    status, body = http_json("PATCH", f"{cors_master.url}/distributed/config", {"settings": {"worker_timeout": 9}})

    assert status == 401 and "token" in body["error"]
    assert _workers_file(cors_master).read_bytes() == before


def test_wrong_token_is_refused_with_401(cors_master: ComfyInstance) -> None:
    status, _ = http_json("POST", f"{cors_master.url}/distributed/workers/l1/launch", headers={"Authorization": "Bearer wrong"})
    assert status == 401


def test_change_with_the_token_as_bearer_or_header_is_accepted(cors_master: ComfyInstance) -> None:
    url = f"{cors_master.url}/distributed/config"
    bearer, _ = http_json("PATCH", url, {"settings": {"worker_timeout": 11}}, headers={"Authorization": f"Bearer {TOKEN}"})
    header, body = http_json("PATCH", url, {"settings": {"worker_timeout": 12}}, headers={"X-Distributed-Token": TOKEN})

    assert bearer == 200 and header == 200 and body["settings"]["worker_timeout"] == 12


def test_same_origin_panel_request_with_the_token_is_accepted(cors_master: ComfyInstance) -> None:
    headers = {"Origin": cors_master.url, "X-Distributed-Token": TOKEN, **mutate_headers()}
    status, body = http_json("PATCH", f"{cors_master.url}/distributed/workers/r1", {"name": "Renamed"}, headers=headers)
    assert status == 200 and body["name"] == "Renamed"


def test_reading_status_needs_no_token(cors_master: ComfyInstance) -> None:
    assert cors_master.get("/distributed/workers")[0] == 200
    assert cors_master.get("/distributed/jobs")[0] == 200


@pytest.mark.parametrize("path", ["/distributed/workers", "/distributed/jobs", "/distributed/workers/r1/log?lines=5",
                                  "/api/distributed/speeds"])
def test_with_cors_enabled_another_origin_cannot_read_status_config_or_logs(cors_master: ComfyInstance, path: str) -> None:
    status, _ = http_json("GET", cors_master.url + path, headers={"Origin": EVIL})
    assert status == 403


# --- DNS rebinding: a page whose own name now points at the master ------------------------------------------


def _rebound(master: ComfyInstance, name: str) -> dict[str, str]:
    """Every header a page served from `name` sends once the name resolves to the master: same-origin throughout.
    The token too, so that only the Host rule is left to refuse it."""
    return {"Host": f"{name}:{master.port}", "Origin": f"http://{name}:{master.port}", "Sec-Fetch-Site": "same-origin",
            "X-Distributed-Request": "1", "X-Distributed-Token": TOKEN}


def test_a_rebound_host_name_can_neither_read_nor_change_anything(cors_master: ComfyInstance) -> None:
    before = _workers_file(cors_master).read_bytes()
    read, body = http_json("GET", f"{cors_master.url}/distributed/workers", headers=_rebound(cors_master, "rebind.example"))
    added, _ = http_json("POST", f"{cors_master.url}/distributed/workers", {"name": "lan probe", "host": "10.0.0.1", "port": 22},
                         headers=_rebound(cors_master, "rebind.example"))
    probed, _ = http_json("POST", f"{cors_master.url}/distributed/test-connection", {"name": "p", "host": "10.0.0.1", "port": 22},
                          headers=_rebound(cors_master, "rebind.example"))

    assert (read, added, probed) == (403, 403, 403)
    assert "DISTRIBUTED_ALLOWED_HOSTS" in body["error"]
    assert _workers_file(cors_master).read_bytes() == before


def test_a_host_name_allowed_by_the_environment_or_workers_json_is_answered(cors_master: ComfyInstance) -> None:
    by_env, _ = http_json("GET", f"{cors_master.url}/distributed/workers", headers=_rebound(cors_master, ALLOWED_NAME))
    data = json.loads(_workers_file(cors_master).read_text())
    data["master"] = {**data.get("master", {}), "allowed_hosts": ["gpu-box.lan"]}
    _workers_file(cors_master).write_text(json.dumps(data))

    by_file = wait_until(lambda: http_json("GET", f"{cors_master.url}/distributed/workers",
                                           headers=_rebound(cors_master, "gpu-box.lan"))[0] == 200, 10,
                         message="the allowed name from workers.json")

    assert by_env == 200 and by_file


def test_a_workers_results_route_takes_the_api_token(cors_master: ComfyInstance) -> None:
    without, _ = http_json("GET", f"{cors_master.url}/distributed/results/p/1")
    with_token, _ = http_json("GET", f"{cors_master.url}/distributed/results/p/1", headers={"Authorization": f"Bearer {TOKEN}"})

    assert without == 401 and with_token == 404  # nothing stored: the token was taken


# --- extra_args: no shell, no other folders through the API -----------------------------------------


def test_api_cannot_add_a_path_flag_to_extra_args(cluster: Cluster) -> None:
    cluster.registry([{"id": "l9", "name": "Local 9", "type": "local", "host": "127.0.0.1", "port": free_port(), "enabled": False}])
    before = cluster.workers_file.read_bytes()
    created, body = http_json("POST", f"{cluster.master.url}/distributed/workers",
                              {"name": "Sneaky", "type": "local", "port": free_port(), "extra_args": "--output-directory /etc"})
    patched, _ = http_json("PATCH", f"{cluster.master.url}/distributed/workers/l9", {"extra_args": "--lowvram --input-dir=/root"})

    assert created == 400 and body["field"] == "extra_args"
    assert patched == 400
    assert cluster.workers_file.read_bytes() == before


def test_path_flag_written_by_hand_survives_an_api_edit_of_the_worker(cluster: Cluster) -> None:
    hand_written = "--output-directory /tmp/my-outputs --lowvram"
    cluster.registry([{"id": "l9", "name": "Local 9", "type": "local", "host": "127.0.0.1", "port": free_port(),
                       "enabled": False, "extra_args": hand_written}])
    status, body = http_json("PATCH", f"{cluster.master.url}/distributed/workers/l9", {"name": "Renamed", "extra_args": hand_written})

    assert status == 200 and body["extra_args"] == hand_written
    assert json.loads(cluster.workers_file.read_text())["workers"][0]["name"] == "Renamed"


def test_launch_refuses_shell_text_in_extra_args_and_runs_nothing(cluster: Cluster, tmp_path: Path) -> None:
    first, second = tmp_path / "first-marker", tmp_path / "second-marker"
    extra = f"--lowvram '; touch {first}' '$(touch {second})'"
    cluster.registry([{"id": "l9", "name": "Local 9", "type": "local", "host": "127.0.0.1", "port": free_port(), "extra_args": extra}])

    status, body = http_json("POST", f"{cluster.master.url}/distributed/workers/l9/launch",
                             {"extra_args": "--output-directory /etc", "command": "sh -c id"})

    assert status == 409 and "extra_args" in body["error"] and "is not a flag" in body["error"]
    assert "/etc" not in body["error"] and "sh -c id" not in body["error"]  # the request's body is ignored
    assert not first.exists() and not second.exists()
    assert cluster.master.get("/distributed/workers/l9/log?lines=50")[1]["lines"] == []


# --- internal nodes queued by another client of /prompt --------------------------------------------------------


def test_a_master_share_node_in_another_clients_prompt_cannot_replace_a_share(cluster: Cluster) -> None:
    cluster.use_workers("a")
    cluster.wait_online("a")
    job = cluster.job(cluster.run(seed_stamp_prompt(seed=100)))
    delivered_by = {share["index"]: share["participant"] for share in job["shares"]}
    forged = {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": 666, "width": 32, "height": 16, "batch_size": 1}},
        "2": {"class_type": "DistributedMasterShare", "inputs": {
            "images": ["1", 0], "job_id": job["job_id"], "collector_id": "4", "share_index": 1, "last": True, "token": "guess"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "forged"}},
    }

    entry = cluster.run(forged)

    assert entry["status"]["status_str"] == "error" and "refused" in error_message(entry)
    after = cluster.master.get(f"/distributed/jobs/{job['job_id']}")[1]
    assert {share["index"]: share["participant"] for share in after["shares"]} == delivered_by


# --- fuzzing the API ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["id", "name", "type", "host", "port", "url", "enabled", "cuda_device", "extra_args", "auth_token", "headers",
          "tls_verify", "tls_ca_file", "master", "settings", "participate", "worker_timeout", "health_interval"]
BODIES = st.one_of(JSON, st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_.%~", min_size=1, max_size=20)
WORKER_ID = st.sampled_from(["a", "nope"]) | SEGMENT
NO_SUCH_WORKER = st.sampled_from(["nope"]) | SEGMENT.map(lambda s: f"{s}~")
"""Ids no fuzzed request can create (a `~` is not allowed in an id): launch is probed only with
these, so fuzzing never starts a real ComfyUI."""
ROUTES = st.one_of(
    st.tuples(st.sampled_from(["POST"]), st.sampled_from(["/distributed/workers", "/api/distributed/workers"])),
    st.tuples(st.sampled_from(["PATCH"]), st.sampled_from(["/distributed/config"])),
    st.tuples(st.sampled_from(["PATCH", "DELETE"]), WORKER_ID.map(lambda i: f"/distributed/workers/{i}")),
    st.tuples(st.sampled_from(["POST"]), st.builds(lambda i, action: f"/distributed/workers/{i}/{action}", NO_SUCH_WORKER,
                                                   st.sampled_from(["launch", "stop", "restart"]))),
    st.tuples(st.sampled_from(["POST"]), st.sampled_from(["/distributed/workers/a/stop", "/distributed/workers/a/test"])),
    st.tuples(st.sampled_from(["GET"]), st.builds(lambda i, lines: f"/distributed/workers/{i}/log?lines={lines}", WORKER_ID,
                                                  st.sampled_from(["x", "-1", "0", "5", "99999999999999999999"]) | SEGMENT)),
    st.tuples(st.sampled_from(["GET"]), SEGMENT.map(lambda s: f"/distributed/jobs/{s}")),
    st.tuples(st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]),
              st.one_of(SEGMENT.map(lambda s: f"/distributed/{s}"), WORKER_ID.map(lambda i: f"/distributed/workers/{i}"),
                        st.sampled_from(["/distributed/workers", "/distributed/config", "/distributed/jobs"]))),
)
"""Mostly the real routes with their own methods, so bodies reach validation; then anything."""


def test_fuzzed_requests_never_get_a_500_nor_write_workers_json_when_rejected(cluster: Cluster) -> None:
    cluster.use_workers("a")
    seen: dict[int, int] = {}

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(route=ROUTES, body=BODIES, raw=st.booleans())
    def one_request(route: tuple[str, str], body: Any, raw: bool) -> None:
        method, path = route
        before = cluster.workers_file.read_bytes()
        data = json.dumps(body).encode()[:-1] if raw else json.dumps(body).encode()
        status, _, answer = _request(method, cluster.master.url + path, data if method != "GET" else None,
                                     {"Content-Type": "application/json"})
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, f"{method} {path} {data[:200]!r} -> {status} {answer[:300]!r}"
        if status >= 400:
            assert cluster.workers_file.read_bytes() == before, f"{method} {path} was refused ({status}) but wrote workers.json"

    one_request()
    print(f"\nfuzz statuses: {dict(sorted(seen.items()))}")
    assert cluster.master.get("/system_stats")[0] == 200


# --- workers.json: backups and concurrent edits -------------------------------------------------------


def test_api_write_keeps_the_previous_file_as_a_backup_readable_by_the_user_only(cluster: Cluster) -> None:
    cluster.use_workers("a")
    before = cluster.workers_file.read_text()
    status, _ = http_json("PATCH", f"{cluster.master.url}/distributed/workers/a", {"name": "Backed up"})

    backup = cluster.workers_file.with_name("workers.json.bak")
    assert status == 200
    assert backup.read_text() == before
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and stat.S_IMODE(cluster.workers_file.stat().st_mode) == 0o600


def _hand_edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def test_hand_edit_right_before_an_api_edit_is_never_lost(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    lost = []
    for round_number in range(20):
        name = f"Hand {round_number:02d}"
        api_name = f"Api {round_number:02d}"
        _hand_edit(cluster.workers_file, lambda data, name=name: data["workers"][1].update(name=name))
        status, _ = http_json("PATCH", f"{cluster.master.url}/distributed/workers/a", {"name": api_name})
        assert status == 200
        workers = json.loads(cluster.workers_file.read_text())["workers"]
        if (workers[0]["name"], workers[1]["name"]) != (api_name, name):
            lost.append((round_number, workers[0]["name"], workers[1]["name"]))

    assert not lost, f"hand edits overwritten by the next API edit: {lost}"


def test_concurrent_api_edits_from_several_clients_lose_none(cluster: Cluster) -> None:
    ids = ["a", "b", "stock"]
    cluster.use_workers(*ids)
    failures: list[str] = []

    def client(worker_id: str) -> None:
        for round_number in range(10):
            status, body = http_json("PATCH", f"{cluster.master.url}/distributed/workers/{worker_id}",
                                     {"name": f"{worker_id} edit {round_number}"})
            if status != 200:
                failures.append(f"{worker_id}: {status} {body}")

    threads = [threading.Thread(target=client, args=(worker_id,)) for worker_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not failures
    names = [w["name"] for w in json.loads(cluster.workers_file.read_text())["workers"]]
    assert names == [f"{worker_id} edit 9" for worker_id in ids]
