"""MetaSchedule tuning: one database per profile and TVM version, shared by every job.

TVM's default CPU schedules are serial and unvectorised (20-70x slower than ONNX Runtime here,
and they can mis-rank candidates), so a CPU latency is only reported from tuned code. The
flow per candidate: fuse the Relax module exactly as ``compile_relax`` does (so task keys
match), extract its tuning tasks, tune only those with no record (within a budget), compile
with the database; a task still without a record makes the probe ``partial``.

The settings are the ones that worked on these 2-core machines (FACTS.md): the defaults time
out in LocalBuilder and leave tasks without a valid record.

The search is guided by MetaSchedule's XGBoost cost model, one per tuning database, saved after
every chunk and loaded by the next tuning run, so each new candidate starts from everything the
database has measured. Without ``xgboost`` tuning refuses to run
(:class:`TuningUnavailableError`): MetaSchedule would otherwise fall back to random search.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw_profiles import Profile
from workers.probe._intrin import load_cpu_intrinsics
from workers.probe._locks import flocked
from workers.probe._rpc_wire import split_address
from workers.probe.errors import TuningUnavailableError
from workers.probe.targets import tvm

log = logging.getLogger(__name__)
COST_MODEL = "xgb"
# How records are keyed: the whole fused function ("structural"). "anchor-block" (records keyed
# by the conv / matmul alone, re-applied to other epilogues through the anchor's trace) would
# let 52 % instead of 38 % of a new candidate's tasks reuse a record (bench/task_reuse.py), but
# in TVM 0.27 replaying an anchor trace on a different fused epilogue crashes the compile
# ("TranslateAddOutputRVs: Check failed: old_outputs.size() == new_outputs.size() (1 vs. 0)",
# seen on cnn_joint candidates in bench-probes), so it is not used. Another equality would
# be part of the database directory's name: databases keyed differently never mix.
MODULE_EQUALITY = "structural"


@dataclass(frozen=True)
class TuneSettings:
    """MetaSchedule knobs (small populations: tasks here are tiny and cores are few)."""

    trials_per_task: int = 8
    light_trials: int = 3
    chunk: int = 2
    population_size: int = 64
    init_min_unmeasured: int = 16
    genetic_num_iters: int = 2
    builder_workers: int = 2
    builder_timeout_s: float = 120
    runner_timeout_s: float = 60
    number: int = 3
    repeat: int = 1
    min_repeat_ms: int = 20
    seed: int = 0


def db_dir(root: Path, profile: Profile, target: Any) -> Path:
    """``root/<profile>/tvm-<version>-<target hash>-<module equality>``: records are only
    valid for the exact target (a different CPU gets its own database), TVM version and the
    workload equality they were keyed by."""
    t = tvm()
    h = hashlib.sha256(str(target).encode()).hexdigest()[:10]
    # structural keying is what every earlier database used: those stay valid
    eq = "" if MODULE_EQUALITY == "structural" else f"-{MODULE_EQUALITY}"
    return root / profile.name.replace("/", "__") / f"tvm-{t.__version__}-{h}{eq}"


_OPEN: dict[Path, tuple[tuple[tuple[int, int], ...], Any]] = {}


def open_db(path: Path) -> Any:
    """The database at ``path``, parsed once per process and re-read only when its files
    changed (another worker committed records): parsing hundreds of records per probe was a
    measurable part of a probe's time. Call with :func:`db_lock` held."""
    from tvm.s_tir import meta_schedule as ms

    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(path)
    hit = _OPEN.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        db = ms.database.JSONDatabase(work_dir=str(path), module_equality=MODULE_EQUALITY)
    except Exception as e:  # noqa: BLE001 - TVM raises its own errors for a bad file
        heal_db(path, e)
        db = ms.database.JSONDatabase(work_dir=str(path), module_equality=MODULE_EQUALITY)
    _OPEN[path] = (_stamp(path), db)  # the constructor creates missing files
    return db


