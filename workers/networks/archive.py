"""Read an uploaded ``torch.export`` archive (``.pt2``) without running anything it holds.

``torch.export.save`` writes the graph as JSON (``models/<name>.json``) and each weight as raw
bytes described by a JSON config (``data/weights/<name>_weights_config.json``); only the sample
inputs (``data/sample_inputs/<name>.pt``) are a pickle. ``torch.export.load`` would unpickle
them (falling back to ``weights_only=False``), any weight or constant marked ``use_pickle``,
custom and opaque objects, every other program under ``models/``, and, when its reader fails,
a legacy archive; its graph reader also hands each symbolic-shape string to ``sympy.sympify``,
which evaluates Python. So nothing of the upload reaches torch as it came:

- every member must sit under one top folder (as torch's reader finds the root) and be one of
  the names a one-program archive holds (:data:`MEMBER`); anything else is refused by name;
- the graph JSON is checked first: every node's op is an ATen or ``operator`` call, every
  symbolic expression is built from numbers, shape symbols and torch's sympy functions only
  (:func:`graph_checked`), and no tensor of one sample is over :data:`MAX_TENSOR_ELEMENTS`;
- weights and constants must be raw tensors (``use_pickle`` and objects refused);
- a new archive is written from those members alone under a fixed root, the sample inputs
  empty, and read with torch's pt2 reader directly (no legacy fallback).

Declared sizes are checked from the zip directory before anything is inflated; a member is
never inflated past its declared size.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import torch

from workers.networks.ops import NetworkError

MAX_MEMBERS = 10_000
MAX_TENSOR_ELEMENTS = 1 << 24  # of one sample (64 MiB of float32): inputs and activations
MAX_GRAPH_ELEMENTS = 1 << 27  # every tensor of the graph for one sample, added up
MAX_EXPR = 400  # characters of one symbolic-shape expression
ONNX_HINT = (
    "ONNX uploads are not taken (ONNX graphs cannot be fine-tuned here): export the model with "
    "torch.export.export(model.eval(), (example,), dynamic_shapes={'x': {0: "
    "torch.export.Dim('batch')}}) and torch.export.save(ep, 'model.pt2')"
)
# the members of a torch.export archive of one program named "model", below its root
MEMBER = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_[0-9]{1,7}"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_[0-9]{1,7})"
)
ROOT = "archive/"
# a symbolic-shape expression: numbers, operators, shape symbols (s0, u3, ...) and the names
# of torch's and sympy's functions the graph reader offers; nothing else reaches sympify
_TOKEN = re.compile(
    r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([0-9]{1,12}(?:\.[0-9]{1,12})?)|('[a-z]{1,3}[0-9]{1,9}')"
    r"|([-+*/%(),<>=!&|~]))"
)
_SYMBOL = re.compile(r"[a-z]{1,3}[0-9]{1,9}")
_FUNCTIONS = frozenset(
    {
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "FloatTrueDiv",
        "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
        "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Abs", "Eq", "Ne",
        "Ge", "Gt", "Le", "Lt", "And", "Or", "Not", "True", "False", "oo", "Integer", "Float",
        "Rational", "Symbol", "floor", "ceiling", "sqrt", "Piecewise", "ExprCondPair", "Add",
        "Mul", "NegativeOne", "One", "Zero", "Half", "Infinity", "NegativeInfinity",
        "StrictGreaterThan", "StrictLessThan", "GreaterThan", "LessThan", "Equality",
        "Unequality", "BooleanTrue", "BooleanFalse", "true", "false",
        # Symbol('s77', positive=True, integer=True): the assumptions a shape symbol carries
        "positive", "negative", "nonnegative", "nonpositive", "nonzero", "zero", "integer",
        "real", "finite", "even", "odd", "rational", "extended_real", "commutative",
    }
)  # fmt: skip


class ArchiveError(NetworkError):
    """An upload that is not a safe ``torch.export`` archive (the message says which member)."""


def _members(zf: zipfile.ZipFile, max_bytes: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """The archive's root folder and its members by their name below it."""
    infos = zf.infolist()
    if not infos:
        raise ArchiveError("an empty zip archive")
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"{len(infos)} members in the archive (at most {MAX_MEMBERS})")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise ArchiveError(
            f"the archive declares {total} bytes uncompressed, over the {max_bytes} limit"
        )
    root = infos[0].filename.split("/", 1)[0] + "/"  # where torch's reader looks
    out: dict[str, zipfile.ZipInfo] = {}
    for i in infos:
        name = i.filename
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise ArchiveError(f"member {name!r}: not a relative path inside the archive")
        if not name.startswith(root) or name == root.rstrip("/"):
            raise ArchiveError(
                f"member {name!r} is outside the archive's folder {root!r} (torch.export.save "
                "puts every member in one folder)"
            )
        if i.flag_bits & 0x1:
            raise ArchiveError(f"member {name!r} is encrypted")
        if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(f"member {name!r}: zip compression method {i.compress_type}")
        rest = name[len(root) :]
        if rest in out:
            raise ArchiveError(f"member {name!r} appears twice")
        if rest and not rest.endswith("/"):  # folders carry nothing
            out[rest] = i
    return root, out


