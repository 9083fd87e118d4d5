"""Candidate validation and the upgrade of version-1 candidates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from search_spaces import SCHEMA_VERSION, Candidate, Compression, Stage
from tests.search_spaces.factories import cnn, mbv2, mlp, resnet, v1_cnn, with_stage0


def _error_fields(err: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in err.errors()}


ALL = [cnn(), mlp(), mbv2(), resnet()]
IDS = ["cnn", "mlp", "mbv2", "resnet"]


@pytest.mark.parametrize("data", ALL, ids=IDS)
def test_valid_candidate(data: dict[str, Any]) -> None:
    cand = Candidate.model_validate(data)
    assert cand.schema_version == SCHEMA_VERSION == 3
    assert cand.input_shape == tuple(data["input_shape"])
    assert all(isinstance(stage, Stage) for stage in cand.stages)
    assert [s.width for s in cand.stages] == [d["width"] for d in data["stages"]]
    assert cand.block_count() == sum(d.get("depth", 1) for d in data["stages"])
    assert cand.summary().startswith(cand.family)


def test_per_block_compression_overrides_the_stage() -> None:
    cand = Candidate.model_validate(resnet())
    plain, mixed = cand.stages
    assert plain.block(1) == Compression()  # the stage's own (defaults)
    assert mixed.block(0) == Compression(wbits=4, prune=0.5)
    assert mixed.block(1) == Compression(wbits=8, abits=8, rank=0.5)


def test_summary_shows_every_stage() -> None:
    assert (
        Candidate.model_validate(cnn()).summary()
        == "cnn [16 k3 w8a8 p0.25 r0.5, 32 k3 w4a32 p0 r1] head w8a32"
    )
    assert (
        Candidate.model_validate(mbv2()).summary()
        == "mbv2 [2x24 k3 e4 w8a8 p0 r1, 3x32 k3 e6 w32a32 p0.25 r0.5] head w8a32"
    )
    assert Candidate.model_validate(resnet()).summary().startswith("resnet [2x16 k3 w32a32")
    assert "2x32 k3 mixed" in Candidate.model_validate(resnet()).summary()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (with_stage0(wbits=3), "stages.0.wbits", "wformat 'int' stores [2, 4, 8]"),
        (with_stage0(wbits=64), "stages.0.wbits", "wbits must be one of"),
        (with_stage0(abits=4), "stages.0.abits", "abits must be one of"),
        (with_stage0(prune=0.95), "stages.0.prune", "less than or equal to 0.9"),
        (with_stage0(prune=-0.1), "stages.0.prune", "greater than or equal to 0"),
        (with_stage0(rank=0.0), "stages.0.rank", "greater than 0"),
        (with_stage0(rank=1.5), "stages.0.rank", "less than or equal to 1"),
        (with_stage0(depth=0), "stages.0.depth", "greater than or equal to 1"),
        (with_stage0(stride=3), "stages.0.stride", "less than or equal to 2"),
        (with_stage0(kernel=4), "stages.0", "kernel must be odd"),
        (cnn(head_wbits=5), "head_wbits", "wbits must be one of"),
        (cnn(head_abits=4), "head_abits", "abits must be one of"),
        (cnn(schema_version=SCHEMA_VERSION + 1), "schema_version", "not supported"),
        (cnn(input_shape=[64]), "", "cnn needs a (C, H, W) input_shape"),
        (mlp(input_shape=[1, 8, 8]), "", "mlp needs a (features,) input_shape"),
        (mbv2(stem_width=None), "", "mbv2 needs stem_width"),
        (resnet(stem_width=None), "", "resnet needs stem_width"),
        (
            cnn(family="vit"),
            "family",
            "Input should be 'cnn', 'mlp', 'mbv2', 'resnet' or 'network'",
        ),
        (cnn(stages=[]), "stages", "at least 1 item"),
        (cnn(surprise=1), "surprise", "Extra inputs are not permitted"),
        (with_stage0(dropout=0.1), "stages.0.dropout", "Extra inputs are not permitted"),
        (
            with_stage0(resnet(), blocks=[{"wbits": 4}]),
            "stages.0",
            "blocks has 1 entries for depth 2",
        ),
        (
            with_stage0(resnet(), depth=1, blocks=[{"wbits": 4}, {"wbits": 8}]),
            "stages.0",
            "blocks has 2 entries for depth 1",
        ),
        (
            with_stage0(resnet(), blocks=[{"wbits": 4}, {"wbits": 7}]),
            "stages.0.blocks.1.wbits",
            "wbits must be one of",
        ),
    ],
    ids=[
        "wbits3",
        "wbits64",
        "abits4",
        "prune-too-high",
        "prune-negative",
        "rank-zero",
        "rank-above-one",
        "depth-zero",
        "stride3",
        "even-kernel",
        "head-wbits",
        "head-abits",
        "schema-version",
        "cnn-flat-shape",
        "mlp-image-shape",
        "mbv2-no-stem",
        "resnet-no-stem",
        "unknown-family",
        "no-stages",
        "extra-key",
        "extra-stage-key",
        "blocks-shorter-than-depth",
        "blocks-longer-than-depth",
        "bad-block-bits",
    ],
)
def test_invalid_candidate_names_the_field(data: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(data)
    fields = _error_fields(info.value)
    assert any(f == field or f.startswith(f"{field}.") for f in fields), fields
    assert message in str(info.value)
    if field:
        assert field in str(info.value)


def test_schema_version_mismatch_mentions_both_versions() -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(cnn(schema_version=99))
    assert "99" in str(info.value)
    assert f"expected {SCHEMA_VERSION}" in str(info.value)


@pytest.mark.parametrize("shape", [[0], [-64]], ids=["zero", "negative"])
def test_non_positive_input_shape_rejected(shape: list[int]) -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(mlp(input_shape=shape))
    assert any(f.startswith("input_shape") for f in _error_fields(info.value))


def test_candidate_is_frozen() -> None:
    cand = Candidate.model_validate(cnn())
    with pytest.raises(ValidationError):
        cand.num_classes = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cand.stages[0].width = 3  # type: ignore[misc]


# --- version 1 ----------------------------------------------------------------------------


def test_v1_json_upgrades_to_stages() -> None:
    cand = Candidate.model_validate_json(json.dumps(v1_cnn()))
    assert cand.schema_version == SCHEMA_VERSION
    assert [s.width for s in cand.stages] == [16, 32, 48]
    assert all(s.depth == 1 and s.kernel == 5 for s in cand.stages)
    # v1 pooled after the first two layers while the map was at least 4 wide: 8 -> 4 -> 2
    assert [s.stride for s in cand.stages] == [2, 2, 1]
    assert (cand.stages[0].wbits, cand.stages[0].prune, cand.stages[0].rank) == (8, 0.25, 0.5)
    assert cand.stages[2].block(0) == Compression()
    assert cand.stages[0].abits == 32 and cand.head_abits == 32  # v1 had float activations
    # written back, it is a current candidate
    dumped = json.loads(cand.model_dump_json())
    assert dumped["schema_version"] == SCHEMA_VERSION and "layers" not in dumped
    assert Candidate.model_validate(dumped) == cand


def _v2_equivalent_of_v1_cnn() -> Candidate:
    return Candidate(
        space="cnn_small",
        family="cnn",
        input_shape=(1, 8, 8),
        num_classes=10,
        stages=(
            Stage(width=16, kernel=5, stride=2, wbits=8, prune=0.25, rank=0.5),
            Stage(width=32, kernel=5, stride=2, wbits=4),
            Stage(width=48, kernel=5),
        ),
        head_wbits=8,
    )


def test_v1_candidate_hashes_like_its_v2_equivalent() -> None:
    old = Candidate.model_validate_json(json.dumps(v1_cnn()))
    new = _v2_equivalent_of_v1_cnn()
    assert old == new
    assert old.structural_hash() == new.structural_hash()
    assert old.arch_hash() == new.arch_hash()


def test_v1_small_image_and_mlp_upgrades() -> None:
    small = Candidate.model_validate(v1_cnn(input_shape=[1, 4, 4]))
    assert [s.stride for s in small.stages] == [2, 1, 1]  # 4 -> 2, then too small to pool
    flat = Candidate.model_validate(
        {
            "schema_version": 1,
            "space": "mlp_small",
            "family": "mlp",
            "input_shape": [64],
            "num_classes": 10,
            "kernel": 3,
            "layers": [{"width": 128, "wbits": 8}, {"width": 64}],
        }
    )
    assert Candidate.model_validate(mlp(stages=[{"width": 128, "wbits": 8}, {"width": 64}])) == flat
    assert all(s.stride == 1 for s in flat.stages)


def test_v1_without_layers_is_refused() -> None:
    data = cnn(schema_version=1)
    with pytest.raises(ValidationError, match="schema_version 1 is not supported"):
        Candidate.model_validate(data)


def _v2(**stage0: Any) -> dict[str, Any]:
    data = cnn(schema_version=2)
    data["stages"] = [{**data["stages"][0], **stage0}, data["stages"][1]]
    return data


def test_v2_two_bit_layers_upgrade_to_ternary_by_name() -> None:
    """Schema 2's ``wbits: 2`` computed {-1, 0, 1} x scale: ternary, now called so."""
    cand = Candidate.model_validate(_v2(wbits=2))
    assert cand.schema_version == SCHEMA_VERSION
    assert (cand.stages[0].wbits, cand.stages[0].wformat) == (2, "ternary")
    assert (cand.stages[1].wbits, cand.stages[1].wformat) == (4, "int")
    blocks = (
        Candidate.model_validate(
            with_stage0(resnet(schema_version=2), blocks=[{"wbits": 2}, {"wbits": 8}])
        )
        .stages[0]
        .blocks
    )
    assert blocks is not None and [b.wformat for b in blocks] == ["ternary", "int"]
    # a schema-3 ``wbits: 2`` is the true 2-bit integer code
    assert Candidate.model_validate(cnn(schema_version=3)).stages[0].wformat == "int"


