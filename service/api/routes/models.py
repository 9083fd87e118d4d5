"""/v1/models: download a trial's model bundle (ONNX, TorchScript, TVM libraries, card)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam

from service.api.deps import CurrentUser, SessionDep, SettingsDep
from service.api.errors import not_found, responses
from service.api.routing import ReleasingRoute
from service.db import crud
from service.schemas.spec import MAX_ID

# Kept beside a partly tuned library until verification finishes it (workers.probe.finish):
# build inputs, not part of the model a user pulls.
BUILD_ONLY = (".relax.json.gz", ".check.npz")

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=ReleasingRoute)
MODEL_ID = r"^[0-9]{1,10}-[0-9]{1,10}$"
_ZIP: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the bundle as a zip: model.onnx, model.pt (TorchScript), "
        "weights.packed.safetensors, tvm/<profile>.so, card.json",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/{model_id}",
    response_class=Response,
    responses={**_ZIP, **responses(404, json_route=False)},
)
def download_model(
    model_id: Annotated[str, PathParam(pattern=MODEL_ID, description="'<job id>-<trial number>'")],
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Response:
    """The model bundle of trial ``<job>-<trial>`` of a job of yours, as a zip."""
    job_id, number = (int(p) for p in model_id.split("-"))
    if not (1 <= job_id <= MAX_ID and number <= MAX_ID):
        raise not_found(f"model {model_id}")
    job = crud.get_job(session=session, job_id=job_id, user=user)
    trial = crud.get_trial(session=session, job_id=job_id, number=number) if job else None
    if trial is None or not trial.bundle_dir:
        raise not_found(f"model {model_id}")
    root = Path(settings.artifact_dir).resolve()
    bundle = Path(trial.bundle_dir).resolve()
    if root not in bundle.parents or not bundle.is_dir():
        raise not_found(f"model {model_id}: its bundle files")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(bundle.rglob("*")):
            if f.is_file() and not f.name.endswith(BUILD_ONLY):
                zf.write(f, f.relative_to(bundle).as_posix())
    return Response(
        buf.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="hwnas-model-{model_id}.zip"'},
    )
