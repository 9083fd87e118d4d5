"""Service settings from the environment (``HWNAS_*``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from search_spaces import MAX_CLASSES


class Settings(BaseSettings):
    """One settings object per process; every field can be set as ``HWNAS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="HWNAS_", extra="ignore", env_ignore_empty=True)

    database_url: str = Field(
        default="sqlite:///./hwnas-data/hwnas.db",
        description="SQLAlchemy URL of the service database (Optuna studies live there too)",
    )
    artifact_dir: Path = Field(default=Path("./hwnas-data/artifacts"))
    ray_address: str | None = Field(
        default=None, description="Ray cluster address; unset = start an embedded local Ray"
    )
    ray_num_cpus: int = Field(default=2, ge=1, le=1024, description="CPUs of the embedded Ray")
    trial_num_cpus: float = Field(default=1.0, gt=0, le=64, description="CPUs per trial task")
    max_in_flight: int = Field(default=0, ge=0, le=1024, description="0 = from cluster CPUs")
    worker_threads: int = Field(default=1, ge=1, le=64, description="torch/TVM threads per trial")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    heartbeat_timeout_s: float = Field(default=60.0, gt=1, le=3600)
    worker_id: str | None = Field(default=None, description="scheduler id (default host:pid)")
    max_upload_bytes: int = Field(
        default=64 * 2**20, ge=1, description="largest dataset upload (request body bytes)"
    )
    max_json_bytes: int = Field(
        default=2**20,
        ge=1024,
        description="largest JSON request body (413 beyond); uploads have max_upload_bytes",
    )
    max_dataset_bytes: int = Field(
        default=2**30,
        ge=1,
        description="largest dataset once decoded (float32 images, int64 labels), checked "
        "from the upload's zip and .npy headers before anything is decompressed",
    )
    max_network_bytes: int = Field(
        default=256 * 2**20,
        ge=1,
        description="largest network upload (a torch.export archive, request body bytes)",
    )
    max_classes: int = Field(
        default=1000,
        ge=2,
        le=MAX_CLASSES,
        description="an upload's labels are class ids 0 .. C-1 with C at most this",
    )
    max_decode_ratio: float = Field(
        default=100.0,
        ge=1,
        description="an upload whose arrays decode (x float32, y int64) to more than 64 MiB "
        "may not decode to more than this many times the bytes uploaded",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the admin account (creates users and tokens); unset = "
        "no admin over the API (hwnas users / hwnas tokens work on the database directly)",
    )
    allowed_hosts: list[str] = Field(
        default=["127.0.0.1", "localhost"],
        description="Host headers the API answers (JSON list; '*' = any)",
    )
    quota_active_jobs: int = Field(default=4, ge=0, description="default: jobs queued/running")
    quota_active_trials: int = Field(
        default=2_000, ge=0, description="default: trials an account's active jobs may ask for"
    )
    quota_storage_bytes: int = Field(
        default=20 * 2**30, ge=0, description="default: bytes of uploads + job artifacts"
    )
    submit_rate_per_min: int = Field(
        default=30, ge=1, description="job submissions per account per minute (429 beyond)"
    )
    tuning_dir: Path = Field(
        default=Path("./hwnas-data/tuning"),
        description="MetaSchedule databases, one per profile and TVM version, shared by all jobs",
    )
    probe_cache_dir: Path = Field(default=Path("./hwnas-data/probe-cache"))
    tune_per_candidate_s: float = Field(
        default=120.0, ge=0, le=86_400, description="tuning seconds one candidate may spend"
    )
    cache_max_age_days: float = Field(
        default=30.0, gt=0, description="gc: parent and probe cache entries unused this long go"
    )
    cache_max_bytes: int = Field(
        default=20 * 2**30, ge=0, description="gc: the least recently used beyond this go"
    )
    gc_interval_s: float = Field(
        default=0.0, ge=0, description="the scheduler collects garbage this often (0 = never)"
    )
    verify: bool = Field(
        default=True,
        description="after a job, time every Pareto bundle's shipped library in a fresh "
        "process beside its dense parent and the canary (the front uses these numbers)",
    )
    verify_windows: int = Field(default=3, ge=1, le=20, description="timing windows per point")
    verify_tune_s: float = Field(
        default=600.0,
        ge=0,
        le=86_400,
        description="tuning seconds a verification may spend on each dense parent's new tasks, "
        "and (one budget per profile) on the tasks partly tuned front libraries lack before "
        "they are rebuilt",
    )

    @field_validator("admin_token")
    @classmethod
    def _strong(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("HWNAS_ADMIN_TOKEN must be at least 16 characters (or unset)")
        return v

    @property
    def user_data_dir(self) -> Path:
        """Where uploaded datasets are stored (under the artifact dir, shared with workers)."""
        return Path(self.artifact_dir).resolve() / "datasets"

    def job_dir(self, job_id: int) -> Path:
        """A job's own artifacts (model bundles, progress files); deleted with the job."""
        return Path(self.artifact_dir).resolve() / "jobs" / str(job_id)

    def progress_file(self, job_id: int, number: int) -> Path:
        """Where trial ``number`` of job ``job_id`` reports its stage (workers.progress)."""
        return self.job_dir(job_id) / "progress" / f"trial-{number:05d}.json"

    @property
    def networks_dir(self) -> Path:
        """Uploaded networks, one archive per content: ``<digest>.pt2`` (workers read it)."""
        return Path(self.artifact_dir).resolve() / "networks"

    def datasets_dir(self, owner_id: int) -> Path:
        """The uploads of account ``owner_id``: its jobs' ``user/<name>`` resolve here."""
        return self.user_data_dir / str(owner_id)


@cache
def get_settings() -> Settings:
    return Settings()
