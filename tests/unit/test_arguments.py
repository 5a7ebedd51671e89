"""extra_args as ComfyUI's own parser reads them: one reading for the API's check and for the launch."""

from __future__ import annotations

import argparse

import pytest

from distributed.errors import ConfigError
from distributed.workers.local.arguments import ALLOWED_FLAGS, Argument, ArgumentReader, value_of


@pytest.fixture
def reader(comfy_parser: argparse.ArgumentParser) -> ArgumentReader:
    return ArgumentReader(comfy_parser)


def refusal(reader: ArgumentReader, extra_args: str, stored: str = "") -> str:
    with pytest.raises(ConfigError) as raised:
        reader.check_added(extra_args, stored)
    assert raised.value.field == "extra_args"
    return str(raised.value)


def test_flags_and_values_are_read_as_comfyui_reads_them(reader: ArgumentReader) -> None:
    assert reader.read("--lowvram --preview-method auto --reserve-vram=1.5 --fast fp16_accumulation") == (
        Argument("--lowvram"), Argument("--preview-method", ("auto",)), Argument("--reserve-vram", ("1.5",)),
        Argument("--fast", ("fp16_accumulation",)),
    )


def test_an_optional_value_is_taken_only_when_given(reader: ArgumentReader) -> None:
    assert value_of(reader.read("--listen --cpu"), "--listen") == ()
    assert value_of(reader.read("--listen 10.0.0.1 --cpu"), "--listen") == ("10.0.0.1",)


@pytest.mark.parametrize(("extra_args", "why"), [
    ("--i /", "not a whole ComfyUI flag"),                                # argparse would read --input-directory
    ("--output-dir /etc", "not a whole ComfyUI flag"),
    ("--por 9000", "not a whole ComfyUI flag"),                           # argparse would read --port
    ("--lowvram /tmp/evil.yaml", "'/tmp/evil.yaml' is not a flag"),       # would join a list flag before it
    ("--cpu ; touch /tmp/owned", "';' is not a flag"),
    ("--port 9000", "port field"),
    ("--cuda-device 1", "cuda_device field"),
    ("--preview-method sometimes", "takes one of"),
    ("--reserve-vram lots", "does not take 'lots'"),
    ("--lowvram=yes", "takes no value"),
    ("--preview-method", "needs a value"),
    ("--lowvram 'unclosed", "cannot be parsed"),
    ("--no-such-flag", "not a ComfyUI flag"),
])
def test_unclear_extra_args_are_refused_naming_the_word(reader: ArgumentReader, extra_args: str, why: str) -> None:
    with pytest.raises(ConfigError) as raised:
        reader.read(extra_args)
    assert why in str(raised.value) and raised.value.field == "extra_args"


@pytest.mark.parametrize("extra_args", [
    "--output-directory /etc",
    "--input-directory=/",
    "--extra-model-paths-config /tmp/evil.yaml",
    "--user-directory /root",
    "--front-end-root /",
    "--front-end-version Comfy-Org/ComfyUI_frontend@latest",
    "--database-url sqlite:////etc/x.db",
    "--listen 0.0.0.0",
    "--enable-cors-header",
    "--tls-keyfile /etc/ssl/private/key.pem",
    "--comfy-api-base http://evil.example",
])
def test_the_api_may_not_add_a_flag_outside_the_allowlist(reader: ArgumentReader, extra_args: str) -> None:
    assert "hand edit of workers.json" in refusal(reader, extra_args)


def test_every_allowed_flag_is_one_comfyui_knows(comfy_parser: argparse.ArgumentParser) -> None:
    known = {option for action in comfy_parser._actions for option in action.option_strings}
    assert ALLOWED_FLAGS <= known


def test_tuning_flags_pass_the_api(reader: ArgumentReader) -> None:
    assert reader.check_added("--lowvram --preview-method auto --fp16-vae --use-pytorch-cross-attention")


def test_a_flag_written_by_hand_is_kept_when_the_api_leaves_it_as_is(reader: ArgumentReader) -> None:
    stored = "--output-directory /data/out --lowvram"
    assert reader.check_added("--lowvram --output-directory /data/out --preview-method auto", stored)


def test_a_flag_written_by_hand_cannot_be_redirected_through_the_api(reader: ArgumentReader) -> None:
    refusal(reader, "--output-directory /etc", "--output-directory /data/out")
