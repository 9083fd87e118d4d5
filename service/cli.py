"""``hwnas`` command line. On this host: serve (API + scheduler), api, scheduler, migrate, token,
gc, dashboard, tune-profile. Against a service anywhere (``HWNAS_URL``, ``HWNAS_TOKEN``):
submit, jobs, watch, cancel, delete, extend, trials, pareto, best, report, pull, upload, me,
tokens (:mod:`service.remote`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.records import NetworkSource

from service.settings import Settings, get_settings


def _serve_api(host: str, port: int) -> None:
    import uvicorn

    from service.main import create_app

    # a stop (SIGTERM) waits for requests in flight at most 10 s: an event stream or a request
    # stuck behind a busy database must not keep the process alive. Idle keep-alive
    # connections stay 30 s: with uvicorn's 5 s, a client reusing one raced its close
    # (measured: one "server disconnected" per 1,100-request burst, none at 30 s)
    uvicorn.run(
        create_app(get_settings()),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=30,
    )


def cmd_api(args: argparse.Namespace) -> int:
    _serve_api(args.host, args.port)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    import threading

    from service.scheduler import run_scheduler

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_scheduler(get_settings(), stop)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """API in this process, scheduler in a child process that is restarted if it dies (bounded
    backoff, logged); the child stops with us."""
    from service.db.migrate import upgrade
    from service.scheduler.study import get_storage
    from service.supervise import Supervisor

    settings = get_settings()
    upgrade(settings.database_url)
    get_storage(settings.database_url)  # Optuna's tables, created once before the child starts
    scheduler = Supervisor(
        [sys.executable, "-m", "service.cli", "scheduler"], env=os.environ.copy()
    )

    def _term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        _serve_api(args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """hwnas's schema to head, and Optuna's tables (a deployment's one-off step before the
    API and the schedulers start)."""
    from service.db.migrate import upgrade
    from service.scheduler.study import get_storage

    url = get_settings().database_url
    upgrade(url)
    get_storage(url)
    print("database is at head")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Create an API token for an account (creating the account with --create), straight on the
    database: for operators, and for setting up before any admin token exists."""
    from sqlalchemy import select

    from service.db import accounts
    from service.db.migrate import upgrade
    from service.db.models import User
    from service.db.session import get_sessionmaker

    settings = get_settings()
    upgrade(settings.database_url)
    with get_sessionmaker(settings.database_url)() as s:
        user = s.scalar(select(User).where(User.name == args.user))
        if user is None:
            if not args.create:
                print(f"error: no account {args.user!r} (add --create)", file=sys.stderr)
                return 2
            user = User(name=args.user, is_admin=args.admin, quota_exempt=args.exempt)
            s.add(user)
            s.flush()
        _, secret = accounts.create_token(
            session=s, user=user, name=args.name, expires_in_days=args.days, by=user, client="cli"
        )
        s.commit()
    print(secret)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Garbage collection on this service's database and artifact store (service.retention)."""
    from dataclasses import asdict

    from service.db.migrate import upgrade
    from service.retention import collect

    settings = get_settings()
    upgrade(settings.database_url)
    report = asdict(collect(settings, dry_run=args.dry_run))
    report["paths"] = report["paths"][:50]
    print(json.dumps(report, indent=2))
    return 0


