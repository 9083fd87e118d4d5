"""Job request/response schemas. Validation here is what turns bad input into a 422."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hw_profiles import UnknownProfileError, get_profile
from search_spaces import SpaceContext, UnknownSpaceError, get_space
from service.schemas.constraints import parse_constraint
from workers.data import UnknownDatasetError, get_dataset
from workers.scoring import OBJECTIVES, Constraint, objective_metric


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, le=10_000, description="COMPLETE trials to run", examples=[24])
    max_failed: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="the job fails when more trials than this fail (default: the trial budget)",
    )
    tune_s: float = Field(
        default=900.0,
        ge=0,
        le=86_400,
        description="MetaSchedule seconds this job may spend on tasks the shared tuning "
        "database lacks (probes of still-untuned tasks are flagged partial)",
    )


class Training(BaseModel):
    """How parents are trained and candidates compressed (defaults suit digits on 2 cores)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=20, ge=1, le=500, description="dense parent training epochs")
    finetune_epochs: int = Field(default=5, ge=0, le=500, description="KD fine-tune epochs")
    batch_size: int = Field(default=64, ge=1, le=4096)
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
    sparsity_steps: int = Field(
        default=1, ge=1, le=10, description="unstructured pruning: 1 = one-shot; k = gradual"
    )
    sparsity_scope: Literal["layer", "global"] = Field(
        default="layer",
        description="unstructured pruning: each layer to its own sparsity, or one magnitude "
        "threshold over the sparse layers removing the same total",
    )
    prune_criterion: Literal["l1", "bn_gamma", "taylor"] = "l1"
    prune_steps: int = Field(default=1, ge=1, le=10, description="1 = one-shot; k = iterative")
    conv_decomposition: Literal["tucker2", "svd"] = "tucker2"
    rank_energy: float | None = Field(
        default=None, gt=0, le=1, description="automatic rank keeping this spectral energy"
    )
    quant: Literal["auto", "ptq", "qat"] = Field(
        default="auto", description="auto: PTQ when every weight has >= 8 bits, else QAT"
    )
    qat_epochs: int = Field(default=2, ge=0, le=100)
    act_observer: Literal["minmax", "percentile", "mse"] = "minmax"
    weight_observer: Literal["minmax", "mse"] = "minmax"
    calib_batches: int = Field(default=16, ge=1, le=1000)
    train_subset: int | None = Field(
        default=None, ge=100, le=10_000_000, description="fine-tune on this many training rows"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class Fidelity(BaseModel):
    """Successive halving over training epochs, candidates ranked by Pareto rank per rung."""

    model_config = ConfigDict(extra="forbid")

    min_fraction: float = Field(
        default=0.25, gt=0, lt=1, description="epochs of the lowest rung, as a fraction of full"
    )
    eta: int = Field(default=3, ge=2, le=10, description="keep the best 1/eta at each rung")

    def rungs(self) -> list[float]:
        """Epoch fractions from the lowest rung up to 1.0 (full budget)."""
        out, f = [], self.min_fraction
        while f < 1.0 - 1e-3:  # 0.333333 x 3 is the full budget, not another rung below it
            out.append(round(f, 6))
            f *= self.eta
        return [*out, 1.0]


class JobCreate(BaseModel):
    """A search job: what to search, for which targets, against which objectives."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-demo",
                    "dataset": "digits",
                    "space": "small_joint",
                    "profiles": ["x86/local"],
                    "objectives": ["accuracy", "latency@x86/local", "size"],
                    "budget": {"trials": 24},
                }
            ]
        },
    )

    name: str = Field(default="", max_length=200)
    dataset: str = Field(examples=["digits"])
    split_seed: int = Field(default=0, ge=0, le=2**31 - 1)
    space: str = Field(examples=["small_joint"])
    space_overrides: dict[str, list[Any] | dict[str, float]] = Field(
        default_factory=dict,
        description="narrow a dimension: a list of choices, or {'min': a, 'max': b}",
        examples=[{"wbits": [4, 8], "prune": {"max": 0.5}}],
    )
    granularity: Literal["stage", "block"] = Field(
        default="stage", description="compression choices per stage, or per block"
    )
    profiles: list[str] = Field(min_length=1, max_length=16, examples=[["x86/local"]])
    objectives: list[str] = Field(
        default_factory=lambda: ["accuracy", "latency", "size"],
        min_length=1,
        max_length=20,
        validate_default=True,
    )
    budget: Budget
    training: Training = Training()
    constraints: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="bounds a result must meet to count: '<metric> <= <number> [unit]'",
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
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    fixed_params: dict[str, int | float | str] = Field(
        default_factory=dict,
        description="search parameters pinned to one value (e.g. search only the compression "
        "of a chosen architecture)",
        examples=[{"family": "cnn", "cnn.depth": 2}],
    )
    warm_start_from: int | None = Field(
        default=None, ge=1, description="an earlier job whose best candidates are tried first"
    )

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v.startswith("user/"):  # uploaded: checked against the store by the route
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
        if "dataset" in info.data and not info.data["dataset"].startswith("user/"):
            ds = get_dataset(info.data["dataset"])
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
        try:
            profiles = [get_profile(name) for name in v]
        except UnknownProfileError as e:
            raise ValueError(str(e)) from None
        from workers.probe.reach import reachability  # imports torch: only when a job comes in

        reach = reachability(profiles)  # cached ~30 s, bounded by short timeouts
        for i, name in enumerate(v):
            ok, reason = reach[name]
            if not ok:
                raise ValueError(f"profiles[{i}]: profile {name!r} is not reachable: {reason}")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str], info: ValidationInfo) -> list[str]:
        profiles = info.data.get("profiles", [])
        out: list[str] = []
        for name in v:
            if name in OBJECTIVES:
                out.append(name)
            elif name == "latency":
                out += [f"latency@{p}" for p in profiles]
            elif name.startswith("latency@"):
                if profiles and name.split("@", 1)[1] not in profiles:
                    raise ValueError(
                        f"objective {name!r} names a profile not in profiles {profiles}"
                    )
                out.append(name)
            else:
                raise ValueError(
                    f"unknown objective {name!r}; use 'accuracy', 'size', 'latency' or "
                    "'latency@<profile>'"
                )
        if len(set(out)) != len(out):
            raise ValueError(f"duplicate objectives in {v}")
        return out

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str], info: ValidationInfo) -> list[str]:
        profiles = info.data.get("profiles", [])
        seen: set[tuple[str, str]] = set()
        for i, text in enumerate(v):
            try:
                c = parse_constraint(text, profiles)
            except ValueError as e:
                raise ValueError(f"constraints[{i}]: {e}") from None
            if (c.metric, c.op) in seen:
                raise ValueError(f"constraints[{i}]: a second bound on {c.metric}")
            seen.add((c.metric, c.op))
        return [t.strip() for t in v]

    @field_validator("fixed_params")
    @classmethod
    def _fixed(
        cls, v: dict[str, int | float | str], info: ValidationInfo
    ) -> dict[str, int | float | str]:
        if "space" not in info.data:
            return v
        dims = {d.name: d for d in get_space(info.data["space"]).dimensions()}
        for key, value in v.items():
            dim = _dimension_of(key, dims)
            if dim is None:
                raise ValueError(
                    f"fixed_params: {key!r} is not a parameter of {info.data['space']}"
                )
            if value not in dim.allowed:
                raise ValueError(
                    f"fixed_params.{key}: {value!r} is not allowed; choose from {list(dim.allowed)}"
                )
        return v

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


def _dimension_of(key: str, dims: dict[str, Any]) -> Any:
    """The dimension a sampled parameter draws from: ``stage1.width`` -> ``width``,
    ``cnn.layer0.width`` -> ``cnn.width``, ``head.wbits`` -> ``head_wbits``, ``kd.alpha`` ->
    ``kd_alpha``."""
    parts = key.split(".")
    names = [key, f"{parts[0]}.{parts[-1]}", parts[-1]]
    for group in ("head", "kd"):
        if group in parts:
            names.insert(1, f"{group}_{parts[-1]}")
    return next((dims[n] for n in names if n in dims), None)


class Progress(BaseModel):
    trials_complete: int
    trials_failed: int
    budget: int
    best_accuracy: float | None


class JobPublic(BaseModel):
    id: int
    name: str
    status: str
    spec: dict[str, Any]
    study_name: str | None
    progress: Progress
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Extend(BaseModel):
    """More budget for an ended job."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, le=10_000, description="COMPLETE trials to add")
    tune_s: float = Field(default=0.0, ge=0, le=86_400, description="tuning seconds to add")


class JobReport(BaseModel):
    """Cost and savings of a job, summed over its trials."""

    job_id: int
    trials: dict[str, int]
    cpu_s: dict[str, float]
    device_s: dict[str, float]
    wall_s: dict[str, float]
    cache: dict[str, Any] = Field(
        description="hit rates: ``parent`` (trained dense parents), ``probe`` (exact lowered "
        "structure timed before), ``tuning_tasks`` (tuning tasks found with a record / tasks "
        "probed: the task-level record hit rate)"
    )
    prefilter: dict[str, Any]
    nodes: dict[str, int]
    verification: dict[str, Any] | None = Field(
        default=None,
        description="the front's verification after the job (rounds, points, seconds): extra "
        "work beside the trials' cost",
    )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class TrialPublic(BaseModel):
    number: int
    state: str
    candidate: dict[str, Any]
    summary: str
    metrics: dict[str, Any] | None
    latency: dict[str, Any] | None
    verified: dict[str, Any] | None = None
    timings: dict[str, Any] | None
    error: str | None
    model_id: str | None


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int


class ParetoPoint(BaseModel):
    """One point of the front. ``accuracy`` is on the validation split (the objective);
    ``latency_ms`` is the verified latency of the shipped library where the job verified it
    (``latency_source``), else the search-time probe's."""

    trial: int
    accuracy: float
    test_accuracy: float | None
    test_accuracy_ci95: tuple[float, float] | None = None
    latency_ms: dict[str, float]
    latency_source: dict[str, str] = Field(default_factory=dict)
    latency_search_ms: dict[str, float] = Field(default_factory=dict)
    latency_tuning: dict[str, str]
    verified: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per profile: the verification (spread, canary)"
    )
    speedup_vs_dense: dict[str, float | None] = Field(default_factory=dict)
    no_speedup: dict[str, bool | None] = Field(
        default_factory=dict, description="compressed but less than 1.05x faster than dense"
    )
    latency_disagrees: dict[str, bool | None] = Field(
        default_factory=dict, description="search-time and verified latency differ beyond noise"
    )
    size_bytes: int
    size_ratio_vs_dense: float | None = None
    file_scores: dict[str, dict[str, Any]] = Field(default_factory=dict)
    candidate: dict[str, Any]
    summary: str
    model_id: str | None


class ParetoPublic(BaseModel):
    job_id: int
    metric_names: list[str]
    data: list[ParetoPoint]
    verification: dict[str, Any] | None = Field(
        default=None, description="how the front's latencies were verified after the job"
    )
