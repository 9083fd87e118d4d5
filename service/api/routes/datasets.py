"""/v1/datasets: built-in datasets and your uploads; upload one (.npz, no pickle).

An upload is checked from its zip and .npy headers before anything is decompressed (size
limits), validated and written off the event loop, and counted against its owner's storage
quota. Jobs of its owner name it ``user/<name>``; other accounts do not see it.
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import select

from service.api.deps import CurrentUser, SessionDep, SettingsDep, client_of
from service.api.errors import (
    conflict,
    disk_full,
    invalid,
    is_disk_full,
    not_found,
    responses,
)
from service.api.raw_uploads import check_storage, delete_upload, read_limited
from service.api.routing import ReleasingRoute
from service.db import accounts, uploads
from service.db.models import Dataset, User
from service.schemas.pages import Page
from service.schemas.spec import MAX_ID
from workers.data import DatasetFormatError, DatasetTooLargeError, list_datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=ReleasingRoute)
NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class DatasetPublic(BaseModel):
    name: str
    description: str
    input_shape: list[int]
    num_classes: int
    owner: str | None = None
    size_bytes: int | None = None
    sizes: dict[str, int] | None = None


class DatasetsPublic(Page):
    data: list[DatasetPublic]


def _public(row: Dataset, owner: str) -> DatasetPublic:
    return DatasetPublic(
        name=f"user/{row.name}",
        description=str(row.info.get("source", "uploaded .npz")),
        input_shape=list(row.info["input_shape"]),
        num_classes=int(row.info["num_classes"]),
        owner=owner,
        size_bytes=row.size_bytes,
        sizes=row.info.get("sizes"),
    )


@router.get("", responses=responses())
def get_datasets(
    session: SessionDep,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DatasetsPublic:
    """Built-in datasets and your uploads (``user/<name>``; an admin sees every account's)."""
    data = [
        DatasetPublic(
            name=d.name,
            description=d.description,
            input_shape=list(d.input_shape),
            num_classes=d.num_classes,
        )
        for d in list_datasets()
    ]
    stmt = select(Dataset, User.name).join(User, User.id == Dataset.owner_id)
    if not user.is_admin:
        stmt = stmt.where(Dataset.owner_id == user.id)
    data += [_public(row, owner) for row, owner in session.execute(stmt.order_by(Dataset.id))]
    return DatasetsPublic.of(data[skip : skip + limit], len(data), skip, limit)


_BODY = {
    "requestBody": {
        "required": True,
        "description": "the raw bytes of an .npz holding x_train, y_train, x_test, y_test "
        "[, x_val, y_val]: x float or uint8 shaped (N, F), (N, H, W) or (N, C<=4, H, W); y "
        "integer class ids from 0; no object arrays. Or a zip of one folder per class of PNG / "
        "JPEG / BMP / WebP images (<class>/<image>, or train/, test/ [, val/] of those), with "
        "image_size",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(403, 409, 413, 507),
    openapi_extra=_BODY,
)
async def upload_dataset(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    user: CurrentUser,
    name: Annotated[str, Query(pattern=NAME, description="stored as user/<name>")],
    image_size: Annotated[
        str | None,
        Query(
            pattern=r"^[1-9][0-9]{0,3}(x[1-9][0-9]{0,3})?$",
            description="an image-folder zip: the size its images are resized to (32, or HxW)",
        ),
    ] = None,
    channels: Annotated[
        int, Query(ge=1, le=3, description="an image-folder zip: 3 (RGB) or 1 (grayscale)")
    ] = 3,
) -> DatasetPublic:
    """Upload a dataset as the raw bytes of an ``.npz``, or of a zip of one folder of images
    per class (with ``image_size``). Jobs then name ``user/<name>``."""
    size = None
    if image_size is not None:
        h, _, w = image_size.partition("x")
        size = (int(h), int(w or h))
    blob = await read_limited(request, settings.max_upload_bytes, "upload")
    return await run_in_threadpool(
        _store, session, settings, user, name, blob, client_of(request), size, channels
    )


def _store(
    session: SessionDep,
    settings: SettingsDep,
    user: User,
    name: str,
    blob: bytes,
    client: str,
    image_size: tuple[int, int] | None = None,
    channels: int = 3,
) -> DatasetPublic:
    def taken() -> bool:
        found = session.scalar(
            select(Dataset.id).where(Dataset.owner_id == user.id, Dataset.name == name)
        )
        return found is not None

    if taken():
        raise conflict(f"dataset user/{name} already exists")
    try:
        staging, info = uploads.stage(settings, user.id, name, blob, image_size, channels)
    except DatasetTooLargeError as e:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body: {e}") from None
    except DatasetFormatError as e:
        raise invalid(("body",), str(e)) from None
    except OSError as e:
        if is_disk_full(e):  # stage() removed its partial files
            raise disk_full(f"dataset user/{name}", e) from None
        raise
    try:
        size = uploads.staged_bytes(staging)
        accounts.lock_account(session=session, user_id=user.id)
        if taken():
            raise conflict(f"dataset user/{name} already exists")
        check_storage(session, settings, user, size, "dataset")
        row = Dataset(owner_id=user.id, name=name, size_bytes=size, info=info)
        session.add(row)
        accounts.audit(
            session=session,
            user=user,
            action="dataset.upload",
            target=f"dataset user/{name}",
            detail={"bytes": size, **_shape(info)},
            client=client,
        )
        session.commit()
        uploads.publish(staging, settings.datasets_dir(user.id), name)  # renames: no new bytes
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _public(row, user.name)


def _shape(info: dict[str, Any]) -> dict[str, Any]:
    return {"input_shape": info["input_shape"], "num_classes": info["num_classes"]}


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409),
)
def delete_dataset(
    name: Annotated[str, Path(pattern=NAME, description="the <name> of user/<name>")],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Response:
    """Delete an upload of yours; 409 while a queued or running job of yours uses it."""
    row = session.scalar(select(Dataset).where(Dataset.owner_id == user.id, Dataset.name == name))
    if row is None:
        raise not_found(f"dataset user/{name}")
    detail = {"bytes": row.size_bytes}
    delete_upload(session, user, "dataset", name, row, detail, client_of(request))
    uploads.remove(settings.datasets_dir(user.id), name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
