"""The job spec: what a user submits and what is stored, versioned and checked structurally.

:class:`JobSpec` validation needs only the registries (spaces, datasets, profiles, objectives):
no file, device or database is touched, so a stored spec validates the same when a scheduler
claims the job as when it was submitted. Checks that touch the world (a profile's device is
reachable, an uploaded dataset exists, a warm-start source fits) belong to the API request
(``service/api/routes/jobs.py``). The OpenAPI document states every rule here that JSON Schema
can express (:mod:`service.schemas.spec_schema`).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hw_profiles import UnknownProfileError, get_profile
from search_spaces import (
    DIGEST,
    NETWORK_NAME,
    NetworkSpace,
    SpaceContext,
    UnknownSpaceError,
    genes,
    get_space,
)
from service.schemas.constraints import (
    check_syntax,
    expand_latency,
    named_profile,
    parse_constraint,
)
from workers.data import UnknownDatasetError, get_dataset, list_datasets
from workers.scoring import OBJECTIVES, Constraint, objective_metric

SPEC_VERSION: Literal[1] = 1
USER_DATASET = r"^user/[a-z0-9][a-z0-9_-]{0,63}$"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # PostgreSQL text refuses NUL; no control characters at all
MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _integral(v: Any) -> Any:
    """JSON Schema's ``integer`` includes 3.0: take it as 3 (strict mode refuses bools,
    strings and 3.5 all the same)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


INTEGRAL = BeforeValidator(_integral)
Int = Annotated[int, INTEGRAL]


class Budget(BaseModel):
    model_config = _STRICT

    trials: Int = Field(ge=1, le=10_000, description="COMPLETE trials to run", examples=[24])
    max_failed: Annotated[int, Field(ge=0, le=10_000), INTEGRAL] | None = Field(
        default=None,
        description="the job fails when more trials than this fail (default: the trial budget)",
    )
    tune_s: float = Field(
        default=900.0,
        ge=0,
        le=86_400,
        description="MetaSchedule seconds this job may spend on tasks the shared tuning "
        "database lacks (probes of still-untuned tasks are flagged partial)",
    )
    trial_deadline_s: float | None = Field(
        default=None,
        ge=10,
        le=604_800,
        description="a trial still running after this many seconds is cancelled and fails "
        "(counted against max_failed); default: 1800 s plus twice its tuning share",
    )


class Training(BaseModel):
    """How parents are trained and candidates compressed (defaults suit digits on 2 cores)."""

    model_config = _STRICT

    epochs: Int = Field(default=20, ge=1, le=500, description="dense parent training epochs")
    finetune_epochs: Int = Field(default=5, ge=0, le=500, description="KD fine-tune epochs")
    batch_size: Int = Field(default=64, ge=1, le=4096)
    lr: float = Field(default=3e-3, gt=0, le=1)
    finetune_lr: float = Field(default=1e-3, gt=0, le=1)
    kd: bool = Field(
        default=True,
        description="distil from the dense parent while fine-tuning (off: the candidates' "
        "sampled kd.* settings are not used)",
    )
    kd_alpha: float = Field(default=0.5, ge=0, le=1)
    kd_temperature: float = Field(default=4.0, gt=0, le=100)
    feature_kd: float = Field(default=0.0, ge=0, le=100, description="feature-KD loss weight")
    kd_relation: float = Field(
        default=0.0,
        ge=0,
        le=100_000,
        description="relation-KD (similarity-preserving, every stage) loss weight; a "
        "candidate's sampled kd.relation takes its place",
    )
    sparsity_steps: Int = Field(
        default=1, ge=1, le=10, description="unstructured pruning: 1 = one-shot; k = gradual"
    )
    sparsity_scope: Literal["layer", "global"] = Field(
        default="layer",
        description="unstructured pruning: each layer to its own sparsity, or one magnitude "
        "threshold over the sparse layers removing the same total",
    )
    prune_criterion: Literal["l1", "bn_gamma", "taylor"] = "l1"
    prune_steps: Int = Field(default=1, ge=1, le=10, description="1 = one-shot; k = iterative")
    conv_decomposition: Literal["tucker2", "svd"] = "tucker2"
    rank_energy: float | None = Field(
        default=None, gt=0, le=1, description="automatic rank keeping this spectral energy"
    )
    augment: Literal["off", "crop_flip"] = Field(
        default="off",
        description="light augmentation of image inputs while training and fine-tuning: a "
        "random crop of the image padded by 1/8 of its size, and a random horizontal flip",
    )
    quant: Literal["auto", "ptq", "qat"] = Field(
        default="auto", description="auto: PTQ when every weight has >= 8 bits, else QAT"
    )
    qat_epochs: Int = Field(default=2, ge=0, le=100)
    act_observer: Literal["minmax", "percentile", "mse"] = "minmax"
    weight_observer: Literal["minmax", "mse"] = "minmax"
    calib_batches: Int = Field(default=16, ge=1, le=1000)
    train_subset: Annotated[int, Field(ge=100, le=10_000_000), INTEGRAL] | None = Field(
        default=None, description="fine-tune on this many training rows"
    )
    seed: Int = Field(default=0, ge=0, le=2**31 - 1)


