"""Typed records that cross the scheduler <-> worker boundary.

The scheduler builds an :class:`EvalRequest`, the Ray edge serializes it to JSON and back, the
worker returns an :class:`EvalResult` (serialized the same way); everything in between works on
these types, never on loose dicts. A verification of a job's front uses :class:`VerifyRequest`
and :class:`VerifyResult`. Every record forbids unknown fields, so a field renamed on one side
fails loudly at the edge instead of reading as missing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from search_spaces import Candidate, NetworkDescription
from workers.scoring import Constraint

Tuning = Literal["metaschedule", "untuned", "default-gpu"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timing(_Record):
    """Per-sample latency statistics of one library in one timing window (ms)."""

    median_ms: float
    iqr_ms: float
    cv: float
    min_ms: float
    max_ms: float
    repeat: int = Field(description="samples (timing rounds)")
    number: int = Field(description="runs averaged into each sample")


class Window(_Record):
    """One timing window: a library timed in rounds interleaved with the profile's canary.

    ``normalized`` is the median over rounds of (library sample / canary sample of the same
    round): a ratio that cancels the machine's drift between windows, so numbers from different
    windows, nodes and days compare. ``normalized_iqr`` is its spread over rounds.
    """

    timing: Timing
    canary: Timing | None
    normalized: float | None
    normalized_iqr: float | None
    quiet: Literal["lease", "remote", "none"] = Field(
        description="lease: no training ran on this node while timing (the node's timing "
        "lease); remote: timed on a remote device; none: nothing held (label, not a claim)"
    )
    lease_wait_s: float = 0.0
    remeasured: bool = False


class ProbeStats(_Record):
    """A latency probe of one compressed candidate on one hardware profile."""

    median_ms: float
    iqr_ms: float
    cv: float
    min_ms: float
    max_ms: float
    repeat: int
    number: int
    remeasured: bool = False
    canary_id: str | None = Field(default=None, description="the canary library timed beside")
    canary_ms: float | None = None
    canary_iqr_ms: float | None = None
    normalized: float | None = Field(default=None, description="median / canary (per round)")
    normalized_iqr: float | None = None
    quiet: Literal["lease", "remote", "none"] = "none"
    lease_wait_s: float = 0.0
    latency_source: Literal["measured", "cache"] = Field(
        default="measured",
        description="measured in this probe, or copied from the probe cache (the same lowered "
        "structure measured before: ``cache_hit``)",
    )
    cache_hit: bool = False
    numerics_checked: bool = False
    argmax_agreement: float | None = None
    max_abs_err: float | None = None
    rel_err: float | None = Field(
        default=None, description="max |compiled - PyTorch| / max |PyTorch logit|"
    )
    n_checked: int = 0
    precision: dict[str, int] = Field(default_factory=dict)
    tuning: Tuning
    cost_model: str | None = Field(default=None, description="MetaSchedule's cost model")
    partial: bool = False
    tasks: int = 0
    tasks_found_tuned: int = Field(
        default=0, description="tasks that already had a tuning record when this probe began"
    )
    untuned_tasks: list[str] = Field(default_factory=list)
    tune_s: float = 0.0
    compile_s: float | None = None
    measure_s: float | None = None
    structure: str
    tvm_version: str
    target: str
    threads: int
    via: str
    int8_dot: Literal["none", "vnni", "amx", "sdot"] = Field(
        default="none",
        description="the dot-product instruction the int8 kernels were built for (none: plain "
        "vector code; hw_profiles.isa)",
    )
    int8_dot_note: str | None = Field(
        default=None,
        description="why int8_dot is not the profile's path (its self-check failed here)",
    )
    isa: list[str] = Field(
        default_factory=list,
        description="the measuring CPU: its architecture and instruction-set flags (a board: "
        "the target's mattr)",
    )
    emulated: bool = Field(
        default=False, description="timed on an emulated device: not a latency of the device"
    )
    rpc: str | None = None
    remote_threads: int | None = None
    rpc_attempts: int | None = None
    probe_worker_calls: int | None = None

    def int8_note(self) -> str:
        """What a model card says of this profile's int8 kernels, and whether they were tuned."""
        n = self.precision.get("int8", 0)
        if not n:
            return "no int8 layers"
        tuned: str = "tuned" if self.tuning == "metaschedule" and not self.partial else self.tuning
        if self.partial:
            tuned += ", partly untuned"
        if self.int8_dot == "none":
            why = f"; {self.int8_dot_note}" if self.int8_dot_note else ""
            return (
                f"{n} int8 layer(s); no int8 dot-product on this target: they run as plain "
                f"vector integer code ({tuned}{why})"
            )
        return f"{n} int8 layer(s) use the {self.int8_dot} dot-product instruction ({tuned})"

    def public(self) -> dict[str, Any]:
        """What a trial keeps of a probe (Optuna user attrs, the API)."""
        return self.model_dump(
            include={
                "median_ms",
                "iqr_ms",
                "cv",
                "repeat",
                "number",
                "canary_ms",
                "normalized",
                "normalized_iqr",
                "quiet",
                "latency_source",
                "tuning",
                "cost_model",
                "partial",
                "precision",
                "cache_hit",
                "tune_s",
                "tvm_version",
                "structure",
                "int8_dot",
                "int8_dot_note",
                "isa",
                "emulated",
            }
        )


