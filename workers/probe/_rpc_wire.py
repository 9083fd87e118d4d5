"""The TVM RPC tracker and server wire protocol, spoken over plain sockets with bounded waits.

:mod:`workers.probe.rpc` uses this to find a server without importing TVM and without hanging:

* the tracker is spoken to with plain sockets (its protocol is a few JSON messages), each
  operation under a timeout; a request for a busy key waits at most until the busy deadline;
* a direct server is pinged with a handshake it refuses cheaply (a key that cannot match):
  it answers at once when free, stays silent while it serves another client.

Failures worth another attempt raise :class:`Lost`; a key or server that stays busy past the
deadline raises :class:`Busy`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from hw_profiles import Measure

# TVM RPC wire constants (tvm.rpc.base), copied so that this module does not import TVM.
_RPC_MAGIC = 0xFF271
_RPC_CODE_SUCCESS = _RPC_MAGIC
_RPC_CODE_MISMATCH = _RPC_MAGIC + 2
_TRACKER_MAGIC = 0x2F271
_TRACKER_SUCCESS = 0
_TRACKER_REQUEST = 4
_TRACKER_SUMMARY = 6
_PING_KEY = "client:hwnas-ping"  # never a server's key: the server answers "mismatch" at once


class Lost(Exception):
    """The connection or the device failed: worth another attempt."""


class Busy(Exception):
    """No server became free before the busy deadline."""


def request_server(
    host: str, port: int, key: str, busy_until: float, *, connect_s: float, priority: int
) -> tuple[str, int, str]:
    """Ask the tracker for a free server under ``key``: ``(host, port, matchkey)``.

    Raises:
        Busy: no server under ``key`` became free before ``busy_until``.
        Lost: the tracker is unreachable, misbehaves or refuses the request.
    """
    where = f"tracker {host}:{port}"
    try:
        with _tracker(host, port, time.monotonic() + connect_s) as sock:
            _send_json(sock, [_TRACKER_REQUEST, key, "", priority], connect_s)
            wait_until = max(busy_until, time.monotonic() + 1.0)  # a free server answers at once
            try:
                reply = _recv_json(sock, wait_until)
            except TimeoutError:
                raise Busy(_key_report(host, port, key)) from None
    except Busy:
        raise
    except (OSError, ValueError) as e:
        raise Lost(f"{where}: {brief(e)}") from None
    if not (isinstance(reply, list) and reply and reply[0] == _TRACKER_SUCCESS):
        raise Lost(f"{where} refused the request for {key!r}: {reply!r}")
    url, sport, matchkey = reply[1]
    return str(url), int(sport), str(matchkey)


def wait_free(host: str, port: int, busy_until: float, *, connect_s: float, poll_s: float) -> None:
    """Return once the direct server at ``host:port`` answers a ping; poll while it is busy.

    A server silent for ``poll_s`` counts as busy and is pinged again until ``busy_until``.

    Raises:
        Busy: the server stayed silent until ``busy_until``.
        Lost: nothing listens there, or something else answers.
    """
    while True:
        answer_s = min(max(busy_until - time.monotonic(), 0.5), poll_s)
        try:
            free = _ping(host, port, connect_s, answer_s)
        except (OSError, ValueError) as e:
            raise Lost(f"{host}:{port}: {brief(e)}") from None
        if free:
            return
        if time.monotonic() >= busy_until:
            raise Busy(f"{host}:{port} accepts connections but stays silent (serving a session?)")


def reach(measure: Measure, timeout_s: float) -> tuple[bool, str]:
    """Whether ``measure``'s tracker (with servers under the key) or server answers, and what
    was found. Each socket operation is bounded by ``timeout_s``; the caller bounds the whole."""
    if measure.tracker and measure.key:
        host, port = split_address(measure.tracker)
        try:
            summary = _summary(host, port, time.monotonic() + timeout_s)
        except TimeoutError:
            return False, f"tracker {host}:{port} did not answer within {timeout_s:g} s"
        except (OSError, ValueError) as e:
            return False, f"tracker {host}:{port} unreachable: {brief(e)}"
        servers, sentence = _describe_key(summary, measure.key)
        return servers > 0, f"tracker {host}:{port}: {sentence}"
    host, port = split_address(str(measure.host))
    try:  # a live server connects and answers in milliseconds
        free = _ping(host, port, timeout_s / 2, timeout_s / 2)
    except TimeoutError:
        return False, f"RPC server {host}:{port}: no connection within {timeout_s:g} s"
    except (OSError, ValueError) as e:
        return False, f"RPC server {host}:{port} unreachable: {brief(e)}"
    if free:
        return True, f"RPC server {host}:{port} answers"
    return True, f"RPC server {host}:{port} accepts connections but is busy (serving a session?)"


def split_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` as ``(host, port)``."""
    host, _, port = address.rpartition(":")
    return host, int(port)


