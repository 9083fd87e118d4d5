"""Every registered search space, sampled by a real Optuna study (timm-style registry tests)."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import optuna
import pytest

from search_spaces import (
    Candidate,
    Compression,
    Dimension,
    DuplicateSpaceError,
    SearchSpace,
    SpaceContext,
    UnknownSpaceError,
    get_space,
    list_spaces,
    register_space,
)

IMAGE = SpaceContext(input_shape=(1, 8, 8), num_classes=10)
FLAT = SpaceContext(input_shape=(64,), num_classes=10)
N_SAMPLES = 20
_COMP = r"(wbits|codebook_bits|abits|sparsity|prune|rank)"
# the two house conventions: one layer per stage (small spaces), or stages of blocks
_PARAM = re.compile(
    rf"(depth|kernel|head\.wbits|kd\.(alpha|temperature|relation)|layer\d+\.(width|{_COMP}))"
    rf"|(num_stages|stem_width|head\.(wbits|abits)|kd\.(alpha|temperature|relation)"
    rf"|stage\d+\.(depth|width|expand|kernel|{_COMP})|stage\d+\.block\d+\.{_COMP})"
)
SMALL = ["cnn_small", "mlp_small", "small_joint"]
STAGED = [name for name in list_spaces() if name not in SMALL]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(
    space: SearchSpace, n: int = N_SAMPLES, seed: int = 0
) -> list[tuple[Candidate, dict[str, Any]]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        cand = space.sample(trial)
        out.append((cand, dict(trial.params)))
        study.tell(trial, 0.0)
    return out


def _choices(space: SearchSpace, family: str, dim: str) -> tuple[Any, ...]:
    """The searched values of ``dim`` for ``family`` (small_joint prefixes arch dimensions)."""
    return space.choices.get(f"{family}.{dim}", space.choices.get(dim, ()))


def _dimension(pname: str) -> str:
    """The dimension a parameter is drawn from: ``stage1.block0.wbits`` -> ``wbits``."""
    for group in ("head", "kd"):
        if pname.startswith(f"{group}."):
            return f"{group}_" + pname.split(".", 1)[1]
    return pname.rsplit(".", 1)[-1]


def _gene(block: Compression) -> Any:
    """The ``wbits`` choice that gave ``block``'s code (None for a codebook layer)."""
    if block.wformat == "kmeans":
        return None
    return block.wformat if block.wformat in ("binary", "ternary") else block.wbits


def _stage_value(stage: Compression, dim: str) -> Any:
    return _gene(stage) if dim == "wbits" else getattr(stage, dim)


def _stage_param(params: dict[str, Any], prefix: str, i: int, dim: str) -> Any:
    """Stage ``i``'s sampled ``dim``, under either naming convention."""
    for key in (f"{prefix}layer{i}.{dim}", f"stage{i}.{dim}"):
        if key in params:
            return params[key]
    raise KeyError(f"stage {i} {dim}: {sorted(params)}")


def test_builtin_spaces_registered() -> None:
    assert {"cnn_small", "mlp_small", "small_joint"} <= set(list_spaces())
    assert list_spaces() == sorted(list_spaces())


@pytest.mark.parametrize("name", list_spaces())
def test_samples_are_valid_and_use_only_searched_values(name: str) -> None:
    space = get_space(name)(IMAGE)
    samples = _sample(space)
    assert len(samples) == N_SAMPLES
    families = set()
    for cand, params in samples:
        assert Candidate.model_validate(cand.model_dump(mode="json")) == cand
        assert cand.space == name
        assert cand.num_classes == 10
        families.add(cand.family)
        assert cand.input_shape == ((64,) if cand.family == "mlp" else (1, 8, 8))
        assert cand.head_wbits in space.choices["head_wbits"]
        assert cand.head_abits in space.choices.get("head_abits", (32,))
        if cand.family in ("mbv2", "resnet"):
            assert cand.stem_width in space.choices["stem_width"]
        for stage in cand.stages:
            assert stage.width in _choices(space, cand.family, "width")
            if cand.family != "mlp":
                assert stage.kernel in _choices(space, cand.family, "kernel")
            for i in range(stage.depth):
                block = stage.block(i)
                if block.wformat == "kmeans":
                    assert block.wbits in space.choices["codebook_bits"]
                else:
                    assert _gene(block) in space.choices["wbits"]
                    assert 0 in space.choices["codebook_bits"]
                assert block.sparsity in space.choices["sparsity"]
                assert block.abits in space.choices["abits"]
                assert block.prune in space.choices["prune"]
                assert block.rank in space.choices["rank"]
        for pname, value in params.items():  # every parameter is drawn from its dimension
            if pname != "family":
                dim = _dimension(pname.removeprefix(f"{cand.family}."))
                assert value in _choices(space, cand.family, dim), pname
    if name == "small_joint":
        assert families == {"cnn", "mlp"}