def _refuse_unknown(root: str, members: dict[str, zipfile.ZipInfo]) -> None:
    if "archive_format" not in members:
        raise ArchiveError(
            "not a torch.export archive (no archive_format member): save with torch.export.save"
        )
    models = sorted(n for n in members if n.startswith("models/"))
    if models != ["models/model.json"]:
        raise ArchiveError(
            f"the archive holds {len(models)} programs {[root + m for m in models]}: one, named "
            "'model', is taken (torch.export.save of one ExportedProgram)"
        )
    for legacy in ("data/weights/model.pt", "data/constants/model.pt"):
        if legacy in members:
            raise ArchiveError(f"{root}{legacy}: the legacy pickled format; save again")
    for name in members:
        if name.startswith("extra/"):
            continue  # extra files: not needed, never read
        if not MEMBER.fullmatch(name):
            raise ArchiveError(
                f"member {root}{name!r} is not part of a torch.export archive of one program "
                "(hwnas takes the graph, raw weights and constants only)"
            )


def _checked_expr(expr: str, where: str) -> None:
    """No names but shape symbols and known functions, no powers or shifts (a huge integer
    costs its reader minutes), at most :data:`MAX_EXPR` characters."""
    if len(expr) > MAX_EXPR:
        raise ArchiveError(f"{where}: a symbolic expression of {len(expr)} characters")
    if "**" in expr or "<<" in expr or ">>" in expr:
        raise ArchiveError(f"{where}: a power or shift in symbolic expression {expr[:80]!r}")
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise ArchiveError(f"{where}: symbolic expression {expr[:80]!r} is not a shape")
        name = m.group(1)
        if name is not None and name not in _FUNCTIONS and not _SYMBOL.fullmatch(name):
            raise ArchiveError(f"{where}: {name!r} in symbolic expression {expr[:80]!r}")
        pos = m.end()


def _elements(meta: dict[str, Any]) -> int:
    """Elements of one sample of a serialized tensor (symbolic sizes, i.e. the batch, as 1)."""
    n = 1
    for size in meta.get("sizes") or []:
        if isinstance(size, dict) and isinstance(size.get("as_int"), int):
            n *= max(0, size["as_int"])
    return n


def graph_checked(graph_json: bytes, where: str = "models/model.json") -> None:
    """Refuse a graph whose reading could run code or whose tensors are too large.

    Raises:
        ArchiveError: not JSON; an op other than an ATen or ``operator`` call (extension and
            higher-order ops, other namespaces); a symbolic expression with anything but
            numbers, operators, shape symbols and known functions; a tensor of one sample over
            :data:`MAX_TENSOR_ELEMENTS`, or all of them over :data:`MAX_GRAPH_ELEMENTS`.
    """
    try:
        doc = json.loads(graph_json)
    except (ValueError, RecursionError) as e:
        raise ArchiveError(f"{where}: not JSON ({str(e)[:200]})") from None
    total = 0
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        target = item.get("target")
        if isinstance(target, str) and "inputs" in item:
            if not target.startswith(("torch.ops.aten.", "_operator.")):
                outs = json.dumps(item.get("outputs"))[:120]
                raise ArchiveError(f"{where}: op {target[:120]!r} (outputs {outs}) is not taken")
        expr = item.get("expr_str")
        if isinstance(expr, str):
            _checked_expr(expr, where)
        values = item.get("tensor_values")
        if isinstance(values, dict):
            for name, meta in values.items():
                n = _elements(meta) if isinstance(meta, dict) else 0
                if n > MAX_TENSOR_ELEMENTS:
                    raise ArchiveError(
                        f"{where}: tensor {name!r} holds {n} elements for one sample (at most "
                        f"{MAX_TENSOR_ELEMENTS})"
                    )
                total += n
        stack.extend(item.values())
    if total > MAX_GRAPH_ELEMENTS:
        raise ArchiveError(
            f"{where}: the graph's tensors hold {total} elements for one sample (at most "
            f"{MAX_GRAPH_ELEMENTS})"
        )


