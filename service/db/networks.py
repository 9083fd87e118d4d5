"""Uploaded networks: one archive per content under ``<artifact dir>/networks/<sha256>.pt2`` (what
workers read, by the candidate's digest) and one ``hwnas_networks`` row per (owner, name) with
its description (what the API, the scheduler and quotas read)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search_spaces import NetworkDescription, Normalization
from service.db.models import Network
from service.settings import Settings


class NormalizationError(ValueError):
    """The declared mean / std do not fit the network (``field`` names which)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_upload(
    settings: Settings, name: str, blob: bytes, normalization: Normalization
) -> NetworkDescription:
    """Read, lift and describe an upload (the slow part: run it off the event loop).

    Raises:
        workers.networks.NetworkError: not an archive hwnas can take (ArchiveError: unsafe or
            malformed; UnsupportedOpError: ops it cannot compress, lower and export).
    """
    from workers.networks import check_lifted, describe, lift, load_program, sha256

    ep = load_program(blob, max_bytes=settings.max_network_bytes * 4)
    lifted = lift(ep)
    check_lifted(ep, lifted)
    if normalization.kind == "mean_std":
        channels = lifted.input_shape[0] if len(lifted.input_shape) == 3 else None
        for field, values in (("mean", normalization.mean), ("std", normalization.std)):
            if values is None or len(values) != channels:
                raise NormalizationError(
                    field,
                    f"{field}: {len(values or ())} values for a network taking {channels} channels",
                )
    return describe(lifted, name=f"user/{name}", digest=sha256(blob), normalization=normalization)


def store_dir(settings: Settings, owner_id: int) -> Path:
    """Where an account's archives lie (``<dir>/<sha256>.pt2``): each account its own, so no
    delete of one account can race an upload of another."""
    return settings.networks_dir / str(owner_id)


def store(settings: Settings, owner_id: int, blob: bytes, digest: str) -> Path:
    """Write the archive under its digest, atomically (an account stores one content once)."""
    root = store_dir(settings, owner_id)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{digest}.pt2"
    if not path.is_file():
        tmp = root / f".{digest}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(blob)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def forget(*, session: Session, settings: Settings, owner_id: int, digest: str) -> None:
    """Remove the account's archive once none of its rows names the digest any more; called
    under the account's lock, before the deletion commits, so no upload of it interleaves."""
    session.flush()
    left = session.scalar(
        select(func.count())
        .select_from(Network)
        .where(Network.owner_id == owner_id, Network.digest == digest)
    )
    if not left:
        (store_dir(settings, owner_id) / f"{digest}.pt2").unlink(missing_ok=True)


def find(*, session: Session, owner_id: int, name: str) -> Network | None:
    """The account's network ``name`` (the ``<name>`` of ``user/<name>``)."""
    return session.scalar(select(Network).where(Network.owner_id == owner_id, Network.name == name))


def description(row: Network) -> NetworkDescription:
    return NetworkDescription.model_validate(row.info)
