"""/v1/models: download a trial's model bundle (ONNX, TorchScript, TVM libraries, card)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi import APIRouter, HTTPException, Response

from service.api.deps import SessionDep, SettingsDep
from service.db import crud

router = APIRouter(prefix="/v1/models", tags=["models"])


def _parse(model_id: str) -> tuple[int, int]:
    try:
        job, trial = model_id.split("-", 1)
        return int(job), int(trial)
    except ValueError:
        raise HTTPException(
            status_code=422, detail=f"model_id {model_id!r} must look like '<job>-<trial>'"
        ) from None


@router.get("/{model_id}")
def download_model(model_id: str, session: SessionDep, settings: SettingsDep) -> Response:
    """The model bundle of trial ``<job>-<trial>`` as a zip."""
    job_id, number = _parse(model_id)
    trial = crud.get_trial(session=session, job_id=job_id, number=number)
    if trial is None or not trial.bundle_dir:
        raise HTTPException(status_code=404, detail=f"model {model_id} not found")
    root = Path(settings.artifact_dir).resolve()
    bundle = Path(trial.bundle_dir).resolve()
    if root not in bundle.parents or not bundle.is_dir():
        raise HTTPException(status_code=404, detail=f"model {model_id}: bundle files are missing")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(bundle.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(bundle).as_posix())
    return Response(
        buf.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="hwnas-model-{model_id}.zip"'},
    )
