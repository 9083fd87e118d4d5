"""Uploaded datasets: files under ``<artifact dir>/datasets/<owner id>/`` (what workers read)
and one ``hwnas_datasets`` row each (owner, size, shape: what the API and quotas read)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.accounts import admin_user
from service.db.models import Dataset
from service.settings import Settings
from workers.data import UploadLimits, save_user_dataset

log = logging.getLogger(__name__)


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_decoded_bytes=settings.max_dataset_bytes,
        max_classes=settings.max_classes,
        max_decode_ratio=settings.max_decode_ratio,
    )


def stage(settings: Settings, owner_id: int, name: str, blob: bytes) -> tuple[Path, dict[str, Any]]:
    """Validate and write an upload into a staging directory of its owner (the slow part: run
    it off the event loop). Returns the directory and the dataset's info.

    Raises:
        DatasetFormatError: not a valid dataset (DatasetTooLargeError: over the size limit).
    """
    staging = settings.datasets_dir(owner_id) / f".staging-{uuid.uuid4().hex}"
    try:
        info = save_user_dataset(staging, name, blob, limits=upload_limits(settings))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, info


def staged_bytes(staging: Path) -> int:
    return sum(f.stat().st_size for f in staging.iterdir())


def publish(staging: Path, owner_dir: Path, name: str) -> None:
    """Move a staged upload into place (the row is committed already)."""
    os.replace(staging / f"{name}.npz", owner_dir / f"{name}.npz")
    os.replace(staging / f"{name}.json", owner_dir / f"{name}.json")
    shutil.rmtree(staging, ignore_errors=True)


def remove(owner_dir: Path, name: str) -> None:
    """A deleted upload's files (the metadata first: without it the dataset is unknown)."""
    for suffix in (".json", ".npz"):
        (owner_dir / f"{name}{suffix}").unlink(missing_ok=True)


def adopt_legacy(*, session: Session, settings: Settings) -> int:
    """Uploads from before accounts (``datasets/<name>.npz`` at the top) become the admin's:
    moved to its directory and given a row. Idempotent; returns how many it adopted."""
    root = settings.user_data_dir
    if not root.is_dir():
        return 0
    admin = admin_user(session=session)
    target = settings.datasets_dir(admin.id)
    adopted = 0
    for meta in sorted(root.glob("*.json")):
        name, npz = meta.stem, meta.with_suffix(".npz")
        if not npz.is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(npz, target / npz.name)
            os.replace(meta, target / meta.name)
        except FileNotFoundError:  # another process adopted it first
            continue
        known = session.scalar(
            select(Dataset).where(Dataset.owner_id == admin.id, Dataset.name == name)
        )
        if known is None:
            session.add(
                Dataset(
                    owner_id=admin.id,
                    name=name,
                    size_bytes=(target / npz.name).stat().st_size,
                    info=json.loads((target / meta.name).read_text()),
                )
            )
        adopted += 1
    session.commit()
    if adopted:
        log.info("%d uploaded datasets from before accounts now belong to the admin", adopted)
    return adopted
