"""/v1/datasets: list datasets, upload a user dataset (.npz, no pickle)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from service.api.deps import SettingsDep
from workers.data import DatasetFormatError, list_datasets, save_user_dataset

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.get("")
def get_datasets(settings: SettingsDep) -> dict[str, Any]:
    """Built-in datasets and uploaded ones (``user/<name>``)."""
    data = [
        {
            "name": d.name,
            "description": d.description,
            "input_shape": list(d.input_shape),
            "num_classes": d.num_classes,
        }
        for d in list_datasets()
    ]
    root = settings.user_data_dir
    for meta in sorted(root.glob("*.json")) if root.is_dir() else []:
        info = json.loads(meta.read_text())
        data.append({"name": f"user/{meta.stem}", "description": "uploaded .npz", **info})
    return {"data": data, "count": len(data)}


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_dataset(
    request: Request,
    settings: SettingsDep,
    name: str = Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="stored as user/<name>"),
) -> dict[str, Any]:
    """Upload a dataset as the raw bytes of an ``.npz`` (x_train, y_train, x_test, y_test
    [, x_val, y_val]); pickled object arrays are refused. Jobs then name ``user/<name>``."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"upload over {limit} bytes")
    blob = bytearray()
    async for chunk in request.stream():
        blob += chunk
        if len(blob) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"upload over {limit} bytes")
    if (settings.user_data_dir / f"{name}.npz").exists():
        raise HTTPException(status.HTTP_409_CONFLICT, f"dataset user/{name} already exists")
    try:
        info = save_user_dataset(settings.user_data_dir, name, bytes(blob))
    except DatasetFormatError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"body: {e}") from None
    return {"name": f"user/{name}", **info}
