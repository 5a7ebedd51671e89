"""Distributed Value: share k gets item k, whatever GPU runs it."""

from __future__ import annotations

import pytest

from distributed.errors import PlanError
from distributed.jobs.plan import plan
from distributed.jobs.values import ValueList, value_list


def _prompt(values: str = "1.5\n2.5\n7", value_type: str = "FLOAT", past_end: str = "cycle", split: bool = False) -> dict:
    return {
        "1": {"class_type": "DistributedValue", "inputs": {"values": values, "type": value_type, "past_end": past_end}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "3": {"class_type": "KSamplerLike", "inputs": {"cfg": ["1", 0], "latent": ["2", 0]}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0], "split_batch": split}},
    }


def test_share_k_gets_item_k_as_a_literal_and_no_value_node() -> None:
    shares = plan(_prompt())
    assert [shares.share_prompt(k)["3"]["inputs"]["cfg"] for k in (1, 2)] == [2.5, 7.0]
    assert "1" not in shares.share_prompt(1)


def test_past_the_end_cycles_or_repeats_the_last() -> None:
    assert [ValueList((1, 2, 3), "cycle").for_share(k) for k in range(5)] == [1, 2, 3, 1, 2]
    assert [ValueList((1, 2, 3), "repeat_last").for_share(k) for k in range(5)] == [1, 2, 3, 3, 3]


def test_split_batch_gives_every_share_item_zero() -> None:
    shares = plan(_prompt(split=True))
    assert shares.share_prompt(2)["3"]["inputs"]["cfg"] == 1.5


def test_types_are_parsed_and_strings_kept_as_typed() -> None:
    assert value_list("3\n 4 \n\n", "INT", "cycle", "n").items == (3, 4)
    assert value_list(" a cat\n\na dog ", "STRING", "cycle", "n").items == (" a cat", "", "a dog ")
    assert value_list("euler\ndpmpp_2m", "COMBO", "cycle", "n").items == ("euler", "dpmpp_2m")


@pytest.mark.parametrize(("values", "value_type", "past_end", "why"), [
    ("1\ntwo", "INT", "cycle", "line 2 ('two') is not INT"),
    ("nan", "FLOAT", "cycle", "line 1 ('nan') is not FLOAT"),
    ("", "STRING", "cycle", "holds no value"),
    ("1", "BOOL", "cycle", "'type' must be one of"),
    ("1", "INT", "wrap", "'past_end' must be one of"),
])
def test_a_bad_list_is_refused_naming_the_node_and_line(values: str, value_type: str, past_end: str, why: str) -> None:
    with pytest.raises(PlanError) as raised:
        plan(_prompt(values, value_type, past_end))
    assert "Distributed Value (node 1)" in str(raised.value) and why in str(raised.value)


def test_a_wired_values_input_is_refused() -> None:
    prompt = _prompt()
    prompt["1"]["inputs"]["values"] = ["9", 0]
    with pytest.raises(PlanError, match="cannot be wired"):
        plan(prompt)
