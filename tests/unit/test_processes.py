"""Pure parts of local worker management: command, environment, backoff, logs, ports, launcher, routes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.api.access import AccessPolicy
from distributed.api.processes import add_process_routes
from distributed.config.models import WorkerConfig
from distributed.errors import ProcessError, UnknownWorker
from distributed.workers.local.arguments import Argument, ArgumentReader
from distributed.workers.local.command import (
    LAUNCHER_PATH,
    WORKER_ID_ENV,
    MasterLayout,
    WorkerPaths,
    listen_hosts,
    worker_command,
    worker_env,
)
from distributed.workers.local.launcher import EXIT_LEASE_EXPIRED
from distributed.workers.local.logs import read_log_tail, rotate_log
from distributed.workers.local.manager import LocalWorkerManager, RestartPolicy
from distributed.workers.local.ports import port_is_free
from distributed.workers.status import WorkerState

LAYOUT = MasterLayout(main_py=Path("/comfy/main.py"), base_directory=Path("/comfy"))
PATHS = WorkerPaths(Path("/state/workers/w1"))


def _worker(extra_args: str = "", cuda_device: int | None = None, port: int = 8189, type: str = "local") -> WorkerConfig:
    return WorkerConfig(id="w1", name="Worker 1", type=type, port=port, cuda_device=cuda_device, extra_args=extra_args)


def _comfy_args(command: list[str]) -> list[str]:
    """What main.py receives: everything after the launcher's `--`."""
    return command[command.index("--") + 2:]


def _command(*arguments: Argument) -> list[str]:
    return worker_command(_worker(), arguments, LAYOUT, PATHS, Path("/state/master.lease.json"), 15, python="/py")


def _value(args: list[str], flag: str) -> str:
    """The value the master gives `flag`, always as one `--flag=value` word."""
    return next(word.split("=", 1)[1] for word in args if word.startswith(flag + "="))


# --- command -------------------------------------------------------------------------------------


def test_command_runs_main_py_through_the_launcher_with_the_lease() -> None:
    command = _command()

    launcher_end = command.index("--")
    assert command[0] == "/py"
    assert str(LAUNCHER_PATH) in command[:launcher_end]
    assert command[launcher_end - 2:launcher_end] == ["--lease=/state/master.lease.json", "--lease-timeout=15"]
    assert command[launcher_end + 1] == "/comfy/main.py"


def test_command_sets_port_and_listens_on_loopback_by_default() -> None:
    args = _comfy_args(_command())

    assert args[:2] == ["--port=8189", "--listen=127.0.0.1"]


def test_command_leaves_listen_to_extra_args_that_set_it() -> None:
    args = _comfy_args(_command(Argument("--listen", ("0.0.0.0",))))

    assert [word for word in args if word.startswith("--listen")] == ["--listen=0.0.0.0"]
    assert args[-1] == "--listen=0.0.0.0"


def test_command_shares_the_masters_base_directory_and_model_paths() -> None:
    layout = MasterLayout(Path("/comfy/main.py"), Path("/data/comfy"), (Path("/a.yaml"), Path("/b.yaml")))
    args = _comfy_args(worker_command(_worker(), (), layout, PATHS, None, 15))

    assert _value(args, "--base-directory") == "/data/comfy"
    assert [word for word in args if word.startswith("--extra-model-paths-config")] == [
        "--extra-model-paths-config=/a.yaml", "--extra-model-paths-config=/b.yaml",
    ]


def test_command_gives_each_worker_its_own_output_input_temp_user_and_database() -> None:
    args = _comfy_args(_command())

    assert _value(args, "--output-directory") == "/state/workers/w1/output"
    assert _value(args, "--input-directory") == "/state/workers/w1/input"
    assert _value(args, "--temp-directory") == "/state/workers/w1"  # ComfyUI appends "temp" itself
    assert _value(args, "--user-directory") == "/state/workers/w1/user"
    assert _value(args, "--database-url") == "sqlite:////state/workers/w1/comfyui.db"


def test_command_without_a_lease_has_no_watchdog_arguments() -> None:
    command = worker_command(_worker(), (), LAYOUT, PATHS, None, 15)

    assert not any(word.startswith("--lease") for word in command[: command.index("--")])


def test_the_masters_own_flags_take_one_word_each_so_extra_args_cannot_add_to_them() -> None:
    args = _comfy_args(_command())

    assert all(word.startswith("--") for word in args)


