"""Per-share values (the Distributed Value node): share k gets item k of a list the user typed.

An X/Y exploration across GPUs: a different prompt, cfg, LoRA strength or sampler per share. The
values are keyed by share, not by worker, so which GPU ran a share never changes what it rendered,
and the collector's batch keeps share order: item k's images sit at a known place. The master's own
share gets item 0. In split-batch mode every share renders slices of one single-instance batch, so
every share gets item 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import PlanError

VALUE_CLASS = "DistributedValue"
VALUE_TYPES = ("INT", "FLOAT", "STRING", "COMBO")
PAST_END = ("cycle", "repeat_last")
MAX_VALUES = 256
MAX_VALUE_LENGTH = 10_000

Value = int | float | str


@dataclass(frozen=True)
class ValueList:
    """One Distributed Value node's items, and what a share past the end gets."""

    items: tuple[Value, ...]
    past_end: str = "cycle"

    def for_share(self, share_index: int) -> Value:
        if self.past_end == "repeat_last":
            return self.items[min(share_index, len(self.items) - 1)]
        return self.items[share_index % len(self.items)]


def parse_item(line: str, value_type: str) -> Value:
    """One line as the node's type; ValueError when it is not one."""
    if value_type == "INT":
        return int(line)
    if value_type == "FLOAT":
        number = float(line)
        if not math.isfinite(number):
            raise ValueError(f"{line!r} is not a finite number")
        return number
    return line


def value_list(values: Any, value_type: Any, past_end: Any, where: str) -> ValueList:
    """The node's inputs as a ValueList; PlanError (naming `where`, the node) on anything unclear.

    STRING keeps every line as typed; the other types ignore blank lines and surrounding spaces.
    """
    if value_type not in VALUE_TYPES:
        raise PlanError(f"{where}: 'type' must be one of {', '.join(VALUE_TYPES)}")
    if past_end not in PAST_END:
        raise PlanError(f"{where}: 'past_end' must be one of {', '.join(PAST_END)}")
    if not isinstance(values, str):
        raise PlanError(f"{where}: 'values' must be text, one value per line (it cannot be wired from another node)")
    lines = values.splitlines() if value_type == "STRING" else [line.strip() for line in values.splitlines() if line.strip()]
    if not lines:
        raise PlanError(f"{where}: 'values' holds no value; write one per line")
    if len(lines) > MAX_VALUES or any(len(line) > MAX_VALUE_LENGTH for line in lines):
        raise PlanError(f"{where}: at most {MAX_VALUES} values of up to {MAX_VALUE_LENGTH} characters each")
    items = []
    for number, line in enumerate(lines, start=1):
        try:
            items.append(parse_item(line, value_type))
        except ValueError:
            raise PlanError(f"{where}: line {number} ({line[:40]!r}) is not {value_type}") from None
    return ValueList(tuple(items), past_end)
