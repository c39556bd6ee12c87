"""`make demo`: the sandbox world, then migrate, a demo login, and web + worker + beat.

Development wiring only (DEBUG on, local SQLite and filesystem broker unless DATABASE_URL /
CELERY_BROKER_URL say otherwise). The portal is pointed at the sandbox (simulated GitHub and
Kubernetes/Argo CD/vcluster) through the variables it writes. Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("ENVPORTAL_LOCAL_DIR", ROOT / ".local"))
LOGS = LOCAL / "logs"
HOST = os.environ.get("DEMO_HOST", "127.0.0.1")
PORT = int(os.environ.get("DEMO_PORT", "8000"))


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


DEMO_USERS = [
    # username, group, GitHub login (the sandbox's PR author it links to), staff
    ("qa", "tester", "maria", False),
    ("demo", "platform", "", True),
    ("viewer", "viewer", "", False),
]


def create_demo_logins(env: dict[str, str]) -> str:
    """Create (or reset) one user per role with one fresh random password; return it."""
    password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(12)
    code = (
        "import os\n"
        "from django.contrib.auth.models import Group, User\n"
        "from environments.models import Profile\n"
        f"for name, group, login, staff in {DEMO_USERS!r}:\n"
        "    user, _ = User.objects.get_or_create(username=name)\n"
        "    user.is_staff = user.is_superuser = staff\n"
        "    user.set_password(os.environ['DEMO_PASSWORD'])\n"
        "    user.save()\n"
        "    user.groups.set([Group.objects.get(name=group)])\n"
        "    Profile.objects.update_or_create(user=user, defaults={'github_login': login})\n"
    )
    manage("shell", "-c", code, env={**env, "DEMO_PASSWORD": password})
    return password


def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process at exit
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_sandbox(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start `manage.py sandbox --scenario demo`; return it and the variables it wrote."""
    env_file = LOCAL / "sandbox.env"
    env_file.unlink(missing_ok=True)
    process = start(
        "sandbox",
        [
            sys.executable,
            "manage.py",
            "sandbox",
            "--scenario",
            "demo",
            "--env-file",
            str(env_file),
            "--plugin-url",
            f"http://{HOST}:{PORT}",
            *os.environ.get("DEMO_SANDBOX_ARGS", "").split(),
        ],
        env,
    )
    deadline = time.monotonic() + 30
    while not env_file.exists() or "sandbox ready" not in (LOGS / "sandbox.log").read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the sandbox did not start; see {LOGS / 'sandbox.log'}")
        time.sleep(0.2)
    variables = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
    )
    return process, variables


def wait_for_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own local URL
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def main() -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "true"), "PYTHONUNBUFFERED": "1"}
    print("envportal demo: starting the sandbox (simulated GitHub and Kubernetes) ...", flush=True)
    sandbox, variables = start_sandbox(env)
    env.update(variables)
    env.setdefault("PORTAL_URL", f"http://{HOST}:{PORT}")
    print("envportal demo: migrating the database ...", flush=True)
    manage("migrate", "--no-input", "-v", "0", env=env)
    password = create_demo_logins(env)
    print("envportal demo: first sync (GitHub and Kubernetes of the sandbox) ...", flush=True)
    manage("sync_now", env=env)

    python = sys.executable
    celery_worker = [python, "-m", "celery", "-A", "envportal", "worker", "-l", "info"]
    processes = {
        "sandbox": sandbox,
        "web": start(
            "web", [python, "manage.py", "runserver", f"{HOST}:{PORT}", "--noreload"], env
        ),
        "worker": start("worker", [*celery_worker, "-c", "2"], env),
        # As the chart does: a small pool for refreshes and actions, never behind a long sync.
        "worker-interactive": start(
            "worker-interactive",
            [*celery_worker, "-c", "1", "-Q", "interactive", "-n", "interactive@%h"],
            env,
        ),
        "beat": start(
            "beat", [python, "-m", "celery", "-A", "envportal", "beat", "-l", "info"], env
        ),
    }

    def stop(*_: object) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def stop_and_exit(*_: object) -> None:
        stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_and_exit)
    if not wait_for_http(f"http://{HOST}:{PORT}/healthz", timeout=45):
        stop()
        print(f"the web server did not come up; see {LOGS / 'web.log'}", file=sys.stderr)
        return 1
    # Webhooks only now that the web server listens (the first sync covered what came before;
    # deliveries to a closed port would only be retried and given up, as GitHub does).
    control = variables["GITHUB_API_URL"].removesuffix("/api/v3").rstrip("/") + "/_sandbox/webhook"
    hook = urllib.request.Request(  # noqa: S310 - the local sandbox
        control,
        data=json.dumps({"url": f"http://{HOST}:{PORT}/webhooks/github/"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(hook, timeout=10):  # noqa: S310 - the local sandbox
        pass
    print(
        f"\n  envportal is running at http://{HOST}:{PORT}/\n"
        f"  sign in as   qa (tester, GitHub login maria), demo (platform, admin) or viewer\n"
        f"  password     {password}\n"
        f"  logs         {LOGS}/{{web,worker,worker-interactive,beat,sandbox}}.log\n"
        f"  sandbox      GitHub {variables['GITHUB_API_URL']}, Kubernetes via "
        f"KUBECONFIG={variables['KUBECONFIG']}\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; see {LOGS / name}.log")
                    stop()
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...")
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
