"""Candidate validation and the hashes that dedupe trials and key the parent cache."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from search_spaces import SCHEMA_VERSION, Candidate, LayerChoice


def _cnn(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "space": "cnn_small",
        "family": "cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "kernel": 3,
        "layers": [
            {"width": 16, "wbits": 8, "prune": 0.25, "rank": 0.5},
            {"width": 32, "wbits": 4, "prune": 0.0, "rank": 1.0},
        ],
        "head_wbits": 8,
    }
    data.update(overrides)
    return data


def _mlp(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "space": "mlp_small",
        "family": "mlp",
        "input_shape": [64],
        "num_classes": 10,
        "layers": [{"width": 128, "wbits": 8}, {"width": 64, "wbits": 32}],
    }
    data.update(overrides)
    return data


def _with_layer0(**changes: Any) -> dict[str, Any]:
    data = _cnn()
    data["layers"] = [{**data["layers"][0], **changes}, data["layers"][1]]
    return data


def _error_fields(err: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in err.errors()}


@pytest.mark.parametrize("data", [_cnn(), _mlp()], ids=["cnn", "mlp"])
def test_valid_candidate(data: dict[str, Any]) -> None:
    cand = Candidate.model_validate(data)
    assert cand.schema_version == SCHEMA_VERSION
    assert cand.input_shape == tuple(data["input_shape"])
    assert all(isinstance(layer, LayerChoice) for layer in cand.layers)
    assert [layer.width for layer in cand.layers] == [d["width"] for d in data["layers"]]
    assert cand.summary().startswith(cand.family)


def test_summary_shows_every_layer_choice() -> None:
    cand = Candidate.model_validate(_cnn())
    assert cand.summary() == "cnn k3 [16/8b/p0.25/r0.5, 32/4b/p0/r1] head 8b"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (_with_layer0(wbits=3), "layers.0.wbits", "wbits must be one of"),
        (_with_layer0(wbits=64), "layers.0.wbits", "wbits must be one of"),
        (_with_layer0(prune=0.95), "layers.0.prune", "less than or equal to 0.9"),
        (_with_layer0(prune=-0.1), "layers.0.prune", "greater than or equal to 0"),
        (_with_layer0(rank=0.0), "layers.0.rank", "greater than 0"),
        (_with_layer0(rank=1.5), "layers.0.rank", "less than or equal to 1"),
        (_cnn(head_wbits=5), "head_wbits", "head_wbits must be one of"),
        (_cnn(schema_version=SCHEMA_VERSION + 1), "schema_version", "not supported"),
        (_cnn(input_shape=[64]), "", "cnn needs a (C, H, W) input_shape"),
        (_mlp(input_shape=[1, 8, 8]), "", "mlp needs a (features,) input_shape"),
        (_cnn(kernel=4), "", "kernel must be odd"),
        (_cnn(surprise=1), "surprise", "Extra inputs are not permitted"),
        (_with_layer0(dropout=0.1), "layers.0.dropout", "Extra inputs are not permitted"),
    ],
    ids=[
        "wbits3",
        "wbits64",
        "prune-too-high",
        "prune-negative",
        "rank-zero",
        "rank-above-one",
        "head-wbits",
        "schema-version",
        "cnn-flat-shape",
        "mlp-image-shape",
        "even-kernel",
        "extra-key",
        "extra-layer-key",
    ],
)
def test_invalid_candidate_names_the_field(data: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(data)
    assert field in _error_fields(info.value)
    assert message in str(info.value)
    if field:
        assert field in str(info.value)


def test_schema_version_mismatch_mentions_both_versions() -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(_cnn(schema_version=99))
    assert "99" in str(info.value)
    assert f"expected {SCHEMA_VERSION}" in str(info.value)


@pytest.mark.parametrize("shape", [[0], [-64]], ids=["zero", "negative"])
def test_non_positive_input_shape_rejected(shape: list[int]) -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(_mlp(input_shape=shape))
    assert any(f.startswith("input_shape") for f in _error_fields(info.value))


def test_candidate_is_frozen() -> None:
    cand = Candidate.model_validate(_cnn())
    with pytest.raises(ValidationError):
        cand.num_classes = 3  # type: ignore[misc]


@pytest.mark.parametrize("data", [_cnn(), _mlp()], ids=["cnn", "mlp"])
def test_structural_hash_stable_across_json_round_trip(data: dict[str, Any]) -> None:
    cand = Candidate.model_validate(data)
    again = Candidate.model_validate_json(cand.model_dump_json())
    from_dict = Candidate.model_validate(json.loads(json.dumps(data)))
    assert again == cand
    assert again.structural_hash() == cand.structural_hash() == from_dict.structural_hash()
    assert again.arch_hash() == cand.arch_hash()
    assert len(cand.structural_hash()) == 16


def test_structural_hash_treats_int_and_float_spellings_alike() -> None:
    a = Candidate.model_validate(_with_layer0(prune=0, rank=1))
    b = Candidate.model_validate(_with_layer0(prune=0.0, rank=1.0))
    assert a.structural_hash() == b.structural_hash()


def test_structural_hash_ignores_space_name() -> None:
    a = Candidate.model_validate(_cnn(space="cnn_small"))
    b = Candidate.model_validate(_cnn(space="small_joint"))
    assert a.structural_hash() == b.structural_hash()


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize(("key", "value"), [("wbits", 2), ("prune", 0.75), ("rank", 0.125)])
def test_structural_hash_changes_with_any_compression_choice(
    layer: int, key: str, value: float
) -> None:
    base = _cnn()
    changed = _cnn()
    changed["layers"] = [dict(lc) for lc in changed["layers"]]
    changed["layers"][layer][key] = value
    a, b = Candidate.model_validate(base), Candidate.model_validate(changed)
    assert a.structural_hash() != b.structural_hash()
    assert a.arch_hash() == b.arch_hash()


def test_arch_hash_ignores_all_compression_choices() -> None:
    compressed = Candidate.model_validate(_cnn())
    dense = Candidate.model_validate(
        _cnn(
            space="small_joint",
            head_wbits=32,
            layers=[{"width": 16}, {"width": 32}],
        )
    )
    assert compressed.arch_hash() == dense.arch_hash()
    assert compressed.structural_hash() != dense.structural_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"layers": [{"width": 24}, {"width": 32}]},
        {"layers": [{"width": 16}]},
        {"kernel": 5},
        {"num_classes": 5},
        {"input_shape": [3, 8, 8]},
    ],
    ids=["width", "depth", "kernel", "classes", "channels"],
)
def test_arch_hash_changes_with_architecture(change: dict[str, Any]) -> None:
    a = Candidate.model_validate(_cnn())
    b = Candidate.model_validate(_cnn(**change))
    assert a.arch_hash() != b.arch_hash()


def test_mlp_kernel_does_not_change_structural_hash() -> None:
    a = Candidate.model_validate(_mlp(kernel=3))
    b = Candidate.model_validate(_mlp(kernel=5))
    assert a.arch_hash() == b.arch_hash()
    assert a.structural_hash() == b.structural_hash()
