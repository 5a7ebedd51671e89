"""A host: a second master with this extension, whose local worker the main master lists, launches
through it, runs a share on and stops; and which refuses every request that lacks its token.

Three processes: the main master, the host (a master started with DISTRIBUTED_API_TOKEN, listening
on every interface), and the host's one local CPU worker. Where this machine has an address besides
loopback, the main master reaches the host by it, so the host sees a caller from another machine.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import OUTPUT_ROOT
from tests.harness import ComfyInstance, free_port, http_json, reset_dir, running, wait_until
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt

HOST_TOKEN = "host-api-token-0123456789abcdef"
WORKER = "cpu1"
ENTRY = f"box.{WORKER}"
SETTINGS = {"health_interval": 0.5, "worker_timeout": 30, "assign_timeout": 60}


def lan_address() -> str | None:
    """This machine's address on its network, if it has one (a UDP socket picks the route; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@dataclass
class Setup:
    main: ComfyInstance
    host: ComfyInstance
    address: str
    """Where the main master reaches the host: its network address, or loopback when there is none."""
    worker_port: int

    def workers(self) -> dict[str, dict[str, Any]]:
        return {worker["id"]: worker for worker in self.main.get("/distributed/workers")[1]["workers"]}

    def host_view(self) -> dict[str, Any]:
        return self.main.get("/distributed/workers")[1]["hosts"].get("box", {})

    def host_worker(self) -> dict[str, Any] | None:
        return next((w for w in self.host_view().get("workers", []) if w["id"] == WORKER), None)

    def act(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http_json(method, f"{self.main.url}/distributed/hosts/box/workers/{WORKER}{path}", body, timeout=120)


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    base = reset_dir(OUTPUT_ROOT / "hosts")
    address = lan_address() or "127.0.0.1"
    worker_port = free_port()
    host_file, main_file = base / "host-workers.json", base / "main-workers.json"
    host_file.write_text(json.dumps({"version": 1, "settings": SETTINGS, "workers": [
        {"id": WORKER, "name": "CPU one", "type": "local", "port": worker_port},
    ]}))
    host = ComfyInstance("host", base / "host", with_extension=True, extra_args=["--listen", "0.0.0.0"],
                         env={"DISTRIBUTED_WORKERS_FILE": str(host_file), "DISTRIBUTED_API_TOKEN": HOST_TOKEN})
    main = ComfyInstance("main", base / "main", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(main_file)})
    main_file.write_text(json.dumps({"version": 1, "settings": SETTINGS, "workers": [
        {"id": "box", "name": "Box", "type": "host", "host": address, "port": host.port, "auth_token": HOST_TOKEN},
    ]}))
    with running(host, main):
        setup = Setup(main, host, address, worker_port)
        try:
            yield setup
        finally:
            http_json("POST", f"{host.url}/distributed/workers/{WORKER}/stop", headers={"Authorization": f"Bearer {HOST_TOKEN}"})


def test_the_main_master_lists_the_hosts_worker_and_uses_it_once_it_listens_on_the_network(setup: Setup) -> None:
    listed = wait_until(setup.host_worker, 60, message="the host's worker listed by the main master")
    assert (listed["listen"], listed["state"], listed["managed_id"]) == ("loopback", "stopped", None)
    assert setup.workers()["box"]["status"]["state"] == "connected"

    status, body = setup.act("PATCH", "", {"listen": "network"})

    assert status == 200, body
    entry = wait_until(lambda: setup.workers().get(ENTRY), 30, message="the managed entry")
    assert (entry["type"], entry["managed_by"], entry["host"], entry["port"]) == ("remote", "host:box", setup.address, setup.worker_port)
    assert entry["auth_token"].startswith("\u2022")  # the worker's lock, made on the host, shown masked
    assert entry["status"]["state"] == "stopped"


