"""The remote commands' parsers, registered on the ``hwnas`` parser (:func:`add_commands`)."""

from __future__ import annotations

import argparse
from typing import Any

from service.remote import account, jobs, results, transfer
from service.remote.base import Command, run
from service.remote.watch import watch

_EPILOG = (
    "The service: --url, else $HWNAS_URL, else http://127.0.0.1:8000. The token, first found: "
    "--token, --token-file, $HWNAS_TOKEN, $HWNAS_TOKEN_FILE. Exit status: 0 ok, 1 a watched "
    "job ended not succeeded, 2 refused, unreachable or bad input."
)


def _connection() -> argparse.ArgumentParser:
    """The options every remote command takes."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("service")
    g.add_argument("--url", help="the service (default $HWNAS_URL or http://127.0.0.1:8000)")
    g.add_argument("--token", help="an API token (visible in ps: prefer a file or $HWNAS_TOKEN)")
    g.add_argument(
        "--token-file", metavar="PATH", help="a file holding the token (default $HWNAS_TOKEN_FILE)"
    )
    return p


def _job_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int, metavar="JOB_ID")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON")


def _progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="bar: redrawn on stderr; lines: one line per change on stdout, for logs; auto "
        "(default): the bar when stdout and stderr are terminals",
    )


def add_commands(sub: Any) -> None:
    """Register the remote commands on the ``hwnas`` parser's subparsers."""
    parent = _connection()

    def command(
        name: str, fn: Command, help_: str, on: Any = sub, **kw: Any
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = on.add_parser(
            name, help=help_, description=help_, epilog=_EPILOG, parents=[parent], **kw
        )
        p.set_defaults(fn=lambda args: run(fn, args))
        return p

    p = command("submit", jobs.submit, "submit a job (a JSON file, - for stdin); prints its id")
    p.add_argument("spec", help="the job spec, a JSON file (- reads stdin)")
    p.add_argument("--watch", action="store_true", help="then watch it to its end")
    _progress(p)
    p = command("jobs", jobs.jobs, "list jobs (newest first)")
    p.add_argument(
        "--status",
        action="append",
        choices=("queued", "running", "cancelling", "cancelled", "succeeded", "failed"),
        help="only these states (repeatable)",
    )
    p.add_argument("--name", help="names containing this")
    p.add_argument("--owner", help="an account's jobs (admin)")
    p.add_argument("--limit", type=int, default=50)
    _json(p)
    p = command("watch", watch, "follow a job: trials done, best accuracy, ETA, running stages")
    _job_id(p)
    _progress(p)
    p = command("cancel", jobs.cancel, "cancel a job (queued: at once; running: its trials stop)")
    _job_id(p)
    _json(p)
    p = command("delete", jobs.delete, "delete an ended job, its trials and model bundles")
    _job_id(p)
    p = command("extend", jobs.extend, "give an ended job more trials (it is queued again)")
    _job_id(p)
    p.add_argument("--trials", type=int, required=True, metavar="N", help="complete trials to add")
    p.add_argument("--tune-s", type=float, metavar="S", help="tuning seconds to add")
    _json(p)
    p = command("trials", jobs.trials, "a job's trials: state, summary, accuracy, latency, size")
    _job_id(p)
    p.add_argument(
        "--state", action="append", choices=jobs.TRIAL_STATES, help="only these (repeatable)"
    )
    p.add_argument("--limit", type=int, default=1000)
    _json(p)
    p = command("pareto", results.pareto, "a job's Pareto front: speedup, flags and a legend")
    _job_id(p)
    _json(p)
    p = command("best", results.best, "the front's best point by accuracy, size or latency")
    _job_id(p)
    p.add_argument("--by", choices=("accuracy", "size", "latency"), default="accuracy")
    _json(p)
    p = command("report", results.report, "save a job's HTML report (and --open it)")
    _job_id(p)
    p.add_argument("-o", "--out", metavar="FILE", help="default ./hwnas-job-<id>-report.html")
    p.add_argument("--open", action="store_true", help="open it in the web browser")
    p = command("pull", transfer.pull, "download a model bundle and unpack it")
    p.add_argument("model_id", help="<job>-<trial>, e.g. 3-7")
    p.add_argument("-o", "--out", metavar="DIR", help="directory (default ./hwnas-model-<id>)")
    p = command(
        "upload",
        transfer.upload,
        "upload a dataset (.npz: x_train, y_train, x_test, y_test [, x_val, y_val]; or a .zip of "
        "one folder of images per class, with --image-size) or a trained network (.pt2: "
        "torch.export.save)",
        usage="hwnas upload [-h] [dataset|network] FILE [--name NAME] [--mean M,.. --std S,..] "
        "[--json] [service options]",
    )
    p.add_argument(
        "target", nargs="+", metavar="[dataset|network] FILE", help="the file (.npz, .zip, .pt2)"
    )
    p.add_argument("--name", help="stored as user/<name> (default: the file's name)")
    p.add_argument(
        "--mean", help="a network's input normalization: per-channel means, comma-separated"
    )
    p.add_argument("--std", help="... and standard deviations (inputs are pixels / 255)")
    p.add_argument("--image-size", help="an image-folder zip: the size to resize to (32, or HxW)")
    p.add_argument(
        "--channels", type=int, default=3, choices=(1, 3), help="an image-folder zip: 3 or 1"
    )
    _json(p)
    p = command("me", account.me, "your account: admin or not, quotas and what you use")
    _json(p)
    tokens = sub.add_parser(
        "tokens", help="your API tokens: list, create, revoke", description="your API tokens"
    )
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = command("list", account.tokens_list, "your tokens (never their secrets)", on=actions)
    _json(p)
    p = command("create", account.tokens_create, "a new token: prints its secret once", on=actions)
    p.add_argument("--name", default="", help="what it is for")
    p.add_argument("--days", type=int, default=90, help="expires after this many days (90)")
    _json(p)
    p = command("revoke", account.tokens_revoke, "revoke a token: it fails from now on", on=actions)
    p.add_argument("token_id", type=int, metavar="TOKEN_ID")