def test_v2_hashes_survive_the_upgrade_where_nothing_changed() -> None:
    """Fields schema 3 added are left out of the hash where they hold schema 2's meaning."""
    v2 = Candidate.model_validate(_v2())
    v3 = Candidate.model_validate(cnn(schema_version=3))
    assert v2 == v3 and v2.structural_hash() == v3.structural_hash()
    sparse = Candidate.model_validate(with_stage0(cnn(), sparsity=0.5))
    assert sparse.structural_hash() != v3.structural_hash()
    named = Candidate.model_validate(with_stage0(cnn(), wbits=2, wformat="ternary"))
    assert (
        named.structural_hash()
        != Candidate.model_validate(with_stage0(cnn(), wbits=2)).structural_hash()
    )


@pytest.mark.parametrize(
    ("stage0", "field", "message"),
    [
        ({"wbits": 4, "wformat": "ternary"}, "wbits", "wformat 'ternary' stores [2]"),
        ({"wbits": 2, "wformat": "binary"}, "wbits", "wformat 'binary' stores [1]"),
        ({"wbits": 16, "wformat": "kmeans"}, "wbits", "wformat 'kmeans' stores"),
        ({"wbits": 8, "wformat": "float"}, "wbits", "wformat 'float' stores [16, 32]"),
        ({"wbits": 1, "sparsity": 0.5}, "sparsity", "binary weights have no zero"),
        ({"wformat": "hashing"}, "wformat", "Input should be"),
        ({"sparsity": 0.99}, "sparsity", "less than or equal to 0.95"),
    ],
)
def test_bad_weight_codes_name_the_field(stage0: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Candidate.model_validate(with_stage0(cnn(), **stage0))
    assert f"stages.0.{field}" in _error_fields(info.value)
    assert message in str(info.value)


def test_v2_ternary_head_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="head_wbits 2"):
        Candidate.model_validate(cnn(schema_version=2, head_wbits=2))


def test_distill_is_validated_and_hashed() -> None:
    with_kd = Candidate.model_validate(cnn(distill={"alpha": 0.9, "relation": 1000.0}))
    assert with_kd.distill is not None and with_kd.distill.temperature == 4.0
    assert with_kd.structural_hash() != Candidate.model_validate(cnn()).structural_hash()
    with pytest.raises(ValidationError, match="distill.alpha"):
        Candidate.model_validate(cnn(distill={"alpha": 1.5}))
