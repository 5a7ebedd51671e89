"""A pool's start and stop commands, run for real: argument lists, the address line, deadlines and
the output kept for a failure report."""

from __future__ import annotations

import sys

import pytest

from distributed.workers.pools.commands import LINES_KEPT, CommandFailed, CommandRun, member_argv, member_env


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def start(code: str, env: dict[str, str] | None = None) -> CommandRun:
    run = CommandRun(python(code), env or {})
    await run.spawn()
    return run


def test_member_id_and_pool_are_put_into_arguments_and_environment_and_a_member_is_a_worker() -> None:
    argv = member_argv(["create", "--name={member_id}", "{pool}", "{other}"], "gpu-a1b2c3", "gpu")

    assert argv == ["create", "--name=gpu-a1b2c3", "gpu", "{other}"]
    env = member_env({"PATH": "/bin", "DISTRIBUTED_WORKER_TOKEN": "the-masters-own-lock"}, "gpu-a1b2c3", "gpu")
    assert env == {"PATH": "/bin", "DISTRIBUTED_MEMBER_ID": "gpu-a1b2c3", "DISTRIBUTED_POOL": "gpu",
                   "COMFYUI_DISTRIBUTED_WORKER_ID": "gpu-a1b2c3"}  # a ComfyUI it starts here is a worker, unlocked


async def test_the_address_is_the_first_json_line_after_any_chatter() -> None:
    run = await start('import os; print("creating pod", os.environ["DISTRIBUTED_MEMBER_ID"]); '
                      'print(\'{"url": "https://pod.example", "token": "tok-secret-123456"}\')',
                      member_env({}, "gpu-1", "gpu"))

    address = await run.address(10)
    await run.end()

    assert address == {"url": "https://pod.example", "token": "tok-secret-123456"}
    assert "creating pod gpu-1" in run.output()
    assert "tok-secret" not in run.output()


async def test_a_command_that_fails_is_reported_with_its_code_and_both_outputs() -> None:
    run = await start('import sys; print("calling the API"); print("quota exceeded", file=sys.stderr); sys.exit(3)')

    with pytest.raises(CommandFailed) as failure:
        await run.address(10)

    assert str(failure.value) == "exited with code 3 before printing its address"
    assert "calling the API" in failure.value.output and "quota exceeded" in failure.value.output


async def test_a_command_that_exits_without_an_address_is_a_failure() -> None:
    run = await start('print("done")')

    with pytest.raises(CommandFailed, match="exited without printing its address"):
        await run.address(10)


async def test_a_command_that_prints_no_address_in_time_fails_and_can_be_ended() -> None:
    run = await start('import time; print("waiting for capacity", flush=True); time.sleep(60)')

    with pytest.raises(CommandFailed) as failure:
        await run.address(0.5)
    await run.end()

    assert str(failure.value) == "printed no address within 0.5s"
    assert "waiting for capacity" in failure.value.output
    assert run.running is not None and run.running.exit_code() is not False


async def test_a_stop_command_that_fails_says_so() -> None:
    run = await start('import sys; print("no such pod", file=sys.stderr); sys.exit(1)')

    with pytest.raises(CommandFailed, match="exited with code 1") as failure:
        await run.finish(10)

    assert "no such pod" in failure.value.output


async def test_a_program_that_does_not_exist_is_a_failure_not_a_crash() -> None:
    run = CommandRun(["/nonexistent/start-member"], {})

    with pytest.raises(CommandFailed, match="cannot run /nonexistent/start-member"):
        await run.spawn()


async def test_only_the_last_lines_of_a_chatty_command_are_kept() -> None:
    run = await start('for i in range(500): print("line", i)')

    with pytest.raises(CommandFailed):
        await run.address(10)

    lines = run.output().splitlines()
    assert lines[0] == "stdout:" and len(lines) == LINES_KEPT + 1 and lines[-1] == "line 499"
