"""/v1/networks: upload a trained model (a torch.export archive, no pickle) to compress; list,
inspect and delete yours.

An upload is read without unpickling anything, raised back into trainable layers, checked
against the ops hwnas can compress, lower and export (422 naming each op and node otherwise) and
against what it was exported as (the raised graph must compute what the archive computes), and
described as layer groups: the dimensions of its space. Jobs of its owner name it
``user/<name>`` (``"network"``); the archive is stored once per content, by its SHA-256.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from search_spaces import GROUP_DIMENSIONS, LayerGroup, NetworkSpace, Normalization
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
from service.db import accounts
from service.db import networks as store
from service.db.models import Network, User
from service.schemas.pages import Page
from service.schemas.spec import MAX_ID

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/networks", tags=["networks"], route_class=ReleasingRoute)
NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_CHANNELS = 4


class NetworkPublic(BaseModel):
    name: str = Field(examples=["user/resnet18"])
    owner: str
    digest: str = Field(description="SHA-256 of the archive (jobs record the one they used)")
    size_bytes: int
    input_shape: list[int]
    num_classes: int
    normalization: Normalization
    layers: int
    params: int
    groups: list[LayerGroup] = Field(description="its layer groups: each a set of parameters")
    ops: dict[str, int]
    created_at: datetime


class NetworksPublic(Page):
    data: list[NetworkPublic]


class NetworkSpacePublic(BaseModel):
    dimensions: list[dict[str, Any]] = Field(description="as GET /v1/spaces lists them")
    parameters: list[str] = Field(
        description="what a job on it samples (and fixed_params may pin): <group>.<dimension>"
    )


class NetworkDetail(NetworkPublic):
    space: NetworkSpacePublic


def _public(row: Network, owner: str) -> NetworkPublic:
    d = store.description(row)
    return NetworkPublic(
        name=f"user/{row.name}",
        owner=owner,
        digest=row.digest,
        size_bytes=row.size_bytes,
        input_shape=list(d.input_shape),
        num_classes=d.num_classes,
        normalization=d.normalization,
        layers=d.layers,
        params=d.params,
        groups=list(d.groups),
        ops=d.ops,
        created_at=row.created_at,
    )


@router.get("", responses=responses())
def list_networks(
    session: SessionDep,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> NetworksPublic:
    """Your uploaded networks (an admin: every account's)."""
    stmt = select(Network, User.name).join(User, User.id == Network.owner_id)
    if not user.is_admin:
        stmt = stmt.where(Network.owner_id == user.id)
    rows = session.execute(stmt.order_by(Network.id)).all()
    data = [_public(row, owner) for row, owner in rows]
    return NetworksPublic.of(data[skip : skip + limit], len(data), skip, limit)


@router.get("/{name}", responses=responses(404))
def get_network(
    name: Annotated[str, Path(pattern=NAME, description="the <name> of user/<name>")],
    session: SessionDep,
    user: CurrentUser,
) -> NetworkDetail:
    """One network of yours: its description and the dimensions of its space (each group's
    parameters are ``<group>.<dimension>``, e.g. ``layer4.prune``)."""
    row = store.find(session=session, owner_id=user.id, name=name)
    if row is None:
        raise not_found(f"network user/{name}")
    parameters = [
        f"{g.name}.{dim}"
        for g in store.description(row).groups
        for dim in GROUP_DIMENSIONS
        if (dim != "prune" or g.prunable) and (dim != "rank" or g.factorizable)
    ]
    return NetworkDetail(
        **_public(row, user.name).model_dump(),
        space=NetworkSpacePublic(
            dimensions=NetworkSpace.describe()["dimensions"], parameters=parameters
        ),
    )


_BODY = {
    "requestBody": {
        "required": True,
        "description": "the raw bytes of a torch.export archive (torch.export.save): a JSON graph "
        "and raw weight files; pickled members are refused or ignored; ONNX is not taken",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _normalization(mean: list[float] | None, std: list[float] | None) -> Normalization:
    if mean is None and std is None:
        return Normalization()
    for field, values in (("mean", mean), ("std", std)):
        if values is None:
            raise invalid(("query", field), "give mean and std together (one per channel)")
        if not 1 <= len(values) <= MAX_CHANNELS or not all(math.isfinite(v) for v in values):
            raise invalid(("query", field), f"1 to {MAX_CHANNELS} finite numbers, one per channel")
    try:
        return Normalization(kind="mean_std", mean=tuple(mean or ()), std=tuple(std or ()))
    except ValidationError as e:
        raise invalid(("query", "std"), e.errors()[0]["msg"]) from None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(403, 409, 413, 507),
    openapi_extra=_BODY,
)
async def upload_network(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    user: CurrentUser,
    name: Annotated[str, Query(pattern=NAME, description="stored as user/<name>")],
    mean: Annotated[
        list[float] | None, Query(description="per-channel mean the model subtracts (x in [0, 1])")
    ] = None,
    std: Annotated[list[float] | None, Query(description="per-channel std it divides by")] = None,
) -> NetworkPublic:
    """Upload a trained network as the raw bytes of a ``torch.export`` archive (``.pt2``).
    Without ``mean`` / ``std`` it takes images as hwnas stores them, pixels / 255 in [0, 1]."""
    normalization = _normalization(mean, std)
    blob = await read_limited(request, settings.max_network_bytes, "network")
    return await run_in_threadpool(
        _store, session, settings, user, name, blob, normalization, client_of(request)
    )


def _store(
    session: SessionDep,
    settings: SettingsDep,
    user: User,
    name: str,
    blob: bytes,
    normalization: Normalization,
    client: str,
) -> NetworkPublic:
    from workers.networks import NetworkError

    if store.find(session=session, owner_id=user.id, name=name) is not None:
        raise conflict(f"network user/{name} already exists")
    try:
        desc = store.check_upload(settings, name, blob, normalization)
    except NetworkError as e:
        raise invalid(("body",), str(e)) from None
    except store.NormalizationError as e:  # mean / std against the network's channels
        raise invalid(("query", e.field), str(e)) from None
    except MemoryError:
        raise invalid(("body",), "the network does not fit in memory here") from None
    except Exception as e:  # noqa: BLE001 - torch on a graph it reads but cannot run
        log.warning("network upload %r refused: %s: %s", name, type(e).__name__, str(e)[:300])
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise invalid(
            ("body",), f"the network cannot be run here: {type(e).__name__}: {first}"
        ) from None
    accounts.lock_account(session=session, user_id=user.id)
    if store.find(session=session, owner_id=user.id, name=name) is not None:
        raise conflict(f"network user/{name} already exists")
    check_storage(session, settings, user, len(blob), "network")
    try:
        store.store(settings, user.id, blob, desc.digest)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(f"network user/{name}", e) from None
        raise
    row = Network(
        owner_id=user.id,
        name=name,
        digest=desc.digest,
        size_bytes=len(blob),
        info=desc.model_dump(mode="json"),
    )
    session.add(row)
    accounts.audit(
        session=session,
        user=user,
        action="network.upload",
        target=f"network user/{name}",
        detail={"bytes": len(blob), "digest": desc.digest, "groups": len(desc.groups)},
        client=client,
    )
    session.commit()
    return _public(row, user.name)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409),
)
def delete_network(
    name: Annotated[str, Path(pattern=NAME, description="the <name> of user/<name>")],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Response:
    """Delete a network of yours; 409 while a queued or running job of yours compresses it."""
    row = store.find(session=session, owner_id=user.id, name=name)
    if row is None:
        raise not_found(f"network user/{name}")
    digest = row.digest
    detail = {"bytes": row.size_bytes, "digest": digest}
    delete_upload(
        session,
        user,
        "network",
        name,
        row,
        detail,
        client_of(request),
        lambda: store.forget(session=session, settings=settings, owner_id=user.id, digest=digest),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
