"""Files over HTTP: ``pull`` (a model bundle, unpacked) and ``upload`` (a dataset)."""

from __future__ import annotations

import argparse
import io
import os
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.client import Client
from service.remote.base import UserError, print_json

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # the service's dataset and network names
KINDS = {".npz": "dataset", ".zip": "dataset", ".pt2": "network"}  # by extension
ROUTES = {"dataset": "/v1/datasets", "network": "/v1/networks"}
CHUNK = 1 << 20


def _writable_dir(out: Path) -> None:
    """``out`` can be created (its parent exists) or is a directory we may write.

    Raises:
        UserError: it cannot, saying why.
    """
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"cannot write into {out}: permission denied")
        return
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"cannot create {out}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {out}: {parent} is not writable")


def pull(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/models/{job}-{trial}: the bundle, unpacked into ``-o`` (./hwnas-model-<id>)."""
    t0 = time.monotonic()
    out = Path(args.out or f"hwnas-model-{args.model_id}")
    _writable_dir(out)  # before the download, not after it
    r = client.request("GET", f"/v1/models/{args.model_id}")
    try:
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            for name in zf.namelist():  # the service's own bundle, but stay inside `out` anyway
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise UserError(f"refusing the bundle entry {name!r}")
            out.mkdir(exist_ok=True)
            zf.extractall(out)
    except zipfile.BadZipFile as e:
        raise UserError(f"model {args.model_id}: the answer is not a zip bundle ({e})") from None
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"model {args.model_id}: {len(r.content)} bytes in {time.monotonic() - t0:.1f} s")
    print(f"unpacked into {out}: {', '.join(files)}")
    return 0


def _kind_and_file(target: list[str]) -> tuple[str, Path]:
    """``[KIND] FILE`` -> (kind, file); without KIND, the kind its extension means."""
    if len(target) > 2:
        raise UserError(f"upload takes [KIND] FILE, got {len(target)} arguments")
    path = Path(target[-1])
    ext = path.suffix.lower()
    if len(target) == 2 and target[0] not in KINDS.values():
        raise UserError(
            f"cannot upload a {target[0]!r}: datasets (.npz) and networks (.pt2, torch.export) "
            "are taken"
        )
    if ext not in KINDS:
        hint = " (ONNX is not taken: export with torch.export)" if ext == ".onnx" else ""
        raise UserError(
            f"{path}: take an .npz dataset, a .zip of image folders or a .pt2 network "
            f"(torch.export.save){hint}"
        )
    kind = KINDS[ext]
    if len(target) == 2 and target[0] != kind:
        raise UserError(f"{path}: a {ext} file is a {kind}, not a {target[0]}")
    return kind, path


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def upload(client: Client, args: argparse.Namespace) -> int:
    """POST /v1/datasets?name= (an .npz) or /v1/networks?name= (a .pt2, with --mean / --std):
    the file's raw bytes; jobs then name ``user/<name>``."""
    kind, path = _kind_and_file(args.target)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    name = args.name or path.stem.lower()
    if not NAME.match(name):
        raise UserError(
            f"{name!r} is not a {kind} name (lowercase letters, digits, _ and -, starting with "
            "a letter or digit, at most 64): pass --name"
        )
    size = path.stat().st_size
    with path.open("rb"):  # readable now: a clean error, not one mid-request
        pass
    t0 = time.monotonic()
    params: dict[str, Any] = {"name": name}
    if kind == "network" and (args.mean or args.std):
        params |= {"mean": _floats(args.mean, "--mean"), "std": _floats(args.std, "--std")}
    elif args.mean or args.std:
        raise UserError("--mean and --std describe a network's input, not a dataset")
    if path.suffix.lower() == ".zip":
        if not args.image_size:
            raise UserError(f"{path}: an image-folder zip needs --image-size (e.g. 32 or 32x48)")
        params |= {"image_size": args.image_size, "channels": args.channels}
    ds = client.json(
        "POST",
        ROUTES[kind],
        params=params,
        content=_chunks(path),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )
    if args.json:
        print_json(ds)
        return 0
    if kind == "network":
        groups = ", ".join(g["name"] for g in ds["groups"])
        print(
            f"network {ds['name']}: {size} bytes in {time.monotonic() - t0:.1f} s; input "
            f"{tuple(ds['input_shape'])}, {ds['num_classes']} classes, {ds['layers']} layers in "
            f"{len(ds['groups'])} groups ({groups})"
        )
        print(f'jobs use it as "space": "network", "network": "{ds["name"]}"')
        return 0
    print(
        f"{kind} {ds['name']}: {size} bytes in {time.monotonic() - t0:.1f} s; input shape "
        f"{tuple(ds['input_shape'])}, {ds['num_classes']} classes"
        + (f", splits {ds['sizes']}" if ds.get("sizes") else "")
    )
    print(f'jobs use it as "dataset": "{ds["name"]}"')
    return 0


def _floats(text: str | None, flag: str) -> list[float]:
    """``0.485,0.456,0.406`` -> floats (one per channel)."""
    if not text:
        raise UserError(f"{flag}: give --mean and --std together, one number per channel")
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r}: numbers separated by commas") from None