@pytest.mark.parametrize("name", SMALL)
def test_small_spaces_have_one_layer_per_stage(name: str) -> None:
    space = get_space(name)(IMAGE)
    for cand, _ in _sample(space):
        assert len(cand.stages) in _choices(space, cand.family, "depth")
        assert all(stage.depth == 1 and stage.blocks is None for stage in cand.stages)
        assert cand.stem_width is None  # the small families have no stem
        assert cand.head_abits == 32
        if cand.family == "cnn":
            assert len({stage.kernel for stage in cand.stages}) == 1  # one kernel per model


@pytest.mark.parametrize("name", STAGED)
def test_staged_spaces_sample_stages_of_blocks(name: str) -> None:
    space = get_space(name)(IMAGE)
    for cand, params in _sample(space):
        assert len(cand.stages) == params["num_stages"]
        for i, stage in enumerate(cand.stages):
            assert stage.depth == params[f"stage{i}.depth"]
            assert stage.blocks is None  # stage granularity by default


@pytest.mark.parametrize("name", STAGED)
def test_block_granularity_samples_compression_per_block(name: str) -> None:
    space = get_space(name)(IMAGE, granularity="block")
    for cand, params in _sample(space, n=5):
        for i, stage in enumerate(cand.stages):
            assert stage.blocks is not None and len(stage.blocks) == stage.depth
            for j, block in enumerate(stage.blocks):
                for dim in ("prune", "rank"):
                    assert getattr(block, dim) == params[f"stage{i}.block{j}.{dim}"]
                book = params[f"stage{i}.block{j}.codebook_bits"]
                assert (block.wbits if block.wformat == "kmeans" else 0) == book
                if not book:
                    assert _gene(block) == params[f"stage{i}.block{j}.wbits"]
            assert f"stage{i}.wbits" not in params


def _float_weights_fix_abits(stage: Compression) -> bool:
    """Every space chooses activation bits only for integer-coded layers."""
    return stage.wformat in ("float", "kmeans")


@pytest.mark.parametrize("name", ["cnn_small", "mlp_small", "small_joint"])
def test_small_spaces_offer_int8_layers_by_default(name: str) -> None:
    space = get_space(name)(IMAGE)
    assert 8 in space.choices["abits"] and 32 in space.choices["abits"]
    stages = [s for cand, _ in _sample(space, n=40) for s in cand.stages]
    int_coded = ("int", "ternary", "binary")
    assert any(s.abits == 8 and s.wformat in int_coded for s in stages)  # int8 x int8 layers
    assert all(s.abits == 32 for s in stages if s.wformat not in int_coded)  # none on float


@pytest.mark.parametrize("name", list_spaces())
def test_param_names_are_dotted_per_stage(name: str) -> None:
    space = get_space(name)(IMAGE)
    for cand, params in _sample(space):
        names = set(params)
        prefix = ""
        if "family" in names:
            assert params["family"] == cand.family
            names.discard("family")
            prefix = f"{cand.family}."
        for pname in names:
            assert pname.startswith(prefix), pname
            assert _PARAM.fullmatch(pname[len(prefix) :]), pname
        for i, stage in enumerate(cand.stages):
            for dim in ("width", "wbits", "abits", "prune", "rank", "sparsity"):
                if dim == "abits" and _float_weights_fix_abits(stage):
                    assert stage.abits == 32
                    assert f"{prefix}layer{i}.abits" not in params
                    continue
                if dim == "wbits" and stage.wformat == "kmeans":
                    assert _stage_param(params, prefix, i, "codebook_bits") == stage.wbits
                    continue
                if dim == "sparsity" and stage.wformat == "binary":
                    assert stage.sparsity == 0
                    continue
                assert _stage_param(params, prefix, i, dim) == _stage_value(stage, dim), (i, dim)
        n = len(cand.stages)
        assert f"{prefix}layer{n}.wbits" not in params and f"stage{n}.wbits" not in params
        assert params[f"{prefix}head.wbits"] == cand.head_wbits