class Fidelity(BaseModel):
    """Successive halving over training epochs, candidates ranked by Pareto rank per rung."""

    model_config = _STRICT

    min_fraction: float = Field(
        default=0.25, gt=0, lt=1, description="epochs of the lowest rung, as a fraction of full"
    )
    eta: Int = Field(default=3, ge=2, le=10, description="keep the best 1/eta at each rung")

    def rungs(self) -> list[float]:
        """Epoch fractions from the lowest rung up to 1.0 (full budget)."""
        out, f = [], self.min_fraction
        while f < 1.0 - 1e-3:  # 0.333333 x 3 is the full budget, not another rung below it
            out.append(round(f, 6))
            f *= self.eta
        return [*out, 1.0]


EXAMPLE = {
    "name": "digits-demo",
    "dataset": "digits",
    "space": "small_joint",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "budget": {"trials": 24},
}


class JobSpec(BaseModel):
    """A search job: what to search, for which targets, against which objectives.

    Stored as submitted after normalisation: ``latency`` objectives and bare ``latency``
    constraints are expanded per profile, and every profile an objective or constraint names is
    added to ``profiles`` (it is measured).
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra=lambda schema: _refine(schema),
    )

    schema_version: Annotated[Literal[1], INTEGRAL] = Field(
        default=SPEC_VERSION, description="version of this record's layout"
    )
    name: str = Field(default="", max_length=200, pattern=PRINTABLE)
    dataset: str = Field(
        examples=["digits"],
        description="a built-in dataset (GET /v1/datasets) or 'user/<name>', an upload of yours",
    )
    split_seed: Int = Field(default=0, ge=0, le=2**31 - 1)
    space: str = Field(
        examples=["small_joint"],
        description="GET /v1/spaces; 'network' compresses the job's uploaded network",
    )
    network: str | None = Field(
        default=None,
        pattern=NETWORK_NAME,
        description="an uploaded network of yours (POST /v1/networks) to compress, with space "
        "'network': its own weights are the parent (no parent training) and the teacher",
        examples=["user/resnet18"],
    )
    network_digest: str | None = Field(
        default=None,
        pattern=DIGEST,
        description="the SHA-256 of the network's archive; the service sets it at submit (one "
        "given must match the upload)",
    )
    space_overrides: dict[str, list[Any] | dict[str, float]] = Field(
        default_factory=dict,
        description="narrow a dimension: a list of choices, or {'min': a, 'max': b} selecting "
        "the allowed values inside it",
        examples=[{"wbits": [4, 8], "prune": {"max": 0.5}}],
    )
    granularity: Literal["stage", "block"] = Field(
        default="stage", description="compression choices per stage, or per block"
    )
    profiles: list[str] = Field(
        min_length=1,
        max_length=16,
        examples=[["x86/local"]],
        description="hardware profiles to measure on (GET /v1/profiles)",
    )
    objectives: list[str] = Field(
        default_factory=lambda: ["accuracy", "latency", "size"],
        min_length=1,
        max_length=20,
        description="'accuracy', 'size', 'macs', 'bitops', 'latency' (every profile) or "
        "'latency@<profile>'",
    )
    budget: Budget
    training: Training = Training()
    constraints: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list,
        max_length=20,
        description="bounds a result must meet to count: '<metric> <= <number> [unit]' "
        "(accuracy: '>='); a bare 'latency' bound applies to every profile",
        examples=[["latency@x86/local <= 2 ms", "size <= 200 KB", "accuracy >= 0.85"]],
    )
    prefilter: bool = Field(
        default=True,
        description="probe latency and size of the untrained structure first; a candidate "
        "breaking a latency/size/compute constraint is recorded infeasible without training",
    )
    fidelity: Fidelity | None = Field(
        default=None, description="successive halving over epochs (unset: every trial full)"
    )
    tuning: Literal["metaschedule", "off"] = Field(
        default="metaschedule",
        description="tune probes with MetaSchedule (budget.tune_s), or measure TVM's default "
        "schedules (faster, less faithful latency)",
    )
    sampler: Literal["auto", "tpe", "nsga2", "gp", "random"] = Field(
        default="auto",
        description="auto: the sampler measured best for this space and budget (README, "
        "Search benchmark); tpe: multi-objective TPE (multivariate, grouped, constant liar); "
        "nsga2: NSGA-II, population sized to the budget; gp: Gaussian-process BO; nsga2 and "
        "gp see every parameter of every trial (flat encoding)",
    )
    seed: Int = Field(default=0, ge=0, le=2**31 - 1)
    fixed_params: dict[str, int | float | str] = Field(
        default_factory=dict,
        description="search parameters pinned to one value (e.g. search only the compression "
        "of a chosen architecture): any value its dimension allows, inside or outside the "
        "choices the job searches",
        examples=[{"family": "cnn", "cnn.depth": 2}],
    )
    warm_start_from: Annotated[int, Field(ge=1, le=MAX_ID), INTEGRAL] | None = Field(
        default=None, description="a job of yours whose front is tried first"
    )

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v.startswith("user/"):  # an upload: its existence is the request's business
            if re.fullmatch(USER_DATASET, v) is None:
                raise ValueError(
                    f"{v!r}: an uploaded dataset is 'user/<name>', name {USER_DATASET}"
                )
            return v
        try:
            get_dataset(v)
        except UnknownDatasetError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("space")
    @classmethod
    def _space(cls, v: str, info: ValidationInfo) -> str:
        try:
            space = get_space(v)
        except UnknownSpaceError as e:
            raise ValueError(str(e)) from None
        dataset = info.data.get("dataset", "user/")
        if v != NetworkSpace.name and not dataset.startswith("user/"):
            ds = get_dataset(dataset)
            space.check_context(
                SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes)
            )
        return v

    @field_validator("space_overrides")
    @classmethod
    def _overrides(
        cls, v: dict[str, list[Any] | dict[str, float]], info: ValidationInfo
    ) -> dict[str, list[Any] | dict[str, float]]:
        if "space" not in info.data:
            return v
        space = get_space(info.data["space"])
        return {k: list(space.validate_override(k, vals)) for k, vals in v.items()}

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate profiles in {v}")
        for i, name in enumerate(v):
            try:
                get_profile(name)
            except UnknownProfileError as e:
                raise ValueError(f"profiles[{i}]: {e}") from None
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate objectives in {v}")
        for name in v:
            if name in OBJECTIVES or name == "latency":
                continue
            profile = name.removeprefix("latency@")
            if profile == name or not _known_profile(profile):
                raise ValueError(
                    f"unknown objective {name!r}; use {sorted(OBJECTIVES)}, 'latency' or "
                    f"'latency@<profile>' with a profile of GET /v1/profiles"
                )
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate constraints in {v}")
        known = tuple(p.name for p in _profiles())
        for i, text in enumerate(v):
            try:  # the grammar alone here: which profiles are measured is settled below
                check_syntax(text, known)
            except ValueError as e:
                raise ValueError(f"constraints[{i}]: {e}") from None
        return v

    @field_validator("fixed_params")
    @classmethod
    def _fixed(
        cls, v: dict[str, int | float | str], info: ValidationInfo
    ) -> dict[str, int | float | str]:
        if not v or "space" not in info.data or "granularity" not in info.data:
            return v
        space, granularity = info.data["space"], info.data["granularity"]
        allowed = {d.name: d.allowed for d in get_space(space).dimensions()}
        if space == NetworkSpace.name:  # its groups are the upload's: the request checks them
            dims = {k: f"kd_{k[3:]}" if k.startswith("kd.") else k.rpartition(".")[2] for k in v}
            pinnable = {k: d for k, d in dims.items() if d in allowed and "." in k}
        else:
            pinnable = fixed_param_dimensions(space, granularity)
        for key, value in v.items():
            dim = pinnable.get(key)
            if dim is None:
                raise ValueError(
                    f"{key!r} is not a parameter of {space} at granularity {granularity!r} "
                    "(GET /v1/spaces lists them)"
                )
            if not any(_same(value, c) for c in allowed[dim]):
                raise ValueError(
                    f"fixed_params.{key}: {value!r} is not allowed for {dim}; "
                    f"choose from {list(allowed[dim])}"
                )
        return v

    @model_validator(mode="after")
    def _cross_fields(self) -> JobSpec:
        if (self.space == NetworkSpace.name) != (self.network is not None):
            raise ValueError(
                "space 'network' and network: 'user/<name>' go together (a network is "
                "compressed in its own space; a built-in space builds its own architectures)"
            )
        # every profile an objective or constraint names is measured
        named = [o.removeprefix("latency@") for o in self.objectives if o.startswith("latency@")]
        named += [p for p in map(named_profile, self.constraints) if p]
        self.profiles = [
            *self.profiles,
            *(p for p in dict.fromkeys(named) if p not in self.profiles),
        ]
        if len(self.profiles) > 16:
            raise ValueError(f"profiles: {len(self.profiles)} named, at most 16")
        objectives: list[str] = []
        for o in self.objectives:
            objectives += [f"latency@{p}" for p in self.profiles] if o == "latency" else [o]
        self.objectives = list(dict.fromkeys(objectives))
        constraints: list[str] = []
        for text in self.constraints:
            constraints += expand_latency(text, self.profiles)
        self.constraints = list(dict.fromkeys(constraints))
        return self

    # ------------------------------------------------------------------ derived
    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(t, self.profiles) for t in self.constraints]

    def choices(self) -> dict[str, list[Any]]:
        """The space overrides as choice lists (ranges were expanded by validation)."""
        return {k: list(v) for k, v in self.space_overrides.items() if isinstance(v, list)}

    def metric_names(self) -> list[str]:
        """Metric names of the Optuna study, in objective order."""
        return [objective_metric(o)[0] for o in self.objectives]

    def directions(self) -> list[str]:
        return [objective_metric(o)[1] for o in self.objectives]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= 1e-9
    return bool(a == b)


def _profiles() -> list[Any]:
    from hw_profiles import list_profiles

    return list_profiles()


def _known_profile(name: str) -> bool:
    try:
        get_profile(name)
    except UnknownProfileError:
        return False
    return True


def canonical_context() -> SpaceContext:
    """The task shape fixed-parameter names are found with (built-in datasets all share them)."""
    ds = list_datasets()[0]
    return SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes)


@cache
def fixed_param_dimensions(space: str, granularity: str) -> dict[str, str]:
    """Every parameter name ``space`` can ask for at ``granularity`` (with every dimension at
    all its allowed values), mapped to the dimension it draws from."""
    cls = get_space(space)
    dims = cls.dimensions()
    widest = cls(canonical_context(), {d.name: list(d.allowed) for d in dims}, granularity)  # type: ignore[arg-type]
    names = {d.name for d in dims}
    return {gene: _dimension_of(gene, names) for gene in genes(widest)}


def _dimension_of(key: str, dims: set[str]) -> str:
    """The dimension a sampled parameter draws from: ``stage1.width`` -> ``width``,
    ``cnn.layer0.width`` -> ``cnn.width``, ``head.wbits`` -> ``head_wbits``, ``kd.alpha`` ->
    ``kd_alpha``."""
    parts = key.split(".")
    names = [key, f"{parts[0]}.{parts[-1]}", parts[-1]]
    for group in ("head", "kd"):
        if group in parts:
            names.insert(1, f"{group}_{parts[-1]}")
    found = next((n for n in names if n in dims), None)
    if found is None:
        raise ValueError(f"parameter {key!r} maps to no dimension of {sorted(dims)}")
    return found


def _refine(schema: dict[str, Any]) -> None:
    from service.schemas.spec_schema import refine

    refine(schema)