_LOCAL_DASHBOARD = (
    "hwnas dashboard: every study on this database, no login, for one person on this host. A "
    "shared service shows each account its own studies at <api>/dashboard/ (hwnas api / serve)."
)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the Optuna dashboard on the service database, in this process, for a local
    single-user setup: it shows every study and has no login (the API serves it behind
    accounts at ``/dashboard/``). The database URL (with its password) comes from
    ``HWNAS_DATABASE_URL`` and never reaches a command line. A read-only database role is
    enough (the dashboard's own writes, notes say, then fail)."""
    from sqlalchemy.engine import make_url

    print(_LOCAL_DASHBOARD, file=sys.stderr)
    url = get_settings().database_url
    if args.print_only:
        shown = make_url(url).render_as_string(hide_password=True)
        print(f"optuna-dashboard {shown} --host {args.host} --port {args.port}")
        return 0
    import optuna
    from optuna_dashboard import run_server

    # skip_table_creation: the schema is the migrate step's; the role may only SELECT
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    run_server(storage, host=args.host, port=args.port)
    return 0


def cmd_tune_profile(args: argparse.Namespace) -> int:
    """Pre-tune the tasks ``--candidates`` sampled candidates of a space bring (resumable)."""
    from hw_profiles import get_profile
    from search_spaces import NetworkSpace, SearchSpace, SpaceContext, get_space
    from workers.data import get_dataset
    from workers.dense import dense_candidate
    from workers.probe.pretune import pretune, sample_candidates
    from workers.probe.reach import reachable
    from workers.probe.tuning import can_tune

    settings = get_settings()
    profile = get_profile(args.profile)
    if not can_tune(profile):
        print(f"error: {profile.name}: tuning over RPC needs a tracker and a key", file=sys.stderr)
        return 2
    ok, reason = reachable(profile)
    if not ok:
        print(f"error: profile {profile.name!r} is not reachable: {reason}", file=sys.stderr)
        return 2
    overrides = json.loads(args.overrides) if args.overrides else None
    network = None
    if args.network:
        network = _network_source(settings, args.network, args.owner)
        desc = network.description
        space: SearchSpace = NetworkSpace(
            SpaceContext(input_shape=desc.input_shape, num_classes=desc.num_classes),
            overrides,
            network=desc,
        )
    else:
        if not args.space:
            print("error: give --space (a built-in space) or --network", file=sys.stderr)
            return 2
        ds = get_dataset(args.dataset, settings.user_data_dir)
        space = get_space(args.space)(
            SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes), overrides
        )
    cands = sample_candidates(space, args.candidates, args.seed)
    if network is not None:  # what the front's verification times every point beside
        cands.append(dense_candidate(cands[0]))
    report = pretune(
        profile,
        cands,
        Path(settings.tuning_dir).resolve(),
        budget_s=args.budget_s,
        log=lambda m: print(m, flush=True),
        network=network,
    )
    print(json.dumps(report, indent=2))
    return 0


def _network_source(settings: Settings, network: str, owner: str) -> NetworkSource:
    """An account's uploaded network, from the database (for operators' commands)."""
    from sqlalchemy import select

    from service.db import networks
    from service.db.migrate import upgrade
    from service.db.models import User
    from service.db.session import get_sessionmaker
    from workers.records import NetworkSource

    upgrade(settings.database_url)
    with get_sessionmaker(settings.database_url)() as s:
        user_id = s.scalar(select(User.id).where(User.name == owner))
        row = None
        if user_id is not None:
            row = networks.find(session=s, owner_id=user_id, name=network.removeprefix("user/"))
        if row is None:
            raise SystemExit(f"error: account {owner!r} has no network {network!r}")
        return NetworkSource(
            store=str(networks.store_dir(settings, row.owner_id)),
            description=networks.description(row),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hwnas", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("serve", cmd_serve, "API + scheduler (embedded default: SQLite + local Ray)"),
        ("api", cmd_api, "the REST API only"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(fn=fn)
    sub.add_parser("scheduler", help="claim and run jobs").set_defaults(fn=cmd_scheduler)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    p = sub.add_parser("token", help="print a new API token for an account (on the database)")
    p.add_argument("user", help="account name")
    p.add_argument("--create", action="store_true", help="create the account if missing")
    p.add_argument("--admin", action="store_true", help="with --create: an admin account")
    p.add_argument("--exempt", action="store_true", help="with --create: no quotas or rate limit")
    p.add_argument("--days", type=int, default=90, help="expires after this many days")
    p.add_argument("--name", default="", help="what the token is for")
    p.set_defaults(fn=cmd_token)
    p = sub.add_parser(
        "dashboard",
        help="the Optuna dashboard on the service database, for one local user (no login; a "
        "shared service serves it behind accounts at <api>/dashboard/)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--print-only", action="store_true", help="print the equivalent command (password hidden)"
    )
    p.set_defaults(fn=cmd_dashboard)
    p = sub.add_parser("tune-profile", help="pre-tune a profile's MetaSchedule database")
    p.add_argument("profile", help="e.g. x86/local")
    p.add_argument("--space", help="e.g. cnn_joint (or --network)")
    p.add_argument("--network", help="an uploaded network (user/<name>) instead of a space")
    p.add_argument("--owner", default="admin", help="with --network: the account that owns it")
    p.add_argument("--overrides", help="space_overrides as JSON, to sample as a job would")
    p.add_argument("--dataset", default="fashion_mnist", help="sets the input shape")
    p.add_argument("--candidates", type=int, default=40, help="candidates to sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=None, help="stop tuning after this")
    p.set_defaults(fn=cmd_tune_profile)
    p = sub.add_parser("gc", help="remove what no job needs (deleted jobs' files, old caches)")
    p.add_argument("--dry-run", action="store_true", help="only report what would go")
    p.set_defaults(fn=cmd_gc)
    from service.remote import add_commands

    add_commands(sub)
    args = parser.parse_args(argv)
    from service.logctx import install

    install(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the remote commands' every request
    try:
        result: int = args.fn(args)
    except BrokenPipeError:  # `hwnas gc | head`: the reader went away, not an error
        from service.remote.base import quiet_stdout

        quiet_stdout()
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
