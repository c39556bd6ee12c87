"""`make faults`: envportal under injected failures on the sandbox, then convergence once they
stop. `make faults`, which CI runs after `make test`.

- Kubernetes answering 500/429 or hanging past the client's timeout on 20 % of requests
  during many sync rounds;
- GitHub answering 502 on every request, then its budget exhausted;
- two beat ticks at once (every periodic task run twice concurrently);
- a real worker SIGKILLed in the middle of a destroy, and the destroy resumed by another;
- a real worker SIGKILLed in the middle of a secret sync, and the next run finishing it;
- Redis killed with a destroy queued and restarted empty while a webhook arrives.

Each asserts what must hold during the outage (nothing open is destroyed, the UI says the data
is stale) and after it (every environment converges, one cluster secret per vcluster, one PR
comment and one GitHub Deployment per environment)."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client

from environments import cleanup, feedback, secret_sync, sync
from environments.errors import GatewayError
from environments.models import Environment, Repository
from sandbox.controllers import APPLICATIONSETS, SECRETS
from sandbox.scenarios import storefront_applicationset

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]
SEED = ("a1tan", "app-ephemeraltest")
MANAGED = "app.kubernetes.io/managed-by=envportal"
ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "celery", "-A", "envportal", "worker", "--pool=solo", "-l", "info",
          "--without-mingle", "--without-gossip"]  # fmt: skip


def child_env(tmp_path: Path, broker: str, cache: str, **extra: str) -> dict[str, str]:
    """The environment of a real web server or worker that shares this test's database and
    sandbox (the world fixture wrote the sandbox's variables to tmp_path/sandbox.env)."""
    database = settings.DATABASES["default"]
    url = (
        f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        if str(database["ENGINE"]).endswith("postgresql")
        else f"sqlite:///{database['NAME']}"
    )
    variables = dict(
        line.split("=", 1) for line in (tmp_path / "sandbox.env").read_text().splitlines()
    )
    return {**os.environ, **variables, "DEBUG": "true", "DATABASE_URL": url,
            "CELERY_BROKER_URL": broker, "REDIS_URL": cache, "ENVPORTAL_LOCAL_DIR": str(tmp_path),
            **extra}  # fmt: skip


def one_round() -> list[str]:
    """What beat would run once; the errors it met (the tasks would retry them)."""
    errors = []
    for step in (sync.sync_pull_requests, sync.sync_cluster, secret_sync.sync_cluster_secrets,
                 cleanup.clean_leftovers):  # fmt: skip
        try:
            step()
        except GatewayError as exc:
            errors.append(f"{step.__name__}: {exc}")
    return errors


@pytest.fixture
def busy(world):
    world.github.add_repo("acme", "storefront")
    world.cluster.create(APPLICATIONSETS, "argocd", storefront_applicationset())
    for branch in ("login-page", "search", "payments"):
        world.github.open_pr(*SEED, branch, branch.title(), "maria")
    world.github.open_pr("acme", "storefront", "wish-list", "Wish list", "sofia",
                         labels=["preview"])  # fmt: skip
    sync.sync_all()
    for repo in Repository.objects.all():
        sync.refresh_applicationsets(repo)
    for _ in range(3):
        world.settle(0.6)
        one_round()
    return world


def settle_and_converge(world, rounds: int = 4) -> None:
    for _ in range(rounds):
        world.settle(0.6)
        assert one_round() == []


def open_envs_destroyed() -> list[str]:
    return [str(e) for e in Environment.objects.filter(pull_request__state="open",
                                                       state__in=["destroyed", "expired"])]  # fmt: skip


def test_kubernetes_failing_on_a_fifth_of_requests_loses_nothing_and_converges(busy, monkeypatch):
    world = busy
    from environments import kube_gateway
    from environments.models import SyncStatus

    # 500s, 429s and requests that hang past the client's read timeout (1 s here, 30 s in
    # production), on a fifth of the requests.
    monkeypatch.setattr(kube_gateway, "REQUEST_TIMEOUT", (1, 1))
    world.set_kube_faults(error_rate=0.2, modes=("500", "429", "timeout"))
    world.kube.faults.timeout_seconds = 1.5
    for _ in range(10):  # the gateway's retries absorb most of these
        world.settle(0.2)
        one_round()
        assert open_envs_destroyed() == []
    assert min(world.kube.stats[f"fault {m}"] for m in ("500", "429", "timeout")) > 0
    world.set_kube_faults(error_rate=0.9, modes=("500", "429"))  # an outage they cannot absorb
    for _ in range(3):
        one_round()
        assert open_envs_destroyed() == []
    assert SyncStatus.objects.get(key="kubernetes").last_error  # marked stale, state kept
    user = User.objects.create_user("qa")
    user.groups.set([Group.objects.get(name="tester")])
    client = Client()
    client.force_login(user)
    assert "Kubernetes data is stale" in client.get("/").content.decode()
    world.set_kube_faults()
    settle_and_converge(world)
    assert "Kubernetes data is stale" not in client.get("/").content.decode()
    states = Counter(Environment.objects.values_list("state", flat=True))
    assert set(states) <= {"ready", "provisioning", "out-of-date"}, states
    servers = [
        s["metadata"]["name"] for s in world.cluster.list_objects(SECRETS, "argocd", MANAGED)
    ]
    assert (
        len(servers) == len(set(servers)) == Environment.objects.filter(flavor="vcluster").count()
    )


def test_github_down_then_exhausted_keeps_every_pr_and_says_so(busy):
    world = busy
    before = set(Environment.objects.values_list("pk", "state"))
    world.github.set_faults(error_rate=1.0)
    for _ in range(3):
        one_round()
    assert open_envs_destroyed() == []
    user = User.objects.create_user("qa")
    user.groups.set([Group.objects.get(name="tester")])
    client = Client()
    client.force_login(user)
    assert "data is stale" in client.get("/").content.decode()
    world.github.set_faults(exhausted=True)
    for _ in range(2):
        one_round()
    assert open_envs_destroyed() == []
    world.github.set_faults()
    from environments.models import SyncStatus

    SyncStatus.objects.update(backoff_until=None)  # as if the reset time had come
    settle_and_converge(world)
    assert {pk for pk, _ in before} <= set(Environment.objects.values_list("pk", flat=True))
    assert "data is stale" not in client.get("/").content.decode()


def test_two_beat_ticks_at_once_make_one_of_everything(busy):
    world = busy
    Environment.objects.update(deployment_id=None, deployment_state="")
    from environments.models import ClusterSecret, PullRequest

    ClusterSecret.objects.all().delete()
    for secret in world.cluster.list_objects(SECRETS, "argocd", MANAGED):
        world.cluster.delete(SECRETS, "argocd", secret["metadata"]["name"])
    PullRequest.objects.update(feedback_comment_id=None, feedback_digest="")
    failures: list[BaseException] = []

    from environments import tasks

    def tick() -> None:
        # What each beat-scheduled task runs, behind the same lock as the task
        try:
            tasks._locked("sync_clusters", sync.sync_cluster)
            tasks._locked("sync_cluster_secrets", secret_sync.sync_cluster_secrets)
            tasks._locked("publish_feedback", feedback.publish)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not [f for f in failures if not isinstance(f, GatewayError)], failures
    secrets = world.cluster.list_objects(SECRETS, "argocd", MANAGED)
    assert len(secrets) == Environment.objects.filter(flavor="vcluster").exclude(
        state__in=["invalid"]).count()  # fmt: skip
    for owner, repo in (SEED, ("acme", "storefront")):
        environments = Counter(d["environment"] for d in world.github.list_deployments(owner, repo))
        assert environments and max(environments.values()) == 1, environments
    from github import Auth, Github

    gh = Github(base_url=world.github_url, auth=Auth.Token(world.github_token))
    for pr in PullRequest.objects.all():
        bodies = list(gh.get_repo(pr.repository.full_name).get_issue(pr.number).get_comments())
        assert len(bodies) == 1, (pr, len(bodies))


def test_a_worker_killed_mid_destroy_is_resumed_and_nothing_happens_twice(world, tmp_path):
    """A real Celery worker on Redis runs a destroy slowed down by Kubernetes latency; it is
    SIGKILLed while the action is running; a new worker picks the action up again."""
    import signal
    import subprocess
    import time
    from datetime import timedelta

    import redis
    from celery import Celery
    from django.utils import timezone

    from environments import lifecycle
    from environments.models import Action, Event
    from tests.services import need_redis

    # A Redis database of its own: the workers consume the default queue, where resume_actions
    # sends its work, and nothing else's messages may be there.
    redis_url = need_redis().rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(redis_url).flushdb()
    world.github.add_repo("acme", "storefront")
    world.cluster.create(APPLICATIONSETS, "argocd", storefront_applicationset())
    world.github.open_pr("acme", "storefront", "fix", "Fix", "sofia", labels=["preview"])
    sync.sync_all()
    env = Environment.objects.get()
    alice = User.objects.create_user("alice", is_staff=True)
    alice.groups.set([Group.objects.get(name="platform")])
    worker_env = child_env(tmp_path, redis_url, redis_url)

    def start_worker() -> subprocess.Popen[str]:
        return subprocess.Popen(
            WORKER,
            cwd=ROOT, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    action = Action.objects.create(environment=env, kind="destroy", actor="alice")
    Environment.objects.filter(pk=env.pk).update(state="destroying")
    world.set_kube_faults(latency=3.0)  # the refresh after the label removal takes a while
    client = Celery(broker=redis_url)
    worker = start_worker()
    try:
        client.send_task("environments.tasks.run_action", args=[action.pk])
        deadline = time.monotonic() + 60
        while Action.objects.get(pk=action.pk).state != "running":
            assert time.monotonic() < deadline, "the worker never started the destroy"
            time.sleep(0.1)
        time.sleep(0.5)
        worker.send_signal(signal.SIGKILL)  # mid-task
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    world.set_kube_faults()
    assert Action.objects.get(pk=action.pk).state == "running"  # its worker died on it
    # later: the claim is older than any task may run, so beat's resume_actions re-queues it
    Action.objects.filter(pk=action.pk).update(claimed_at=timezone.now() - timedelta(minutes=10))
    assert lifecycle.unfinished() == [action.pk]
    worker = start_worker()
    try:
        client.send_task("environments.tasks.resume_actions")
        deadline = time.monotonic() + 60
        while Action.objects.get(pk=action.pk).state != "done":
            assert time.monotonic() < deadline, "the resumed destroy did not finish"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    done = Action.objects.get(pk=action.pk)
    assert done.attempts == 2
    assert world.github.list_open("acme", "storefront")[0]["labels"] == []  # removed, once
    assert Event.objects.filter(kind="destroy-failed").count() == 0
    world.settle(0.6)
    sync.sync_cluster()
    assert Environment.objects.get(pk=env.pk).state == "destroyed"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, tmp_path):
    """A Redis of its own that keeps nothing on disk (as CI's does): a restart empties it."""
    import shutil
    import subprocess
    import time

    import redis

    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def test_redis_restarted_loses_its_queue_but_no_intent(world, tmp_path):
    """The web server queues a destroy (API) on a Redis of its own; Redis is killed before a
    worker takes it, so the message is lost. While it is down a webhook still answers 202 and
    the API still reads. Redis comes back empty; beat's resume_actions and cluster sync carry
    out the destroy and the webhook's refresh from their database intents, each once."""
    import signal
    import subprocess
    import time
    import urllib.request
    from datetime import timedelta

    from celery import Celery
    from django.utils import timezone

    from environments.models import Action, ApiToken, PullRequest

    world.github.add_repo("acme", "storefront")
    world.cluster.create(APPLICATIONSETS, "argocd", storefront_applicationset())
    world.github.open_pr("acme", "storefront", "fix", "Fix", "sofia", labels=["preview"])
    sync.sync_all()
    env = Environment.objects.get()
    alice = User.objects.create_user("alice")
    alice.groups.set([Group.objects.get(name="platform")])
    _, token = ApiToken.issue(alice, "ci")
    port, web_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    web_env = child_env(tmp_path, redis_url, redis_url, ALLOWED_HOSTS="127.0.0.1")
    processes: list[subprocess.Popen] = []

    def start(args: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(args, cwd=ROOT, env=web_env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        processes.append(process)
        return process

    def call(path: str, body: bytes | None = None) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}{path}", data=body, method="POST" if body else "GET",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0  # not listening (yet)

    def wait(check, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    redis_server = start_redis(port, tmp_path)
    try:
        start([sys.executable, "manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload"])
        wait(lambda: call("/healthz") == 200, "the web server did not start")
        world.github.set_webhook_url(f"http://127.0.0.1:{web_port}/webhooks/github/")
        api = f"/api/v1/environments/acme/storefront/{env.pull_request.number}/{env.flavor}/"
        assert call(api + "destroy/", b"{}") == 202  # queued on Redis; no worker runs yet
        action = Action.objects.get()
        redis_server.send_signal(signal.SIGKILL)  # the queued message goes with it
        redis_server.wait(timeout=10)

        # Redis down: reads still answer, and a webhook still lands (its intent is stored).
        assert call("/api/v1/environments/") == 200
        refreshes = world.kube.stats["patch applicationsets"]
        world.github.push("acme", "storefront", env.pull_request.number)
        repo = Repository.objects.get(name="storefront")
        wait(lambda: PullRequest.objects.get(pk=env.pull_request_id).head_sha
             != env.pull_request.head_sha, "the webhook did not land")  # fmt: skip
        world.github.wait_for_deliveries()
        delivery = world.github.deliveries[-1]
        assert (delivery["status"], delivery["attempts"]) == (202, 1), delivery  # not a 500
        repo.refresh_from_db()
        assert repo.refresh_requested_at is not None
        assert Action.objects.get(pk=action.pk).state == "pending"

        redis_server = start_redis(port, tmp_path)  # back, and empty
        start(WORKER)
        # Later (beat's next ticks): the intents are older than their grace periods.
        Action.objects.filter(pk=action.pk).update(created_at=timezone.now() - timedelta(hours=1))
        Repository.objects.filter(pk=repo.pk).update(
            refresh_requested_at=timezone.now() - timedelta(minutes=1)
        )
        beat = Celery(broker=redis_url)
        beat.send_task("environments.tasks.resume_actions")
        beat.send_task("environments.tasks.sync_clusters")
        wait(lambda: Action.objects.get(pk=action.pk).state == "done", "the destroy never ran")
        wait(lambda: world.kube.stats["patch applicationsets"] > refreshes, "no refresh")
        wait(
            lambda: Repository.objects.get(pk=repo.pk).refresh_requested_at is None,
            "the refresh intent was not cleared",
        )
    finally:
        for process in [*processes, redis_server]:
            if process.poll() is None:
                process.terminate()
        for process in [*processes, redis_server]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    done = Action.objects.get(pk=action.pk)
    assert done.attempts == 1  # the lost message never ran; the resumed one ran once
    assert world.github.list_open("acme", "storefront")[0]["labels"] == []
    world.settle(0.6)
    sync.sync_cluster()
    assert Environment.objects.get(pk=env.pk).state == "destroyed"


def test_a_worker_killed_mid_secret_sync_leaves_no_duplicate_and_the_next_run_finishes(
    world, tmp_path
):
    """A real worker runs the secret sync one write at a time, each slowed by Kubernetes
    latency, and is SIGKILLed once the first cluster secrets exist (none of its rows are
    written yet). Once its lock has expired the next run writes the rest and adopts what the
    dead one wrote: one secret per vcluster, every row synced, every app refreshed."""
    import signal
    import subprocess
    import time

    import redis

    from environments.models import ClusterSecret, Event
    from tests.services import need_redis

    for branch in ("alpha", "beta", "gamma", "delta", "epsilon"):
        world.github.open_pr(*SEED, branch, branch.title(), "maria")
    sync.sync_all()
    for repo in Repository.objects.all():
        sync.refresh_applicationsets(repo)
    vclusters = Environment.objects.filter(flavor="vcluster")
    for _ in range(20):  # until every vcluster has written its kubeconfig Secret
        world.settle(0.6)
        sync.sync_cluster()
        sources = [s for s in world.cluster.list_objects(SECRETS) if s["metadata"]["name"]
                   .startswith("vc-")]  # fmt: skip
        if len(sources) >= vclusters.count() >= 5:
            break
    count = vclusters.count()
    assert count >= 5 and len(sources) == count

    base = need_redis().rsplit("/", 1)[0]
    broker, cache = f"{base}/12", f"{base}/11"
    for url in (broker, cache):
        redis.Redis.from_url(url).flushdb()
    worker_env = child_env(tmp_path, broker, cache, KUBERNETES_WRITE_CONCURRENCY="1")

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            WORKER,
            cwd=ROOT, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def managed() -> list[str]:
        return [s["metadata"]["name"] for s in world.cluster.list_objects(SECRETS, "argocd",
                                                                          MANAGED)]  # fmt: skip

    from celery import Celery

    beat = Celery(broker=broker)
    world.set_kube_faults(latency=0.4)
    worker = start_worker()
    try:
        beat.send_task("environments.tasks.sync_cluster_secrets")
        deadline = time.monotonic() + 60
        while not managed():
            assert time.monotonic() < deadline, "the worker never wrote a cluster secret"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)  # mid-run: some secrets written, no rows yet
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    world.set_kube_faults()
    written = len(managed())
    assert 0 < written < count
    assert not ClusterSecret.objects.filter(state="synced").exists()
    refreshes = world.kube.stats["patch applications"]

    redis.Redis.from_url(cache).flushdb()  # later: the dead run's lock has expired
    worker = start_worker()
    try:
        beat.send_task("environments.tasks.sync_cluster_secrets")
        deadline = time.monotonic() + 60
        while ClusterSecret.objects.filter(state="synced").count() < count:
            assert time.monotonic() < deadline, "the next run did not finish the secret sync"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    names = managed()
    assert len(names) == len(set(names)) == count  # nothing twice, nothing missing
    messages = list(Event.objects.filter(kind="cluster-secret").values_list("message", flat=True))
    assert sum("found in place" in m for m in messages) == written
    assert sum(" created " in m for m in messages) == count - written
    # the apps waiting for each cluster were refreshed, the adopted ones' included
    assert world.kube.stats["patch applications"] - refreshes >= count