@pytest.mark.parametrize("name", list_spaces())
def test_sampling_is_reproducible_for_a_seed(name: str) -> None:
    space = get_space(name)(IMAGE)
    first = [c.structural_hash() for c, _ in _sample(space, n=5, seed=7)]
    second = [c.structural_hash() for c, _ in _sample(space, n=5, seed=7)]
    assert first == second


@pytest.mark.parametrize("name", list_spaces())
def test_overrides_narrow_the_choices(name: str) -> None:
    overrides: dict[str, list[Any]] = {
        "wbits": [4],
        "codebook_bits": [0],
        "abits": [8],
        "prune": [0.5],
        "rank": [0.25, 0.5],
        "head_wbits": [32],
    }
    space = get_space(name)(IMAGE, overrides)
    assert space.choices["wbits"] == (4,)
    for cand, _ in _sample(space):
        assert cand.head_wbits == 32
        assert all(stage.wbits == 4 for stage in cand.stages)
        assert all(stage.abits == 8 for stage in cand.stages)
        assert all(stage.prune == 0.5 for stage in cand.stages)
        assert all(stage.rank in (0.25, 0.5) for stage in cand.stages)


@pytest.mark.parametrize("name", list_spaces())
def test_depth_and_width_overrides(name: str) -> None:
    keys = ("cnn.depth", "cnn.width") if name == "small_joint" else ("depth", "width")
    dims = {d.name: d for d in get_space(name).dimensions()}
    width = dims[keys[1]].allowed[-1]
    overrides: dict[str, list[Any]] = {keys[0]: [1], keys[1]: [width]}
    if name in STAGED:
        overrides["num_stages"] = [2]
    space = get_space(name)(IMAGE, overrides)
    for cand, _ in _sample(space):
        if name == "small_joint" and cand.family == "mlp":
            continue
        expected = 2 if name in STAGED else 1
        assert [(s.depth, s.width) for s in cand.stages] == [(1, width)] * expected


def test_override_can_widen_beyond_the_default() -> None:
    space = get_space("cnn_small")(IMAGE, {"wbits": [2], "codebook_bits": [0], "depth": [4]})
    cand, _ = _sample(space, n=1)[0]
    assert [(stage.wbits, stage.wformat) for stage in cand.stages] == [(2, "int")] * 4


@pytest.mark.parametrize(
    ("shape", "strides"),
    [((1, 8, 8), [2, 2, 1, 1]), ((1, 4, 4), [2, 1, 1, 1]), ((3, 2, 2), [1, 1, 1, 1])],
)
def test_cnn_pools_after_the_first_two_layers_while_the_map_is_large(
    shape: tuple[int, ...], strides: list[int]
) -> None:
    space = get_space("cnn_small")(SpaceContext(input_shape=shape, num_classes=10), {"depth": [4]})
    for cand, _ in _sample(space, n=3):
        assert [stage.stride for stage in cand.stages] == strides


def test_mlp_layers_never_stride() -> None:
    for cand, _ in _sample(get_space("mlp_small")(FLAT, {"depth": [4]}), n=3):
        assert [stage.stride for stage in cand.stages] == [1, 1, 1, 1]


def test_duplicate_override_values_are_collapsed() -> None:
    space = get_space("mlp_small")(FLAT, {"wbits": [8, 8, 4]})
    assert space.choices["wbits"] == (8, 4)


