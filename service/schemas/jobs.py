"""Job responses and the extend request (the job spec itself: :mod:`service.schemas.spec`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.pages import Page
from service.schemas.spec import Int


class TrialStage(BaseModel):
    """Where a running trial is, as its worker last reported."""

    trial: int
    stage: str = Field(examples=["training parent epoch"])
    step: int | None = None
    steps: int | None = None
    text: str = Field(examples=["training parent epoch 3/6"])
    at: datetime = Field(description="when the worker reported it")


class Progress(BaseModel):
    trials_complete: int
    trials_failed: int
    budget: int
    best_accuracy: float | None
    trials_running: list[TrialStage] = Field(
        default_factory=list, description="the trials in flight and their stage"
    )
    eta_s: float | None = Field(
        default=None,
        description="seconds until the trial budget is met at the pace so far (complete "
        "trials per second since the job started); null before the first complete trial. The "
        "front's verification after the search is not included.",
    )
    eta: datetime | None = Field(default=None, description="now + eta_s")


class JobPublic(BaseModel):
    id: int
    owner: str = Field(description="the account that submitted the job")
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
    """More budget for an ended job (the job's budget after it must stay within the bounds of
    ``budget``: at most 10,000 trials and 86,400 tuning seconds in all)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    trials: Int = Field(ge=1, le=10_000, description="COMPLETE trials to add")
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


class JobsPublic(Page):
    data: list[JobPublic]


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
    stage: TrialStage | None = Field(default=None, description="a running trial's stage")


class TrialsPublic(Page):
    data: list[TrialPublic]


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
    latency_partial: dict[str, bool | None] = Field(
        default_factory=dict,
        description="per profile: some of the library's tuning tasks had no record when it "
        "was compiled (those kernels use default schedules); None: not recorded",
    )
    int8_dot: dict[str, str] = Field(
        default_factory=dict,
        description="per profile: the dot-product instruction the int8 kernels use (vnni, "
        "amx, sdot) or none (plain vector code: no int8 dot-product on this target)",
    )
    isa: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per profile: the measuring CPU's architecture and instruction-set flags",
    )
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
    accuracy_change: float | None = Field(
        default=None,
        description="validation accuracy minus the parent's (your uploaded model's, for a "
        "network job; else the dense trained parent's)",
    )
    test_accuracy_change: float | None = Field(
        default=None, description="test accuracy minus your uploaded model's (network jobs)"
    )
    file_scores: dict[str, dict[str, Any]] = Field(default_factory=dict)
    candidate: dict[str, Any]
    summary: str
    model_id: str | None


class ParetoPublic(BaseModel):
    job_id: int
    compared_with: str = Field(
        default="each point's dense fp32 parent (same architecture, trained by hwnas)",
        description="what speedup_vs_dense, size_ratio_vs_dense and the accuracy changes are "
        "against",
    )
    metric_names: list[str]
    data: list[ParetoPoint]
    verification: dict[str, Any] | None = Field(
        default=None, description="how the front's latencies were verified after the job"
    )
