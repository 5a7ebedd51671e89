"""A local worker's `extra_args`, read the way ComfyUI's own argument parser reads them.

One reading serves both the API (which flags a request may add) and the launcher (the argv it
builds), so the two can never disagree about what a word means. ComfyUI's parser (`comfy.cli_args`)
is handed in by the composition root; this module only asks it which flags exist and how many
values each takes. Where argparse is lenient, this reading is strict:

- a flag must be spelled out in full: argparse would expand `--i` to `--input-directory` and `--por`
  to `--port`, silently;
- every word must belong to a flag: a bare word would land as one more value of whatever flag came
  before it (`--extra-model-paths-config` takes several);
- each value is checked against the flag's type and choices.

What a worker may be given at all is `ALLOWED_FLAGS`: tuning flags that change how it computes,
never where it reads or writes files, which network it listens on, or which code it loads. Flags
outside it can still come from a hand edit of workers.json (the file's owner is trusted), and the
API keeps them as long as a change leaves them as they are (`check_added`).
"""

from __future__ import annotations

import argparse
import difflib
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import ConfigError

FIELD = "extra_args"
MANAGED_FLAGS = {
    "--port": "set the port in the worker's port field",
    "--cuda-device": "set the GPU in the worker's cuda_device field",
}
"""Flags the master sets from the worker's own fields; extra_args may not set them at all."""
ALLOWED_FLAGS = frozenset({
    "--cpu", "--directml", "--oneapi-device-selector", "--disable-ipex-optimize", "--supports-fp8-compute",
    "--cuda-malloc", "--disable-cuda-malloc", "--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram",
    "--reserve-vram", "--async-offload", "--disable-async-offload", "--force-non-blocking", "--disable-smart-memory",
    "--disable-pinned-memory", "--mmap-torch-files", "--disable-mmap",
    "--force-fp32", "--force-fp16", "--fp32-unet", "--fp64-unet", "--bf16-unet", "--fp16-unet", "--fp8_e4m3fn-unet",
    "--fp8_e5m2-unet", "--fp8_e8m0fnu-unet", "--fp16-vae", "--fp32-vae", "--bf16-vae", "--cpu-vae",
    "--fp8_e4m3fn-text-enc", "--fp8_e5m2-text-enc", "--fp16-text-enc", "--fp32-text-enc", "--bf16-text-enc",
    "--force-channels-last", "--use-split-cross-attention", "--use-quad-cross-attention", "--use-pytorch-cross-attention",
    "--use-sage-attention", "--use-flash-attention", "--disable-xformers", "--force-upcast-attention",
    "--dont-upcast-attention", "--fast", "--deterministic", "--default-hashing-function",
    "--cache-classic", "--cache-lru", "--cache-none", "--cache-ram",
    "--preview-method", "--preview-size", "--verbose", "--log-stdout", "--dont-print-server", "--disable-metadata",
    "--disable-api-nodes", "--enable-compress-response-body", "--max-upload-size",
})
"""Flags the API accepts in extra_args. Left out on purpose: anything naming a folder, file or URL
(they would point a worker's /view and /upload at other places, or load other code), --listen and
--enable-cors-header (they open a worker to the network or to every web page: a worker's network
exposure is its own explicit setting), --front-end-version (downloads a frontend), --multi-user,
--auto-launch and the custom-node switches."""


@dataclass(frozen=True)
class Argument:
    """One flag of extra_args with its values, as ComfyUI's parser will see it."""

    flag: str
    values: tuple[str, ...] = ()

    def words(self) -> list[str]:
        """The argv words: a single value travels as `--flag=value`, so nothing can add to it."""
        if len(self.values) == 1:
            return [f"{self.flag}={self.values[0]}"]
        return [self.flag, *self.values]

    def __str__(self) -> str:
        return shlex.join(self.words())


