"""The GitHub emulator, driven by PyGithub (and `requests` where the raw HTTP matters)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable

import github
import pytest
import requests
from github import Auth, Github, GithubException

from sandbox.github import GitHub, signature
from sandbox.httpserver import Request, Response, serve

TOKEN = "ghp_sandboxtoken"
SECRET = "webhook-secret"
OWNER, REPO = "acme", "storefront"


class Clock:
    """A clock the tests move by hand (rate-limit windows)."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receiver:
    """A webhook endpoint that records each delivery and answers with the queued statuses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            status = self.statuses.pop(0) if self.statuses else 200
        return Response(status, b"")

    def events(self) -> list[tuple[str, str]]:
        return [
            (r.headers["x-github-event"], json.loads(r.body).get("action", ""))
            for r in self.requests
        ]


class Plug:
    """One server per module, each test plugs in its own app: stopping a server costs 0.5 s."""

    def __init__(self) -> None:
        self.app: Callable[[Request], Response] | None = None

    def __call__(self, request: Request) -> Response:
        assert self.app is not None
        return self.app(request)


@pytest.fixture(scope="module")
def servers():
    plugs = {"github": Plug(), "hook": Plug()}
    started = {name: serve(plug) for name, plug in plugs.items()}
    yield {name: (plugs[name], url) for name, (_, url) in started.items()}
    for server, _ in started.values():
        server.shutdown()
        server.server_close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def url(servers):
    return servers["github"][1]


def emulator(servers, clock, **options) -> GitHub:
    gh = GitHub(TOKEN, SECRET, clock=clock, **options)
    gh.add_repo(OWNER, REPO)
    servers["github"][0].app = gh
    return gh


@pytest.fixture
def gh(servers, clock):
    gh = emulator(servers, clock)
    yield gh
    gh.close()


def client(url: str, token: str = TOKEN, per_page: int = 30) -> Github:
    # No retries and no client-side throttling: the tests want every answer as it is.
    return Github(
        auth=Auth.Token(token),
        base_url=url,
        per_page=per_page,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


@pytest.fixture
def repo(gh, url):
    return client(url).get_repo(f"{OWNER}/{REPO}")


@pytest.fixture
def receiver(servers):
    plug, url = servers["hook"]
    plug.app = Receiver(url)
    return plug.app


def http(method: str, url: str, **kwargs) -> requests.Response:
    return requests.request(method, url, timeout=5, **kwargs)


def auth() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}"}


# --- pull requests ------------------------------------------------------------------------


def test_it_lists_open_prs_across_pages_with_link_headers(gh, url):
    for i in range(250):
        gh.open_pr(OWNER, REPO, f"feature-{i}", f"PR {i}", "maria")
    gh.close(OWNER, REPO, 1)
    gh.reset_stats()

    pulls = list(client(url, per_page=100).get_repo(f"{OWNER}/{REPO}").get_pulls(state="open"))

    assert len(pulls) == 249
    assert [p.number for p in pulls[:2]] == [250, 249]  # newest first, like GitHub
    assert gh.stats["by_kind"]["pulls.list"] == 3
    page2 = http("GET", f"{url}/repos/{OWNER}/{REPO}/pulls?per_page=100&page=2", headers=auth())
    pulls_url = f"{url}/repos/{OWNER}/{REPO}/pulls"
    assert page2.headers["Link"] == (
        f'<{pulls_url}?per_page=100&page=1>; rel="prev", '
        f'<{pulls_url}?per_page=100&page=3>; rel="next", '
        f'<{pulls_url}?per_page=100&page=3>; rel="last", '
        f'<{pulls_url}?per_page=100&page=1>; rel="first"'
    )
    closed = http("GET", f"{pulls_url}?state=closed", headers=auth()).json()
    assert [p["number"] for p in closed] == [1]
    assert "Link" not in http("GET", f"{pulls_url}?state=closed", headers=auth()).headers


def test_get_pull_has_the_fields_pygithub_reads(gh, repo, url):
    opened = gh.open_pr(
        OWNER, REPO, "feature/login", "Add login", "maria", labels=["preview"], draft=True
    )

    pr = repo.get_pull(opened["number"])

    assert (pr.number, pr.title, pr.draft, pr.state, pr.merged) == (
        1,
        "Add login",
        True,
        "open",
        False,
    )
    assert pr.head.ref == "feature/login"
    assert pr.head.sha == opened["head"]["sha"] and len(pr.head.sha) == 40
    assert pr.head.label == f"{OWNER}:feature/login"
    assert pr.head.repo.full_name == f"{OWNER}/{REPO}"
    assert pr.base.ref == "main"
    assert pr.user.login == "maria" and isinstance(pr.user.id, int)
    assert [label.name for label in pr.labels] == ["preview"]
    assert pr.html_url == f"https://github.com/{OWNER}/{REPO}/pull/1"
    assert pr.url == f"{url}/repos/{OWNER}/{REPO}/pulls/1"
    assert pr.created_at.tzinfo is not None and pr.merged_at is None

    new_sha = gh.push(OWNER, REPO, 1)
    gh.merge(OWNER, REPO, 1)
    pr = repo.get_pull(1)
    assert pr.head.sha == new_sha
    assert (pr.state, pr.merged) == ("closed", True)
    assert pr.merged_at is not None and pr.closed_at is not None
    assert repo.get_pulls(state="open").totalCount == 0


def test_it_answers_404_and_validation_errors_like_github(gh, repo, url):
    with pytest.raises(github.UnknownObjectException):
        repo.get_pull(99)
    missing = http("GET", f"{url}/repos/{OWNER}/nope", headers=auth())
    assert missing.status_code == 404
    assert missing.json()["message"] == "Not Found" and "documentation_url" in missing.json()
    bad_json = http("POST", f"{url}/repos/{OWNER}/{REPO}/deployments", data="{", headers=auth())
    assert bad_json.status_code == 400
    invalid = http("GET", f"{url}/repos/{OWNER}/{REPO}/pulls?state=merged", headers=auth())
    assert invalid.status_code == 422 and invalid.json()["message"] == "Validation Failed"


def test_it_accepts_the_enterprise_api_prefix(gh, url):
    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")

    pr = client(f"{url}/api/v3").get_repo(f"{OWNER}/{REPO}").get_pull(1)

    assert pr.url == f"{url}/api/v3/repos/{OWNER}/{REPO}/pulls/1"
    assert pr.head.ref == "feature-x"


# --- conditional requests and rate limit -----------------------------------------------------


def test_a_repeated_conditional_request_is_304_and_free(gh, url):
    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")
    pulls_url = f"{url}/repos/{OWNER}/{REPO}/pulls"
    first = http("GET", pulls_url, headers=auth())
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')

    again = http("GET", pulls_url, headers={**auth(), "If-None-Match": etag})
    third = http("GET", pulls_url, headers={**auth(), "If-None-Match": etag})

    assert (again.status_code, again.content, third.status_code) == (304, b"", 304)
    assert third.headers["X-RateLimit-Remaining"] == first.headers["X-RateLimit-Remaining"]
    assert third.headers["ETag"] == etag
    assert client(url).get_rate_limit().resources.core.remaining == 4999
    assert gh.stats["not_modified"] == 2

    gh.push(OWNER, REPO, 1)
    changed = http("GET", pulls_url, headers={**auth(), "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["X-RateLimit-Remaining"] == "4998"


def test_it_sends_last_modified_and_honours_if_modified_since(gh, url):
    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")
    pull_url = f"{url}/repos/{OWNER}/{REPO}/pulls/1"
    modified = http("GET", pull_url, headers=auth()).headers["Last-Modified"]

    again = http("GET", pull_url, headers={**auth(), "If-Modified-Since": modified})

    assert again.status_code == 304


def test_every_response_carries_rate_limit_headers(gh, url, clock):
    response = http("GET", f"{url}/repos/{OWNER}/{REPO}", headers=auth())

    window_end = int(clock.now // 3600) * 3600 + 3600
    assert response.headers["X-RateLimit-Limit"] == "5000"
    assert response.headers["X-RateLimit-Remaining"] == "4999"
    assert response.headers["X-RateLimit-Used"] == "1"
    assert response.headers["X-RateLimit-Reset"] == str(window_end)
    assert response.headers["X-RateLimit-Resource"] == "core"
    anonymous = http("GET", f"{url}/repos/{OWNER}/{REPO}")
    assert anonymous.status_code == 200
    assert (anonymous.headers["X-RateLimit-Limit"], anonymous.headers["X-RateLimit-Remaining"]) == (
        "60",
        "59",
    )


def test_it_rejects_a_wrong_token(gh, url):
    with pytest.raises(github.BadCredentialsException):
        client(url, token="ghp_wrong").get_repo(f"{OWNER}/{REPO}")
    response = http("GET", f"{url}/user", headers={"Authorization": "Bearer ghp_wrong"})
    assert (response.status_code, response.json()["message"]) == (401, "Bad credentials")


def test_get_user_is_the_tokens_user(gh, url):
    bearer = http("GET", f"{url}/user", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.json()["login"] == "envportal-bot"
    assert client(url).get_user().login == "envportal-bot"


def test_a_spent_budget_is_403_until_the_next_hour(servers, url, clock):
    gh = emulator(servers, clock, rate_limit=3)
    g = client(url)
    repo = g.get_repo(f"{OWNER}/{REPO}")
    repo.get_pulls().get_page(0)
    repo.get_labels().get_page(0)

    with pytest.raises(github.RateLimitExceededException) as raised:
        repo.get_pulls().get_page(0)

    assert raised.value.status == 403
    assert raised.value.headers["x-ratelimit-remaining"] == "0"
    assert raised.value.data["message"].startswith("API rate limit exceeded for")
    assert g.get_rate_limit().resources.core.remaining == 0  # /rate_limit still answers
    clock.now += 3600
    assert repo.get_pulls().totalCount == 0
    gh.close()


def test_the_exhausted_fault_spends_the_budget(gh, repo):
    gh.set_faults(exhausted=True)
    with pytest.raises(github.RateLimitExceededException):
        repo.get_pull(1)
    gh.set_faults()
    assert repo.get_pulls().totalCount == 0


def test_a_502_fault_surfaces_as_github_exception(gh, repo):
    gh.set_faults(error_rate=1.0)
    with pytest.raises(GithubException) as raised:
        repo.get_pulls().get_page(0)
    assert raised.value.status == 502
    assert gh.stats["faults"] == 1
    gh.set_faults()


# --- labels, comments -----------------------------------------------------------------------


def test_labels_are_added_and_removed_through_the_api(gh, repo, url):
    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")
    pr = repo.get_pull(1)

    pr.add_to_labels("preview", "needs review", "area/api")
    pr.remove_from_labels("needs review")
    pr.remove_from_labels("area/api")

    assert [label.name for label in pr.get_labels()] == ["preview"]
    assert [label["name"] for label in gh.get_pr(OWNER, REPO, 1)["labels"]] == ["preview"]
    with pytest.raises(GithubException) as raised:
        pr.remove_from_labels("never-added")
    assert (raised.value.status, raised.value.data["message"]) == (404, "Label does not exist")
    response = http(
        "POST",
        f"{url}/repos/{OWNER}/{REPO}/issues/1/labels",
        json={"labels": ["bug"]},
        headers=auth(),
    )
    assert [label["name"] for label in response.json()] == ["bug", "preview"]
    repo_labels = [label.name for label in repo.get_labels()]
    assert {"bug", "preview", "needs review", "area/api"} <= set(repo_labels)
    assert repo.get_issue(1).labels[0].name == "bug"


def test_comments_are_created_and_edited(gh, repo):
    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")
    pr = repo.get_pull(1)

    comment = pr.create_issue_comment("Environment is ready")
    comment.edit("Environment is ready: https://pr-1.example.test")

    comments = list(pr.get_issue_comments())
    assert [c.body for c in comments] == ["Environment is ready: https://pr-1.example.test"]
    assert comments[0].user.login == "envportal-bot"
    assert comments[0].html_url.endswith(f"/pull/1#issuecomment-{comment.id}")
    assert repo.get_issue(1).get_comment(comment.id).body.endswith("example.test")
    assert repo.get_pull(1).comments == 1


# --- deployments and statuses ----------------------------------------------------------------


def test_deployments_and_statuses_with_auto_inactive(gh, repo):
    sha = gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")["head"]["sha"]

    def deploy(transient: bool):
        return repo.create_deployment(
            ref=sha,
            environment="pr-1",
            transient_environment=transient,
            production_environment=False,
            auto_merge=False,
            required_contexts=[],
            payload={"namespace": "pr-1"},
            description="preview",
        )

    first = deploy(transient=False)
    first.create_status("in_progress")
    first.create_status("success", environment_url="https://pr-1.example.test")
    transient = deploy(transient=True)
    transient.create_status("success")
    second = deploy(transient=False)
    second.create_status("success", environment_url="https://pr-1.example.test")

    assert (first.sha, first.ref, first.environment, first.payload) == (
        sha,
        sha,
        "pr-1",
        {"namespace": "pr-1"},
    )
    assert (first.transient_environment, first.production_environment) == (False, False)
    assert [s.state for s in first.get_statuses()] == ["inactive", "success", "in_progress"]
    assert [s.state for s in transient.get_statuses()] == ["success"]  # transient: left alone
    latest = second.get_statuses()[0]
    assert (latest.state, latest.environment_url) == ("success", "https://pr-1.example.test")
    assert [d.id for d in repo.get_deployments(environment="pr-1")] == [
        second.id,
        transient.id,
        first.id,
    ]
    assert repo.get_deployments(environment="pr-2").totalCount == 0
    assert gh.list_deployments(OWNER, REPO)[0]["auto_merge"] is False

    with pytest.raises(GithubException) as raised:
        second.create_status("exploded")
    assert raised.value.status == 422


def test_a_deployment_waits_for_required_contexts(gh, repo):
    sha = gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")["head"]["sha"]
    gh.set_commit_status(OWNER, REPO, sha, "failure", context="ci/test")

    with pytest.raises(GithubException) as raised:
        repo.create_deployment(ref="feature-x", environment="pr-1")
    assert raised.value.status == 409

    deployment = repo.create_deployment(ref="feature-x", environment="pr-1", required_contexts=[])
    assert deployment.sha == sha and deployment.production_environment is False
    with pytest.raises(GithubException) as raised:
        repo.create_deployment(ref="no-such-branch", required_contexts=[])
    assert (raised.value.status, raised.value.data["message"]) == (
        422,
        "No ref found for: no-such-branch",
    )


def test_combined_status(gh, repo):
    sha = gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")["head"]["sha"]
    commit = repo.get_commit(sha)

    assert (commit.get_combined_status().state, commit.get_combined_status().total_count) == (
        "pending",
        0,
    )
    gh.set_commit_status(OWNER, REPO, sha, "success", context="ci/build")
    repo.get_commit(sha).create_status("success", context="ci/test")
    assert commit.get_combined_status().state == "success"
    gh.set_commit_status(OWNER, REPO, sha, "failure", context="ci/test")
    combined = commit.get_combined_status()
    assert (combined.state, combined.total_count) == ("failure", 2)


# --- control endpoint ------------------------------------------------------------------------


def test_the_control_endpoint_needs_no_token_and_costs_nothing(gh, url):
    created = http(
        "POST",
        f"{url}/_sandbox/prs",
        json={"owner": OWNER, "repo": REPO, "branch": "b", "title": "T", "author": "tom"},
    )
    assert created.status_code == 201
    number = created.json()["number"]
    http("POST", f"{url}/_sandbox/prs/{OWNER}/{REPO}/{number}/labels", json={"labels": ["a b"]})
    http("DELETE", f"{url}/_sandbox/prs/{OWNER}/{REPO}/{number}/labels/a%20b")
    pushed = http("POST", f"{url}/_sandbox/prs/{OWNER}/{REPO}/{number}/push", json={})
    merged = http("POST", f"{url}/_sandbox/prs/{OWNER}/{REPO}/{number}/merge").json()
    faults = http("POST", f"{url}/_sandbox/faults", json={"latency": 0.0})

    assert merged["merged"] is True and merged["head"]["sha"] == pushed.json()["sha"]
    assert merged["labels"] == []
    assert faults.status_code == 200
    assert http("GET", f"{url}/_sandbox/stats").json()["requests"] == 0


# --- webhooks -------------------------------------------------------------------------------


def test_signature_matches_githubs_test_vector():
    assert signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_changes_are_delivered_as_signed_pull_request_events(gh, repo, url, receiver):
    gh.set_webhook_url(receiver.url)

    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria", labels=["preview"])
    repo.get_pull(1).remove_from_labels("preview")
    gh.push(OWNER, REPO, 1)
    gh.edit(OWNER, REPO, 1, title="X, renamed")
    gh.close(OWNER, REPO, 1)
    gh.reopen(OWNER, REPO, 1)
    gh.merge(OWNER, REPO, 1)
    gh.ping(OWNER, REPO)
    assert gh.wait_for_deliveries(5)

    assert receiver.events() == [
        ("pull_request", "opened"),
        ("pull_request", "labeled"),
        ("pull_request", "unlabeled"),
        ("pull_request", "synchronize"),
        ("pull_request", "edited"),
        ("pull_request", "closed"),
        ("pull_request", "reopened"),
        ("pull_request", "closed"),
        ("ping", ""),
    ]
    for request in receiver.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["x-hub-signature-256"], expected)
        assert request.headers["user-agent"].startswith("GitHub-Hookshot/")
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-github-hook-id"] == str(gh.hook_id)
    payloads = [json.loads(r.body) for r in receiver.requests]
    labeled, unlabeled = payloads[1], payloads[2]
    assert labeled["label"]["name"] == "preview" and labeled["sender"]["login"] == "maria"
    assert unlabeled["sender"]["login"] == "envportal-bot"  # the API caller
    assert payloads[3]["after"] == payloads[3]["pull_request"]["head"]["sha"]
    assert payloads[4]["changes"] == {"title": {"from": "X"}}
    assert payloads[5]["pull_request"]["merged"] is False
    assert payloads[7]["pull_request"]["merged"] is True
    assert payloads[0]["repository"]["full_name"] == f"{OWNER}/{REPO}"
    assert payloads[0]["pull_request"]["url"] == f"{url}/repos/{OWNER}/{REPO}/pulls/1"
    ids = [r.headers["x-github-delivery"] for r in receiver.requests]
    assert len(set(ids)) == len(ids)


def test_a_failed_delivery_is_retried_with_the_same_id(gh, receiver):
    receiver.statuses = [500]
    gh.set_webhook_url(receiver.url)

    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")
    assert gh.wait_for_deliveries(5)

    first, second = receiver.requests
    assert first.headers["x-github-delivery"] == second.headers["x-github-delivery"]
    assert first.body == second.body
    assert gh.deliveries[0]["status"] == 200 and gh.deliveries[0]["attempts"] == 2


def test_an_unreachable_receiver_is_given_up_after_three_retries(gh):
    gh.retry_delays = (0.01, 0.01, 0.01)
    gh.set_webhook_url("http://127.0.0.1:9/unreachable")

    gh.open_pr(OWNER, REPO, "feature-x", "X", "maria")
    assert gh.wait_for_deliveries(5)

    assert gh.deliveries[0]["attempts"] == 4
    assert gh.deliveries[0]["status"] is None and gh.deliveries[0]["error"]
