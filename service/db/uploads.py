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
from workers.data import (
    DatasetFormatError,
    UploadLimits,
    is_image_zip,
    save_image_folder,
    save_user_dataset,
)
from workers.data._stored import remove_stored

log = logging.getLogger(__name__)


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_decoded_bytes=settings.max_dataset_bytes,
        max_classes=settings.max_classes,
        max_decode_ratio=settings.max_decode_ratio,
    )


def stage(
    settings: Settings,
    owner_id: int,
    name: str,
    blob: bytes,
    image_size: tuple[int, int] | None = None,
    channels: int = 3,
) -> tuple[Path, dict[str, Any]]:
    """Validate and write an upload into a staging directory of its owner (the slow part: run
    it off the event loop): an ``.npz``, or an image-folder zip resized to ``image_size``.
    Returns the directory and the dataset's info.

    Raises:
        DatasetFormatError: not a valid dataset (DatasetTooLargeError: over the size limit;
            an image-folder zip without ``image_size`` names it).
    """
    staging = settings.datasets_dir(owner_id) / f".staging-{uuid.uuid4().hex}"
    limits = upload_limits(settings)
    try:
        if is_image_zip(blob):
            if image_size is None:
                raise DatasetFormatError(
                    "image_size: an image-folder zip needs the size to resize its images to "
                    "(?image_size=32, or 32x48)"
                )
            info = save_image_folder(
                staging, name, blob, size=image_size, channels=channels, limits=limits
            )
        else:
            info = save_user_dataset(staging, name, blob, limits=limits)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, info


def staged_bytes(staging: Path) -> int:
    return sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())


def publish(staging: Path, owner_dir: Path, name: str) -> None:
    """Move a staged upload into place (the row is committed already): its arrays first, its
    description last (what makes it known)."""
    remove_stored(owner_dir, name)  # what a deleted upload of the name may have left
    os.replace(staging / name, owner_dir / name)
    os.replace(staging / f"{name}.json", owner_dir / f"{name}.json")
    shutil.rmtree(staging, ignore_errors=True)


def remove(owner_dir: Path, name: str) -> None:
    """A deleted upload's files (the description first: without it the dataset is unknown)."""
    remove_stored(owner_dir, name)


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
