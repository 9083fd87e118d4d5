"""Deployment verification: a job's front re-timed from the shipped files, after the job.

For each Pareto point and profile: the bundle's own library (``tvm/<profile>.so``), the dense
fp32 parent of its architecture (compiled the same way, tuned from the profile's database,
cached by structure under ``<probe cache>/dense/``) and the profile's canary are timed together
in several windows by a fresh process (:mod:`workers.probe.retime`). The result: the verified
latency with its spread, canary-normalized, the speedup over the dense parent measured in the
same windows, and whether the search-time number disagrees beyond the noise of both. Each
bundle's card gets a ``verified`` section.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from hw_profiles import Profile, get_profile
from search_spaces import Candidate
from workers.dense import dense_candidate
from workers.evaluate import tvm_file
from workers.probe.build import compile_module, export_library, tuning_state
from workers.probe.cache import structure_hash, tensor_shapes
from workers.probe.canary import CANARY_SHAPE, canary_beside
from workers.probe.errors import ProbeError
from workers.probe.finish import finish_library
from workers.probe.lowering import deployable, to_relax
from workers.probe.structure import structural_model
from workers.probe.targets import resolve_target, tvm
from workers.records import Verified, VerifiedPoint, VerifyRequest, VerifyResult, Window

NO_SPEEDUP = 1.05  # a compressed model less than this much faster than dense is flagged
NOISE_FLOOR = math.log(1.10)  # normalized latency moves ~+-7 % between windows (FACTS.md)
RETIME_TIMEOUT_S = 1800


def verify_json(payload: dict[str, Any]) -> dict[str, Any]:
    """The Ray task: JSON in (a :class:`VerifyRequest`), JSON out (a :class:`VerifyResult`)."""
    return verify(VerifyRequest.model_validate(payload)).model_dump(mode="json")


def verify(req: VerifyRequest) -> VerifyResult:
    t0 = time.perf_counter()
    from workers.evaluate import _node

    results: dict[int, dict[str, Verified]] = {p.number: {} for p in req.points}
    for profile_name in req.profiles:
        for number, v in _verify_profile(req, profile_name).items():
            results[number][profile_name] = v
    points = []
    for p in req.points:
        card_path = Path(p.bundle_dir) / "card.json"
        card = json.loads(card_path.read_text())
        m = card.get("metrics", {})
        ratio = (
            m["dense_size_bytes"] / m["size_bytes"]
            if m.get("dense_size_bytes") and m.get("size_bytes")
            else None
        )
        point = VerifiedPoint(number=p.number, latency=results[p.number], size_ratio_vs_dense=ratio)
        card["verified"] = {
            "latency": {k: v.model_dump(mode="json") for k, v in point.latency.items()},
            "size_ratio_vs_dense": ratio,
            "how": "the shipped tvm/<profile>.so timed by a fresh process with the profile's "
            "protocol, interleaved with the canary and the dense fp32 parent, after the job",
        }
        _write_card(card_path, card)
        points.append(point)
    return VerifyResult(points=points, seconds=round(time.perf_counter() - t0, 2), node=_node())


def _write_card(path: Path, card: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True))
    tmp.replace(path)


def _finish(
    lib: Path, profile: Profile, req: VerifyRequest, search: dict[str, Any], budget_s: float
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A partly untuned library: its missing tasks tuned (within ``budget_s``, what is left of
    the verification's tuning budget), rebuilt and re-checked (:mod:`workers.probe.finish`).
    Returns the card's latency
    entry as it now stands, and what finishing did (None: nothing to finish)."""
    if not search.get("partial"):
        return search, None
    root = Path(req.tuning_dir) if req.tuning_dir else None
    try:
        fin = finish_library(lib, profile, root, max(budget_s, 0.0))
    except ProbeError as e:
        return search, {"rebuilt": False, "why": str(e)}
    done = {"rebuilt": fin.rebuilt, "why": fin.why, "tasks": fin.tasks, "tune_s": fin.tune_s}
    if not fin.rebuilt:
        return {**search, "untuned_tasks": fin.untuned or search.get("untuned_tasks")}, done
    rebuilt = {
        **search,
        "partial": False,
        "untuned_tasks": [],
        "search_time_partial": True,
        "tune_s": round(float(search.get("tune_s") or 0.0) + fin.tune_s, 3),
    }
    return rebuilt, {**done, "argmax_agreement": fin.argmax_agreement}


