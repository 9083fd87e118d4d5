"""Measure a compiled Relax executable on a remote device over TVM RPC.

A device is reached through a tracker (``measure.tracker`` + ``measure.key``) or directly
(``measure.host``). Every wait is bounded, so a probe never hangs:

* the tracker is spoken to with plain sockets (its protocol is a few JSON messages), each
  operation under a timeout; a request for a busy key waits at most until the busy deadline;
* a direct server is pinged with a handshake it refuses cheaply (a key that cannot match):
  it answers at once when free, stays silent while it serves another client (both spoken by
  :mod:`workers.probe._rpc_wire`);
* the RPC session itself runs in a daemon thread that the caller waits on for
  :data:`CONNECT_TIMEOUT_S` (handshake) and ``session_timeout_s + GRACE_S`` (upload, load, run,
  time). The server also ends the session after ``session_timeout_s``.

Failures are sorted by whose fault they are: the connection or device (refused, killed, timed
out: retried, then :class:`ProbeTransientError`), a busy device (:class:`ProbeBusyError`), or the
candidate (the library does not load or run on a live session: :class:`ProbeError`).

Nothing here imports TVM until a session is opened: :func:`rpc_reachable` is cheap.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hw_profiles import Measure, Profile
from workers.probe._rpc_wire import (
    Busy,
    Lost,
    brief,
    reach,
    request_server,
    split_address,
    wait_free,
)
from workers.probe.errors import ProbeBusyError, ProbeError, ProbeTransientError
from workers.probe.measure import run_outputs
from workers.probe.targets import device_of, is_gpu, tvm
from workers.probe.timing import prepare, window
from workers.records import Window

CONNECT_TIMEOUT_S = 10.0
"""TCP connect, tracker replies and the RPC handshake with a server known to be free."""
GRACE_S = 15.0
"""Waited beyond ``session_timeout_s`` (the server's own limit) before giving a session up."""
BUSY_POLL_S = 2.0
"""How long a direct server may stay silent to a ping before it counts as busy (polled again)."""
BACKOFF_S = 0.5
"""First pause between attempts; doubled each retry, at most :data:`MAX_BACKOFF_S`."""
MAX_BACKOFF_S = 4.0
PRIORITY = 1
"""Priority of tracker requests (TVM's default)."""

T = TypeVar("T")


class _Hung(Exception):
    """A bounded wait ran out."""


def measure_remote(
    lib_path: Path,
    example: np.ndarray,
    check_inputs: list[np.ndarray],
    profile: Profile,
    *,
    canary: Path | None = None,
    others: Sequence[tuple[Path, np.ndarray]] = (),
    windows: int = 1,
    retries: int = 3,
    busy_deadline_s: float = 300,
) -> dict[str, Any]:
    """Run and time the exported library ``lib_path`` on ``profile``'s RPC device.

    Args:
        lib_path: the library exported by ``export_library`` (cross-compiled if need be).
        example: the batch-1 input that is timed.
        check_inputs: batch-1 inputs whose outputs are returned (for the numerics check).
        profile: a profile with ``measure.via = "rpc"``.
        canary: the profile's canary library, timed interleaved with the others.
        others: more (library, input) pairs timed in the same windows (a dense parent).
        windows: timing windows, one after another in the same session.
        retries: further attempts after a transient failure (refused, killed, timed out).
        busy_deadline_s: how long to wait, over all attempts, for a free server.

    Returns:
        ``outputs`` (the outputs of ``check_inputs``, concatenated along the batch axis),
        ``windows`` (per window, one :class:`~workers.records.Window` per library: ``lib_path``,
        then ``others``, then the canary), ``window`` (the first library's first window),
        ``threads`` (the remote CPU thread pool size set from ``measure.threads``, None on
        GPUs), ``attempts`` and ``rpc`` (``"tracker HOST:PORT KEY"`` or ``"HOST:PORT"``).

    Raises:
        ProbeError: a library does not exist, or fails to load or run on a live session.
        ProbeBusyError: no server became free within ``busy_deadline_s``.
        ProbeTransientError: the device or connection kept failing (after ``retries``).
    """
    m = profile.measure
    if m.via != "rpc":
        raise ProbeError(f"profile {profile.name} is measured {m.via!r}, not via rpc")
    libs = [(lib_path, example), *others]
    if canary is not None:
        from workers.probe.canary import canary_input

        libs.append((canary, canary_input().numpy()))
    for path, _ in libs:
        if not path.is_file():
            raise ProbeError(f"no exported library at {path}")
    job = _Job(libs, check_inputs, canary is not None, windows)
    where = rpc_address(m)
    busy_until = time.monotonic() + busy_deadline_s
    last: str | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            outputs, timed, threads = _attempt(job, profile, busy_until)
            return {
                "outputs": outputs,
                "windows": timed,
                "window": timed[0][0],
                "threads": threads,
                "attempts": attempts,
                "rpc": where,
            }
        except Busy as e:
            if last is None:
                raise ProbeBusyError(
                    f"{profile.name}: no free RPC device at {where} within "
                    f"{busy_deadline_s:g} s: {e}"
                ) from None
            raise ProbeTransientError(
                f"{profile.name}: RPC measurement on {where} failed ({attempts - 1} attempt(s)); "
                f"last error: {last}; then no free device within {busy_deadline_s:g} s: {e}"
            ) from None
        except Lost as e:
            last = str(e)
            if attempts > retries:
                raise ProbeTransientError(
                    f"{profile.name}: RPC measurement on {where} failed after {attempts} "
                    f"attempt(s); last error: {last}"
                ) from None
            time.sleep(min(BACKOFF_S * 2 ** (attempts - 1), MAX_BACKOFF_S))


@dataclass(frozen=True)
class _Job:
    """What one session does: upload ``libs``, run the first on ``check``, time all."""

    libs: list[tuple[Path, np.ndarray]]
    check: list[np.ndarray]
    has_canary: bool
    windows: int


def rpc_reachable(measure: Measure, timeout_s: float = 2.0) -> tuple[bool, str]:
    """Whether ``measure``'s RPC device answers now, and what was found; within ``timeout_s``.

    A tracker must answer and list at least one server under the key (busy ones count); a
    direct server must accept a connection (one serving another client counts, as busy).
    """
    if measure.via != "rpc":
        return False, f"measured {measure.via!r}, not via rpc"
    where = rpc_address(measure)
    try:
        return _bounded(lambda: reach(measure, timeout_s), timeout_s + 0.5)
    except _Hung:
        return False, f"{where}: no answer within {timeout_s:g} s"


def rpc_address(measure: Measure) -> str:
    """``"tracker HOST:PORT KEY"`` or ``"HOST:PORT"``: where ``measure`` sends probes."""
    if measure.tracker and measure.key:
        return f"tracker {measure.tracker} {measure.key}"
    return str(measure.host)


# --- one attempt -------------------------------------------------------------------------------


def _attempt(
    job: _Job, profile: Profile, busy_until: float
) -> tuple[np.ndarray, list[list[Window]], int | None]:
    m = profile.measure
    timeout = m.session_timeout_s
    if m.tracker and m.key:
        url, port, matchkey = request_server(
            *split_address(m.tracker),
            m.key,
            busy_until,
            connect_s=CONNECT_TIMEOUT_S,
            priority=PRIORITY,
        )
        server, key = f"{url}:{port}", matchkey
    else:
        url, port = split_address(str(m.host))
        wait_free(url, port, busy_until, connect_s=CONNECT_TIMEOUT_S, poll_s=BUSY_POLL_S)
        server, key = f"{url}:{port}", m.key or ""

    def connect() -> Any:
        return tvm().rpc.connect(url, port, key=key, session_timeout=timeout)

    def work(sess: Any) -> tuple[np.ndarray, list[list[Window]], int | None]:
        return _measure_in(sess, job, profile, server)

    return _in_session(connect, work, timeout + GRACE_S, server)


def _in_session(
    connect: Callable[[], Any], work: Callable[[Any], T], session_s: float, server: str
) -> T:
    """``work(connect())`` in a daemon thread, waited on for the handshake, then ``session_s``.

    The thread reports plain values and exceptions without tracebacks, so that nothing keeps
    the session open once it ends (a TVM RPC server serves one session at a time); a session
    whose handshake completes after the caller gave up is dropped unused.
    """
    mailbox = _Mailbox()

    def run() -> None:
        try:
            sess = connect()
        except Exception as e:
            mailbox.put("error", Lost(f"cannot open a session on {server}: {brief(e)}"))
            return
        if not mailbox.put("connected", None):
            return
        try:
            mailbox.put("done", work(sess))
        except Exception as e:
            mailbox.put("error", _detached(e))

    threading.Thread(target=run, name="hwnas-rpc-session", daemon=True).start()
    kind, value = mailbox.get(CONNECT_TIMEOUT_S, f"no RPC handshake from {server}")
    if kind == "connected":
        kind, value = mailbox.get(session_s, f"session on {server} stopped answering")
    if kind == "error":
        raise value
    return value  # type: ignore[no-any-return]


class _Mailbox:
    """Messages from a session thread to a caller that may give up waiting."""

    def __init__(self) -> None:
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._abandoned = False

    def put(self, kind: str, value: Any) -> bool:
        """Deliver a message; False once the caller has given up."""
        with self._lock:
            if not self._abandoned:
                self._events.put((kind, value))
            return not self._abandoned

    def get(self, timeout_s: float, what: str) -> tuple[str, Any]:
        """The next message; :class:`Lost` (and the caller gives up) after ``timeout_s``."""
        try:
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            pass
        with self._lock:
            try:
                return self._events.get_nowait()
            except queue.Empty:
                self._abandoned = True
        raise Lost(f"{what} within {timeout_s:g} s")


def _measure_in(
    sess: Any, job: _Job, profile: Profile, server: str
) -> tuple[np.ndarray, list[list[Window]], int | None]:
    """Upload, load, run and time on an open session (runs in the session thread)."""
    from tvm import relax

    dev = device_of(profile, sess)
    try:
        for path, _ in job.libs:
            sess.upload(str(path), target=path.name)
        threads = _set_threads(sess, profile)
    except Exception as e:
        raise Lost(f"upload to {server} failed: {brief(e)}") from None
    step = "loading the library"
    try:
        vms = [relax.VirtualMachine(sess.load_module(p.name), dev) for p, _ in job.libs]
        step = "running main"
        outputs = run_outputs(vms[0], dev, job.check)
        step = "timing main"
        t = tvm()
        items = [
            prepare(vm, dev, t.runtime.tensor(x, dev), profile.measure)
            for vm, (_, x) in zip(vms, job.libs, strict=True)
        ]
        canary = len(items) - 1 if job.has_canary else None
        timed = [
            window(items, profile.measure, canary=canary, quiet="remote")
            for _ in range(job.windows)
        ]
    except Exception as e:
        raise _classify(e, dev, step, server) from None
    return outputs, timed, threads


def _set_threads(sess: Any, profile: Profile) -> int | None:
    """Size the remote CPU thread pool to ``measure.threads``; the size it reports, or None."""
    if is_gpu(profile):
        return None
    try:
        configure = sess.get_function("runtime.config_threadpool")
        count = sess.get_function("runtime.NumThreads")
    except AttributeError:  # a minimal runtime without a thread pool
        return None
    configure(1, profile.measure.threads)  # 1: big cores first
    return int(count())


def _classify(e: Exception, dev: Any, step: str, server: str) -> Exception:
    """The candidate's fault when the session is still alive, else the connection's."""
    if type(e).__name__ == "RPCSessionTimeoutError":
        return Lost(f"session on {server} timed out while {step}: {brief(e)}")
    try:
        tvm().runtime.empty((1,), "float32", dev)  # a round trip: is the session alive?
    except Exception:
        return Lost(f"connection to {server} lost while {step}: {brief(e)}")
    return ProbeError(f"{step} failed on {server}: {brief(e)}")


# --- helpers -----------------------------------------------------------------------------------


def _bounded(fn: Callable[[], T], timeout_s: float) -> T:
    """``fn()`` in a daemon thread; :class:`_Hung` when it has not returned in ``timeout_s``."""
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as e:
            box.append((False, e))

    thread = threading.Thread(target=run, name="hwnas-rpc-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not box:
        raise _Hung
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _detached(e: Exception) -> Exception:
    """``e`` without traceback or chained exceptions (they would hold the session's frames)."""
    e.__cause__ = e.__context__ = None
    return e.with_traceback(None)