def test_extra_args_come_last_with_single_values_joined_to_their_flag() -> None:
    args = _comfy_args(_command(Argument("--cpu"), Argument("--preview-method", ("auto",)), Argument("--fast", ("a b", "c"))))

    assert args[-5:] == ["--cpu", "--preview-method=auto", "--fast", "a b", "c"]


def test_unreadable_extra_args_are_a_process_error_at_launch(comfy_parser: object, tmp_path: Path) -> None:
    manager = LocalWorkerManager(LAYOUT, tmp_path / "state", ArgumentReader(comfy_parser))

    with pytest.raises(ProcessError, match="extra_args"):
        manager.command(_worker("--cpu 'unterminated"))
    with pytest.raises(ProcessError, match="port field"):
        manager.command(_worker("--port=9000"))


def test_bare_listen_means_every_address() -> None:
    assert listen_hosts([Argument("--listen"), Argument("--cpu")]) == ["0.0.0.0", "::"]
    assert listen_hosts([Argument("--listen", ("10.0.0.1,127.0.0.1",))]) == ["10.0.0.1", "127.0.0.1"]
    assert listen_hosts([]) == ["127.0.0.1"]


# --- environment ---------------------------------------------------------------------------------


def test_env_selects_the_workers_gpu_in_nvml_numbering() -> None:
    env = worker_env(_worker(cuda_device=2), {"PATH": "/bin"})

    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["PATH"] == "/bin"


def test_env_without_a_cuda_device_keeps_the_masters_visibility() -> None:
    env = worker_env(_worker(), {"CUDA_VISIBLE_DEVICES": "0,1"})

    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_DEVICE_ORDER" not in env


def test_env_leaves_the_masters_api_token_to_the_master() -> None:
    env = worker_env(_worker(), {"DISTRIBUTED_API_TOKEN": "master-secret", "DISTRIBUTED_API_TOKEN_READS": "1", "PATH": "/bin"})

    assert "DISTRIBUTED_API_TOKEN" not in env and "DISTRIBUTED_API_TOKEN_READS" not in env
    assert env["PATH"] == "/bin"


def test_env_marks_the_process_as_a_worker_with_an_unbuffered_log() -> None:
    env = worker_env(_worker(), {})

    assert env[WORKER_ID_ENV] == "w1"
    assert env["PYTHONUNBUFFERED"] == "1"


# --- restart policy ------------------------------------------------------------------------------


def test_restart_delay_doubles_with_each_recent_restart() -> None:
    policy = RestartPolicy(max_restarts=4, window=60, base_delay=1, max_delay=30)

    assert [policy.next_delay([100.0] * count, 100.0) for count in range(4)] == [1, 2, 4, 8]


def test_restart_delay_is_capped() -> None:
    policy = RestartPolicy(max_restarts=10, window=60, base_delay=1, max_delay=5)

    assert policy.next_delay([100.0] * 6, 100.0) == 5


def test_restarts_stop_at_the_limit_within_the_window() -> None:
    policy = RestartPolicy(max_restarts=3, window=60)

    assert policy.next_delay([10.0, 20.0, 30.0], 40.0) is None


def test_restarts_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=3, window=60, base_delay=1)

    assert policy.next_delay([10.0, 20.0, 90.0], 100.0) == 2


# --- logs and ports ------------------------------------------------------------------------------


def test_log_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("".join(f"line {n}\n" for n in range(20000)))

    assert read_log_tail(log, 3) == ["line 19997", "line 19998", "line 19999"]


def test_log_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_log_tail(tmp_path / "none.log", 10) == []