class FileScore(_Record):
    """How one shipped file scores on the test split, run by its own runtime."""

    path: str
    runtime: str
    test_accuracy: float | None
    ci95: tuple[float, float] | None = None
    agrees_with_card: bool | None = None
    note: str = ""


class Metrics(_Record):
    """What was measured of a candidate (accuracy on validation is the objective)."""

    accuracy: float | None = None
    test_accuracy: float | None = None
    test_accuracy_ci95: tuple[float, float] | None = None
    test_n: int | None = None
    parent_accuracy: float | None = None
    parent_test_accuracy: float | None = Field(
        default=None,
        description="an uploaded network's own test accuracy (what it is compared with)",
    )
    size_bytes: int
    dense_size_bytes: int | None = None
    params: int | None = None
    macs: int
    bitops: int
    quantization: str | None = None
    latency_ms: dict[str, float] = Field(default_factory=dict)
    latency_partial: list[str] = Field(default_factory=list)


class PrefilterResult(_Record):
    metrics: Metrics
    latency: dict[str, ProbeStats]
    violations: dict[str, float] = Field(description="broken constraints: relative excess")
    rejected: bool


class NetworkSource(_Record):
    """Where an uploaded network's archive lies and how it is grouped (for its candidates)."""

    store: str = Field(description="the network store: <store>/<sha256>.pt2")
    description: NetworkDescription


class EvalRequest(_Record):
    """What the scheduler asks a worker to do with one candidate."""

    candidate: Candidate
    dataset: str
    profiles: list[str]
    bundle_dir: str
    cache_dir: str
    split_seed: int = 0
    user_dir: str | None = None
    threads: int = 1
    recipe: dict[str, Any] = Field(default_factory=dict)
    tuning_dir: str | None = None
    probe_cache_dir: str | None = None
    tune_budget_s: float = 0.0
    check_samples: int = 256
    constraints: list[Constraint] = Field(default_factory=list, description="pre-filter these")
    epochs_fraction: float = 1.0
    export: bool = True
    num_gpus: float = 0.0
    progress_path: str | None = Field(
        default=None, description="where the worker reports the trial's stage (workers.progress)"
    )
    network: NetworkSource | None = Field(
        default=None, description="the uploaded network a 'network' candidate compresses"
    )


class EvalResult(_Record):
    """What a worker returns for one candidate (a pre-filter rejection has no training)."""

    prefiltered: bool
    prefilter: PrefilterResult | None = None
    metrics: Metrics
    latency: dict[str, ProbeStats]
    bundle_dir: str | None = None
    files: dict[str, FileScore] = Field(default_factory=dict)
    parent_cache_hit: bool | None = None
    node: str
    timings: dict[str, float]
    cpu_s: dict[str, float]
    device_s: dict[str, float]

    def probes(self) -> list[ProbeStats]:
        """Every probe this evaluation ran (pre-filter and after training)."""
        pre = list(self.prefilter.latency.values()) if self.prefilter else []
        return pre if self.prefiltered else [*pre, *self.latency.values()]


class VerifyPoint(_Record):
    number: int
    candidate: Candidate
    bundle_dir: str


class VerifyRequest(_Record):
    """Time the shipped libraries of a job's front, after the job, in a fresh process."""

    job_id: int
    profiles: list[str]
    points: list[VerifyPoint]
    tuning_dir: str | None = None
    probe_cache_dir: str | None = None
    tune_budget_s: float = Field(default=0.0, description="for dense parents' new tasks")
    windows: int = Field(default=3, ge=1, le=20)
    num_gpus: float = 0.0
    network: NetworkSource | None = None


class Verified(_Record):
    """The verified latency of one shipped library on one profile, beside its dense parent."""

    median_ms: float | None
    iqr_ms: float | None
    normalized: float | None
    normalized_iqr: float | None
    canary_ms: float | None
    canary_id: str | None
    windows: int
    repeat: int
    number: int
    quiet: Literal["lease", "remote", "none"]
    process: str = Field(description="how it was timed (a fresh process, its runtime calls)")
    dense_ms: float | None = None
    dense_normalized: float | None = None
    dense_tuning: str | None = None
    dense_partial: bool | None = None
    speedup_vs_dense: float | None = None
    no_speedup: bool | None = None
    search_ms: float | None = None
    search_normalized: float | None = None
    disagrees: bool | None = Field(
        default=None,
        description="search-time and verified normalized latency differ beyond their noise",
    )
    library_rebuilt: bool = Field(
        default=False,
        description="the shipped library was partly untuned after the search: its missing "
        "tasks were tuned and it was rebuilt (and re-checked) before this timing, so the "
        "search-time latency is of the earlier build",
    )
    library_partial: bool | None = Field(
        default=None, description="the verified library still has tasks without a record"
    )
    library_partial_why: str | None = None
    error: str | None = None


class VerifiedPoint(_Record):
    number: int
    latency: dict[str, Verified]
    size_ratio_vs_dense: float | None = None


class VerifyResult(_Record):
    points: list[VerifiedPoint]
    seconds: float
    node: str