def _verify_profile(req: VerifyRequest, profile_name: str) -> dict[int, Verified]:
    profile = get_profile(profile_name)
    target = resolve_target(profile)
    out: dict[int, Verified] = {}
    spec_points: list[dict[str, Any]] = []
    finish_left = req.tune_budget_s  # finishing partly tuned libraries: one budget for all
    dense: dict[int, tuple[str, str, bool]] = {}
    for p in req.points:
        bundle = Path(p.bundle_dir)
        card = json.loads((bundle / "card.json").read_text())
        search = card["latency"][profile_name]
        lib = bundle / tvm_file(profile_name)
        canary = canary_beside(lib)
        if search["target"] != str(target) or not lib.is_file() or not canary.is_file():
            out[p.number] = _failed(
                f"library for {search['target']} cannot be verified on this node "
                f"({target}) or files are missing"
            )
            continue
        search, finished = _finish(lib, profile, req, search, finish_left)
        finish_left -= float((finished or {}).get("tune_s") or 0.0)
        if finished is not None:
            card["latency"][profile_name] = search
            card.setdefault("tuning_completed", {})[profile_name] = finished
            _write_card(bundle / "card.json", card)
        d_path, d_tuning, d_partial = dense_library(p.candidate, profile_name, req)
        dense[p.number] = (d_path, d_tuning, d_partial)
        spec_points.append(
            {
                "key": str(p.number),
                "libs": [
                    [str(lib), [1, *p.candidate.input_shape]],
                    [d_path, [1, *p.candidate.input_shape]],
                    [str(canary), list(CANARY_SHAPE)],
                ],
                "search": search,
                "why": (finished or {}).get("why"),
            }
        )
    if not spec_points:
        return out
    timed = _retime_fresh(profile_name, profile.measure.threads, spec_points, req.windows)
    for sp in spec_points:
        number = int(sp["key"])
        windows = [[Window.model_validate(w) for w in ws] for ws in timed[sp["key"]]]
        out[number] = _summarize(windows, sp["search"], *dense[number])
        search = sp["search"]
        out[number].library_rebuilt = bool(search.get("search_time_partial"))
        out[number].library_partial = bool(search.get("partial"))
        if search.get("partial"):
            out[number].library_partial_why = str(sp.get("why") or "")
    return out


def dense_library(cand: Candidate, profile_name: str, req: VerifyRequest) -> tuple[str, str, bool]:
    """The dense fp32 parent of ``cand`` compiled for the profile (cached by structure):
    its library path, tuning kind and whether any of its tasks stayed untuned."""
    profile = get_profile(profile_name)
    target = resolve_target(profile)
    net = structural_model(dense_candidate(cand), network=req.network)
    from workers.models import example_input

    dep, _ = deployable(net, profile)
    mod = to_relax(dep, example_input(cand), profile)
    tuning_root = Path(req.tuning_dir) if req.tuning_dir else None
    state = tuning_state(mod, target, profile, tuning_root, req.tune_budget_s)
    key = structure_hash(mod, f"{tensor_shapes(dep)}|{target}|{tvm().__version__}|{state.digest}")
    root = Path(req.probe_cache_dir or tempfile.gettempdir()) / "dense"
    path = root / f"{key}.so"
    if not path.is_file():
        tmp = root / f"{key}.{os.getpid()}.tmp.so"
        export_library(compile_module(mod, target, profile, state), tmp, profile)
        tmp.replace(path)
    return str(path), state.kind, state.partial


def _retime_fresh(
    profile: str, threads: int, points: list[dict[str, Any]], windows: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hwnas-verify-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"profile": profile, "windows": windows, "points": points}))
        env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(
            [sys.executable, "-m", "workers.probe.retime", str(spec), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=RETIME_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"verification timing failed: {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())["points"]
    return result


def _summarize(
    windows: list[list[Window]], search: dict[str, Any], d_path: str, d_tuning: str, d_part: bool
) -> Verified:
    cand = [w[0] for w in windows]
    dense = [w[1] for w in windows]
    norm = [w.normalized for w in cand if w.normalized is not None]
    norm_iqr = [w.normalized_iqr for w in cand if w.normalized_iqr is not None]
    speed = median(
        d.timing.median_ms / c.timing.median_ms for c, d in zip(cand, dense, strict=True)
    )
    v_norm = median(norm) if norm else None
    v_iqr = median(norm_iqr) if norm_iqr else None
    return Verified(
        median_ms=median(w.timing.median_ms for w in cand),
        iqr_ms=median(w.timing.iqr_ms for w in cand),
        normalized=v_norm,
        normalized_iqr=v_iqr,
        canary_ms=median(w.canary.median_ms for w in cand if w.canary is not None),
        canary_id=search.get("canary_id"),
        windows=len(windows),
        repeat=cand[0].timing.repeat,
        number=cand[0].timing.number,
        quiet=cand[0].quiet,
        process="fresh interpreter: tvm.runtime.load_module + relax.VirtualMachine, "
        "time_evaluator in rounds interleaved with the dense parent and the canary",
        dense_ms=median(w.timing.median_ms for w in dense),
        dense_normalized=median(w.normalized for w in dense if w.normalized is not None),
        dense_tuning=d_tuning,
        dense_partial=d_part,
        speedup_vs_dense=round(speed, 4),
        no_speedup=speed < NO_SPEEDUP,
        search_ms=search.get("median_ms"),
        search_normalized=search.get("normalized"),
        disagrees=None
        if search.get("search_time_partial")  # the search timed an earlier build
        else disagrees(search.get("normalized"), search.get("normalized_iqr"), v_norm, v_iqr),
    )


def disagrees(
    s: float | None, s_iqr: float | None, v: float | None, v_iqr: float | None
) -> bool | None:
    """Whether two normalized latencies differ beyond their noise: |ln(s / v)| above twice the
    combined relative spread (IQR / 1.349 ~ one standard deviation) plus a 10 % floor for the
    window-to-window drift of normalized numbers."""
    if not s or not v:
        return None
    rel = math.hypot((s_iqr or 0.0) / s / 1.349, (v_iqr or 0.0) / v / 1.349)
    return abs(math.log(s / v)) > 2 * rel + NOISE_FLOOR


def _failed(msg: str) -> Verified:
    return Verified(
        median_ms=None,
        iqr_ms=None,
        normalized=None,
        normalized_iqr=None,
        canary_ms=None,
        canary_id=None,
        windows=0,
        repeat=0,
        number=0,
        quiet="none",
        process="not timed",
        error=msg,
    )