def _payload_checked(data: bytes, path: str, what: str, files: set[str]) -> None:
    """A weights / constants config whose every entry is a plain tensor stored raw."""
    try:
        config = json.loads(data)["config"]
        items = list(config.items())
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
        raise ArchiveError(f"{path}: not a readable {what} config ({str(e)[:200]})") from None
    for fqn, meta in items:
        if not isinstance(meta, dict):
            raise ArchiveError(f"{path}: {what} {str(fqn)[:80]!r} is not described")
        if meta.get("use_pickle"):
            raise ArchiveError(
                f"{what} {fqn!r} is stored as a pickle ({path}): hwnas loads no pickle; save "
                "with dense, contiguous tensors (e.g. model.float().contiguous())"
            )
        path_name = str(meta.get("path_name", ""))
        if not re.fullmatch(r"(weight|tensor)_[0-9]{1,7}", path_name):
            raise ArchiveError(
                f"{what} {fqn!r} is a {path_name.split('_')[0][:40] or 'non-tensor'} object "
                f"({path}): only tensors are taken"
            )
        if path_name not in files:
            raise ArchiveError(f"{what} {fqn!r}: its data {path_name!r} is not in the archive")


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as f:  # stops at the declared size, then checks the CRC
            return f.read()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # CRC, truncation
        raise ArchiveError(f"member {info.filename!r} is corrupt: {e}") from None


def safe_archive(blob: bytes, *, max_bytes: int) -> bytes:
    """``blob`` checked and rewritten from its allowed members alone (see the module).

    Raises:
        ArchiveError: not a zip / not a torch.export archive of one program, a member outside
            its folder or not of such an archive, an over-large declared size, a pickled
            weight or constant, an object constant, a legacy (pickled) weights file, a graph
            that fails :func:`graph_checked`, or ONNX.
    """
    if blob[:4] != b"PK\x03\x04":
        looks_onnx = b"onnx" in blob[:256].lower() or blob[:1] == b"\x08"
        raise ArchiveError(ONNX_HINT if looks_onnx else "not a zip archive (.pt2)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ArchiveError(f"not a readable .pt2 archive: {e}") from None
    with zf:
        root, members = _members(zf, max_bytes)
        _refuse_unknown(root, members)
        data = {
            name: b"" if name.startswith("data/sample_inputs/") else _read(zf, info)
            for name, info in members.items()
            if not name.startswith("extra/")
        }  # the sample inputs (a pickle) are never read: the reader takes b"" as none
    if data["archive_format"] != b"pt2":
        raise ArchiveError(f"{root}archive_format is not 'pt2'")
    graph_checked(data["models/model.json"], f"{root}models/model.json")
    data.setdefault("data/sample_inputs/model.pt", b"")
    for cfg, what, prefix in (
        ("data/weights/model_weights_config.json", "weight", "data/weights/"),
        ("data/constants/model_constants_config.json", "constant", "data/constants/"),
    ):
        if cfg in data:
            files = {n[len(prefix) :] for n in data if n.startswith(prefix)}
            _payload_checked(data[cfg], root + cfg, what, files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        w.writestr(ROOT + "archive_format", data.pop("archive_format"))  # first: torch's root
        for name, payload in data.items():
            w.writestr(ROOT + name, payload)
    return out.getvalue()


def load_program(blob: bytes, *, max_bytes: int) -> torch.export.ExportedProgram:
    """The ExportedProgram of an uploaded archive, read without unpickling (see the module).

    Raises:
        ArchiveError: see :func:`safe_archive`, or torch cannot read the program.
    """
    from torch.export.pt2_archive._package import load_pt2  # no legacy fallback, no extras

    safe = safe_archive(blob, max_bytes=max_bytes)
    try:
        programs = load_pt2(io.BytesIO(safe)).exported_programs
        return programs["model"]
    except Exception as e:  # noqa: BLE001 - whatever torch says of a malformed graph
        raise ArchiveError(f"torch cannot read the program: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def describe_archive(blob: bytes) -> dict[str, Any]:
    """Member names and sizes (for error reports and tests)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {i.filename: i.file_size for i in zf.infolist()}
