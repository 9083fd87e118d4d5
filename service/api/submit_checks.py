"""What submitting (or extending) a job checks that the stored spec cannot: an upload it names
exists and fits (dataset, network), a warm-start source fits, the profiles' devices answer, and
the account's quotas (403) and submit rate (429)."""

from __future__ import annotations

import math

from fastapi import HTTPException, status
from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.api.errors import conflict, forbidden, invalid, not_found
from service.db import accounts, crud
from service.db.models import User, utcnow
from service.schemas import JobSpec
from service.settings import Settings

RATE_WINDOW_S = 60.0


def int8_paths(job_in: JobSpec) -> None:
    """Every profile's int8 dot-product path can run on the probing CPU: else 422 naming the
    profile, the instruction it demands and what this CPU has (``hw_profiles.isa``)."""
    from hw_profiles import get_profile
    from hw_profiles.isa import Int8DotError, resolve_int8_dot

    for i, name in enumerate(job_in.profiles):
        try:
            resolve_int8_dot(get_profile(name))
        except Int8DotError as e:
            raise invalid(("body", "profiles", i), str(e), name) from None


def reachable(job_in: JobSpec) -> None:
    """Every profile's device answers now (cached ~30 s): else 409, naming the profile."""
    from hw_profiles import get_profile
    from workers.probe.reach import reachability  # imports torch: only when a job comes in

    reach = reachability([get_profile(p) for p in job_in.profiles])
    for i, name in enumerate(job_in.profiles):
        ok, reason = reach[name]
        if not ok:
            raise conflict(f"profiles[{i}]: profile {name!r} is not reachable now: {reason}")


def user_dataset(job_in: JobSpec, settings: Settings, owner_id: int) -> None:
    """An upload is the owner's own; it must exist (404) and fit the space (422)."""
    from search_spaces import SpaceContext, get_space
    from workers.data import UnknownDatasetError, get_dataset

    try:
        ds = get_dataset(job_in.dataset, settings.datasets_dir(owner_id))
    except UnknownDatasetError:
        raise not_found(f"dataset {job_in.dataset!r} (upload it with POST /v1/datasets)") from None
    try:
        context = SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes)
    except ValidationError as e:  # an upload stored before uploads were checked as now
        why = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise invalid(
            ("body", "dataset"), f"dataset {job_in.dataset!r} cannot train a model: {why}"
        ) from None
    try:
        get_space(job_in.space).check_context(context)
    except ValueError as e:
        raise invalid(("body", "space"), str(e), job_in.space) from None


def network(job_in: JobSpec, session: Session, settings: Settings, user: User) -> JobSpec:
    """The network is the owner's own (404), unchanged if the spec names its digest (409), fits
    the dataset (422), and ``fixed_params`` name its groups (422); the spec then records the
    archive's digest."""
    from search_spaces import GROUP_DIMENSIONS
    from service.db import networks
    from workers.data import UnknownDatasetError, get_dataset

    assert job_in.network is not None
    row = networks.find(session=session, owner_id=user.id, name=job_in.network[len("user/") :])
    if row is None:
        raise not_found(f"network {job_in.network!r} (upload it with POST /v1/networks)")
    if job_in.network_digest is not None and job_in.network_digest != row.digest:
        raise conflict(
            f"network_digest: {job_in.network} is now sha256 {row.digest}, not the one given"
        )
    desc = networks.description(row)
    try:
        ds = get_dataset(job_in.dataset, settings.datasets_dir(user.id))
    except UnknownDatasetError:
        raise not_found(f"dataset {job_in.dataset!r} (upload it with POST /v1/datasets)") from None
    if tuple(ds.input_shape) != tuple(desc.input_shape) or ds.num_classes != desc.num_classes:
        raise invalid(
            ("body", "network"),
            f"{job_in.network} takes {list(desc.input_shape)} inputs and gives "
            f"{desc.num_classes} classes; dataset {job_in.dataset!r} has {list(ds.input_shape)} "
            f"samples of {ds.num_classes} classes",
            job_in.network,
        )
    lo, hi = ds.value_range or (0.0, 1.0)
    if desc.normalization.kind == "mean_std" and (lo < -1e-6 or hi > 1.0 + 1e-6):
        raise invalid(
            ("body", "network"),
            f"{job_in.network} takes {desc.normalization.describe()}: images in [0, 1] before "
            f"that; dataset {job_in.dataset!r} holds values in [{lo:.4g}, {hi:.4g}] (upload it "
            "as pixels, or the network without mean/std)",
            job_in.network,
        )
    groups = {g.name: g for g in desc.groups}
    for key in job_in.fixed_params:
        if key.startswith("kd."):
            continue
        group, _, dim = key.rpartition(".")
        g = groups.get(group)
        if (
            g is None
            or dim not in GROUP_DIMENSIONS
            or (dim == "prune" and not g.prunable)
            or (dim == "rank" and not g.factorizable)
        ):
            raise invalid(
                ("body", "fixed_params", key),
                f"{key!r} is not a parameter of {job_in.network} (GET "
                f"/v1/networks/{row.name} lists them)",
            )
    return job_in.model_copy(update={"network_digest": row.digest})


def warm_start(job_in: JobSpec, session: Session, user: User) -> None:
    """The source must be a job of yours (404) that searched the same space and has complete
    trials (409)."""
    assert job_in.warm_start_from is not None
    source = crud.get_job(session=session, job_id=job_in.warm_start_from, user=user)
    if source is None:
        raise not_found(f"warm_start_from: job {job_in.warm_start_from}")
    if source.spec.get("space") != job_in.space:
        raise conflict(
            f"warm_start_from: job {source.id} searched space {source.spec.get('space')!r}, this "
            f"job searches {job_in.space!r}: its candidates do not carry over"
        )
    if source.trials_complete == 0:
        raise conflict(f"warm_start_from: job {source.id} has no complete trials to start from")


def quotas(session: Session, settings: Settings, user: User, *, jobs: int, trials: int) -> None:
    """403 naming the limit an account would pass with ``jobs`` more active jobs asking for
    ``trials`` more trials."""
    if user.quota_exempt:
        return
    limits = accounts.quotas(user, settings)
    used = accounts.usage(session=session, user_id=user.id, settings=settings)
    if jobs and used["active_jobs"] + jobs > limits["max_active_jobs"]:
        raise forbidden(
            f"quota max_active_jobs = {limits['max_active_jobs']} reached: {used['active_jobs']} "
            "of your jobs are queued or running"
        )
    if used["active_trials"] + trials > limits["max_active_trials"]:
        raise forbidden(
            f"quota max_active_trials = {limits['max_active_trials']}: your active jobs ask for "
            f"{used['active_trials']} more trials, this would add {trials}"
        )
    if used["storage_bytes"] > limits["max_storage_bytes"]:
        raise forbidden(
            f"quota max_storage_bytes = {limits['max_storage_bytes']} passed: you hold "
            f"{used['storage_bytes']} bytes of uploads and job artifacts"
        )


def rate(session: Session, settings: Settings, user: User) -> None:
    """429 with Retry-After once the account has submitted or extended its per-minute share."""
    if user.quota_exempt:
        return
    recent = accounts.recent_submits(session=session, user_id=user.id, window_s=RATE_WINDOW_S)
    if len(recent) >= settings.submit_rate_per_min:
        wait = RATE_WINDOW_S - (utcnow() - recent[0]).total_seconds()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"submit rate limit: {settings.submit_rate_per_min} job submissions or extensions "
            "a minute",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
