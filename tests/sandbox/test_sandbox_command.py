"""`manage.py sandbox` end to end: the real clients (kubectl, kubernetes, PyGithub) against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from github import Auth, Github

ROOT = Path(__file__).resolve().parent.parent.parent
KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    env_file = tmp_path_factory.mktemp("sandbox") / "sandbox.env"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox", "--scenario", "demo", "--github-port", "0",
         "--kube-port", "0", "--env-file", str(env_file), "--fast", "--no-evolve"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if k != "DEBUG"},
    )  # fmt: skip
    assert process.stdout is not None
    line = ""
    while time.monotonic() - started < 20:
        line = process.stdout.readline()
        if "sandbox ready" in line or process.poll() is not None:
            break
    ready_after = time.monotonic() - started
    assert "sandbox ready" in line, line
    env = dict(row.split("=", 1) for row in env_file.read_text().splitlines())
    yield {"env": env, "ready_after": ready_after}
    process.terminate()
    process.wait(timeout=10)


def test_it_is_ready_within_20_seconds_and_writes_the_portal_variables(sandbox):
    assert sandbox["ready_after"] < 20
    env = sandbox["env"]
    assert set(env) == {
        "GITHUB_API_URL",
        "GITHUB_TOKEN",
        "GITHUB_WEBHOOK_SECRET",
        "KUBECONFIG",
        "ARGOCD_NAMESPACE",
        "ARGOCD_PLUGIN_TOKEN",
    }
    assert env["ARGOCD_NAMESPACE"] == "argocd"
    assert oct(Path(env["KUBECONFIG"]).stat().st_mode & 0o777) == "0o600"


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_lists_the_generated_applications_and_the_rejection(sandbox):
    env = {"KUBECONFIG": sandbox["env"]["KUBECONFIG"], "PATH": "/usr/bin:/bin", "HOME": "/tmp"}

    def kubectl(*args):
        result = subprocess.run(
            [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    deadline = time.monotonic() + 15
    while True:
        table = kubectl("get", "applications.argoproj.io", "-n", "argocd")
        if "sampleapp-login-page-1" in table or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name in ("sampleapp-ns-login-page-1", "cluster-login-page-1", "sampleapp-login-page-1"):
        assert name in table
    assert "SYNC STATUS" in table and "HEALTH STATUS" in table
    assert "feature/login" not in table
    appset = json.loads(
        kubectl("get", "applicationset", "sampleapps-ns", "-n", "argocd", "-o", "json")
    )
    error = next(c for c in appset["status"]["conditions"] if c["type"] == "ErrorOccurred")
    assert error["status"] == "True"
    assert 'Application.argoproj.io "sampleapp-ns-feature/login-4" is invalid' in error["message"]


def test_pygithub_lists_open_prs_and_a_conditional_request_is_free(sandbox):
    env = sandbox["env"]
    gh = Github(auth=Auth.Token(env["GITHUB_TOKEN"]), base_url=env["GITHUB_API_URL"])
    pulls = gh.get_repo("a1tan/app-ephemeraltest").get_pulls(state="open")
    branches = {pr.head.ref for pr in pulls}
    assert {"login-page", "feature/login", "payments"} <= branches

    url = f"{env['GITHUB_API_URL']}/repos/a1tan/app-ephemeraltest/pulls?state=open&per_page=100"
    headers = {"Authorization": f"Bearer {env['GITHUB_TOKEN']}"}
    first = requests.get(url, headers=headers, timeout=10)
    remaining = first.headers["X-RateLimit-Remaining"]
    again = requests.get(
        url, headers={**headers, "If-None-Match": first.headers["ETag"]}, timeout=10
    )
    assert again.status_code == 304
    assert again.headers["X-RateLimit-Remaining"] == remaining
    limits = requests.get(f"{env['GITHUB_API_URL']}/rate_limit", headers=headers, timeout=10).json()
    assert str(limits["resources"]["core"]["remaining"]) == remaining
