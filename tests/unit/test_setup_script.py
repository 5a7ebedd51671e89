"""Set-up scripts: node packs from git, plans from facts, and the bash script run against a local
HTTP server and a local git remote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distributed.transport.provision.node_packs import NodePack, packs_for, public_remote
from distributed.transport.provision.script import render_bash, render_powershell
from distributed.transport.provision.setup_plan import SetupPlan, plan_setup
from distributed.transport.provision.workflow import ModelSource
from tests.unit.model_folders import sha256_file, write_random
from tests.unit.script_fixtures import file_server, git, hosted_pack

PACK_SOURCE = Path(__file__).resolve().parent.parent / "node_pack"


class Locator:
    """Which module each class came from, as ComfyUI would say (pure data for the resolver)."""

    def __init__(self, modules: dict[str, str], paths: dict[str, Path]) -> None:
        self.modules = modules
        self.paths = paths

    def module_of(self, class_type: str) -> str | None:
        return self.modules.get(class_type)

    def pack_path(self, module: str) -> Path | None:
        return self.paths.get(module)


async def test_a_pack_is_named_by_its_remote_and_the_masters_commit(tmp_path: Path) -> None:
    pack = hosted_pack(tmp_path, PACK_SOURCE, "dist_pack")
    locator = Locator({"DistTestSleep": "custom_nodes.dist_pack", "DistTestNoise": "custom_nodes.dist_pack", "KSampler": "nodes"},
                      {"custom_nodes.dist_pack": pack.checkout})

    packs, problems = await packs_for(["DistTestSleep", "DistTestNoise", "KSampler", "Missing"], locator)

    assert packs == [NodePack("dist_pack", ("DistTestNoise", "DistTestSleep"), str(pack.origin), pack.commit,
                              ("the remote is a path on the master; only a machine that sees the same path can clone it",))]
    assert problems == ["node class Missing: the master does not have it either"]


async def test_local_changes_and_unpushed_commits_are_noted(tmp_path: Path) -> None:
    pack = hosted_pack(tmp_path, PACK_SOURCE, "dist_pack")
    (pack.checkout / "__init__.py").write_text("# changed on the master\n")
    git("commit", "-q", "-am", "local only", cwd=pack.checkout)
    (pack.checkout / "__init__.py").write_text("# changed again\n")
    locator = Locator({"X": "custom_nodes.dist_pack"}, {"custom_nodes.dist_pack": pack.checkout})

    [found], _ = await packs_for(["X"], locator)

    assert any("is on no branch of origin" in note for note in found.notes)
    assert any("local changes" in note for note in found.notes)


async def test_a_pack_that_is_not_its_own_checkout_is_a_problem(tmp_path: Path) -> None:
    locator = Locator({"X": "custom_nodes.plain"}, {"custom_nodes.plain": tmp_path})

    [found], _ = await packs_for(["X"], locator)

    assert found.problem is not None and found.remote is None


def test_credentials_never_leave_the_master_in_a_remote_address() -> None:
    url, notes = public_remote("https://user:ghp_secret@github.com/owner/pack.git")

    assert url == "https://github.com/owner/pack.git" and "credentials were taken out" in notes[0]


def test_a_plan_for_any_worker_lists_model_files_without_a_url_as_unresolved() -> None:
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl\\base.safetensors"}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}}}
    source = ModelSource("lora.safetensors", "https://example.com/lora", "loras", None)

    plan = plan_setup("for a test", prompt, [source], [], [], [], None, known_files=set())

    assert plan.models == [source]
    assert plan.unresolved == ["model sdxl/base.safetensors (CheckpointLoaderSimple.ckpt_name, node 1): "
                               "the workflow's model metadata gives no URL for it"]


def test_nothing_in_a_comment_can_start_a_command() -> None:
    plan = SetupPlan("for a test", unresolved=["model x\nrm -rf / #", "y\r\u2028echo owned"])

    script = render_bash(plan)

    assert "\nrm -rf" not in script and "\necho owned" not in script
    assert "# Not resolved" in script


def test_values_are_quoted_for_the_shell() -> None:
    plan = SetupPlan("for a test", [ModelSource("it's.safetensors", "https://example.com/a?b=1&c=2", "loras", None)])

    bash, powershell = render_bash(plan), render_powershell(plan)

    assert "model loras 'it'\"'\"'s.safetensors' 'https://example.com/a?b=1&c=2' ''" in bash
    assert "Get-Model 'loras' 'it''s.safetensors' 'https://example.com/a?b=1&c=2' ''" in powershell


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("curl") is None, reason="needs bash and curl")
def test_the_bash_script_downloads_checks_and_keeps_what_is_there(tmp_path: Path) -> None:
    served = tmp_path / "served"
    good = write_random(served / "good.safetensors", 3 << 20, seed=1)
    write_random(served / "corrupt.safetensors", 1 << 20, seed=2)
    pack = hosted_pack(tmp_path / "master", PACK_SOURCE, "dist_pack")
    worker = tmp_path / "worker"
    (worker / "models" / "loras").mkdir(parents=True)
    (worker / "models" / "loras" / "mine.safetensors").write_bytes(b"the worker's own")
    with file_server(served) as base:
        plan = SetupPlan("for a test", [
            ModelSource("sub/good.safetensors", f"{base}/good.safetensors", "checkpoints", good),
            ModelSource("corrupt.safetensors", f"{base}/corrupt.safetensors", "vae", "0" * 64),
            ModelSource("mine.safetensors", f"{base}/good.safetensors", "loras", good),
        ], [NodePack("dist_pack", ("DistTestSleep",), str(pack.origin), pack.commit)])
        script = tmp_path / "setup-worker.sh"
        script.write_text(render_bash(plan))
        first = subprocess.run(["bash", str(script), str(worker)], capture_output=True, text=True, timeout=120)
        second = subprocess.run(["bash", str(script), str(worker)], capture_output=True, text=True, timeout=120)

    assert first.returncode == 1 and "2 problem(s)" in first.stderr
    assert sha256_file(worker / "models" / "checkpoints" / "sub" / "good.safetensors") == good
    assert "the download does not have the sha256" in first.stderr and not (worker / "models" / "vae" / "corrupt.safetensors").exists()
    assert "not overwritten" in first.stderr and (worker / "models" / "loras" / "mine.safetensors").read_bytes() == b"the worker's own"
    assert git("rev-parse", "HEAD", cwd=worker / "custom_nodes" / "dist_pack") == pack.commit
    assert "ok      checkpoints/sub/good.safetensors" in second.stdout and f"ok      dist_pack at {pack.commit[:12]}" in second.stdout
    assert [p.name for p in (worker / "models" / "vae").iterdir()] == []  # the corrupt download left nothing behind
