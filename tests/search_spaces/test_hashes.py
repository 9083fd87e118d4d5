"""The hashes that dedupe trials (structural) and key the trained-parent cache (arch)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from search_spaces import Candidate
from tests.search_spaces.factories import cnn, mbv2, mlp, resnet, with_stage0

ALL = [cnn(), mlp(), mbv2(), resnet()]
IDS = ["cnn", "mlp", "mbv2", "resnet"]


@pytest.mark.parametrize("data", ALL, ids=IDS)
def test_structural_hash_stable_across_json_round_trip(data: dict[str, Any]) -> None:
    cand = Candidate.model_validate(data)
    again = Candidate.model_validate_json(cand.model_dump_json())
    from_dict = Candidate.model_validate(json.loads(json.dumps(data)))
    assert again == cand
    assert again.structural_hash() == cand.structural_hash() == from_dict.structural_hash()
    assert again.arch_hash() == cand.arch_hash()
    assert len(cand.structural_hash()) == 16


def test_structural_hash_treats_int_and_float_spellings_alike() -> None:
    a = Candidate.model_validate(with_stage0(prune=0, rank=1))
    b = Candidate.model_validate(with_stage0(prune=0.0, rank=1.0))
    assert a.structural_hash() == b.structural_hash()


def test_structural_hash_ignores_space_name() -> None:
    a = Candidate.model_validate(cnn(space="cnn_small"))
    b = Candidate.model_validate(cnn(space="small_joint"))
    assert a.structural_hash() == b.structural_hash()


@pytest.mark.parametrize("stage", [0, 1])
@pytest.mark.parametrize(
    ("key", "value"), [("wbits", 2), ("abits", 16), ("prune", 0.75), ("rank", 0.125)]
)
def test_structural_hash_changes_with_any_compression_choice(
    stage: int, key: str, value: float
) -> None:
    changed = cnn()
    changed["stages"] = [dict(s) for s in changed["stages"]]
    changed["stages"][stage][key] = value
    a, b = Candidate.model_validate(cnn()), Candidate.model_validate(changed)
    assert a.structural_hash() != b.structural_hash()
    assert a.arch_hash() == b.arch_hash()


@pytest.mark.parametrize("change", [{"head_wbits": 4}, {"head_abits": 8}])
def test_structural_hash_changes_with_head_bits(change: dict[str, int]) -> None:
    a, b = Candidate.model_validate(cnn()), Candidate.model_validate(cnn(**change))
    assert a.structural_hash() != b.structural_hash()
    assert a.arch_hash() == b.arch_hash()


def test_per_block_entries_equal_to_the_stage_hash_like_the_stage() -> None:
    stage = {"depth": 2, "width": 32, "stride": 2, "wbits": 8, "prune": 0.25}
    same = {**stage, "blocks": [{"wbits": 8, "prune": 0.25}, {"wbits": 8, "prune": 0.25}]}
    one_differs = {**stage, "blocks": [{"wbits": 8, "prune": 0.25}, {"wbits": 4, "prune": 0.25}]}
    base = resnet(stages=[resnet()["stages"][0], stage])
    a = Candidate.model_validate(base)
    b = Candidate.model_validate(resnet(stages=[resnet()["stages"][0], same]))
    c = Candidate.model_validate(resnet(stages=[resnet()["stages"][0], one_differs]))
    assert a.structural_hash() == b.structural_hash()
    assert c.structural_hash() != a.structural_hash()
    assert a.arch_hash() == b.arch_hash() == c.arch_hash()


def test_stage_compression_is_ignored_when_every_block_is_set() -> None:
    blocks = [{"wbits": 4}, {"wbits": 8}]
    stage = {"depth": 2, "width": 32, "stride": 2, "blocks": blocks}
    a = Candidate.model_validate(resnet(stages=[{"width": 16}, {**stage, "wbits": 16}]))
    b = Candidate.model_validate(resnet(stages=[{"width": 16}, {**stage, "wbits": 2}]))
    assert a.structural_hash() == b.structural_hash()


def test_arch_hash_ignores_all_compression_choices() -> None:
    compressed = Candidate.model_validate(cnn())
    dense = Candidate.model_validate(
        cnn(
            space="small_joint",
            head_wbits=32,
            stages=[{"width": 16, "stride": 2}, {"width": 32, "stride": 2}],
        )
    )
    assert compressed.arch_hash() == dense.arch_hash()
    assert compressed.structural_hash() != dense.structural_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"stages": [{"width": 24, "stride": 2}, {"width": 32, "stride": 2}]},
        {"stages": [{"width": 16, "stride": 2}]},
        {"stages": [{"width": 16, "stride": 2, "depth": 2}, {"width": 32, "stride": 2}]},
        {"stages": [{"width": 16, "stride": 1}, {"width": 32, "stride": 2}]},
        {"stages": [{"width": 16, "stride": 2, "kernel": 5}, {"width": 32, "stride": 2}]},
        {"num_classes": 5},
        {"input_shape": [3, 8, 8]},
    ],
    ids=["width", "stages", "depth", "stride", "kernel", "classes", "channels"],
)
def test_arch_hash_changes_with_architecture(change: dict[str, Any]) -> None:
    a = Candidate.model_validate(cnn())
    b = Candidate.model_validate(cnn(**change))
    assert a.arch_hash() != b.arch_hash()
    assert a.structural_hash() != b.structural_hash()


@pytest.mark.parametrize(
    ("data", "change"),
    [
        (mbv2(), {"expand": 2}),
        (mbv2(), {"stride": 1}),
        (resnet(), {"kernel": 5}),
        (mbv2(), {"depth": 3}),
    ],
    ids=["mbv2-expand", "mbv2-stride", "resnet-kernel", "mbv2-depth"],
)
def test_arch_hash_changes_with_block_architecture(
    data: dict[str, Any], change: dict[str, Any]
) -> None:
    stage0 = {k: v for k, v in data["stages"][0].items() if k != "blocks"}
    a = Candidate.model_validate(data)
    b = Candidate.model_validate({**data, "stages": [{**stage0, **change}, *data["stages"][1:]]})
    assert a.arch_hash() != b.arch_hash()


def test_stem_width_is_part_of_the_architecture() -> None:
    a = Candidate.model_validate(mbv2())
    b = Candidate.model_validate(mbv2(stem_width=32))
    assert a.arch_hash() != b.arch_hash()


def test_mlp_kernel_does_not_change_the_hashes() -> None:
    a = Candidate.model_validate(mlp(stages=[{"width": 128, "kernel": 3}]))
    b = Candidate.model_validate(mlp(stages=[{"width": 128, "kernel": 5}]))
    assert a.arch_hash() == b.arch_hash()
    assert a.structural_hash() == b.structural_hash()


@pytest.mark.parametrize("data", [cnn(), resnet()], ids=["cnn", "resnet"])
def test_expand_outside_mbv2_does_not_change_the_hashes(data: dict[str, Any]) -> None:
    a = Candidate.model_validate(data)
    b = Candidate.model_validate(with_stage0(data, expand=6))
    assert a.arch_hash() == b.arch_hash()
    assert a.structural_hash() == b.structural_hash()


@pytest.mark.parametrize(
    ("data", "change"),
    [
        pytest.param(cnn(), {"stem_width": 32}, id="cnn-stem-width"),
        pytest.param(mlp(), {"stem_width": 32}, id="mlp-stem-width"),
        pytest.param(
            mlp(),
            {"stages": [{"width": 128, "wbits": 8, "stride": 2}, {"width": 64}]},
            id="mlp-stride",
        ),
    ],
)
def test_fields_a_family_does_not_use_do_not_change_the_hashes(
    data: dict[str, Any], change: dict[str, Any]
) -> None:
    a = Candidate.model_validate(data)
    b = Candidate.model_validate({**data, **change})
    assert a.arch_hash() == b.arch_hash()
    assert a.structural_hash() == b.structural_hash()
