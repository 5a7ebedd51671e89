"""Issue 13.2: the master cannot become its own worker, by port or by address."""

from __future__ import annotations

from tests.conftest import Cluster, mutate_headers
from tests.harness import wait_until
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt


def test_a_local_worker_on_the_masters_own_port_is_refused_naming_the_port(cluster: Cluster) -> None:
    cluster.use_workers("a")
    status, body = cluster.master.post("/distributed/workers", {"name": "Me", "type": "local", "port": cluster.master.port},
                                       headers=mutate_headers())

    assert status == 400 and body["field"] == "port"
    assert [w["id"] for w in cluster.master.get("/distributed/workers")[1]["workers"]] == ["a"]


def test_a_worker_at_the_masters_own_address_is_shown_as_the_master_and_never_given_a_share(cluster: Cluster) -> None:
    itself = {"id": "itself", "name": "Typo", "type": "remote", "host": "localhost", "port": cluster.master.port}
    cluster.registry([itself, cluster.entry("a")])
    cluster.wait_online("a")

    def status_of_itself() -> dict:
        workers = {w["id"]: w for w in cluster.master.get("/distributed/workers")[1]["workers"]}
        return workers["itself"]["status"]

    shown = wait_until(lambda: status_of_itself() if status_of_itself()["state"] == "error" else None, 30,
                       message="the master to recognise its own address")
    assert "this master itself" in shown["error"]
    entry = cluster.run(seed_stamp_prompt(seed=60), timeout=60)

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(60, 0), (61, 0)]
    assert [s["participant"] for s in cluster.job(entry)["shares"]] == ["master", "a"]