def test_rotation_keeps_the_content_and_lets_the_writer_continue(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("old\n")
    with log.open("ab") as writer:  # the worker's handle, open across the rotation
        rotate_log(log, backups=3)
        writer.write(b"new\n")

    assert (tmp_path / "worker.log.1").read_text() == "old\n"
    assert log.read_text() == "new\n"


def test_rotation_shifts_older_logs(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("first\n")
    rotate_log(log, backups=3)
    log.write_text("second\n")
    rotate_log(log, backups=3)

    assert (tmp_path / "worker.log.2").read_text() == "first\n"
    assert (tmp_path / "worker.log.1").read_text() == "second\n"


def test_a_bound_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]

        assert not port_is_free(port)


# --- launcher ------------------------------------------------------------------------------------


def _launch_script(tmp_path: Path, launcher_args: list[str], body: str) -> subprocess.Popen:
    script = tmp_path / "main.py"
    script.write_text(body)
    return subprocess.Popen([sys.executable, str(LAUNCHER_PATH), *launcher_args, "--", str(script), "--flag", "a b"])


def test_launcher_runs_the_script_as_main_with_its_arguments(tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    body = f"import sys\nopen({str(out)!r}, 'w').write(repr((__name__, sys.argv[1:], sys.path[0])))\n"
    process = _launch_script(tmp_path, [], body)

    assert process.wait(30) == 0
    assert out.read_text() == repr(("__main__", ["--flag", "a b"], str(tmp_path)))


def test_launcher_exits_when_the_lease_is_never_refreshed(tmp_path: Path) -> None:
    body = "import threading\nthreading.Event().wait()\n"
    process = _launch_script(tmp_path, [f"--lease={tmp_path / 'lease.json'}", "--lease-timeout=1", "--lease-poll=0.1"], body)

    assert process.wait(30) == EXIT_LEASE_EXPIRED


# --- routes --------------------------------------------------------------------------------------


@dataclass
class Api:
    """The process routes on a real aiohttp app, with a dict standing in for the registry."""

    client: TestClient
    workers: dict[str, WorkerConfig]


@pytest.fixture
async def api(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], tmp_path: Path, comfy_parser: object) -> Api:
    workers = {
        "w1": _worker(),
        "r1": WorkerConfig(id="r1", name="Remote", type="remote", port=8188),
    }
    def get_worker(worker_id: str) -> WorkerConfig:
        if worker_id not in workers:
            raise UnknownWorker(worker_id)
        return workers[worker_id]

    policy = AccessPolicy()
    manager = LocalWorkerManager(LAYOUT, tmp_path / "state", ArgumentReader(comfy_parser))
    routes = web.RouteTableDef()

    async def no_remote_log(worker: WorkerConfig, lines: int) -> list[str]:
        raise AssertionError("no remote log is read here")

    add_process_routes(routes, policy, manager, get_worker, lambda worker_id: {"state": manager.status(worker_id).state.value},
                       no_remote_log)
    app = web.Application()
    app.add_routes(routes)
    return Api(await aiohttp_client(app), workers)


async def test_every_state_changing_route_refuses_another_web_origin(api: Api, tmp_path: Path) -> None:
    for action in ("launch", "stop", "restart"):
        response = await api.client.post(f"/distributed/workers/w1/{action}", headers={"Origin": "http://evil.example"})

        assert response.status == 403, action
    assert not (tmp_path / "state" / "workers" / "w1" / "process.json").exists()


async def test_log_lines_out_of_range_is_a_400_naming_the_field(api: Api) -> None:
    for lines in ("0", "5001", "ten"):
        response = await api.client.get("/distributed/workers/w1/log", params={"lines": lines})

        assert response.status == 400
        assert (await response.json())["field"] == "lines"


async def test_log_of_a_worker_that_never_ran_is_empty(api: Api) -> None:
    response = await api.client.get("/distributed/workers/w1/log", params={"lines": "5"})

    assert response.status == 200
    assert await response.json() == {"lines": []}


async def test_launching_an_unknown_worker_is_a_404(api: Api) -> None:
    response = await api.client.post("/distributed/workers/nope/launch")

    assert response.status == 404
    assert (await response.json())["field"] is None


async def test_launching_a_remote_worker_is_a_400(api: Api) -> None:
    response = await api.client.post("/distributed/workers/r1/launch")

    assert response.status == 400
    assert (await response.json())["field"] == "type"


async def test_launching_on_a_taken_port_is_a_409_and_starts_nothing(api: Api, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        api.workers["w1"] = _worker(port=sock.getsockname()[1])
        response = await api.client.post("/distributed/workers/w1/launch")

    body = await response.json()
    assert response.status == 409
    assert "already in use" in body["error"] and body["field"] is None
    assert not (tmp_path / "state" / "workers" / "w1" / "process.json").exists()


async def test_stopping_a_worker_that_is_not_running_answers_offline(api: Api) -> None:
    response = await api.client.post("/distributed/workers/w1/stop")

    assert response.status == 202
    assert (await response.json())["status"]["state"] == WorkerState.OFFLINE.value


def test_a_local_worker_with_a_token_is_locked_with_it_and_never_with_the_masters() -> None:
    assert "DISTRIBUTED_WORKER_TOKEN" not in worker_env(_worker(), {"DISTRIBUTED_WORKER_TOKEN": "the-masters-own-lock"})
    locked = worker_env(WorkerConfig(id="w1", name="W", type="local", port=8189, auth_token="worker-token-123456"), {})
    assert locked["DISTRIBUTED_WORKER_TOKEN"] == "worker-token-123456"
