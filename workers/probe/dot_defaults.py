"""A dot-product schedule for int8 tasks that have no tuning record.

Without a record, a task compiles with TVM's default CPU schedule, which never uses a tensor
intrinsic: an untuned int8 conv on a VNNI or ``sdot`` profile would run as plain vector code and
the probe would time a path the profile does not deploy. So each such task (one built from
:mod:`workers.probe.int8_dot`'s ``qconv2d_dot`` / ``qdense_dot``) gets the first schedule of
MetaSchedule's design space that tensorizes with the target's dot-product intrinsic,
post-processed as a tuned one would be, kept in an in-memory database *behind* the tuning
database (a measured record always wins). The schedule is not measured: the probe still says
the task is untuned (``partial``), and such schedules never enter the tuning database.
"""

from __future__ import annotations

import logging
from typing import Any

from workers.probe._intrin import load_cpu_intrinsics

log = logging.getLogger(__name__)
_DOT_TASK = ("qconv2d_dot", "qdense_dot")
UNMEASURED_S = 1.0e9  # run_secs of a schedule no one timed (never preferred over a record)


def is_dot_task(task: Any) -> bool:
    """Whether ``task`` (a MetaSchedule extracted task) holds an int8 dot-product kernel."""
    return any(name in task.task_name for name in _DOT_TASK)


def tensorized_schedule(task: Any, target: Any) -> Any | None:
    """The first design-space schedule of ``task`` that tensorizes and post-processes, or
    None (the target has no dot-product intrinsic for it)."""
    from tvm.s_tir import meta_schedule as ms

    load_cpu_intrinsics()
    mod = task.dispatched[0]
    ctx = ms.TuneContext(
        mod=mod,
        target=target,
        space_generator="post-order-apply",
        search_strategy="evolutionary",
        task_name=task.task_name,
    )
    assert ctx.space_generator is not None
    for sch in ctx.space_generator.generate_design_space(mod):
        if "meta_schedule.auto_tensorize" not in str(sch.trace):
            continue
        if all(p.apply(sch) for p in ctx.space_generator.postprocs):
            return sch
    return None


def dot_database(tasks: list[Any], target: Any) -> tuple[Any, list[str]]:
    """An in-memory database with a tensorized schedule for each dot task of ``tasks``, and
    the names of the tasks it covers."""
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.MemoryDatabase()
    covered: list[str] = []
    for task in tasks:
        if not is_dot_task(task):
            continue
        sch = tensorized_schedule(task, target)
        if sch is None:
            log.info("no dot-product schedule for %s on %s", task.task_name, target)
            continue
        workload = db.commit_workload(task.dispatched[0])
        db.commit_tuning_record(
            ms.database.TuningRecord(
                sch.trace,
                workload,
                run_secs=[UNMEASURED_S],
                target=target,
                args_info=ms.arg_info.ArgInfo.from_entry_func(task.dispatched[0], False),
            )
        )
        covered.append(task.task_name)
    return db, covered


def behind(db: Any, defaults: Any) -> Any:
    """``db`` first, ``defaults`` for the workloads ``db`` has no record of."""
    from tvm.s_tir import meta_schedule as ms

    return ms.database.OrderedUnionDatabase(db, defaults)
