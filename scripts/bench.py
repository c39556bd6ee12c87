"""`make bench`: envportal on the sandbox's scale scenario, through the real clients and processes.

For each size (open PRs over 20 repositories with three ApplicationSets each, both flavours) it
starts the sandbox, a gunicorn web server and a Celery worker (filesystem broker, SQLite or
the PostgreSQL of BENCH_DATABASE_URL), then measures in this process, which plays the worker's
part for the syncs:

- a full sync (PRs, cluster, cluster secrets): wall time, GitHub requests (and 304s),
  Kubernetes requests by verb, SQL queries, peak RSS of this process;
- the same again with nothing changed (and its GitHub rate-limit cost);
- the dashboard: server time p50/p95 over 30 requests and its SQL query count;
- a webhook → ApplicationSet refresh annotation, p50/p95 over 10 pushes, with the worker;
- "PR opened" in the sandbox → its environment row in the database (webhook, worker).

Prints a table, writes bench/results/latest.json and keeps the previous run as previous.json
(latest-postgresql.json and previous-postgresql.json with BENCH_DATABASE_URL=postgres://...).
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "10,100,1000").split(",")]
REPOS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=30, context=context) as answer:  # noqa: S310
        return json.loads(answer.read())


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return json.loads(answer.read())


def database_for(prs: int, work: Path) -> str:
    """SQLite in the size's work directory, or a fresh PostgreSQL database per size named
    after BENCH_DATABASE_URL's (postgres://user@host:port/name → name_<prs>)."""
    url = os.environ.get("BENCH_DATABASE_URL", "")
    if not url.startswith("postgres"):
        return f"sqlite:///{work}/db.sqlite3"
    import psycopg

    base, _, name = url.rpartition("/")
    fresh = f"{name}_{prs}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{fresh}"')
        connection.execute(f'CREATE DATABASE "{fresh}"')
    return f"{base}/{fresh}"


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Stack:
    """Sandbox, web and worker processes for one size; torn down on exit."""

    def __init__(self, prs: int, work: Path) -> None:
        self.work, self.prs = work, prs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.web_port = free_port()
        env_file = work / "sandbox.env"
        self.env = {
            **os.environ,
            "DEBUG": "true",
            "ENVPORTAL_LOCAL_DIR": str(work),
            "DATABASE_URL": database_for(prs, work),
            # Redis when it answers (as in production), else a broker that needs no server.
            "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL")
            or ("redis://127.0.0.1:6379/13" if redis_answers() else "filesystem://"),
            "REDIS_URL": "",
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "PYTHONUNBUFFERED": "1",
        }
        self.start(
            "sandbox",
            [
                sys.executable,
                "manage.py",
                "sandbox",
                "--scenario",
                "scale",
                "--repos",
                str(REPOS),
                "--prs",
                str(prs),
                "--fast",
                "--github-port",
                "0",
                "--kube-port",
                "0",
                "--env-file",
                str(env_file),
            ],
        )
        self.wait_for(lambda: env_file.exists() and "ready" in self.log("sandbox"), 120, "sandbox")
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            self.env[key] = value
        # envportal itself as in production (DEBUG off: no query log formatting every bulk
        # INSERT); plain HTTP between the local processes. The sandbox above keeps DEBUG.
        self.env.update(
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            STATIC_ROOT=str(work / "static"),
            SECURE_SSL_REDIRECT="false",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
        )
        os.environ.update(self.env)  # this process (one size) reads the same settings
        self.github = self.env["GITHUB_API_URL"].removesuffix("/api/v3").rstrip("/")
        self.kube = self.kube_url()
        for command in (["migrate"], ["collectstatic", "--no-input"]):
            subprocess.run(
                [sys.executable, "manage.py", *command, "-v", "0"],
                cwd=ROOT,
                env=self.env,
                check=True,
            )

    def start_services(self) -> None:
        self.start(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "envportal.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "2",
            ],
        )
        celery = [sys.executable, "-m", "celery", "-A", "envportal", "worker", "-l", "info"]
        self.start("worker", [*celery, "-c", "2"])
        # As the chart runs it: refreshes and actions in a pool of their own.
        self.start("worker-interactive", [*celery, "-c", "1", "-Q", "interactive",
                                          "-n", "interactive@%h"])  # fmt: skip
        self.wait_for(lambda: "ready" in self.log("worker"), 60, "worker")
        self.wait_for(lambda: "ready" in self.log("worker-interactive"), 60, "worker-interactive")
        self.wait_for(lambda: self.answers(f"http://127.0.0.1:{self.web_port}/healthz"), 30, "web")
        # Webhooks only now: while the web server was down they would only be retried and lost.
        post_json(
            self.github + "/_sandbox/webhook",
            {"url": f"http://127.0.0.1:{self.web_port}/webhooks/github/"},
        )

    def kube_url(self) -> str:
        import yaml

        config = yaml.safe_load(Path(self.env["KUBECONFIG"]).read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    def kube_stats(self) -> dict[str, int]:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the sandbox's CA
        return dict(get_json(self.kube + "/_sandbox/stats", context)["kube"])

    def github_stats(self) -> dict[str, Any]:
        return dict(get_json(self.github + "/_sandbox/stats"))

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.processes.append(
            subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        )

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return True
        except OSError:
            return False

    def wait_for(self, check: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {what} did not start; see {self.work}/{what}.log")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    verbs = ("list", "get", "create", "update", "patch", "delete", "watch")
    return {
        v: after.get(v, 0) - before.get(v, 0) for v in verbs if after.get(v, 0) - before.get(v, 0)
    }


def measured_sync(stack: Stack) -> dict[str, Any]:
    """What beat runs: the PR sync, the cluster sync and the secret sync."""
    from django.db import connection

    from environments import secret_sync, sync

    queries = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # A counter, not CaptureQueriesContext: formatting every bulk INSERT's SQL for the
        # record would cost more than running it.
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    gh0, kube0 = stack.github_stats(), stack.kube_stats()
    with connection.execute_wrapper(count):
        started = time.perf_counter()
        sync.sync_pull_requests()
        sync.sync_cluster()
        secret_sync.sync_cluster_secrets()
        seconds = time.perf_counter() - started
    gh1, kube1 = stack.github_stats(), stack.kube_stats()
    return {
        "seconds": round(seconds, 3),
        "github_requests": gh1["requests"] - gh0["requests"],
        "github_304": gh1["not_modified"] - gh0["not_modified"],
        "kube_requests": delta(kube1, kube0),
        "sql_queries": queries,
    }


def settle() -> float:
    """After the full sync the world moves on (apps sync against their new clusters): sync
    until a pass changes nothing, so the re-sync measures a world with nothing changed."""
    from environments import secret_sync, sync

    started = time.perf_counter()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cluster = sync.sync_cluster()
        secrets = secret_sync.sync_cluster_secrets()
        if not cluster.get("changed") and not any(
            secrets.get(k) for k in ("created", "updated", "deleted")
        ):
            break
        time.sleep(1)
    return round(time.perf_counter() - started, 1)


def rate_remaining(stack: Stack) -> int:
    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        stack.env["GITHUB_API_URL"] + "/rate_limit",
        headers={"Authorization": f"Bearer {stack.env['GITHUB_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return int(json.loads(answer.read())["resources"]["core"]["remaining"])


def dashboard(n: int) -> dict[str, Any]:
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = User.objects.get_or_create(username="bench")
    user.groups.set([Group.objects.get(name="tester")])
    client = Client()
    client.force_login(user)
    client.get("/")  # warm
    times = []
    for _ in range(30):
        started = time.perf_counter()
        response = client.get("/")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get("/")
    return {
        "p50_ms": round(percentile(times, 50), 1),
        "p95_ms": round(percentile(times, 95), 1),
        "sql_queries": len(queries),
    }


def webhook_latency(stack: Stack) -> dict[str, Any]:
    """Push to a PR in the sandbox; its webhook reaches the web server, which queues the
    refresh; the worker annotates the ApplicationSets. Time until the sandbox saw the patch."""
    latencies = []
    for i in range(10):
        before = stack.kube_stats().get("patch applicationsets", 0)
        started = time.perf_counter()
        post_json(
            stack.github + f"/_sandbox/prs/scale/repo-{i % min(REPOS, stack.prs):02d}/1/push", {}
        )
        deadline = time.monotonic() + 20
        while stack.kube_stats().get("patch applicationsets", 0) <= before:
            if time.monotonic() > deadline:
                raise SystemExit("bench: no refresh annotation within 20 s; see the worker log")
            time.sleep(0.02)
        latencies.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(latencies, 50)), "p95_ms": round(percentile(latencies, 95))}


def pr_to_row(stack: Stack) -> float:
    from environments.models import Environment

    started = time.perf_counter()
    opened = post_json(
        stack.github + "/_sandbox/prs",
        {
            "owner": "scale",
            "repo": "repo-00",
            "branch": "bench-new",
            "title": "Bench",
            "author": "b",
        },
    )
    deadline = time.monotonic() + 60
    rows = Environment.objects.filter(
        pull_request__number=opened["number"], pull_request__repository__name="repo-00"
    )
    while not rows.exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: the new PR's environment did not appear within 60 s")
        time.sleep(0.05)
    return round(time.perf_counter() - started, 2)


def run(prs: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"envportal-bench-{prs}-"))
    stack = Stack(prs, work)
    try:
        import django

        django.setup()
        from django.db import connections

        for connection in connections.all():
            connection.close()  # settings come from this size's environment
        from environments import kube_gateway

        kube_gateway.reset_client()
        from environments import sync

        time.sleep(3 if prs < 1000 else 8)  # let Argo CD (the sandbox) create the Applications
        started = time.perf_counter()
        sync.sync_cluster()  # first start: discovery finds the repositories (once per install)
        discovery = round(time.perf_counter() - started, 3)
        full = measured_sync(stack)
        full["discovery_seconds"] = discovery
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        settled = settle()
        remaining = rate_remaining(stack)
        again = measured_sync(stack)
        again["settled_after_s"] = settled
        again["rate_limit_cost"] = remaining - rate_remaining(stack)
        page = dashboard(prs)
        stack.start_services()
        hook = webhook_latency(stack)
        visible = pr_to_row(stack)
        return {"prs": prs, "repositories": REPOS, "full_sync": full, "resync": again,
                "peak_rss_mb": round(rss_mb), "dashboard": page, "webhook_to_refresh": hook,
                "pr_opened_to_row_s": visible}  # fmt: skip
    except SystemExit:
        for name in ("worker", "worker-interactive", "web"):
            print(f"--- {name}.log (last lines)\n" + "\n".join(stack.log(name).splitlines()[-15:]))
        raise
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "envportal.settings")
    sys.path.insert(0, str(ROOT))
    results = []
    for prs in SIZES:
        # One process per size: a fresh Django, settings and RSS for each.
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(prs)], cwd=ROOT, capture_output=True, text=True
        )
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-postgresql" if machine()["database"].startswith("postgres") else ""
    latest, previous = RESULTS / f"latest{suffix}.json", RESULTS / f"previous{suffix}.json"
    if latest.exists():
        shutil.copy(latest, previous)
    latest.write_text(
        json.dumps(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"\nwritten {latest.relative_to(ROOT)}"
        + (f" (previous run kept as {previous.name})" if previous.exists() else "")
    )
    return 0


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    import platform

    memory = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = int(meminfo.read_text().split()[1]) // 1024
    database = os.environ.get("BENCH_DATABASE_URL", "sqlite").split(":", 1)[0]
    return {"cpus": os.cpu_count(), "memory_mb": memory, "python": platform.python_version(),
            "system": platform.platform(), "database": database}  # fmt: skip


def table(results: list[dict[str, Any]]) -> None:
    rows = [
        ("full sync (s)", lambda r: r["full_sync"]["seconds"]),
        (
            "  GitHub requests / 304",
            lambda r: f"{r['full_sync']['github_requests']} / {r['full_sync']['github_304']}",
        ),
        (
            "  Kubernetes requests",
            lambda r: " ".join(f"{k}={v}" for k, v in r["full_sync"]["kube_requests"].items()),
        ),
        ("  SQL queries", lambda r: r["full_sync"]["sql_queries"]),
        ("re-sync, unchanged (s)", lambda r: r["resync"]["seconds"]),
        (
            "  GitHub requests / 304",
            lambda r: f"{r['resync']['github_requests']} / {r['resync']['github_304']}",
        ),
        ("  rate-limit cost", lambda r: r["resync"]["rate_limit_cost"]),
        (
            "  Kubernetes requests",
            lambda r: " ".join(f"{k}={v}" for k, v in r["resync"]["kube_requests"].items()),
        ),
        ("  SQL queries", lambda r: r["resync"]["sql_queries"]),
        ("peak RSS (MB)", lambda r: r["peak_rss_mb"]),
        (
            "dashboard p50 / p95 (ms)",
            lambda r: f"{r['dashboard']['p50_ms']} / {r['dashboard']['p95_ms']}",
        ),
        ("  SQL queries", lambda r: r["dashboard"]["sql_queries"]),
        (
            "webhook → refresh p50 / p95 (ms)",
            lambda r: f"{r['webhook_to_refresh']['p50_ms']} / {r['webhook_to_refresh']['p95_ms']}",
        ),
        ("PR opened → row visible (s)", lambda r: r["pr_opened_to_row_s"]),
    ]
    width = max(len(name) for name, _ in rows) + 2
    print("".ljust(width) + "".join(f"{r['prs']:>32} PRs" for r in results))
    for name, cell in rows:
        print(name.ljust(width) + "".join(f"  {cell(r)!s:>34}" for r in results))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "envportal.settings")
        sys.path.insert(0, str(ROOT))
        print(json.dumps(run(int(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
