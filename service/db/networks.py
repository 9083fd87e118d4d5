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
                raise ValueError(
                    f"{field}: {len(values or ())} values for a network taking {channels} channels"
                )
    return describe(lifted, name=f"user/{name}", digest=sha256(blob), normalization=normalization)


def store(settings: Settings, blob: bytes, digest: str) -> Path:
    """Write the archive under its digest (once: the same content is stored once)."""
    root = settings.networks_dir
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{digest}.pt2"
    if not path.is_file():
        tmp = root / f".{digest}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    return path


def forget(*, session: Session, settings: Settings, digest: str) -> None:
    """Remove the archive once no row names its digest any more."""
    left = session.scalar(select(func.count()).select_from(Network).where(Network.digest == digest))
    if not left:
        (settings.networks_dir / f"{digest}.pt2").unlink(missing_ok=True)


def find(*, session: Session, owner_id: int, name: str) -> Network | None:
    """The account's network ``name`` (the ``<name>`` of ``user/<name>``)."""
    return session.scalar(select(Network).where(Network.owner_id == owner_id, Network.name == name))


def description(row: Network) -> NetworkDescription:
    return NetworkDescription.model_validate(row.info)