def brief(e: BaseException) -> str:
    """``Type: message``, keeping the last lines of TVM's long (remote) error texts."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " | ".join(lines[-3:])
    return f"{type(e).__name__}: {text[-500:]}" if text else type(e).__name__


# --- tracker ----------------------------------------------------------------------------------


def _key_report(host: str, port: int, key: str) -> str:
    """What the tracker says about ``key`` (best effort, for messages)."""
    try:
        summary = _summary(host, port, time.monotonic() + 2.0)
    except (OSError, ValueError) as e:
        return f"tracker summary unavailable: {brief(e)}"
    return _describe_key(summary, key)[1]


def _summary(host: str, port: int, deadline: float) -> dict[str, Any]:
    with _tracker(host, port, deadline) as sock:
        _send_json(sock, [_TRACKER_SUMMARY], _left(deadline))
        reply = _recv_json(sock, deadline)
    if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == _TRACKER_SUCCESS):
        raise ValueError(f"unexpected tracker summary {reply!r}")
    return dict(reply[1])


def _describe_key(summary: dict[str, Any], key: str) -> tuple[int, str]:
    """``(servers under key, sentence)`` from a tracker summary."""
    listed = list(summary.get("server_info", []))
    servers = [s for s in listed if s.get("key") == f"server:{key}"]
    queue_info = summary.get("queue_info", {}).get(key, {})
    free, pending = int(queue_info.get("free", 0)), int(queue_info.get("pending", 0))
    if not servers:
        keys = sorted({str(s.get("key", "")).removeprefix("server:") for s in listed})
        known = f"keys with servers: {', '.join(keys)}" if keys else "no servers at all"
        return 0, f"key {key!r} has 0 servers ({known})"
    return len(servers), (
        f"key {key!r} has {len(servers)} server(s), {free} free, {pending} queued request(s)"
    )


@contextlib.contextmanager
def _tracker(host: str, port: int, deadline: float) -> Iterator[socket.socket]:
    """A connection to a tracker, past the magic exchange; closed on exit."""
    with socket.create_connection((host, port), timeout=_left(deadline)) as sock:
        sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
        if struct.unpack("<i", _recvall(sock, 4, deadline))[0] != _TRACKER_MAGIC:
            raise ValueError(f"{host}:{port} is not a TVM RPC tracker")
        yield sock


# --- server -----------------------------------------------------------------------------------


def _ping(host: str, port: int, connect_s: float, answer_s: float) -> bool:
    """True when a TVM RPC server answers a handshake; False when it stays silent (busy).

    Raises:
        OSError: nothing listens there (refused, unreachable, connect timed out).
        ValueError: something else answers.
    """
    with socket.create_connection((host, port), timeout=connect_s) as sock:
        key = _PING_KEY.encode()
        sock.sendall(struct.pack("<ii", _RPC_MAGIC, len(key)) + key)
        try:
            code = struct.unpack("<i", _recvall(sock, 4, time.monotonic() + answer_s))[0]
        except TimeoutError:
            return False
    if code not in (_RPC_CODE_SUCCESS, _RPC_CODE_MISMATCH):
        raise ValueError(f"{host}:{port} is not a TVM RPC server (answered {code:#x})")
    return True


# --- framing ----------------------------------------------------------------------------------


def _send_json(sock: socket.socket, value: Any, timeout_s: float) -> None:
    data = json.dumps(value).encode()
    sock.settimeout(timeout_s)
    sock.sendall(struct.pack("<i", len(data)) + data)


def _recv_json(sock: socket.socket, deadline: float) -> Any:
    size = struct.unpack("<i", _recvall(sock, 4, deadline))[0]
    if not 0 < size <= 1 << 20:
        raise ValueError(f"bad message size {size}")
    return json.loads(_recvall(sock, size, deadline))


def _recvall(sock: socket.socket, n: int, deadline: float) -> bytes:
    """``n`` bytes before ``deadline`` (TimeoutError otherwise)."""
    buf = b""
    while len(buf) < n:
        sock.settimeout(_left(deadline))
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("connection closed by the peer")
        buf += chunk
    return buf


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)