def heal_db(path: Path, error: Exception) -> None:
    """A database whose files do not parse (a torn write, a disk error): keep every record
    line that parses and whose workload exists, set the originals aside (``*.corrupt``), and
    log it. The tasks whose records were lost are tuned again when a probe needs them."""
    wl_file = path / "database_workload.json"
    rec_file = path / "database_tuning_record.json"
    workloads = _json_lines(wl_file, prefix=True)  # records point at workloads by index
    records = [r for r in _json_lines(rec_file) if _valid_record(r, len(workloads))]
    for f in (wl_file, rec_file):
        if f.is_file():
            os.replace(f, f.with_name(f"{f.name}.corrupt"))
    for f, rows in ((wl_file, workloads), (rec_file, records)):
        tmp = f.with_name(f".{f.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, f)
    log.warning(
        "tuning database %s did not load (%s): kept %d workloads and %d records that parse, "
        "originals set aside as *.corrupt",
        path,
        str(error).splitlines()[0][:200] if str(error) else type(error).__name__,
        len(workloads),
        len(records),
    )


def _json_lines(f: Path, *, prefix: bool = False) -> list[Any]:
    """The lines of ``f`` that parse (with ``prefix``, those before the first that does not)."""
    if not f.is_file():
        return []
    out = []
    for line in f.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            if prefix:
                break
    return out


def _valid_record(r: Any, workloads: int) -> bool:
    return isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and 0 <= r[0] < workloads


def _stamp(path: Path) -> tuple[tuple[int, int], ...]:
    out = []
    for name in ("database_workload.json", "database_tuning_record.json"):
        f = path / name
        st = f.stat() if f.is_file() else None
        out.append((st.st_size, st.st_mtime_ns) if st else (-1, -1))
    return tuple(out)


def restamp(path: Path, db: Any) -> None:
    """``db`` committed records to ``path`` under :func:`db_lock`: its in-memory state is the
    files' state, so keep it instead of parsing the files again."""
    _OPEN[path.resolve()] = (_stamp(path.resolve()), db)


def db_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on a database directory (several processes may tune one profile)."""
    return flocked(path / ".lock")


def fuse(mod: Any, target: Any) -> Any:
    """Decompose, legalize and fuse ``mod`` the way ``ms.relax_integration.compile_relax``
    does, so the extracted tasks are the ones the compiler will look up."""
    t = tvm()
    from tvm import relax
    from tvm.relax import pipeline

    try:
        dispatch = list(pipeline.library_dispatch_passes(target))
    except (ValueError, AttributeError):
        dispatch = []
    seq = [
        *dispatch,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    with target:
        return t.transform.Sequential(seq)(prepare(mod))


def prepare(mod: Any) -> Any:
    """The inference-mode rewrites applied before both fusing and compiling."""
    from tvm import relax

    mod = relax.transform.DecomposeOpsForInference()(mod)
    return relax.transform.CanonicalizeBindings()(mod)


def extract(fused: Any, target: Any, equality: str | None = None) -> list[Any]:
    """``fused``'s tuning tasks, deduplicated by ``equality`` (default: the database's)."""
    from tvm.s_tir import meta_schedule as ms

    eq = equality or MODULE_EQUALITY
    return list(ms.relax_integration.extract_tasks(fused, target, module_equality=eq))


def missing(tasks: list[Any], db: Any) -> list[Any]:
    """The tasks with no valid tuning record in ``db``."""
    return [t for t in tasks if _record(t, db) is None]


def _record(task: Any, db: Any) -> Any:
    return db.query_tuning_record(task.dispatched[0], task.target, task.task_name)


def records_digest(tasks: list[Any], db: Any) -> str:
    """A hash of the records ``tasks`` compile with: the tuning state part of a cache key
    (a newly tuned task changes it, so an old measurement is not reused)."""
    h = hashlib.sha256()
    for task in sorted(tasks, key=lambda t: t.task_name):
        rec = _record(task, db)
        h.update(task.task_name.encode())
        h.update(b"none" if rec is None else json.dumps(rec.as_json(), default=str).encode())
    return h.hexdigest()[:16]


def task_key(task: Any) -> str:
    """A stable id of a task's workload (structural hash of its TIR)."""
    from tvm_ffi import structural_hash

    return f"{task.task_name}:{structural_hash(task.dispatched[0]) & 0xFFFFFFFFFFFF:x}"