@pytest.mark.parametrize("name", list_spaces())
def test_unknown_override_key_is_named(name: str) -> None:
    with pytest.raises(ValueError, match="no dimension 'dropout'") as info:
        get_space(name)(IMAGE, {"dropout": [0.1]})
    assert "wbits" in str(info.value)  # lists the known dimensions


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize(
    ("key", "values", "shown"),
    [
        ("wbits", [3], "3"),
        ("wbits", [8, 7], "7"),
        ("abits", [4], "4"),
        ("prune", [0.9], "0.9"),
        ("rank", [2.0], "2.0"),
        ("head_wbits", [True], "True"),
    ],
)
def test_bad_override_value_is_named(name: str, key: str, values: list[Any], shown: str) -> None:
    with pytest.raises(ValueError) as info:
        get_space(name)(IMAGE, {key: values})
    msg = str(info.value)
    assert msg.startswith(f"{key}:")
    assert f"{shown} is not allowed" in msg


@pytest.mark.parametrize("values", [[], "48", 4], ids=["empty", "string", "scalar"])
def test_override_must_be_a_non_empty_list(values: Any) -> None:
    with pytest.raises(ValueError, match="wbits: give a non-empty list"):
        get_space("mlp_small")(FLAT, {"wbits": values})


@pytest.mark.parametrize("name", list_spaces())
def test_describe_is_json_with_overrides_schema(name: str) -> None:
    cls = get_space(name)
    desc = json.loads(json.dumps(cls.describe()))
    assert desc["name"] == name
    assert desc["description"]
    dims = {d["name"]: d for d in desc["dimensions"]}
    assert {"wbits", "abits", "prune", "rank", "head_wbits"} <= set(dims)
    schema = desc["overrides_schema"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(dims)
    for dim_name, prop in schema["properties"].items():
        choices = prop["oneOf"][0]
        assert choices["items"]["enum"] == dims[dim_name]["allowed"]
        assert set(prop["default"]) <= set(choices["items"]["enum"])
        assert choices["minItems"] == 1


@pytest.mark.parametrize("name", list_spaces())
def test_defaults_are_allowed(name: str) -> None:
    for dim in get_space(name).dimensions():
        assert isinstance(dim, Dimension)
        assert set(dim.default) <= set(dim.allowed), dim.name


@pytest.mark.parametrize("name", list_spaces())
def test_image_spaces_refuse_flat_data(name: str) -> None:
    """A space either samples MLPs from flat data or names the shape it needs."""
    try:
        space = get_space(name)(FLAT)
    except ValueError as e:
        assert re.search(r"needs image data \(C, H, W\)", str(e))
        assert "(64,)" in str(e)
        assert name not in ("mlp_small", "mlp_joint")
        return
    assert {cand.family for cand, _ in _sample(space, n=3)} == {"mlp"}


@pytest.mark.parametrize("name", ["mlp_small", "mlp_joint"])
def test_mlp_spaces_flatten_images_and_accept_flat_data(name: str) -> None:
    if name not in list_spaces():
        pytest.skip(f"{name} is not registered")
    for context in (IMAGE, FLAT):
        cand, _ = _sample(get_space(name)(context), n=1)[0]
        assert cand.input_shape == (64,)


def test_duplicate_registration_raises() -> None:
    before = get_space("cnn_small")

    class Impostor(SearchSpace):
        description: ClassVar[str] = "not registered"

        @classmethod
        def dimensions(cls) -> list[Dimension]:
            return []

        def sample(self, trial: Any) -> Candidate:
            raise NotImplementedError

    with pytest.raises(DuplicateSpaceError, match="'cnn_small' already registered") as info:
        register_space("cnn_small")(Impostor)
    assert isinstance(info.value, ValueError)
    assert "search_spaces._small" in str(info.value)
    assert get_space("cnn_small") is before


def test_unknown_space_lists_known_names() -> None:
    with pytest.raises(UnknownSpaceError) as info:
        get_space("resnet_huge")
    assert isinstance(info.value, KeyError)
    msg = str(info.value)
    assert "unknown search space 'resnet_huge'" in msg
    for name in list_spaces():
        assert repr(name) in msg
