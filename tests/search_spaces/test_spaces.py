"""Every registered search space, sampled by a real Optuna study (timm-style registry tests)."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import optuna
import pytest

from search_spaces import (
    Candidate,
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
_PARAM = re.compile(r"(depth|kernel|head\.wbits|layer\d+\.(width|wbits|prune|rank))")

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
    """The searched values of ``dim`` for ``family`` (joint spaces prefix arch dimensions)."""
    return space.choices.get(f"{family}.{dim}", space.choices.get(dim, ()))


def test_builtin_spaces_registered() -> None:
    assert {"cnn_small", "mlp_small", "small_joint"} <= set(list_spaces())
    assert list_spaces() == sorted(list_spaces())


@pytest.mark.parametrize("name", list_spaces())
def test_samples_are_valid_and_use_only_searched_values(name: str) -> None:
    space = get_space(name)(IMAGE)
    samples = _sample(space)
    assert len(samples) == N_SAMPLES
    families = set()
    for cand, _ in samples:
        assert Candidate.model_validate(cand.model_dump(mode="json")) == cand
        assert cand.space == name
        assert cand.num_classes == 10
        families.add(cand.family)
        expected_shape = (1, 8, 8) if cand.family == "cnn" else (64,)
        assert cand.input_shape == expected_shape
        assert len(cand.layers) in _choices(space, cand.family, "depth")
        if cand.family == "cnn":
            assert cand.kernel in _choices(space, "cnn", "kernel")
        assert cand.head_wbits in space.choices["head_wbits"]
        for layer in cand.layers:
            assert layer.width in _choices(space, cand.family, "width")
            assert layer.wbits in space.choices["wbits"]
            assert layer.prune in space.choices["prune"]
            assert layer.rank in space.choices["rank"]
    if name == "small_joint":
        assert families == {"cnn", "mlp"}


@pytest.mark.parametrize("name", list_spaces())
def test_param_names_are_dotted_per_layer(name: str) -> None:
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
        for i, layer in enumerate(cand.layers):
            assert params[f"{prefix}layer{i}.wbits"] == layer.wbits
            assert params[f"{prefix}layer{i}.width"] == layer.width
        assert f"{prefix}layer{len(cand.layers)}.wbits" not in params
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
        "prune": [0.5],
        "rank": [0.25, 0.5],
        "head_wbits": [32],
    }
    space = get_space(name)(IMAGE, overrides)
    assert space.choices["wbits"] == (4,)
    for cand, _ in _sample(space):
        assert cand.head_wbits == 32
        assert all(layer.wbits == 4 for layer in cand.layers)
        assert all(layer.prune == 0.5 for layer in cand.layers)
        assert all(layer.rank in (0.25, 0.5) for layer in cand.layers)


@pytest.mark.parametrize("name", list_spaces())
def test_depth_and_width_overrides(name: str) -> None:
    keys = ("cnn.depth", "cnn.width") if name == "small_joint" else ("depth", "width")
    dims = {d.name: d for d in get_space(name).dimensions()}
    width = dims[keys[1]].allowed[-1]
    space = get_space(name)(IMAGE, {keys[0]: [1], keys[1]: [width]})
    for cand, _ in _sample(space):
        if name == "small_joint" and cand.family == "mlp":
            continue
        assert [layer.width for layer in cand.layers] == [width]


def test_override_can_widen_beyond_the_default() -> None:
    space = get_space("cnn_small")(IMAGE, {"wbits": [2], "depth": [4]})
    cand, _ = _sample(space, n=1)[0]
    assert [layer.wbits for layer in cand.layers] == [2, 2, 2, 2]


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
    assert {"wbits", "prune", "rank", "head_wbits"} <= set(dims)
    schema = desc["overrides_schema"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(dims)
    for dim_name, prop in schema["properties"].items():
        assert prop["items"]["enum"] == dims[dim_name]["allowed"]
        assert set(prop["default"]) <= set(prop["items"]["enum"])
        assert prop["minItems"] == 1


@pytest.mark.parametrize("name", list_spaces())
def test_defaults_are_allowed(name: str) -> None:
    for dim in get_space(name).dimensions():
        assert isinstance(dim, Dimension)
        assert set(dim.default) <= set(dim.allowed), dim.name


@pytest.mark.parametrize("name", ["cnn_small", "small_joint"])
def test_cnn_spaces_refuse_flat_data(name: str) -> None:
    with pytest.raises(ValueError, match=r"needs image data \(C, H, W\)") as info:
        get_space(name)(FLAT)
    assert "(64,)" in str(info.value)


def test_mlp_space_flattens_images_and_accepts_flat_data() -> None:
    for context in (IMAGE, FLAT):
        cand, _ = _sample(get_space("mlp_small")(context), n=1)[0]
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
