"""Load on the service itself: 100 concurrent submits and 1,000 concurrent reads against
``hwnas api`` on 127.0.0.1, with 4 schedulers claiming, on SQLite and on PostgreSQL.

The schedulers run the real claim / ask / tell loop with an executor whose trials complete at
once (``bench/_instant.py``: nothing trains), so what is measured is the API, the queue, the
scheduler and the database. Tokens are quota-exempt accounts; a 429 would be counted apart from
the errors. Per backend: latency p50 / p99 per route and overall, errors (anything but a 2xx or
429, or no answer), jobs claimed twice, jobs that did not succeed, and the wall times.

    make bench-service        # -> bench/results/service.json + service.png
PostgreSQL comes from ``HWNAS_TEST_PG`` (``scripts/with-postgres.sh`` starts a private one).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SUBMITS, READS, SCHEDULERS, USERS = 100, 1000, 4, 10
SPEC = {
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "size"],
    "budget": {"trials": 3, "tune_s": 0},
    "tuning": "off",
    "prefilter": False,
    "sampler": "random",
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


class Calls:
    """Latency and outcome of every request, by route."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: list[str] = []
        self.throttled = 0

    async def call(
        self, client: httpx.AsyncClient, route: str, method: str, url: str, **kw: Any
    ) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError as e:
            self.errors.append(f"{route}: {type(e).__name__}: {e}")
            return None
        self.ms[route].append((time.perf_counter() - t0) * 1000)
        if r.status_code == 429:
            self.throttled += 1
        elif not r.is_success:
            self.errors.append(f"{route}: {r.status_code} {r.text[:200]}")
        return r

    def summary(self) -> dict[str, Any]:
        every = [x for xs in self.ms.values() for x in xs]
        return {
            "requests": len(every) + sum(1 for e in self.errors if "Error" in e.split(":")[1]),
            "p50_ms": round(_pct(every, 50), 2),
            "p99_ms": round(_pct(every, 99), 2),
            "routes": {
                route: {
                    "n": len(xs),
                    "p50_ms": round(_pct(xs, 50), 2),
                    "p99_ms": round(_pct(xs, 99), 2),
                }
                for route, xs in sorted(self.ms.items())
            },
        }


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def _load(base: str, admin: str, work: Path) -> tuple[Calls, list[int]]:
    calls = Calls()
    limits = httpx.Limits(max_connections=READS, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        head = {"Authorization": f"Bearer {admin}"}
        tokens = []
        for i in range(USERS):  # quota-exempt service accounts, as a team's CI would use
            r = await client.post(
                "/v1/users", json={"name": f"bench{i}", "quota_exempt": True}, headers=head
            )
            r.raise_for_status()
            t = await client.post(f"/v1/users/{r.json()['id']}/tokens", json={}, headers=head)
            tokens.append({"Authorization": f"Bearer {t.json()['token']}"})
        t0 = time.perf_counter()
        answers = await asyncio.gather(
            *(
                calls.call(
                    client,
                    "POST /v1/jobs",
                    "POST",
                    "/v1/jobs",
                    json={**SPEC, "name": f"load-{i}", "seed": i},
                    headers=tokens[i % USERS],
                )
                for i in range(SUBMITS)
            )
        )
        submit_s = time.perf_counter() - t0
        ids = [r.json()["id"] for r in answers if r is not None and r.status_code == 201]
        owner = {jid: tokens[i % USERS] for i, jid in enumerate(ids)}
        reads = []
        for i in range(READS):
            jid = ids[i % len(ids)] if ids else 1
            kind = i % 5
            if kind == 0:
                reads.append(("GET /v1/jobs", "/v1/jobs?limit=20", owner.get(jid, head)))
            elif kind in (1, 2):
                reads.append(("GET /v1/jobs/{id}", f"/v1/jobs/{jid}", owner.get(jid, head)))
            elif kind == 3:
                reads.append(
                    ("GET /v1/jobs/{id}/trials", f"/v1/jobs/{jid}/trials", owner.get(jid, head))
                )
            else:
                reads.append(
                    ("GET /v1/jobs/{id}/pareto", f"/v1/jobs/{jid}/pareto", owner.get(jid, head))
                )
        t0 = time.perf_counter()
        await asyncio.gather(*(calls.call(client, r, "GET", u, headers=h) for r, u, h in reads))
        read_s = time.perf_counter() - t0
    (work / "phases.json").write_text(json.dumps({"submit_s": submit_s, "read_s": read_s}))
    return calls, ids


def run_backend(name: str, url: str, work: Path, deadline_s: float) -> dict[str, Any]:
    admin = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "HWNAS_DATABASE_URL": url,
        "HWNAS_ARTIFACT_DIR": str(work / "art"),
        "HWNAS_ADMIN_TOKEN": admin,
        "HWNAS_VERIFY": "false",
        "HWNAS_POLL_INTERVAL_S": "0.2",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    subprocess.run(  # Optuna's tables, once, before four schedulers race to make them
        [
            sys.executable,
            "-c",
            "import sys; from service.scheduler.study import get_storage; get_storage(sys.argv[1])",
            url,
        ],
        env=env,
        cwd=ROOT,
        check=True,
    )
    port = _port()
    procs = [
        _start(
            [
                sys.executable,
                "-m",
                "service.cli",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            work / "api.log",
        )
    ]
    claims = [work / f"claims-{k}.txt" for k in range(SCHEDULERS)]
    for k in range(SCHEDULERS):
        procs.append(
            _start(
                [sys.executable, str(ROOT / "bench" / "_instant.py"), str(claims[k])],
                {**env, "HWNAS_WORKER_ID": f"bench-{k}"},
                work / f"scheduler-{k}.log",
            )
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        t0 = time.perf_counter()
        calls, ids = asyncio.run(_load(base, admin, work))
        head = {"Authorization": f"Bearer {admin}"}
        states: dict[str, int] = {}
        while time.perf_counter() - t0 < deadline_s:
            jobs = httpx.get(
                f"{base}/v1/jobs", params={"limit": 1000}, headers=head, timeout=60
            ).json()["data"]
            states = collections.Counter(j["status"] for j in jobs)
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
                break
            time.sleep(1)
        done_s = time.perf_counter() - t0
        ready = httpx.get(f"{base}/readyz", timeout=30).json()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    claimed = [int(x) for f in claims if f.exists() for x in f.read_text().split()]
    per_job = collections.Counter(claimed)
    double = sorted(j for j, n in per_job.items() if n > 1)
    not_ok = len(ids) - states.get("succeeded", 0)
    phases = json.loads((work / "phases.json").read_text())
    errors = list(calls.errors)
    if not_ok:
        errors.append(f"{not_ok} of {len(ids)} jobs did not succeed: {dict(states)}")
    out = {
        "errors": len(errors),
        "double_claims": len(double),
        **calls.summary(),
        "throttled_429": calls.throttled,
        "jobs": {
            "submitted": len(ids),
            "states": dict(states),
            "claims": len(claimed),
            "claimed_twice": double,
            "all_ended_s": round(done_s, 1),
        },
        "submit_phase_s": round(phases["submit_s"], 2),
        "read_phase_s": round(phases["read_s"], 2),
        "reads_per_s": round(READS / phases["read_s"], 1),  # the queue behind the p50 / p99
        "readyz_while_running": ready,
        "error_samples": errors[:10],
    }
    print(
        f"{name}: errors {out['errors']} double claims {out['double_claims']} "
        f"p50 {out['p50_ms']} ms p99 {out['p99_ms']} ms; jobs {dict(states)} in {done_s:.0f} s",
        flush=True,
    )
    return out


def _postgres() -> str:
    base = os.environ.get("HWNAS_TEST_PG")
    if not base:
        raise SystemExit(
            "HWNAS_TEST_PG is unset: run through scripts/with-postgres.sh (make bench-service does)"
        )
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"hwnas_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(base).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routes = sorted({r for b in ("sqlite", "postgresql") for r in result[b]["routes"]})
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.2
    for k, (backend, q) in enumerate(
        [(b, q) for b in ("sqlite", "postgresql") for q in ("p50_ms", "p99_ms")]
    ):
        vals = [result[backend]["routes"].get(r, {}).get(q, 0) for r in routes]
        ax.bar(
            [i + (k - 1.5) * width for i in range(len(routes))],
            vals,
            width,
            label=f"{backend} {q[:3]}",
        )
    ax.set_xticks(range(len(routes)), routes, rotation=15, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title(
        f"{SUBMITS} concurrent submits + {READS} concurrent reads, {SCHEDULERS} schedulers claiming"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument(
        "--deadline-s", type=float, default=900, help="per backend, for every job to end"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "what": f"{SUBMITS} concurrent submits then {READS} concurrent reads against one "
        f"`hwnas api` on 127.0.0.1, {SCHEDULERS} schedulers claiming with trials that "
        "complete at once (bench/_instant.py), quota-exempt tokens",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-service-") as tmp:
        for backend in ("sqlite", "postgresql"):
            work = Path(tmp) / backend
            work.mkdir()
            url = f"sqlite:///{work / 'hwnas.db'}" if backend == "sqlite" else _postgres()
            result[backend] = run_backend(backend, url, work, args.deadline_s)
    (out / "service.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "service.png")
    print(f"wrote {out / 'service.json'} and service.png")
    ok = all(
        result[b]["errors"] == 0 and result[b]["double_claims"] == 0
        for b in ("sqlite", "postgresql")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