class ArgumentReader:
    """Reads extra_args with one ComfyUI argument parser."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._actions = {option: action for action in parser._actions for option in action.option_strings}

    def read(self, extra_args: str, worker_name: str = "") -> tuple[Argument, ...]:
        """The flags of `extra_args` with their values; ConfigError (field extra_args) on anything unclear."""
        where = f"worker '{worker_name}': " if worker_name else ""
        try:
            words = shlex.split(extra_args)
        except ValueError as error:
            raise ConfigError(f"{where}{FIELD}: cannot be parsed ({error})", field=FIELD) from None
        arguments: list[Argument] = []
        position = 0
        while position < len(words):
            word = words[position]
            position += 1
            flag, has_inline, inline = word.partition("=")
            if not flag.startswith("-"):
                raise ConfigError(f"{where}{FIELD}: '{word}' is not a flag; extra_args holds ComfyUI flags and their values only",
                                  field=FIELD)
            action = self._actions.get(flag)
            if action is None:
                raise ConfigError(f"{where}{FIELD}: {self._unknown(flag)}", field=FIELD)
            if flag in MANAGED_FLAGS:
                raise ConfigError(f"{where}{FIELD}: {MANAGED_FLAGS[flag]}, not {flag} in extra_args", field=FIELD)
            values, position = self._values(action, flag, inline if has_inline else None, words, position, where)
            arguments.append(Argument(flag, values))
        return tuple(arguments)

    def _values(self, action: argparse.Action, flag: str, inline: str | None, words: list[str], position: int,
                where: str) -> tuple[tuple[str, ...], int]:
        nargs = action.nargs
        if nargs == 0:
            if inline is not None:
                raise ConfigError(f"{where}{FIELD}: {flag} takes no value", field=FIELD)
            return (), position
        if inline is not None:
            values: list[str] = [inline]
        else:
            values = []
            wanted = 1 if nargs is None else nargs if isinstance(nargs, int) else None
            while position < len(words) and not words[position].startswith("-") and (wanted is None or len(values) < wanted):
                values.append(words[position])
                position += 1
                if nargs == "?":
                    break
        if (nargs is None and len(values) != 1) or (isinstance(nargs, int) and len(values) != nargs) or (nargs == "+" and not values):
            raise ConfigError(f"{where}{FIELD}: {flag} needs a value", field=FIELD)
        for value in values:
            self._check_value(action, flag, value, where)
        return tuple(values), position

    @staticmethod
    def _check_value(action: argparse.Action, flag: str, value: str, where: str) -> None:
        try:
            converted = action.type(value) if callable(action.type) else value
        except (TypeError, ValueError):
            raise ConfigError(f"{where}{FIELD}: {flag} does not take '{value}'", field=FIELD) from None
        choices = action.choices
        if choices is not None and converted not in choices and value not in choices:
            raise ConfigError(f"{where}{FIELD}: {flag} takes one of {', '.join(map(str, choices))}, not '{value}'", field=FIELD)

    def _unknown(self, flag: str) -> str:
        spelled_out = [option for option in self._actions if option.startswith(flag) and option.startswith("--")]
        if spelled_out:
            return f"{flag} is not a whole ComfyUI flag; write it out in full ({', '.join(sorted(spelled_out)[:3])})"
        close = difflib.get_close_matches(flag, list(self._actions), n=1)
        return f"{flag} is not a ComfyUI flag" + (f" (did you mean {close[0]}?)" if close else "")

    def check_added(self, extra_args: str, stored: str = "") -> tuple[Argument, ...]:
        """Reads extra_args given through the API: flags outside ALLOWED_FLAGS may only be ones the
        stored value (a hand edit of workers.json) already has, with the same values."""
        arguments = self.read(extra_args)
        kept = set(self.read(stored)) if stored else set()
        refused = [argument for argument in arguments if argument.flag not in ALLOWED_FLAGS and argument not in kept]
        if refused:
            named = ", ".join(str(argument) for argument in refused)
            raise ConfigError(
                f"{FIELD}: {named} cannot be set through the API: only tuning flags can (see docs/local-gpus.md); "
                "a flag that names a folder, a file or an address, or opens the worker to the network, needs a hand edit of workers.json",
                field=FIELD,
            )
        return arguments


def value_of(arguments: Iterable[Argument], flag: str) -> tuple[str, ...] | None:
    """The values of the last `flag` among `arguments` (() for a flag given bare), or None when absent."""
    found = None
    for argument in arguments:
        if argument.flag == flag:
            found = argument.values
    return found