def test_a_request_without_the_hosts_token_is_refused_with_401_and_nothing_starts(setup: Setup) -> None:
    wait_until(lambda: setup.workers().get(ENTRY), 60, message="the managed entry")
    callers = ["127.0.0.1"] + ([setup.address] if setup.address != "127.0.0.1" else [])
    for caller in callers:
        url = f"http://{caller}:{setup.host.port}"
        assert http_json("POST", f"{url}/distributed/workers/{WORKER}/launch")[0] == 401, caller
        assert http_json("POST", f"{url}/distributed/workers/{WORKER}/launch", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert http_json("GET", f"{url}/distributed/host")[0] == 401, caller

    token = {"Authorization": f"Bearer {HOST_TOKEN}"}
    report = http_json("GET", f"{setup.host.url}/distributed/host", headers=token)[1]
    assert [(w["id"], w["state"]) for w in report["workers"]] == [(WORKER, "stopped")]
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", setup.worker_port)) != 0  # no process listens on its port


def test_another_machine_reads_nothing_of_the_host_without_its_token(setup: Setup) -> None:
    if setup.address == "127.0.0.1":
        pytest.skip("this machine has no address besides loopback")
    url = f"http://{setup.address}:{setup.host.port}"

    assert http_json("GET", f"{url}/distributed/workers")[0] == 401
    assert http_json("GET", f"{url}/distributed/workers/{WORKER}/log")[0] == 401
    assert http_json("GET", f"{url}/distributed/workers", headers={"Authorization": f"Bearer {HOST_TOKEN}"})[0] == 200
    assert http_json("GET", f"{setup.host.url}/distributed/workers")[0] == 200  # its own user, at the machine


def test_the_main_master_launches_it_through_the_host_and_runs_a_collector_prompt_on_it(setup: Setup) -> None:
    wait_until(lambda: setup.workers().get(ENTRY), 60, message="the managed entry")

    status, body = setup.act("POST", "/launch")

    assert status == 202, body
    wait_until(lambda: setup.workers()[ENTRY]["status"]["state"] == "online", 180, interval=0.5,
               message="the host's worker online for the main master")
    worker_url = f"http://{setup.address}:{setup.worker_port}"
    assert http_json("GET", f"{worker_url}/system_stats")[0] == 401  # locked: it listens on the network

    entry = setup.main.wait_history(setup.main.queue_prompt(seed_stamp_prompt(seed=4400, prefix="host")), 180)

    assert [read_stamp(p) for p in saved_images(entry, setup.main.output_dir)] == [(4400, 0), (4401, 0)]
    prompt = entry["prompt"][2]
    job_id = next(n["inputs"]["distributed_job_id"] for n in prompt.values() if n["class_type"] == "DistributedCollector")
    shares = setup.main.get(f"/distributed/jobs/{job_id}")[1]["shares"]
    assert sorted(share["participant"] for share in shares) == [ENTRY, "master"]
    status, log = setup.act("GET", "/log?lines=400")
    assert status == 200 and any("To see the GUI go to" in line for line in log["lines"])


def test_the_main_master_stops_it_through_the_host(setup: Setup) -> None:
    status, body = setup.act("POST", "/stop")

    assert status == 202, body
    assert next(w for w in body["host"]["workers"] if w["id"] == WORKER)["state"] == "stopped"
    wait_until(lambda: setup.workers()[ENTRY]["status"]["state"] == "stopped", 30, message="shown stopped on the main master")
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", setup.worker_port)) != 0


def test_a_hosts_worker_is_not_deleted_or_edited_by_hand_on_the_main_master(setup: Setup) -> None:
    deleted = http_json("DELETE", f"{setup.main.url}/distributed/workers/{ENTRY}")
    edited = http_json("PATCH", f"{setup.main.url}/distributed/workers/{ENTRY}", {"port": 1})

    assert deleted[0] == 400 and "managed by host:box" in deleted[1]["error"]
    assert edited[0] == 400 and edited[1]["field"] == "port"
    assert ENTRY in setup.workers()
