"""An uploaded torch.export archive is read without running anything it holds: every way torch's
own loader would unpickle or evaluate client bytes is refused by name, and nothing runs."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from workers.networks import check_lifted, describe, lift, load_program, zoo
from workers.networks.archive import MAX_TENSOR_ELEMENTS, ArchiveError, safe_archive

MAX = 1 << 28


@pytest.fixture(scope="module")
def blob() -> bytes:
    torch.manual_seed(0)
    return zoo.export_pt2(zoo.ConcatNet(10, in_channels=1), (1, 8, 8))


class _Boom:
    """Unpickling it writes ``path``: the proof that a pickle was read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (self.path.write_text, ("ran",))


def _rebuild(
    blob: bytes, edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]
) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(blob))
    members = [(i.filename, src.read(i.filename)) for i in src.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as w:
        for name, data in edit(members):
            w.writestr(name, data)
    return out.getvalue()


def _graph(blob: bytes) -> tuple[str, dict]:  # type: ignore[type-arg]
    zf = zipfile.ZipFile(io.BytesIO(blob))
    name = next(n for n in zf.namelist() if n.endswith("models/model.json"))
    return name, json.loads(zf.read(name))


def _with_graph(blob: bytes, doc: dict) -> bytes:  # type: ignore[type-arg]
    name, _ = _graph(blob)
    return _rebuild(
        blob, lambda ms: [(n, json.dumps(doc).encode() if n == name else d) for n, d in ms]
    )


def _refused(blob: bytes, message: str, marker: Path) -> None:
    with pytest.raises(ArchiveError, match=message):
        load_program(blob, max_bytes=MAX)
    assert not marker.exists(), "client bytes were unpickled or evaluated"


def test_a_clean_archive_loads_and_computes_what_was_exported(blob: bytes) -> None:
    ep = load_program(blob, max_bytes=MAX)
    lifted = lift(ep)
    assert check_lifted(ep, lifted) < 1e-4
    names = zipfile.ZipFile(io.BytesIO(safe_archive(blob, max_bytes=MAX))).namelist()
    assert names[0] == "archive/archive_format" and all(n.startswith("archive/") for n in names)


def test_a_second_program_with_pickled_inputs_is_refused(blob: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    name, _ = _graph(blob)
    root = name.split("/", 1)[0]

    def add(ms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        graph = dict(ms)[name]
        return [
            *ms,
            (f"{root}/models/evil.json", graph),
            (f"{root}/data/sample_inputs/evil.pt", pickle.dumps(_Boom(marker))),
        ]

    _refused(_rebuild(blob, add), "holds 2 programs", marker)


def test_a_member_outside_the_first_members_folder_is_refused(blob: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    first = [("package/x/archive_format", b"pt2")]  # torch would take "package" as the root
    evil = [("package/data/sample_inputs/model.pt", pickle.dumps(_Boom(marker)))]
    _refused(_rebuild(blob, lambda ms: first + ms + evil), "outside the archive's folder", marker)
    top = [("archive_format", b"pt2")]  # a root-less archive: torch's legacy reader's way in
    legacy = [("serialized_state_dict.json", pickle.dumps(_Boom(marker)))]
    _refused(_rebuild(blob, lambda ms: top + legacy + ms), "outside the archive's folder", marker)


def test_members_a_one_program_archive_does_not_hold_are_refused(
    blob: bytes, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    name, _ = _graph(blob)
    root = name.split("/", 1)[0]
    for extra, message in (
        (f"{root}/data/weights/model.pt", "legacy pickled format"),
        (f"{root}/data/constants/custom_obj_0", "is not part of a torch.export archive"),
        (f"{root}/data/aotinductor/model/x.so", "is not part of a torch.export archive"),
    ):
        bad = _rebuild(blob, lambda ms, e=extra: [*ms, (e, pickle.dumps(_Boom(marker)))])  # type: ignore[misc]
        _refused(bad, message, marker)


def test_a_symbolic_shape_that_is_python_is_never_evaluated(blob: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _, doc = _graph(blob)
    text = json.dumps(doc)
    assert "Symbol('s" in text  # the dynamic batch: the one expression torch writes here
    for payload in (
        f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')",
        "exec(chr(49))",  # no quotes, no dots: still not a shape
        "s0.__class__",
        "Integer(9)**Integer(999999999)",  # no powers: a huge integer takes minutes to build
        "Mul(" + "999999999999," * 40 + "1)",  # nor hundreds of characters
    ):
        evil = json.loads(text.replace("Symbol('s77', positive=True, integer=True)", payload))
        _refused(_with_graph(blob, evil), "symbolic expression", marker)


def test_an_op_outside_aten_is_refused_before_the_graph_is_read(
    blob: bytes, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    _, doc = _graph(blob)
    node = doc["graph_module"]["graph"]["nodes"][0]
    for target in ("torch.load", "#evil:op", "torch.ops.higher_order.cond", "math.pow"):
        node["target"] = target
        _refused(_with_graph(blob, doc), "is not taken", marker)


def test_weights_and_constants_must_be_raw_tensors(blob: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    zf = zipfile.ZipFile(io.BytesIO(blob))
    cfg_name = next(n for n in zf.namelist() if n.endswith("model_weights_config.json"))
    cfg = json.loads(zf.read(cfg_name))
    first = next(iter(cfg["config"]))
    for change, message in (
        ({"use_pickle": True}, "stored as a pickle"),
        ({"path_name": "custom_obj_0"}, "only tensors are taken"),
        ({"path_name": "weight_999"}, "is not in the archive"),
    ):
        edited = json.loads(json.dumps(cfg))
        edited["config"][first].update(change)
        data = json.dumps(edited).encode()
        bad = _rebuild(blob, lambda ms, d=data: [(n, d if n == cfg_name else v) for n, v in ms])  # type: ignore[misc]
        _refused(bad, message, marker)


def test_a_graph_too_large_for_memory_is_refused_from_its_shapes(blob: bytes) -> None:
    _, doc = _graph(blob)
    values = doc["graph_module"]["graph"]["tensor_values"]
    name = next(iter(values))
    values[name]["sizes"] = [{"as_int": 3}, {"as_int": 50_000}, {"as_int": 50_000}]
    with pytest.raises(ArchiveError, match=f"at most {MAX_TENSOR_ELEMENTS}"):
        load_program(_with_graph(blob, doc), max_bytes=MAX)


def test_a_static_batch_larger_than_the_check_and_a_network_without_layers() -> None:
    torch.manual_seed(0)
    ep = load_program(
        zoo.export_pt2(zoo.ConcatNet(10, in_channels=1), (1, 8, 8), batch=8), max_bytes=MAX
    )
    lifted = lift(ep)
    assert lifted.static_batch == 8 and check_lifted(ep, lifted) < 1e-4

    class Pool(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    ep = load_program(zoo.export_pt2(Pool(), (3, 8, 8)), max_bytes=MAX)
    from workers.networks import NetworkError

    with pytest.raises(NetworkError, match="no convolution or linear layer"):
        describe(lift(ep), name="user/pool", digest="0" * 64)
