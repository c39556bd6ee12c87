"""GitHub, through PyGithub: the only module that imports it.

Open PRs are listed page by page with conditional requests (`If-None-Match`): an unchanged
page answers 304, which costs no rate limit. Every answer's rate-limit headers are returned so
the caller can back off before the budget runs out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import github
from github import Auth, Github
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from environments.errors import GatewayError, NotFound, PermissionDenied, RateLimited, Transient

PER_PAGE = 100
TIMEOUT = 15
LINK_LAST = re.compile(r'<[^>]*[?&]page=(\d+)[^>]*>;\s*rel="last"')


@dataclass(frozen=True)
class RateLimit:
    limit: int
    remaining: int
    reset_at: datetime | None

    @classmethod
    def from_headers(cls, headers: dict[str, Any]) -> RateLimit | None:
        lower = {k.lower(): v for k, v in headers.items()}
        if "x-ratelimit-remaining" not in lower:
            return None
        reset = lower.get("x-ratelimit-reset")
        return cls(
            limit=int(lower.get("x-ratelimit-limit", 0)),
            remaining=int(lower["x-ratelimit-remaining"]),
            reset_at=datetime.fromtimestamp(int(reset), UTC) if reset else None,
        )

    def as_dict(self) -> dict[str, Any]:
        reset = self.reset_at.isoformat() if self.reset_at else None
        return {"limit": self.limit, "remaining": self.remaining, "reset_at": reset}


@dataclass
class OpenPulls:
    """One pass over a repository's open-PR pages.

    `pages` maps page number → the PRs on it (JSON dicts) for pages that changed, or None for
    pages that answered 304. `etags` are the new ETags to send next time.
    """

    pages: dict[int, list[dict[str, Any]] | None] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    rate: RateLimit | None = None
    requests: int = 0
    not_modified: int = 0

    @property
    def changed(self) -> bool:
        return any(page is not None for page in self.pages.values())


@lru_cache(maxsize=16)
def _client(api_url: str, token: str) -> Github:
    # Retry only 5xx answers, briefly: rate limits are handled by backing off, never by
    # sleeping in a worker until the reset (PyGithub's default retry would).
    retry = Retry(
        total=2,
        backoff_factor=0.5,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    auth = Auth.Token(token) if token else None
    return Github(
        auth=auth,
        base_url=api_url,
        timeout=TIMEOUT,
        retry=retry,
        per_page=PER_PAGE,
        seconds_between_requests=None,
    )


def _error(status: int, headers: dict[str, Any], body: str, what: str) -> GatewayError:
    rate = RateLimit.from_headers(headers)
    try:
        message = str(json.loads(body).get("message", "")) if body else ""
    except (ValueError, AttributeError):
        message = ""
    if status in (403, 429) and (
        (rate is not None and rate.remaining == 0) or "rate limit" in message.lower()
    ):
        return RateLimited(f"GitHub rate limit exhausted ({what})", rate.reset_at if rate else None)
    if status == 404:
        return NotFound(f"GitHub: {what} not found")
    if status in (401, 403):
        return PermissionDenied(f"GitHub refused {what}: {status} {message}".strip())
    return Transient(f"GitHub answered {status} for {what}")


def list_open_pulls(
    api_url: str, token: str, owner: str, repo: str, etags: dict[str, str]
) -> OpenPulls:
    """List open PRs with conditional requests, one per page.

    https://docs.github.com/rest/pulls/pulls#list-pull-requests
    """
    requester = _client(api_url, token).requester
    result = OpenPulls()
    page, last = 1, int(etags.get("pages", "1") or 1)
    what = f"{owner}/{repo} pull requests"
    while page <= last:
        headers = {"If-None-Match": etags[str(page)]} if str(page) in etags else {}
        try:
            status, answer_headers, body = requester.requestJson(
                "GET",
                f"/repos/{owner}/{repo}/pulls",
                parameters={"state": "open", "per_page": PER_PAGE, "page": page},
                headers=headers,
            )
        except (RequestException, github.GithubException, OSError) as exc:
            raise Transient(f"GitHub unreachable ({what}): {type(exc).__name__}") from exc
        result.requests += 1
        result.rate = RateLimit.from_headers(answer_headers) or result.rate
        if status == 304:
            result.not_modified += 1
            result.pages[page] = None
            result.etags[str(page)] = etags[str(page)]
        elif status == 200:
            items = json.loads(body)
            result.pages[page] = items
            etag = {k.lower(): v for k, v in answer_headers.items()}.get("etag")
            if etag:
                result.etags[str(page)] = etag
            match = LINK_LAST.search(
                {k.lower(): v for k, v in answer_headers.items()}.get("link", "")
            )
            last = int(match.group(1)) if match else page
        else:
            raise _error(status, answer_headers, body, what)
        page += 1
    result.etags["pages"] = str(last)
    return result


def rate_limit(api_url: str, token: str) -> RateLimit:
    """The current budget (free: /rate_limit does not count against it).

    https://docs.github.com/rest/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user
    """
    requester = _client(api_url, token).requester
    try:
        status, headers, body = requester.requestJson("GET", "/rate_limit")
    except (RequestException, github.GithubException, OSError) as exc:
        raise Transient(f"GitHub unreachable: {type(exc).__name__}") from exc
    if status != 200:
        raise _error(status, headers, body, "rate limit")
    core = json.loads(body)["resources"]["core"]
    return RateLimit(
        int(core["limit"]), int(core["remaining"]), datetime.fromtimestamp(int(core["reset"]), UTC)
    )


def _write(api_url: str, token: str, method: str, path: str, what: str, body: Any = None) -> Any:
    requester = _client(api_url, token).requester
    try:
        status, headers, text = requester.requestJson(method, path, input=body)
    except (RequestException, github.GithubException, OSError) as exc:
        raise Transient(f"GitHub unreachable ({what}): {type(exc).__name__}") from exc
    if status >= 300:
        raise _error(status, headers, text, what)
    return json.loads(text) if text else None


def add_label(
    api_url: str, token: str, owner: str, repo: str, number: int, label: str
) -> list[str]:
    """Add a label to a PR; return its labels. Adding a label it has is a no-op on GitHub.

    https://docs.github.com/rest/issues/labels#add-labels-to-an-issue
    """
    answer = _write(
        api_url,
        token,
        "POST",
        f"/repos/{owner}/{repo}/issues/{number}/labels",
        f"labelling {owner}/{repo}#{number}",
        {"labels": [label]},
    )
    return [str(item["name"]) for item in answer or []]


def remove_label(
    api_url: str, token: str, owner: str, repo: str, number: int, label: str
) -> list[str] | None:
    """Remove a label from a PR; return its labels, or None when it did not have it (404).

    https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue
    """
    try:
        answer = _write(
            api_url,
            token,
            "DELETE",
            f"/repos/{owner}/{repo}/issues/{number}/labels/{quote(label, safe='')}",
            f"unlabelling {owner}/{repo}#{number}",
        )
    except NotFound:
        return None
    return [str(item["name"]) for item in answer or []]


def create_comment(api_url: str, token: str, owner: str, repo: str, number: int, body: str) -> int:
    """Comment on a PR; return the comment's id.

    https://docs.github.com/rest/issues/comments#create-an-issue-comment
    """
    answer = _write(
        api_url, token, "POST", f"/repos/{owner}/{repo}/issues/{number}/comments",
        f"commenting on {owner}/{repo}#{number}", {"body": body},
    )  # fmt: skip
    return int(answer["id"])


def edit_comment(
    api_url: str, token: str, owner: str, repo: str, comment_id: int, body: str
) -> bool:
    """Replace a comment's text; False when it is gone (someone deleted it).

    https://docs.github.com/rest/issues/comments#update-an-issue-comment
    """
    try:
        _write(
            api_url, token, "PATCH", f"/repos/{owner}/{repo}/issues/comments/{comment_id}",
            f"editing comment {comment_id} of {owner}/{repo}", {"body": body},
        )  # fmt: skip
    except NotFound:
        return False
    return True


def create_deployment(
    api_url: str, token: str, owner: str, repo: str, ref: str, environment: str, description: str
) -> int:
    """A transient deployment of `ref` to `environment` (no merge, no required checks).

    https://docs.github.com/rest/deployments/deployments#create-a-deployment
    """
    answer = _write(
        api_url, token, "POST", f"/repos/{owner}/{repo}/deployments",
        f"creating a deployment of {owner}/{repo}",
        {
            "ref": ref, "environment": environment, "description": description[:140],
            "transient_environment": True, "production_environment": False,
            "auto_merge": False, "required_contexts": [],
        },
    )  # fmt: skip
    return int(answer["id"])


def create_deployment_status(
    api_url: str,
    token: str,
    owner: str,
    repo: str,
    deployment_id: int,
    state: str,
    description: str,
    environment_url: str = "",
    log_url: str = "",
) -> None:
    """Post a deployment's status (in_progress, success, failure, inactive, ...).

    https://docs.github.com/rest/deployments/statuses#create-a-deployment-status
    """
    body: dict[str, Any] = {"state": state, "description": description[:140]}
    if environment_url:
        body["environment_url"] = environment_url
    if log_url:
        body["log_url"] = log_url
    _write(
        api_url, token, "POST", f"/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
        f"posting a deployment status to {owner}/{repo}", body,
    )  # fmt: skip


def find_comment(
    api_url: str, token: str, owner: str, repo: str, number: int, marker: str
) -> int | None:
    """The id of the PR's first comment containing `marker` (of its first 100), or None.

    https://docs.github.com/rest/issues/comments#list-issue-comments
    """
    requester = _client(api_url, token).requester
    what = f"comments of {owner}/{repo}#{number}"
    try:
        status, headers, body = requester.requestJson(
            "GET", f"/repos/{owner}/{repo}/issues/{number}/comments", parameters={"per_page": 100}
        )
    except (RequestException, github.GithubException, OSError) as exc:
        raise Transient(f"GitHub unreachable ({what}): {type(exc).__name__}") from exc
    if status != 200:
        raise _error(status, headers, body, what)
    for comment in json.loads(body):
        if marker in str(comment.get("body") or ""):
            return int(comment["id"])
    return None
