"""Spec types: validation errors name the field, JSON round trip, canonical hash."""

import copy
import json

import pytest
from pydantic import ValidationError

from search_space import PRESETS, ArchSpec, SpaceViolation, baseline, spec_hash

GOOD = {
    "block": {
        "d_model": 128,
        "norm": "rmsnorm",
        "layers": [
            {"kind": "attention", "heads": 4, "head_dim": 32},
            {"kind": "ffn", "hidden": 256, "activation": "gelu"},
            {
                "kind": "moe",
                "hidden": 256,
                "num_experts": 8,
                "gating": "top2",
                "capacity_factor": 2.0,
                "activation": "reglu",
            },
        ],
    },
    "repeats": 1,
    "vocab_size": 256,
    "seq_len": 64,
}


def with_change(path: str, value):
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


BAD = [
    ("block.layers.0.heads", 0, "block.layers.0.attention.heads"),
    ("block.layers.0.heads", "4", "block.layers.0.attention.heads"),
    ("block.layers.0.head_dim", 4.5, "block.layers.0.attention.head_dim"),
    ("block.layers.0.kind", "conv", "block.layers.0"),
    ("block.layers.1.activation", "tanh", "block.layers.1.ffn.activation"),
    ("block.layers.1.hidden", 10**9, "block.layers.1.ffn.hidden"),
    ("block.layers.2.capacity_factor", 0, "block.layers.2.moe.capacity_factor"),
    ("block.layers.2.capacity_factor", -1.0, "block.layers.2.moe.capacity_factor"),
    ("block.layers.2.capacity_factor", float("nan"), "block.layers.2.moe.capacity_factor"),
    ("block.layers.2.capacity_factor", "2", "block.layers.2.moe.capacity_factor"),
    ("block.layers.2.gating", "top3", "block.layers.2.moe.gating"),
    ("block.layers.2.num_experts", 0, "block.layers.2.moe.num_experts"),
    ("block.layers", [], "block.layers"),
    ("block.layers", [GOOD["block"]["layers"][0]] * 65, "block.layers"),
    ("block.d_model", 10**7, "block.d_model"),
    ("block.d_model", 128.0, "block.d_model"),
    ("block.norm", "batchnorm", "block.norm"),
    ("repeats", 0, "repeats"),
    ("repeats", "2", "repeats"),
    ("vocab_size", 1, "vocab_size"),
    ("seq_len", 0, "seq_len"),
    ("tied_embeddings", "yes", "tied_embeddings"),
    ("positions", "alibi", "positions"),
    ("schema_version", 2, "schema_version"),
    ("colour", "red", "colour"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD)
def test_bad_spec_names_the_field(path, value, field):
    with pytest.raises(ValidationError) as info:
        ArchSpec.model_validate(with_change(path, value))
    locations = [".".join(str(p) for p in error["loc"]) for error in info.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


def test_good_spec_round_trips_through_json():
    spec = ArchSpec.model_validate(GOOD)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert hash(again) == hash(spec)
    assert again.schema_version == 1
    assert json.loads(spec.to_json())["block"]["layers"][2]["capacity_factor"] == 2.0


def test_hash_ignores_key_order_and_int_vs_float_capacity():
    spec = ArchSpec.model_validate(GOOD)
    reordered = json.loads(spec.to_json(), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert list(reordered) != list(json.loads(spec.to_json()))
    assert spec_hash(ArchSpec.model_validate(reordered)) == spec_hash(spec)
    as_int = with_change("block.layers.2.capacity_factor", 2)
    assert spec_hash(ArchSpec.model_validate(as_int)) == spec_hash(spec)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("block.layers.0.heads", 5),
        ("block.layers.2.capacity_factor", 3.0),
        ("repeats", 3),
        ("block.norm", "layernorm"),
        ("tied_embeddings", False),
    ],
)
def test_hash_changes_with_any_field(path, value):
    assert spec_hash(ArchSpec.model_validate(with_change(path, value))) != spec_hash(
        ArchSpec.model_validate(GOOD)
    )


def test_space_check_names_the_field():
    space = PRESETS["proxy-cpu"]
    spec = ArchSpec.model_validate(with_change("block.layers.0.heads", 5))
    with pytest.raises(SpaceViolation) as info:
        space.check(spec)
    assert info.value.field == "block.layers.0.heads"
    assert "allowed" in str(info.value)
    assert space.contains(ArchSpec.model_validate(GOOD))
    too_long = baseline("glam", PRESETS["paper"])
    problems = dict(space.violations(too_long))
    assert {"block.d_model", "vocab_size", "seq_len", "repeats"} <= set(problems)
