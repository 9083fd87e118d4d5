"""Read an uploaded ``torch.export`` archive (``.pt2``) without unpickling anything.

``torch.export.save`` writes the graph as JSON (``models/<name>.json``) and each weight as raw
bytes described by a JSON config (``data/weights/<name>_weights_config.json``); only the sample
inputs (``data/sample_inputs/<name>.pt``) are a pickle, and ``torch.export.load`` reads them with
``torch.load``, falling back to ``weights_only=False``. A weight or constant the config marks
``use_pickle`` (non-dense tensors), custom or opaque objects would be unpickled too. So an
upload is checked member by member first: any pickled payload is refused, and the sample
inputs are never read (an empty file takes their place before ``torch.export.load`` sees the
archive). Zip bombs and lying sizes are refused from the zip directory, as for datasets.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import torch

from workers.networks.ops import NetworkError

MAX_MEMBERS = 10_000
ONNX_HINT = (
    "ONNX uploads are not taken (ONNX graphs cannot be fine-tuned here): export the model with "
    "torch.export.export(model.eval(), (example,), dynamic_shapes={'x': {0: "
    "torch.export.Dim('batch')}}) and torch.export.save(ep, 'model.pt2')"
)


class ArchiveError(NetworkError):
    """An upload that is not a safe ``torch.export`` archive (the message says which member)."""


def _members(zf: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"{len(infos)} members in the archive (at most {MAX_MEMBERS})")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise ArchiveError(
            f"the archive declares {total} bytes uncompressed, over the {max_bytes} limit"
        )
    out: dict[str, zipfile.ZipInfo] = {}
    for i in infos:
        name = i.filename
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise ArchiveError(f"member {name!r}: not a relative path inside the archive")
        if i.flag_bits & 0x1:
            raise ArchiveError(f"member {name!r} is encrypted")
        if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(f"member {name!r}: zip compression method {i.compress_type}")
        out[name] = i
    return out


def _root(names: list[str]) -> str:
    """The archive's top folder (``torch.export.save`` writes ``<stem>/...``)."""
    for n in names:
        if n.endswith("archive_format"):
            return n[: -len("archive_format")]
    raise ArchiveError(
        "not a torch.export archive (no archive_format member): save with torch.export.save"
    )


def _payload_checked(zf: zipfile.ZipFile, path: str, what: str) -> None:
    """A weights / constants config whose every entry is a plain tensor stored raw."""
    try:
        config = json.loads(zf.read(path))["config"]
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ArchiveError(f"{path}: not a readable {what} config ({e})") from None
    for fqn, meta in config.items():
        if meta.get("use_pickle"):
            raise ArchiveError(
                f"{what} {fqn!r} is stored as a pickle ({path}): hwnas loads no pickle; save "
                "with dense, contiguous tensors (e.g. model.float().contiguous())"
            )
        path_name = str(meta.get("path_name", ""))
        if not path_name.startswith(("weight_", "tensor_")):
            raise ArchiveError(
                f"{what} {fqn!r} is a {path_name.split('_')[0] or 'non-tensor'} object "
                f"({path}): only tensors are taken"
            )


def safe_archive(blob: bytes, *, max_bytes: int) -> bytes:
    """``blob`` checked and rewritten so that loading it unpickles nothing.

    Raises:
        ArchiveError: not a zip / not a torch.export archive, a path outside the archive, an
            over-large declared size, a pickled weight or constant, a non-tensor constant, a
            legacy (pickled) weights file, or ONNX.
    """
    if blob[:4] != b"PK\x03\x04":
        looks_onnx = b"onnx" in blob[:256].lower() or blob[:1] == b"\x08"
        raise ArchiveError(ONNX_HINT if looks_onnx else "not a zip archive (.pt2)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ArchiveError(f"not a readable .pt2 archive: {e}") from None
    with zf:
        members = _members(zf, max_bytes)
        root = _root(list(members))
        models = [n for n in members if n.startswith(f"{root}models/") and n.endswith(".json")]
        if [m.rsplit("/", 1)[1] for m in models] != ["model.json"]:
            raise ArchiveError(
                f"the archive holds {len(models)} programs {sorted(models)}: one, named 'model', "
                "is taken (torch.export.save of one ExportedProgram)"
            )
        for legacy in (f"{root}data/weights/model.pt", f"{root}data/constants/model.pt"):
            if legacy in members:
                raise ArchiveError(
                    f"{legacy}: the legacy pickled format; save again with this torch"
                )
        for cfg, what in (
            (f"{root}data/weights/model_weights_config.json", "weight"),
            (f"{root}data/constants/model_constants_config.json", "constant"),
        ):
            if cfg in members:
                _payload_checked(zf, cfg, what)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
            for name, info in members.items():
                if name.startswith(f"{root}data/sample_inputs/"):
                    w.writestr(info, b"")  # never unpickled: the loader reads b"" as none
                elif "/extra/" in name[len(root) :]:
                    continue  # extra files: not needed, not read
                else:
                    try:
                        w.writestr(info, zf.read(name))
                    except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC, truncation
                        raise ArchiveError(f"member {name!r} is corrupt: {e}") from None
    return out.getvalue()


def load_program(blob: bytes, *, max_bytes: int) -> torch.export.ExportedProgram:
    """The ExportedProgram of an uploaded archive, read without unpickling (see the module).

    Raises:
        ArchiveError: see :func:`safe_archive`, or torch cannot read the program.
    """
    safe = safe_archive(blob, max_bytes=max_bytes)
    try:
        return torch.export.load(io.BytesIO(safe))
    except Exception as e:  # noqa: BLE001 - whatever torch says of a malformed graph
        raise ArchiveError(f"torch.export.load cannot read the archive: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def describe_archive(blob: bytes) -> dict[str, Any]:
    """Member names and sizes (for error reports and tests)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {i.filename: i.file_size for i in zf.infolist()}
