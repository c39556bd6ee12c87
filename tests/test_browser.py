"""The portal in real headless Chromium (Debian's, driven by Playwright) against the whole
stack of `make demo`: the sandbox world, the web server, a Celery worker and beat.

Screenshots of the dashboard and an environment page are saved under artifacts/browser/
(ignored by git)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "browser-test-password-1"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SEED = "a1tan/app-ephemeraltest"

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(self, base: str, local: Path) -> None:
        self.base = base
        self.local = local
        variables = dict(
            line.split("=", 1)
            for line in (local / "sandbox.env").read_text().splitlines()
            if "=" in line
        )
        self.github = variables["GITHUB_API_URL"].removesuffix("/api/v3").rstrip("/")

    def open_pr(self, owner: str, repo: str, branch: str, title: str, author: str, **extra) -> dict:
        body = json.dumps({"owner": owner, "repo": repo, "branch": branch, "title": title,
                           "author": author, **extra}).encode()  # fmt: skip
        request = urllib.request.Request(  # noqa: S310 - the local sandbox
            f"{self.github}/_sandbox/prs", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local sandbox
            return json.loads(answer.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    local = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = {
        **os.environ,
        "DEBUG": "true",
        "ENVPORTAL_LOCAL_DIR": str(local),
        "DATABASE_URL": f"sqlite:///{local}/db.sqlite3",
        "CELERY_BROKER_URL": "filesystem://",
        "REDIS_URL": "",
        "DEMO_PORT": str(port),
        "DEMO_PASSWORD": PASSWORD,
        "DEMO_SANDBOX_ARGS": "--no-evolve --fast",
        "PYTHONUNBUFFERED": "1",
    }
    log = open(local / "demo.out", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while "envportal is running" not in (local / "demo.out").read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            pytest.fail(
                "the demo stack did not start:\n" + (local / "demo.out").read_text()[-3000:]
            )
        time.sleep(0.5)
    try:
        yield Stack(f"http://127.0.0.1:{port}", local)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        logs = ARTIFACTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for path in (local / "logs").glob("*.log"):
            shutil.copy(path, logs / path.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield chromium
        chromium.close()


def signed_in(browser, stack: Stack, username: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(stack.base + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#live")
    return page


def row(page, number: int, flavor: str, repo: str = SEED):
    link = page.locator(f"a.flavor[href$='/{repo}/{number}/{flavor}/']")
    return page.locator("tr.env").filter(has=link)


def test_a_tester_sees_both_flavours_live_states_and_countdowns(browser, stack):
    page = signed_in(browser, stack, "qa")
    group = page.locator("tr.group", has_text=SEED)
    assert group.count() == 1
    assert row(page, 1, "namespace").count() == 1 and row(page, 1, "vcluster").count() == 1
    assert re.match(r"in 2 d 2[23] h", row(page, 1, "namespace").locator("td.expires").inner_text())
    # live: the vcluster of PR 1 becomes ready without a reload
    ready = row(page, 1, "vcluster").locator(".badge.state-ready")
    ready.wait_for(timeout=60_000)
    assert page.locator(".summary .sum-ready .count").inner_text() != "0"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    row(page, 1, "vcluster").locator("a.flavor").click()
    page.wait_for_selector("text=Argo CD cluster secret")
    page.locator("text=synced").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "environment.png"), full_page=True)
    page.close()


def test_a_pr_opened_in_the_sandbox_appears_without_a_reload(browser, stack):
    page = signed_in(browser, stack, "qa")
    page.evaluate("window.__marker = 'no reload'")
    pr = stack.open_pr("acme", "storefront", "feature/wishlist", "Wishlist", "maria",
                       labels=["preview"])  # fmt: skip
    row(page, pr["number"], "namespace", "acme/storefront").wait_for(timeout=45_000)
    assert page.evaluate("window.__marker") == "no reload"
    page.close()


def test_extend_changes_the_countdown(browser, stack):
    page = signed_in(browser, stack, "qa")
    target = row(page, 2, "namespace")
    before = target.locator("td.expires").inner_text()
    assert before.startswith("in 2 d")
    target.locator("button", has_text="Extend +24 h").click()
    page.wait_for_selector("#flash .flash.ok")
    assert "extend" in page.locator("#flash").inner_text()
    after = row(page, 2, "namespace").locator("td.expires").inner_text()
    assert after.startswith("in 3 d"), after
    page.close()


def test_a_tester_sees_no_destroy_button_on_someone_elses_pr(browser, stack):
    page = signed_in(browser, stack, "qa")  # GitHub login maria
    storefront = page.locator("tr.group", has_text="acme/storefront")
    storefront.wait_for()
    sofia = row(page, 1, "namespace", "acme/storefront")  # sofia's PR
    assert "sofia" in sofia.inner_text()
    mine = row(page, 1, "namespace")  # a1tan/app-ephemeraltest#1 is maria's: no label filter
    assert "maria" in mine.inner_text() and mine.locator("text=Destroy…").count() == 0
    assert sofia.locator("text=Destroy…").count() == 0
    assert sofia.locator("button", has_text="Extend +24 h").count() == 1
    page.close()
    viewer = signed_in(browser, stack, "viewer")
    assert viewer.locator("td.actions button, td.actions a").count() == 0
    viewer.close()


def test_destroy_shows_destroying_then_the_final_state(browser, stack):
    page = signed_in(browser, stack, "demo")  # platform
    page.select_option("select[name=repository]", "acme/storefront")
    page.wait_for_url(re.compile(r"repository=acme%2Fstorefront"))
    target = row(page, 2, "namespace", "acme/storefront")
    target.wait_for()
    messages: list[str] = []

    def confirm(dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    target.locator("text=Destroy…").click()
    target.locator(".badge", has_text="Destroying…").wait_for()
    assert "acme/storefront#2" in messages[0]
    target.locator(".badge.state-destroyed").wait_for(timeout=60_000)
    assert target.locator("button", has_text="Recreate").count() == 1
    page.close()


def test_filters_survive_the_live_refresh(browser, stack):
    page = signed_in(browser, stack, "qa")
    page.select_option("select[name=flavor]", "vcluster")
    page.fill("#q", "sso")
    page.wait_for_url(re.compile(r"flavor=vcluster.*q=sso|q=sso.*flavor=vcluster"))
    page.wait_for_function("document.querySelectorAll('tr.env').length === 1")
    with page.expect_response(lambda r: "flavor=vcluster" in r.url and "q=sso" in r.url,
                              timeout=15_000):  # fmt: skip
        pass  # the next poll carries the filters
    page.wait_for_timeout(300)
    assert page.locator("tr.env").count() == 1
    assert page.locator("select[name=flavor]").input_value() == "vcluster"
    assert page.locator("#q").input_value() == "sso"
    assert page.evaluate("document.activeElement.id") == "q"
    page.close()