def is_heavy(task: Any) -> bool:
    """Convolutions and matmuls carry the latency; pooling, means and element-wise tasks are
    tuned with fewer trials."""
    name = task.task_name
    return "conv" in name or "matmul" in name or "dense" in name


def tune(
    tasks: list[Any],
    db: Any,
    work_dir: Path,
    *,
    settings: TuneSettings = TuneSettings(),
    budget_s: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    profile: Profile | None = None,
    cost_model_path: Path | None = None,
) -> dict[str, Any]:
    """Tune ``tasks`` into ``db``, a few at a time, until done or ``budget_s`` is spent.

    Candidates run on this host, or, for a ``profile`` measured via an RPC tracker, on the
    tracker's devices (built with the profile's cross compiler).

    Heavy tasks (conv / matmul) go first with ``trials_per_task`` trials, light ones get
    ``light_trials``. The budget is checked between chunks of ``chunk`` tasks, so a run may
    overshoot it by one chunk. Records are committed as each chunk finishes: an interrupted
    run resumes where it stopped.

    The XGBoost cost model is loaded from ``cost_model_path`` (the database's own, when
    given) and saved back after each chunk.

    Returns:
        ``tuned`` (tasks with a record now), ``failed`` (tried, still no valid record, e.g.
        every trial failed to build), ``skipped`` (not tried: budget spent), ``seconds``,
        ``cost_model`` (``"xgb"``) and ``cost_model_samples`` (measurements it has learnt from).

    Raises:
        TuningUnavailableError: the XGBoost cost model can't be built (``xgboost`` missing).
    """
    from workers.probe._builder import EXPORT_CROSS, PersistentBuilder, worker_init

    model = new_cost_model(cost_model_path, settings.builder_workers)
    t0 = time.perf_counter()
    heavy = [t for t in tasks if is_heavy(t)]
    light = [t for t in tasks if not is_heavy(t)]
    chunks = [(c, settings.trials_per_task) for c in _chunks(heavy, settings.chunk)]
    chunks += [(c, settings.light_trials) for c in _chunks(light, settings.chunk)]
    tried: list[Any] = []
    untried: list[Any] = []
    load_cpu_intrinsics()
    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    if ms_log.level == logging.NOTSET:  # its console handler takes this level; files keep all
        ms_log.setLevel(logging.WARNING)
    # MetaSchedule re-lists this logger's handlers by name in a dictConfig; an unnamed one
    # (e.g. a log-capture handler a host application attached) breaks it: drop those.
    for h in list(ms_log.handlers):
        if h.get_name() is None:
            ms_log.removeHandler(h)
    cc = profile.cross_compiler if profile is not None else None
    builder = PersistentBuilder(
        max_workers=settings.builder_workers,
        timeout_sec=settings.builder_timeout_s,
        initializer=functools.partial(worker_init, cc),
        f_export=EXPORT_CROSS if cc else None,
    )
    runner = _runner(profile, settings)
    try:
        for chunk, trials in chunks:
            if budget_s is not None and time.perf_counter() - t0 >= budget_s:
                untried += chunk
                continue
            # under a coarser equality than structural (anchor-block), tuning one task can
            # give another its record
            chunk = missing(chunk, db)
            if not chunk:
                continue
            if progress:
                progress(len(tried), len(tasks), ", ".join(t.task_name for t in chunk))
            _tune_chunk(chunk, trials, db, work_dir, settings, builder, runner, model)
            tried += chunk
            if cost_model_path is not None:
                save_cost_model(model, cost_model_path)
    finally:
        builder.close()
    if progress:
        progress(len(tried), len(tasks), "done")
    failed, skipped = len(missing(tried, db)), len(missing(untried, db))
    return {
        "tuned": len(tasks) - failed - skipped,
        "failed": failed,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 2),
        "cost_model": COST_MODEL,
        "cost_model_samples": int(getattr(model, "data_size", 0)),
    }


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _tune_chunk(
    tasks: list[Any],
    trials: int,
    db: Any,
    work_dir: Path,
    settings: TuneSettings,
    builder: Any,
    runner: Any,
    cost_model: Any,
) -> None:
    from tvm.s_tir import meta_schedule as ms

    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks,
        str(work_dir),
        strategy=ms.search_strategy.EvolutionarySearch(
            population_size=settings.population_size,
            init_min_unmeasured=min(settings.init_min_unmeasured, trials),
            genetic_num_iters=settings.genetic_num_iters,
        ),
        num_threads=settings.builder_workers,
        seed=settings.seed,
    )
    if not contexts:  # already scheduled (e.g. a library call): nothing to tune
        return
    ms.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work_dir),
        max_trials_global=trials * len(contexts),
        max_trials_per_task=trials,
        num_trials_per_iter=trials,
        builder=builder,
        runner=runner,
        database=db,
        cost_model=cost_model,
    )


