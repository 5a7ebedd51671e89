"""The Distributed Value node: one value per share, from a list typed into the node."""

from __future__ import annotations

from typing import Any

from ..errors import PlanError
from ..jobs.values import PAST_END, VALUE_TYPES, value_list


class AnyType(str):
    """A type that ComfyUI's validation takes for any other ("*" equals everything), so the value can
    feed an INT, FLOAT, STRING or COMBO input; the node's own `type` says which it produces."""

    def __ne__(self, other: object) -> bool:
        return False


ANY = AnyType("*")


class DistributedValue:
    """Share k renders with item k of `values` (the master's own share with item 0).

    On a worker the node never runs: the planner writes share k's value into its prompt as a
    literal, as it does with seeds. Here, on the master, it gives item 0.
    """

    DESCRIPTION = ("One value per share, for an X/Y exploration across GPUs: share k gets line k of 'values' "
                   "(the master's share gets the first). Wire 'value' into any input of the chosen type.")
    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("value",)
    FUNCTION = "value"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "values": ("STRING", {"multiline": True, "default": "", "tooltip": "One value per line; share k gets line k."}),
            "type": (list(VALUE_TYPES), {"default": "STRING",
                                         "tooltip": "What the lines are. COMBO: names of the choices of the input it feeds."}),
            "past_end": (list(PAST_END), {"default": "cycle",
                                          "tooltip": "Shares past the last line: start again at the first, or keep the last."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def value(self, values: str, type: str, past_end: str, unique_id: str | None = None) -> tuple[Any]:
        try:
            items = value_list(values, type, past_end, f"Distributed Value (node {unique_id})")
        except PlanError as error:
            raise ValueError(str(error)) from None
        return (items.for_share(0),)
