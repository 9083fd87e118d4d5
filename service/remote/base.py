"""What every remote command shares: running one with a client and clean errors, output.

:func:`run` turns what goes wrong into one ``error: ...`` line on stderr and an exit status,
never a traceback: 2 when the service refused or could not be reached or the input was bad
(a file that is not there, not JSON, not writable), 130 on Ctrl-C. A reader that stops
reading (``hwnas pareto 1 --json | head -1``) ends the command quietly with status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from service.client import Client, ServiceError

Command = Callable[[Client, argparse.Namespace], int]


class UserError(Exception):
    """Bad input from the user (a file, an option): ``error: <message>``, exit status 2."""


def run(fn: Command, args: argparse.Namespace) -> int:
    """Run ``fn`` with a client made from ``args`` (``--url``, ``--token``, ``--token-file``).

    Returns:
        ``fn``'s exit status, or 2 (refused, unreachable, bad input), 130 (interrupted), 0 (the
        output's reader went away).
    """
    try:
        with Client(args.url, args.token, token_file=args.token_file) as client:
            code = fn(client, args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ServiceError, UserError) as e:
        return fail(str(e))
    except OSError as e:  # a file of the user's: missing, a directory, not writable, ...
        return fail(_os_message(e))
    except ValueError as e:  # e.g. a file that is not JSON, not UTF-8
        return fail(str(e))


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; exit status 2."""
    try:
        print(f"error: {message}", file=sys.stderr, flush=True)
    except BrokenPipeError:
        pass
    return 2


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__


def quiet_stdout() -> None:
    """Point stdout at /dev/null: Python's flush at exit must not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def print_json(data: Any) -> None:
    """The API's JSON, indented, on stdout."""
    print(json.dumps(data, indent=2))


def console(stderr: bool = False, **kw: Any) -> Any:
    """A rich Console (imported only by the commands that draw) whose closed pipe raises
    BrokenPipeError for :func:`run` (rich's own exits with status 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Console(stderr=stderr, **kw)


def duration(s: float) -> str:
    """``4m10s``, ``1h05m``."""
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def ms(v: float | None) -> str:
    """A latency in ms, 4 significant digits (``0.00126``, ``12.35``)."""
    return "-" if v is None else f"{v:.4g}"


def kb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1024:.2f}"


def acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