def can_tune(profile: Profile) -> bool:
    """Local profiles tune on this host; RPC profiles through their tracker (MetaSchedule's
    RPC runner needs one: a direct-host profile can only use records tuned elsewhere). An
    emulated device never tunes: its timings say nothing about the real one."""
    if profile.measure.emulated:
        return False
    return profile.is_local or bool(profile.measure.tracker and profile.measure.key)


def _runner(profile: Profile | None, settings: TuneSettings) -> Any:
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(
        number=settings.number, repeat=settings.repeat, min_repeat_ms=settings.min_repeat_ms
    )
    if profile is None or profile.is_local:
        return ms.runner.LocalRunner(
            timeout_sec=settings.runner_timeout_s, evaluator_config=evaluator
        )
    m = profile.measure
    if not can_tune(profile):
        raise ValueError(f"profile {profile.name!r}: tuning over RPC needs a tracker and a key")
    host, port = split_address(str(m.tracker))
    return ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(
            tracker_host=host,
            tracker_port=port,
            tracker_key=m.key,
            session_priority=1,
            session_timeout_sec=m.session_timeout_s,
        ),
        evaluator_config=evaluator,
        max_workers=1,
    )


def cost_model_path(db_path: Path) -> Path:
    """The database's own XGBoost cost model (features + booster, MetaSchedule's tar)."""
    return db_path / "cost_model.xgb.tar"


def require_cost_model() -> None:
    """Raise :class:`TuningUnavailableError` unless the XGBoost cost model can be built."""
    try:
        import xgboost  # noqa: F401
    except ImportError as e:
        raise TuningUnavailableError(
            "MetaSchedule's XGBoost cost model needs the 'xgboost' package (pinned as "
            "xgboost-cpu in pyproject.toml): install it, or submit the job with "
            '"tuning": "off"; hwnas does not tune by random search'
        ) from e


def new_cost_model(path: Path | None, cores: int) -> Any:
    """An XGBoost cost model, loaded from ``path`` when one was saved there.

    The file is written by this module only (MetaSchedule's format: a tar holding the booster
    and a numpy object array of features; it is never accepted from clients).
    """
    require_cost_model()
    from tvm.s_tir import meta_schedule as ms

    model = ms.cost_model.XGBModel(num_tuning_cores=cores, adaptive_training=True)
    if path is not None and path.is_file():
        try:
            model.load(str(path))
        except Exception as e:  # noqa: BLE001 - a corrupt file: start afresh, say so
            log.warning("cost model %s unreadable (%s): starting a new one", path, e)
            model = ms.cost_model.XGBModel(num_tuning_cores=cores, adaptive_training=True)
    return model


def save_cost_model(model: Any, path: Path) -> None:
    """Save ``model`` atomically (a booster exists once it has trained on measurements)."""
    if getattr(model, "booster", None) is None:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    model.save(str(tmp))
    tmp.replace(path)
