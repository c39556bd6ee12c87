"""GitHub's REST API and `pull_request` webhooks, emulated in-process.

`GitHub` holds the whole simulated world (repositories, pull requests, labels, comments,
deployments, commit statuses) behind one lock and is served with `sandbox.httpserver.serve`.
PyGithub and Argo CD's Pull Request generator talk to it as to api.github.com: same paths,
JSON shapes, `Link` pagination, ETags and 304s, rate-limit headers and errors. Scenarios and
tests drive it with plain methods (`open_pr`, `push`, `add_labels`, ...) or over HTTP under
`/_sandbox/`, and every change is delivered as a signed webhook like GitHub's.

Facts followed here: /work/shared/reference/FACTS.md section 6.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import queue
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, overload
from urllib.parse import quote, unquote, urlencode

import requests

from .httpserver import Request, Response

log = logging.getLogger("sandbox.github")

HTML = "https://github.com"
DOCS = "https://docs.github.com/rest"
RATE_LIMIT_DOCS = (
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
    "#about-the-rate-limit-for-the-rest-api"
)
ANONYMOUS_LIMIT = 60
WINDOW = 3600
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
COMMIT_STATES = ("error", "failure", "pending", "success")
# The labels GitHub gives every new repository.
DEFAULT_LABELS = (
    ("bug", "d73a4a", "Something isn't working"),
    ("documentation", "0075ca", "Improvements or additions to documentation"),
    ("duplicate", "cfd3d7", "This issue or pull request already exists"),
    ("enhancement", "a2eeef", "New feature or request"),
    ("good first issue", "7057ff", "Good for newcomers"),
    ("help wanted", "008672", "Extra attention is needed"),
    ("invalid", "e4e669", "This doesn't seem right"),
    ("question", "d876e3", "Further information is requested"),
    ("wontfix", "ffffff", "This will not be worked on"),
)
REPO_URLS = {
    "forks_url": "/forks",
    "keys_url": "/keys{/key_id}",
    "collaborators_url": "/collaborators{/collaborator}",
    "teams_url": "/teams",
    "hooks_url": "/hooks",
    "issue_events_url": "/issues/events{/number}",
    "events_url": "/events",
    "assignees_url": "/assignees{/user}",
    "branches_url": "/branches{/branch}",
    "tags_url": "/tags",
    "blobs_url": "/git/blobs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "trees_url": "/git/trees{/sha}",
    "statuses_url": "/statuses/{sha}",
    "languages_url": "/languages",
    "stargazers_url": "/stargazers",
    "contributors_url": "/contributors",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "commits_url": "/commits{/sha}",
    "git_commits_url": "/git/commits{/sha}",
    "comments_url": "/comments{/number}",
    "issue_comment_url": "/issues/comments{/number}",
    "contents_url": "/contents/{+path}",
    "compare_url": "/compare/{base}...{head}",
    "merges_url": "/merges",
    "archive_url": "/{archive_format}{/ref}",
    "downloads_url": "/downloads",
    "issues_url": "/issues{/number}",
    "pulls_url": "/pulls{/number}",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "labels_url": "/labels{/name}",
    "releases_url": "/releases{/id}",
    "deployments_url": "/deployments",
}

JSON = dict[str, Any]


class GitHubError(Exception):
    """An API error; also raised by the control methods (e.g. 404 for an unknown repository)."""

    def __init__(self, status: int, message: str, errors: list[JSON] | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors = errors

    def response(self) -> Response:
        data: JSON = {"message": self.message}
        if self.errors is not None:
            data["errors"] = self.errors
        data["documentation_url"] = DOCS
        data["status"] = str(self.status)
        return Response.json(data, self.status)


def not_found() -> GitHubError:
    return GitHubError(404, "Not Found")


def invalid(resource: str, field: str, code: str = "invalid", message: str = "") -> GitHubError:
    error: JSON = {"resource": resource, "code": code, "field": field}
    if message:
        error["message"] = message
    return GitHubError(422, "Validation Failed", [error])


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends: hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def node_id(kind: str, key: object) -> str:
    # GitHub's legacy global ids: base64 of "<len(kind)>:<Kind><id>", e.g. MDQ6VXNlcjE= for user 1.
    return base64.b64encode(f"{len(kind):02d}:{kind}{key}".encode()).decode()


@dataclass
class User:
    login: str
    id: int
    created_at: float


@dataclass
class Label:
    id: int
    name: str
    color: str
    description: str | None
    default: bool = False


@dataclass
class Commit:
    sha: str
    author: User
    date: float
    message: str


@dataclass
class Pull:
    id: int
    issue_id: int
    number: int
    title: str
    body: str
    user: User
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    draft: bool
    created_at: float
    updated_at: float
    labels: list[Label] = field(default_factory=list)
    state: str = "open"
    merged: bool = False
    closed_at: float | None = None
    merged_at: float | None = None
    merged_by: User | None = None
    closed_by: User | None = None
    merge_commit_sha: str | None = None
    comments: int = 0
    commits: int = 1


@dataclass
class Comment:
    id: int
    number: int
    user: User
    body: str
    created_at: float
    updated_at: float


@dataclass
class DeploymentStatus:
    id: int
    state: str
    creator: User
    description: str
    environment: str
    environment_url: str
    log_url: str
    created_at: float


@dataclass
class Deployment:
    id: int
    sha: str
    ref: str
    task: str
    payload: Any
    environment: str
    original_environment: str
    description: str | None
    creator: User
    transient_environment: bool
    production_environment: bool
    # Accepted and kept (see list_deployments) but, like GitHub, not part of the REST shape.
    auto_merge: bool
    required_contexts: list[str] | None
    created_at: float
    updated_at: float
    statuses: list[DeploymentStatus] = field(default_factory=list)  # oldest first


@dataclass
class CommitStatus:
    id: int
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: User
    created_at: float


@dataclass
class Repo:
    id: int
    owner: User
    name: str
    default_branch: str
    private: bool
    created_at: float
    updated_at: float
    pushed_at: float
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha
    commits: dict[str, Commit] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)  # lower-cased name -> label
    pulls: dict[int, Pull] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    statuses: dict[str, list[CommitStatus]] = field(default_factory=dict)  # sha -> oldest first
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"


# JSON shapes, as GitHub renders them. `api` is the API base URL the client sees.


def user_json(api: str, user: User) -> JSON:
    url = f"{api}/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": node_id("User", user.id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
        "gravatar_id": "",
        "url": url,
        "html_url": f"{HTML}/{user.login}",
        "followers_url": f"{url}/followers",
        "following_url": f"{url}/following{{/other_user}}",
        "gists_url": f"{url}/gists{{/gist_id}}",
        "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{url}/subscriptions",
        "organizations_url": f"{url}/orgs",
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events{{/privacy}}",
        "received_events_url": f"{url}/received_events",
        "type": "User",
        "user_view_type": "public",
        "site_admin": False,
    }


def profile_json(api: str, user: User) -> JSON:
    """`GET /users/{login}`: the simple user plus the public profile."""
    return {
        **user_json(api, user),
        "name": user.login,
        "company": None,
        "blog": "",
        "location": None,
        "email": None,
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "public_repos": 0,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.created_at),
    }


def repo_json(api: str, repo: Repo, open_issues: int) -> JSON:
    url = f"{api}/repos/{repo.full_name}"
    html = f"{HTML}/{repo.full_name}"
    data: JSON = {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": user_json(api, repo.owner),
        "html_url": html,
        "description": None,
        "fork": False,
        "url": url,
    }
    data.update({name: url + suffix for name, suffix in REPO_URLS.items()})
    data.update(
        {
            "created_at": iso(repo.created_at),
            "updated_at": iso(repo.updated_at),
            "pushed_at": iso(repo.pushed_at),
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": True,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": open_issues,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "private" if repo.private else "public",
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
            "default_branch": repo.default_branch,
        }
    )
    return data


def label_json(api: str, repo: Repo, label: Label) -> JSON:
    return {
        "id": label.id,
        "node_id": node_id("Label", label.id),
        "url": f"{api}/repos/{repo.full_name}/labels/{quote(label.name, safe='')}",
        "name": label.name,
        "color": label.color,
        "default": label.default,
        "description": label.description,
    }


def association(repo: Repo, user: User) -> str:
    return "OWNER" if user.login == repo.owner.login else "CONTRIBUTOR"


def comment_json(api: str, repo: Repo, comment: Comment) -> JSON:
    base = f"{api}/repos/{repo.full_name}"
    return {
        "url": f"{base}/issues/comments/{comment.id}",
        "html_url": f"{HTML}/{repo.full_name}/pull/{comment.number}#issuecomment-{comment.id}",
        "issue_url": f"{base}/issues/{comment.number}",
        "id": comment.id,
        "node_id": node_id("IssueComment", comment.id),
        "user": user_json(api, comment.user),
        "created_at": iso(comment.created_at),
        "updated_at": iso(comment.updated_at),
        "author_association": association(repo, comment.user),
        "body": comment.body,
        "reactions": reactions_json(f"{base}/issues/comments/{comment.id}/reactions"),
        "performed_via_github_app": None,
    }


def reactions_json(url: str) -> JSON:
    counts = ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes")
    return {"url": url, "total_count": 0, **dict.fromkeys(counts, 0)}


def deployment_json(api: str, repo: Repo, deployment: Deployment) -> JSON:
    base = f"{api}/repos/{repo.full_name}"
    return {
        "url": f"{base}/deployments/{deployment.id}",
        "id": deployment.id,
        "node_id": node_id("Deployment", deployment.id),
        "task": deployment.task,
        "original_environment": deployment.original_environment,
        "environment": deployment.environment,
        "description": deployment.description,
        "created_at": iso(deployment.created_at),
        "updated_at": iso(deployment.updated_at),
        "statuses_url": f"{base}/deployments/{deployment.id}/statuses",
        "repository_url": base,
        "creator": user_json(api, deployment.creator),
        "sha": deployment.sha,
        "ref": deployment.ref,
        "payload": deployment.payload,
        "transient_environment": deployment.transient_environment,
        "production_environment": deployment.production_environment,
        "performed_via_github_app": None,
    }


def deployment_status_json(
    api: str, repo: Repo, deployment: Deployment, status: DeploymentStatus
) -> JSON:
    base = f"{api}/repos/{repo.full_name}"
    deployment_url = f"{base}/deployments/{deployment.id}"
    return {
        "url": f"{deployment_url}/statuses/{status.id}",
        "id": status.id,
        "node_id": node_id("DeploymentStatus", status.id),
        "state": status.state,
        "creator": user_json(api, status.creator),
        "description": status.description,
        "environment": status.environment,
        # log_url replaced target_url; GitHub still returns both with the same value.
        "target_url": status.log_url,
        "created_at": iso(status.created_at),
        "updated_at": iso(status.created_at),
        "deployment_url": deployment_url,
        "repository_url": base,
        "environment_url": status.environment_url,
        "log_url": status.log_url,
        "performed_via_github_app": None,
    }


def commit_status_json(api: str, repo: Repo, sha: str, status: CommitStatus) -> JSON:
    return {
        "url": f"{api}/repos/{repo.full_name}/statuses/{sha}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{status.creator.id}?v=4",
        "id": status.id,
        "node_id": node_id("StatusContext", status.id),
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "context": status.context,
        "created_at": iso(status.created_at),
        "updated_at": iso(status.created_at),
        "creator": user_json(api, status.creator),
    }


def commit_json(api: str, repo: Repo, commit: Commit) -> JSON:
    base = f"{api}/repos/{repo.full_name}"
    person = {
        "name": commit.author.login,
        "email": f"{commit.author.login}@users.noreply.github.com",
    }
    person["date"] = iso(commit.date) or ""
    return {
        "sha": commit.sha,
        "node_id": node_id("Commit", f"{repo.id}:{commit.sha}"),
        "commit": {
            "author": person,
            "committer": person,
            "message": commit.message,
            "tree": {"sha": commit.sha, "url": f"{base}/git/trees/{commit.sha}"},
            "url": f"{base}/git/commits/{commit.sha}",
            "comment_count": 0,
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
            },
        },
        "url": f"{base}/commits/{commit.sha}",
        "html_url": f"{HTML}/{repo.full_name}/commit/{commit.sha}",
        "comments_url": f"{base}/commits/{commit.sha}/comments",
        "author": user_json(api, commit.author),
        "committer": user_json(api, commit.author),
        "parents": [],
        "stats": {"total": 0, "additions": 0, "deletions": 0},
        "files": [],
    }


def combined_state(statuses: list[CommitStatus]) -> str:
    states = {status.state for status in statuses}
    if states & {"error", "failure"}:
        return "failure"
    if not statuses or "pending" in states:
        return "pending"
    return "success"


def latest_by_context(statuses: list[CommitStatus]) -> list[CommitStatus]:
    latest: dict[str, CommitStatus] = {}
    for status in statuses:  # oldest first, so the newest per context wins
        latest[status.context] = status
    return sorted(latest.values(), key=lambda s: s.id, reverse=True)


def etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in header.split(","))


def int_arg(request: Request, name: str, default: int) -> int:
    try:
        return int(request.arg(name, str(default)))
    except ValueError:
        return default


def object_body(request: Request) -> JSON:
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise GitHubError(400, "Problems parsing JSON") from None
    if not isinstance(body, dict):
        raise GitHubError(
            422, f"Invalid request.\n\nFor 'links/0/schema', {body!r} is not an object."
        )
    return body


def typed(body: JSON, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """`body[name]` checked against `kind`, the way GitHub's schema validation answers."""
    if name not in body or body[name] is None:
        return default
    value = body[name]
    if not isinstance(value, kind):
        raise GitHubError(
            422, f"Invalid request.\n\nFor 'properties/{name}', {value!r} is not valid."
        )
    return value


@dataclass
class Call:
    """One API request as the handlers see it."""

    request: Request
    api: str  # the API base URL as the client sees it (scheme, Host, optional /api/v3)
    path: str  # without the /api/v3 prefix
    user: User | None  # None: anonymous


Handler = Callable[..., Response]
Route = tuple[str, re.Pattern[str], str, Handler]


def routes(prefix: str, table: list[tuple[str, str, str, Handler]]) -> list[Route]:
    return [(method, re.compile(prefix + path + "$"), kind, fn) for method, path, kind, fn in table]


REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
ISSUE = REPO + r"/issues/(?P<number>\d+)"
DEPLOYMENT = REPO + r"/deployments/(?P<id>\d+)"
CONTROL_PR = r"/prs/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?P<number>\d+)"


class GitHub:
    """The emulated GitHub; call it with a `Request` (it is the app given to `serve`)."""

    def __init__(
        self,
        token: str,
        webhook_secret: str,
        webhook_url: str | None = None,
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
        *,
        login: str = "envportal-bot",
        api_url: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.token = token
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.rate_limit = rate_limit
        self.clock = clock
        # Webhook payloads and control-method results need URLs without a request at hand: the
        # fixed `api_url` when given, else the base URL of the latest request.
        self.api_url = api_url
        self.retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0)
        self.deliveries: list[JSON] = []

        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        # Seeded so a run's faults and shas are reproducible; nothing here is a secret.
        self._rng = rng or random.Random(0)  # noqa: S311
        self.hook_id = 100_000_000 + self._rng.randrange(10**8)
        self._ids: Counter[str] = Counter()
        self._users: dict[str, User] = {}
        self._repos: dict[str, Repo] = {}  # lower-cased full name -> repo
        self._usage: dict[str, tuple[int, int]] = {}  # identity -> (window start, used)
        self._error_rate = 0.0
        self._latency = 0.0
        self._exhausted = False
        self._stats: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._last_api = "https://api.github.com"
        self._me = self._user(login)

        self._pending = 0
        self._queue: queue.Queue[tuple[JSON, str, bytes, dict[str, str]] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._deliver_loop, name="sandbox-github-webhooks", daemon=True
        )
        self._thread.start()

        self._routes = routes(
            "",
            [
                ("GET", r"/user", "user", self._get_me),
                ("GET", r"/users/(?P<login>[^/]+)", "users", self._get_user),
                ("GET", REPO, "repo", self._get_repo),
                ("GET", REPO + r"/pulls", "pulls.list", self._list_pulls),
                ("GET", REPO + r"/pulls/(?P<number>\d+)", "pulls.get", self._get_pull),
                ("GET", ISSUE, "issues.get", self._get_issue),
                ("GET", ISSUE + r"/labels", "labels.list_issue", self._issue_labels),
                ("POST", ISSUE + r"/labels", "labels.add", self._add_labels),
                ("PUT", ISSUE + r"/labels", "labels.set", self._set_labels),
                ("DELETE", ISSUE + r"/labels", "labels.clear", self._clear_labels),
                ("DELETE", ISSUE + r"/labels/(?P<name>.+)", "labels.remove", self._remove_label),
                ("GET", REPO + r"/labels", "labels.list", self._list_labels),
                ("GET", REPO + r"/labels/(?P<name>.+)", "labels.get", self._get_label),
                ("GET", ISSUE + r"/comments", "comments.list", self._list_comments),
                ("POST", ISSUE + r"/comments", "comments.create", self._create_comment),
                ("GET", REPO + r"/issues/comments/(?P<id>\d+)", "comments.get", self._get_comment),
                (
                    "PATCH",
                    REPO + r"/issues/comments/(?P<id>\d+)",
                    "comments.edit",
                    self._edit_comment,
                ),
                (
                    "DELETE",
                    REPO + r"/issues/comments/(?P<id>\d+)",
                    "comments.delete",
                    self._delete_comment,
                ),
                ("GET", REPO + r"/deployments", "deployments.list", self._list_deployments),
                ("POST", REPO + r"/deployments", "deployments.create", self._create_deployment),
                ("GET", DEPLOYMENT, "deployments.get", self._get_deployment),
                ("GET", DEPLOYMENT + r"/statuses", "statuses.list", self._list_deployment_statuses),
                (
                    "POST",
                    DEPLOYMENT + r"/statuses",
                    "statuses.create",
                    self._create_deployment_status,
                ),
                (
                    "GET",
                    DEPLOYMENT + r"/statuses/(?P<sid>\d+)",
                    "statuses.get",
                    self._get_deployment_status,
                ),
                (
                    "GET",
                    REPO + r"/commits/(?P<ref>.+)/status",
                    "commits.status",
                    self._combined_status,
                ),
                ("GET", REPO + r"/commits/(?P<ref>.+)", "commits.get", self._get_commit),
                (
                    "POST",
                    REPO + r"/statuses/(?P<sha>[^/]+)",
                    "commit_statuses.create",
                    self._create_status,
                ),
            ],
        )
        self._control_routes = routes(
            "/_sandbox",
            [
                ("POST", r"/repos", "", self._control_add_repo),
                ("POST", r"/prs", "", self._control_open_pr),
                ("GET", r"/prs/(?P<owner>[^/]+)/(?P<repo>[^/]+)", "", self._control_list_open),
                ("POST", CONTROL_PR + r"/(?P<action>[a-z]+)", "", self._control_pr_action),
                ("DELETE", CONTROL_PR + r"/labels/(?P<label>.+)", "", self._control_remove_label),
                (
                    "POST",
                    r"/statuses/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?P<sha>[^/]+)",
                    "",
                    self._control_status,
                ),
                ("POST", r"/faults", "", self._control_faults),
                ("GET", r"/stats", "", self._control_stats),
                ("DELETE", r"/stats", "", self._control_reset_stats),
                ("GET", r"/deliveries", "", self._control_deliveries),
                ("POST", r"/webhook", "", self._control_webhook),
                ("POST", r"/ping", "", self._control_ping),
            ],
        )

    # ------------------------------------------------------------------ state & control API

    def add_repo(
        self, owner: str, name: str, default_branch: str = "main", private: bool = False
    ) -> JSON:
        with self._lock:
            if f"{owner}/{name}".lower() in self._repos:
                raise invalid("Repository", "name", "custom", "name already exists on this account")
            now = self.clock()
            repo = Repo(
                id=self._next_id("repo", 600_000_000),
                owner=self._user(owner),
                name=name,
                default_branch=default_branch,
                private=private,
                created_at=now,
                updated_at=now,
                pushed_at=now,
            )
            for label_name, color, description in DEFAULT_LABELS:
                self._label(repo, label_name, color, description, default=True)
            repo.branches[default_branch] = self._commit(repo, repo.owner, "Initial commit")
            self._repos[repo.full_name.lower()] = repo
            return self._repo_json(self._public_api(), repo)

    def open_pr(
        self,
        owner: str,
        repo: str,
        branch: str,
        title: str,
        author: str,
        labels: tuple[str, ...] | list[str] = (),
        base: str = "main",
        draft: bool = False,
        body: str = "",
    ) -> JSON:
        with self._lock:
            r = self._repo(owner, repo)
            if base not in r.branches:
                raise invalid("PullRequest", "base")
            for other in r.pulls.values():
                if other.state == "open" and (other.head_ref, other.base_ref) == (branch, base):
                    message = f"A pull request already exists for {r.owner.login}:{branch}."
                    raise invalid("PullRequest", "head", "custom", message)
            user = self._user(author)
            now = self.clock()
            sha = self._commit(r, user, title)
            r.branches[branch] = sha
            pull = Pull(
                id=self._next_id("pull", 1_800_000_000),
                issue_id=self._next_id("issue", 2_400_000_000),
                number=r.next_number,
                title=title,
                body=body,
                user=user,
                head_ref=branch,
                head_sha=sha,
                base_ref=base,
                base_sha=r.branches[base],
                draft=draft,
                created_at=now,
                updated_at=now,
                merge_commit_sha=self._sha(),
            )
            r.next_number += 1
            r.pulls[pull.number] = pull
            r.pushed_at = r.updated_at = now
            self._emit(r, pull, "opened", user)
            for name in labels:
                self._add_label(r, pull, name, user)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def push(self, owner: str, repo: str, number: int, sha: str | None = None) -> str:
        """A new commit on the PR's head branch (action `synchronize`); returns its sha."""
        with self._lock:
            r, pull = self._open_pull(owner, repo, number)
            before = pull.head_sha
            new = sha or self._sha()
            r.commits[new] = Commit(new, pull.user, self.clock(), f"Update {pull.head_ref}")
            pull.head_sha = r.branches[pull.head_ref] = new
            pull.commits += 1
            pull.updated_at = r.pushed_at = self.clock()
            self._emit(r, pull, "synchronize", pull.user, before=before, after=new)
            return new

    def add_labels(self, owner: str, repo: str, number: int, *labels: str) -> JSON:
        with self._lock:
            r, pull = self._pull_of(owner, repo, number)
            for name in labels:
                self._add_label(r, pull, name, pull.user)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def remove_label(self, owner: str, repo: str, number: int, label: str) -> JSON:
        with self._lock:
            r, pull = self._pull_of(owner, repo, number)
            self._remove_label_from(r, pull, label, pull.user)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def edit(
        self,
        owner: str,
        repo: str,
        number: int,
        title: str | None = None,
        body: str | None = None,
    ) -> JSON:
        with self._lock:
            r, pull = self._pull_of(owner, repo, number)
            changes: JSON = {}
            if title is not None and title != pull.title:
                changes["title"] = {"from": pull.title}
                pull.title = title
            if body is not None and body != pull.body:
                changes["body"] = {"from": pull.body}
                pull.body = body
            if changes:
                pull.updated_at = self.clock()
                self._emit(r, pull, "edited", pull.user, changes=changes)
            return self._pull_json(self._public_api(), r, pull, full=True)

    @overload
    def close(self) -> None: ...

    @overload
    def close(self, owner: str, repo: str, number: int) -> JSON: ...

    def close(
        self, owner: str | None = None, repo: str | None = None, number: int | None = None
    ) -> JSON | None:
        """`close(owner, repo, number)` closes a PR unmerged; `close()` stops webhook delivery."""
        if owner is None or repo is None or number is None:
            self.shutdown()
            return None
        with self._lock:
            r, pull = self._open_pull(owner, repo, number)
            self._close(r, pull, merged=False)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def merge(self, owner: str, repo: str, number: int) -> JSON:
        with self._lock:
            r, pull = self._open_pull(owner, repo, number)
            self._close(r, pull, merged=True)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def reopen(self, owner: str, repo: str, number: int) -> JSON:
        with self._lock:
            r, pull = self._pull_of(owner, repo, number)
            if pull.state == "open" or pull.merged:
                raise invalid("PullRequest", "state", "custom", "state cannot be changed.")
            pull.state = "open"
            pull.closed_at = None
            pull.closed_by = None
            pull.updated_at = self.clock()
            self._emit(r, pull, "reopened", pull.user)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def list_open(self, owner: str, repo: str) -> list[JSON] | None:
        """Open PRs, newest first, shaped like `GET /pulls` (no HTTP, no rate limit); None
        for an unknown repository (where the API answers 404)."""
        with self._lock:
            r = self._repos.get(f"{owner}/{repo}".lower())
            if r is None:
                return None
            api = self._public_api()
            pulls = sorted(r.pulls.values(), key=lambda p: p.number, reverse=True)
            return [self._pull_json(api, r, p) for p in pulls if p.state == "open"]

    def get_pr(self, owner: str, repo: str, number: int) -> JSON:
        with self._lock:
            r, pull = self._pull_of(owner, repo, number)
            return self._pull_json(self._public_api(), r, pull, full=True)

    def list_deployments(self, owner: str, repo: str) -> list[JSON]:
        """Deployments, newest first, with the fields the REST shape leaves out and statuses."""
        with self._lock:
            r = self._repo(owner, repo)
            api = self._public_api()
            result = []
            for d in sorted(r.deployments.values(), key=lambda d: d.id, reverse=True):
                data = deployment_json(api, r, d)
                data["auto_merge"] = d.auto_merge
                data["required_contexts"] = d.required_contexts
                data["statuses"] = [
                    deployment_status_json(api, r, d, s) for s in reversed(d.statuses)
                ]
                result.append(data)
            return result

    def set_commit_status(
        self,
        owner: str,
        repo: str,
        sha: str,
        state: str,
        context: str = "default",
        description: str | None = None,
        target_url: str | None = None,
    ) -> JSON:
        """A commit status as CI would post it (`POST /repos/{o}/{r}/statuses/{sha}`)."""
        with self._lock:
            r = self._repo(owner, repo)
            status = self._add_commit_status(
                r, sha, state, context, description, target_url, self._me
            )
            return commit_status_json(self._public_api(), r, sha, status)

    def set_faults(
        self, error_rate: float = 0.0, latency: float = 0.0, exhausted: bool = False
    ) -> None:
        """Answer `error_rate` of API requests with 502, delay each by `latency` seconds, and
        while `exhausted` treat every budget as spent."""
        with self._lock:
            self._error_rate = error_rate
            self._latency = latency
            self._exhausted = exhausted

    @property
    def stats(self) -> JSON:
        with self._lock:
            return {
                "requests": self._stats["requests"],
                "not_modified": self._stats["not_modified"],
                "rate_limited": self._stats["rate_limited"],
                "faults": self._stats["faults"],
                "by_kind": dict(self._kinds),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            self._kinds.clear()

    def set_webhook_url(self, url: str | None) -> None:
        with self._lock:
            self.webhook_url = url

    def ping(self, owner: str | None = None, repo: str | None = None) -> str | None:
        """Send GitHub's `ping` event (the one sent when a hook is created); returns its id."""
        with self._lock:
            api = self._public_api()
            hook_url = f"{api}/repos/{owner}/{repo}/hooks/{self.hook_id}"
            payload: JSON = {
                "zen": "Keep it logically awesome.",
                "hook_id": self.hook_id,
                "hook": {
                    "type": "Repository",
                    "id": self.hook_id,
                    "name": "web",
                    "active": True,
                    "events": ["pull_request"],
                    "config": {
                        "content_type": "json",
                        "insecure_ssl": "0",
                        "url": self.webhook_url,
                    },
                    "updated_at": iso(self.clock()),
                    "created_at": iso(self.clock()),
                    "url": hook_url,
                    "test_url": f"{hook_url}/test",
                    "ping_url": f"{hook_url}/pings",
                    "deliveries_url": f"{hook_url}/deliveries",
                    "last_response": {"code": None, "status": "unused", "message": None},
                },
            }
            target = 0
            if owner is not None and repo is not None:
                r = self._repo(owner, repo)
                payload["repository"] = self._repo_json(api, r)
                payload["sender"] = user_json(api, r.owner)
                target = r.id
            return self._enqueue("ping", payload, target)

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Block until every queued webhook is delivered or given up; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def shutdown(self) -> None:
        """Stop the webhook delivery thread (queued deliveries are dropped)."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ HTTP entry point

    def __call__(self, request: Request) -> Response:
        path, prefix = request.path, ""
        if path == "/api/v3" or path.startswith("/api/v3/"):
            path, prefix = path.removeprefix("/api/v3") or "/", "/api/v3"
        scheme = request.headers.get("x-forwarded-proto", "http")
        api = f"{scheme}://{request.headers.get('host', 'localhost')}{prefix}"
        if path.startswith("/_sandbox/"):
            return self._control(request, path, api)
        with self._lock:
            latency = self._latency
        if latency:
            time.sleep(latency)  # outside the lock: slow answers, not a serialized server
        with self._lock:
            return self._api(request, path, api)

    def _api(self, request: Request, path: str, api: str) -> Response:
        self._last_api = api
        self._stats["requests"] += 1
        path = self._resolve_repository_id(path)
        method = "GET" if request.method == "HEAD" else request.method
        route, params = self._route(self._routes, method, path)
        kind = "rate_limit" if path == "/rate_limit" else route[2] if route else "unknown"
        self._kinds[kind] += 1

        user, authenticated = self._authenticate(request)
        identity, limit = (
            (user.login, self.rate_limit) if user else (f"ip:{request.client}", ANONYMOUS_LIMIT)
        )
        if not authenticated:
            self._spend(identity)  # GitHub counts failed logins against the IP's budget
            return self._finish(GitHubError(401, "Bad credentials").response(), identity, limit)
        if self._error_rate and self._rng.random() < self._error_rate:
            self._stats["faults"] += 1
            return self._finish(Response.json({"message": "Server Error"}, 502), identity, limit)
        if path == "/rate_limit":  # never counts against the limit
            return self._finish(
                Response.json(self._rate_limit_json(identity, limit)), identity, limit
            )

        call = Call(request, api, path, user)
        if method == "GET":
            # Reads are answered first: a 304 costs nothing, even with the budget spent.
            response = self._handle(route, params, call)
            if response.status == 200:
                self._add_cache_headers(response)
                if self._not_modified(request, response):
                    self._stats["not_modified"] += 1
                    return self._finish(Response(304, b"", response.headers), identity, limit)
        if self._remaining(identity, limit) == 0:
            self._stats["rate_limited"] += 1
            who = f"user ID {user.id}" if user else request.client
            message = f"API rate limit exceeded for {who}."
            if not user:
                message += (
                    " (But here's the good news: Authenticated requests get a higher rate limit."
                    " Check out the documentation for more details.)"
                )
            data = {"message": message, "documentation_url": RATE_LIMIT_DOCS}
            return self._finish(Response.json(data, 403), identity, limit)
        self._spend(identity)
        if method != "GET":
            if user is None:
                response = GitHubError(401, "Requires authentication").response()
            else:
                response = self._handle(route, params, call)
        return self._finish(response, identity, limit)

    def _handle(self, route: Route | None, params: dict[str, str], call: Call) -> Response:
        if route is None:
            return not_found().response()
        try:
            return route[3](call, **params)
        except GitHubError as error:
            return error.response()

    def _route(
        self, table: list[Route], method: str, path: str
    ) -> tuple[Route | None, dict[str, str]]:
        for route in table:
            match = route[1].match(path)
            if match and route[0] == method:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
        return None, {}

    def _resolve_repository_id(self, path: str) -> str:
        # /repositories/{id}/... is GitHub's id-based alias of /repos/{owner}/{repo}/...
        match = re.match(r"/repositories/(\d+)(/.*)?$", path)
        if match:
            for repo in self._repos.values():
                if repo.id == int(match.group(1)):
                    return f"/repos/{repo.full_name}{match.group(2) or ''}"
        return path

    def _authenticate(self, request: Request) -> tuple[User | None, bool]:
        """(user, ok): `Authorization: token X`, `Bearer X` or Basic with X as the password."""
        header = request.headers.get("authorization", "").strip()
        if not header:
            return None, True
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "basic":
            try:
                credential = base64.b64decode(credential).decode().partition(":")[2]
            except ValueError:
                return None, False
        elif scheme.lower() not in ("token", "bearer"):
            return None, False
        if hmac.compare_digest(credential.encode(), self.token.encode()):
            return self._me, True
        return None, False

    # Rate limit: a budget per identity (the token's user, or the client IP) per clock hour.

    def _window(self) -> int:
        return int(self.clock() // WINDOW) * WINDOW

    def _used(self, identity: str) -> int:
        start, used = self._usage.get(identity, (0, 0))
        return used if start == self._window() else 0

    def _remaining(self, identity: str, limit: int) -> int:
        return 0 if self._exhausted else max(0, limit - self._used(identity))

    def _spend(self, identity: str) -> None:
        self._usage[identity] = (self._window(), self._used(identity) + 1)

    def _rate_json(self, identity: str, limit: int) -> JSON:
        remaining = self._remaining(identity, limit)
        return {
            "limit": limit,
            "used": limit - remaining,
            "remaining": remaining,
            "reset": self._window() + WINDOW,
            "resource": "core",
        }

    def _rate_limit_json(self, identity: str, core_limit: int) -> JSON:
        core = self._rate_json(identity, core_limit)
        authenticated = core_limit != ANONYMOUS_LIMIT
        minute = int(self.clock()) + 60
        others = {
            "search": 30 if authenticated else 10,
            "graphql": 5000 if authenticated else 0,
            "integration_manifest": 5000,
            "source_import": 100,
            "code_scanning_upload": 1000,
            "actions_runner_registration": 10000,
            "scim": 15000,
            "dependency_snapshots": 100,
            "code_search": 10,
        }
        resources = {"core": core}
        for name, limit in others.items():
            resources[name] = {
                "limit": limit,
                "used": 0,
                "remaining": limit,
                "reset": minute if name in ("search", "code_search") else core["reset"],
                "resource": name,
            }
        return {"resources": resources, "rate": core}

    def _finish(self, response: Response, identity: str, limit: int) -> Response:
        rate = self._rate_json(identity, limit)
        response.headers.update(
            {
                "X-RateLimit-Limit": str(rate["limit"]),
                "X-RateLimit-Remaining": str(rate["remaining"]),
                "X-RateLimit-Used": str(rate["used"]),
                "X-RateLimit-Reset": str(rate["reset"]),
                "X-RateLimit-Resource": "core",
                "X-GitHub-Media-Type": "github.v3; format=json",
                "X-GitHub-Api-Version-Selected": "2022-11-28",
                "X-GitHub-Request-Id": uuid.uuid4().hex[:20].upper(),
            }
        )
        if identity == self._me.login:
            response.headers["X-OAuth-Scopes"] = "repo"
        return response

    def _add_cache_headers(self, response: Response) -> None:
        body = response.body if isinstance(response.body, bytes) else b""
        response.headers["ETag"] = f'W/"{hashlib.sha256(body).hexdigest()}"'
        response.headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
        response.headers["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"

    def _not_modified(self, request: Request, response: Response) -> bool:
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None:
            return etag_matches(if_none_match, response.headers["ETag"])
        since, modified = (
            request.headers.get("if-modified-since"),
            response.headers.get("Last-Modified"),
        )
        if since and modified:
            try:
                return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
        return False

    # ------------------------------------------------------------------ REST handlers

    def _get_me(self, call: Call) -> Response:
        if call.user is None:
            raise GitHubError(401, "Requires authentication")
        data = profile_json(call.api, call.user)
        data.update(
            {
                "private_gists": 0,
                "total_private_repos": 0,
                "owned_private_repos": 0,
                "disk_usage": 0,
                "collaborators": 0,
                "two_factor_authentication": True,
                "plan": {
                    "name": "free",
                    "space": 976562499,
                    "collaborators": 0,
                    "private_repos": 10000,
                },
            }
        )
        return Response.json(data)

    def _get_user(self, call: Call, login: str) -> Response:
        user = self._users.get(login.lower())
        if user is None:
            raise not_found()
        return Response.json(profile_json(call.api, user))

    def _get_repo(self, call: Call, owner: str, repo: str) -> Response:
        r = self._repo(owner, repo, call)
        data = self._repo_json(call.api, r)
        data.update({"network_count": 0, "subscribers_count": 0})
        if call.user:
            permissions = ("admin", "maintain", "push", "triage", "pull")
            data["permissions"] = dict.fromkeys(permissions, True)
        return self._modified(Response.json(data), r.updated_at)

    def _list_pulls(self, call: Call, owner: str, repo: str) -> Response:
        r = self._repo(owner, repo, call)
        state = call.request.arg("state", "open")
        if state not in ("open", "closed", "all"):
            raise invalid("PullRequest", "state")
        pulls = [p for p in r.pulls.values() if state in ("all", p.state)]
        head, base = call.request.arg("head"), call.request.arg("base")
        if head:
            # `user:ref-name`; the user part is the head repository's owner.
            user, _, ref = head.rpartition(":")
            pulls = [p for p in pulls if p.head_ref == ref and user in ("", r.owner.login)]
        if base:
            pulls = [p for p in pulls if p.base_ref == base]
        sort = call.request.arg("sort", "created")
        direction = call.request.arg("direction", "desc" if sort == "created" else "asc")
        keys: dict[str, Callable[[Pull], Any]] = {
            "updated": lambda p: (p.updated_at, p.number),
            "popularity": lambda p: (p.comments, p.number),
            "long-running": lambda p: (p.created_at, p.number),
        }
        pulls.sort(key=keys.get(sort, lambda p: p.number), reverse=direction == "desc")
        return self._page(call, pulls, lambda p: self._pull_json(call.api, r, p))

    def _get_pull(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        return self._modified(
            Response.json(self._pull_json(call.api, r, pull, full=True)), pull.updated_at
        )

    def _get_issue(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        return self._modified(Response.json(self._issue_json(call.api, r, pull)), pull.updated_at)

    def _issue_labels(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        return self._page(call, pull.labels, lambda label: label_json(call.api, r, label))

    def _label_names(self, call: Call) -> list[str]:
        # The body is {"labels": [...]} or a bare list; items are names or {"name": ...}.
        try:
            body = json.loads(call.request.body or b"{}")
        except ValueError:
            raise GitHubError(400, "Problems parsing JSON") from None
        items = body.get("labels") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise invalid("Label", "labels", "missing_field")
        names = []
        for item in items:
            name = item.get("name") if isinstance(item, dict) else item
            if not isinstance(name, str) or not name.strip():
                raise invalid("Label", "name")
            names.append(name.strip())
        return names

    def _add_labels(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        for name in self._label_names(call):
            self._add_label(r, pull, name, self._caller(call))
        return Response.json([label_json(call.api, r, label) for label in pull.labels])

    def _set_labels(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        names = self._label_names(call)
        wanted = {name.lower() for name in names}
        for label in list(pull.labels):
            if label.name.lower() not in wanted:
                self._remove_label_from(r, pull, label.name, self._caller(call))
        for name in names:
            self._add_label(r, pull, name, self._caller(call))
        return Response.json([label_json(call.api, r, label) for label in pull.labels])

    def _clear_labels(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        for label in list(pull.labels):
            self._remove_label_from(r, pull, label.name, self._caller(call))
        return Response(204)

    def _remove_label(self, call: Call, owner: str, repo: str, number: str, name: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        self._remove_label_from(r, pull, name, self._caller(call))
        return Response.json([label_json(call.api, r, label) for label in pull.labels])

    def _list_labels(self, call: Call, owner: str, repo: str) -> Response:
        r = self._repo(owner, repo, call)
        labels = sorted(r.labels.values(), key=lambda label: label.id)
        return self._page(call, labels, lambda label: label_json(call.api, r, label))

    def _get_label(self, call: Call, owner: str, repo: str, name: str) -> Response:
        r = self._repo(owner, repo, call)
        label = r.labels.get(name.lower())
        if label is None:
            raise not_found()
        return Response.json(label_json(call.api, r, label))

    def _list_comments(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        comments = sorted(
            (c for c in r.comments.values() if c.number == pull.number), key=lambda c: c.id
        )
        return self._page(call, comments, lambda c: comment_json(call.api, r, c))

    def _create_comment(self, call: Call, owner: str, repo: str, number: str) -> Response:
        r = self._repo(owner, repo, call)
        pull = self._pull(r, number)
        body = typed(object_body(call.request), "body", str)
        if body is None:
            raise invalid("IssueComment", "body", "missing_field")
        now = self.clock()
        comment = Comment(
            self._next_id("comment", 3_000_000_000), pull.number, self._caller(call), body, now, now
        )
        r.comments[comment.id] = comment
        pull.comments += 1
        pull.updated_at = now
        data = comment_json(call.api, r, comment)
        return Response.json(data, 201, {"Location": data["url"]})

    def _get_comment(self, call: Call, owner: str, repo: str, id: str) -> Response:
        r = self._repo(owner, repo, call)
        comment = self._comment(r, id)
        return self._modified(Response.json(comment_json(call.api, r, comment)), comment.updated_at)

    def _edit_comment(self, call: Call, owner: str, repo: str, id: str) -> Response:
        r = self._repo(owner, repo, call)
        comment = self._comment(r, id)
        body = typed(object_body(call.request), "body", str)
        if body is None:
            raise invalid("IssueComment", "body", "missing_field")
        comment.body = body
        comment.updated_at = self.clock()
        return Response.json(comment_json(call.api, r, comment))

    def _delete_comment(self, call: Call, owner: str, repo: str, id: str) -> Response:
        r = self._repo(owner, repo, call)
        comment = self._comment(r, id)
        del r.comments[comment.id]
        pull = r.pulls.get(comment.number)
        if pull is not None:
            pull.comments = max(0, pull.comments - 1)
        return Response(204)

    def _list_deployments(self, call: Call, owner: str, repo: str) -> Response:
        r = self._repo(owner, repo, call)
        deployments = sorted(r.deployments.values(), key=lambda d: d.id, reverse=True)
        for name in ("sha", "ref", "task", "environment"):
            wanted = call.request.arg(name)
            if wanted:
                deployments = [d for d in deployments if getattr(d, name) == wanted]
        return self._page(call, deployments, lambda d: deployment_json(call.api, r, d))

    def _create_deployment(self, call: Call, owner: str, repo: str) -> Response:
        r = self._repo(owner, repo, call)
        body = object_body(call.request)
        ref = typed(body, "ref", str)
        if ref is None:
            raise GitHubError(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
        sha = self._resolve(r, ref)
        if sha is None:
            raise GitHubError(422, f"No ref found for: {ref}")
        environment = typed(body, "environment", str, "production")
        payload = typed(body, "payload", (dict, str), {})
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except ValueError:
                raise invalid("Deployment", "payload") from None
        required = typed(body, "required_contexts", list)
        self._check_required_contexts(r, ref, sha, required)
        now = self.clock()
        deployment = Deployment(
            id=self._next_id("deployment", 1_500_000_000),
            sha=sha,
            ref=ref,
            task=typed(body, "task", str, "deploy"),
            payload=payload,
            environment=environment,
            original_environment=environment,
            description=typed(body, "description", str),
            creator=self._caller(call),
            transient_environment=typed(body, "transient_environment", bool, False),
            production_environment=typed(
                body, "production_environment", bool, environment == "production"
            ),
            auto_merge=typed(body, "auto_merge", bool, True),
            required_contexts=required,
            created_at=now,
            updated_at=now,
        )
        r.deployments[deployment.id] = deployment
        data = deployment_json(call.api, r, deployment)
        return Response.json(data, 201, {"Location": data["url"]})

    def _check_required_contexts(
        self, repo: Repo, ref: str, sha: str, required: list[str] | None
    ) -> None:
        # Default: every context reported on the commit must be green; [] skips the check.
        latest = {s.context: s.state for s in latest_by_context(repo.statuses.get(sha, []))}
        contexts = list(latest) if required is None else required
        failing = [c for c in contexts if latest.get(c) != "success"]
        if failing:
            raise GitHubError(
                409,
                f"Conflict: Commit status checks failed for {ref}.",
                [
                    {
                        "contexts": [
                            {"context": c, "state": latest.get(c, "missing")} for c in failing
                        ],
                        "resource": "Deployment",
                        "field": "required_contexts",
                        "code": "invalid",
                    }
                ],
            )

    def _get_deployment(self, call: Call, owner: str, repo: str, id: str) -> Response:
        r = self._repo(owner, repo, call)
        deployment = self._deployment(r, id)
        data = deployment_json(call.api, r, deployment)
        return self._modified(Response.json(data), deployment.updated_at)

    def _list_deployment_statuses(self, call: Call, owner: str, repo: str, id: str) -> Response:
        r = self._repo(owner, repo, call)
        d = self._deployment(r, id)
        statuses = list(reversed(d.statuses))
        return self._page(call, statuses, lambda s: deployment_status_json(call.api, r, d, s))

    def _get_deployment_status(
        self, call: Call, owner: str, repo: str, id: str, sid: str
    ) -> Response:
        r = self._repo(owner, repo, call)
        d = self._deployment(r, id)
        for status in d.statuses:
            if status.id == int(sid):
                return Response.json(deployment_status_json(call.api, r, d, status))
        raise not_found()

    def _create_deployment_status(self, call: Call, owner: str, repo: str, id: str) -> Response:
        r = self._repo(owner, repo, call)
        d = self._deployment(r, id)
        body = object_body(call.request)
        state = typed(body, "state", str)
        if state not in DEPLOYMENT_STATES:
            raise invalid(
                "DeploymentStatus", "state", "custom", "state is not included in the list"
            )
        description = typed(body, "description", str, "")
        if len(description) > 140:
            raise invalid(
                "DeploymentStatus",
                "description",
                "custom",
                "description is too long (maximum is 140 characters)",
            )
        # The environment can be changed when posting a status; it moves the deployment.
        d.environment = typed(body, "environment", str, d.environment)
        log_url = typed(body, "log_url", str) or typed(body, "target_url", str, "")
        status = self._add_deployment_status(
            d,
            state,
            self._caller(call),
            description,
            typed(body, "environment_url", str, ""),
            log_url,
        )
        if state == "success" and typed(body, "auto_inactive", bool, True):
            # FACTS 6.4: prior non-transient, non-production deployments of the same
            # environment become inactive.
            for other in r.deployments.values():
                if (
                    other.id < d.id
                    and other.environment == d.environment
                    and not other.transient_environment
                    and not other.production_environment
                    and (not other.statuses or other.statuses[-1].state != "inactive")
                ):
                    self._add_deployment_status(other, "inactive", status.creator, "", "", "")
        data = deployment_status_json(call.api, r, d, status)
        return Response.json(data, 201, {"Location": data["url"]})

    def _get_commit(self, call: Call, owner: str, repo: str, ref: str) -> Response:
        r = self._repo(owner, repo, call)
        sha = self._resolve(r, ref)
        if sha is None:
            raise GitHubError(422, f"No commit found for SHA: {ref}")
        return Response.json(commit_json(call.api, r, r.commits[sha]))

    def _combined_status(self, call: Call, owner: str, repo: str, ref: str) -> Response:
        r = self._repo(owner, repo, call)
        sha = self._resolve(r, ref)
        if sha is None:
            raise GitHubError(422, f"No commit found for SHA: {ref}")
        statuses = latest_by_context(r.statuses.get(sha, []))
        repository = {
            k: v for k, v in self._repo_json(call.api, r).items() if not k.endswith("_at")
        }
        data = {
            "state": combined_state(statuses),
            "statuses": [commit_status_json(call.api, r, sha, s) for s in statuses],
            "sha": sha,
            "total_count": len(statuses),
            "repository": repository,
            "commit_url": f"{call.api}/repos/{r.full_name}/commits/{sha}",
            "url": f"{call.api}/repos/{r.full_name}/commits/{sha}/status",
        }
        return Response.json(data)

    def _create_status(self, call: Call, owner: str, repo: str, sha: str) -> Response:
        r = self._repo(owner, repo, call)
        if sha not in r.commits:
            raise GitHubError(422, f"No commit found for SHA: {sha}")
        body = object_body(call.request)
        status = self._add_commit_status(
            r,
            sha,
            typed(body, "state", str),
            typed(body, "context", str, "default"),
            typed(body, "description", str),
            typed(body, "target_url", str),
            self._caller(call),
        )
        return Response.json(commit_status_json(call.api, r, sha, status), 201)

    # ------------------------------------------------------------------ control over HTTP

    def _control(self, request: Request, path: str, api: str) -> Response:
        with self._lock:
            self._last_api = api
        route, params = self._route(self._control_routes, request.method, path)
        if route is None:
            return not_found().response()
        try:
            return route[3](request, **params)
        except GitHubError as error:
            return error.response()
        except (KeyError, TypeError, ValueError) as error:
            return Response.json({"message": f"bad control request: {error!r}"}, 400)

    def _control_add_repo(self, request: Request) -> Response:
        body = object_body(request)
        data = self.add_repo(
            body["owner"],
            body["name"],
            body.get("default_branch", "main"),
            bool(body.get("private")),
        )
        return Response.json(data, 201)

    def _control_open_pr(self, request: Request) -> Response:
        body = object_body(request)
        data = self.open_pr(
            body["owner"],
            body["repo"],
            body["branch"],
            body["title"],
            body["author"],
            labels=tuple(body.get("labels", ())),
            base=body.get("base", "main"),
            draft=bool(body.get("draft", False)),
            body=body.get("body", ""),
        )
        return Response.json(data, 201)

    def _control_list_open(self, request: Request, owner: str, repo: str) -> Response:
        return Response.json(self.list_open(owner, repo))

    def _control_pr_action(
        self, request: Request, owner: str, repo: str, number: str, action: str
    ) -> Response:
        body = object_body(request)
        n = int(number)
        if action == "push":
            return Response.json({"sha": self.push(owner, repo, n, body.get("sha"))})
        if action == "labels":
            return Response.json(self.add_labels(owner, repo, n, *body["labels"]))
        if action == "edit":
            return Response.json(self.edit(owner, repo, n, body.get("title"), body.get("body")))
        if action == "close":
            return Response.json(self.close(owner, repo, n))
        if action == "merge":
            return Response.json(self.merge(owner, repo, n))
        if action == "reopen":
            return Response.json(self.reopen(owner, repo, n))
        return not_found().response()

    def _control_remove_label(
        self, request: Request, owner: str, repo: str, number: str, label: str
    ) -> Response:
        return Response.json(self.remove_label(owner, repo, int(number), label))

    def _control_status(self, request: Request, owner: str, repo: str, sha: str) -> Response:
        body = object_body(request)
        data = self.set_commit_status(
            owner,
            repo,
            sha,
            body["state"],
            body.get("context", "default"),
            body.get("description"),
            body.get("target_url"),
        )
        return Response.json(data, 201)

    def _control_faults(self, request: Request) -> Response:
        body = object_body(request)
        self.set_faults(
            float(body.get("error_rate", 0.0)),
            float(body.get("latency", 0.0)),
            bool(body.get("exhausted", False)),
        )
        return Response.json(
            {"error_rate": self._error_rate, "latency": self._latency, "exhausted": self._exhausted}
        )

    def _control_stats(self, request: Request) -> Response:
        return Response.json(self.stats)

    def _control_reset_stats(self, request: Request) -> Response:
        self.reset_stats()
        return Response(204)

    def _control_deliveries(self, request: Request) -> Response:
        with self._lock:
            return Response.json([dict(d) for d in self.deliveries])

    def _control_webhook(self, request: Request) -> Response:
        self.set_webhook_url(object_body(request).get("url"))
        return Response.json({"url": self.webhook_url})

    def _control_ping(self, request: Request) -> Response:
        body = object_body(request)
        return Response.json({"id": self.ping(body.get("owner"), body.get("repo"))})

    # ------------------------------------------------------------------ state helpers

    def _next_id(self, kind: str, start: int) -> int:
        self._ids[kind] += 1
        return start + self._ids[kind]

    def _sha(self) -> str:
        return f"{self._rng.getrandbits(160):040x}"

    def _public_api(self) -> str:
        return self.api_url or self._last_api

    def _caller(self, call: Call) -> User:
        return call.user or self._me  # writes require a user; reads never ask

    def _user(self, login: str) -> User:
        user = self._users.get(login.lower())
        if user is None:
            user = User(login, self._next_id("user", 10_000_000), self.clock())
            self._users[login.lower()] = user
        return user

    def _repo(self, owner: str, name: str, call: Call | None = None) -> Repo:
        repo = self._repos.get(f"{owner}/{name}".lower())
        # GitHub hides private repositories from anonymous callers behind a 404.
        if repo is None or (repo.private and call is not None and call.user is None):
            raise not_found()
        return repo

    def _pull(self, repo: Repo, number: str | int) -> Pull:
        pull = repo.pulls.get(int(number))
        if pull is None:
            raise not_found()
        return pull

    def _pull_of(self, owner: str, repo: str, number: int) -> tuple[Repo, Pull]:
        r = self._repo(owner, repo)
        return r, self._pull(r, number)

    def _open_pull(self, owner: str, repo: str, number: int) -> tuple[Repo, Pull]:
        r, pull = self._pull_of(owner, repo, number)
        if pull.state != "open":
            raise invalid("PullRequest", "state", "custom", "pull request is closed")
        return r, pull

    def _comment(self, repo: Repo, id: str) -> Comment:
        comment = repo.comments.get(int(id))
        if comment is None:
            raise not_found()
        return comment

    def _deployment(self, repo: Repo, id: str) -> Deployment:
        deployment = repo.deployments.get(int(id))
        if deployment is None:
            raise not_found()
        return deployment

    def _commit(self, repo: Repo, author: User, message: str) -> str:
        sha = self._sha()
        repo.commits[sha] = Commit(sha, author, self.clock(), message)
        return sha

    def _resolve(self, repo: Repo, ref: str) -> str | None:
        """A branch name (or refs/heads/<name>) or a known commit sha -> the commit sha."""
        branch = ref.removeprefix("refs/heads/")
        if branch in repo.branches:
            return repo.branches[branch]
        return ref if ref in repo.commits else None

    def _label(
        self,
        repo: Repo,
        name: str,
        color: str = "ededed",
        description: str | None = None,
        default: bool = False,
    ) -> Label:
        # Label names match case-insensitively; unknown ones are created, as GitHub does.
        label = repo.labels.get(name.lower())
        if label is None:
            label = Label(self._next_id("label", 5_000_000_000), name, color, description, default)
            repo.labels[name.lower()] = label
        return label

    def _add_label(self, repo: Repo, pull: Pull, name: str, sender: User) -> None:
        label = self._label(repo, name)
        if label in pull.labels:
            return
        pull.labels.append(label)
        pull.labels.sort(key=lambda item: item.name.lower())
        pull.updated_at = self.clock()
        self._emit(repo, pull, "labeled", sender, label=label)

    def _remove_label_from(self, repo: Repo, pull: Pull, name: str, sender: User) -> None:
        for label in pull.labels:
            if label.name.lower() == name.lower():
                pull.labels.remove(label)
                pull.updated_at = self.clock()
                self._emit(repo, pull, "unlabeled", sender, label=label)
                return
        raise GitHubError(404, "Label does not exist")

    def _close(self, repo: Repo, pull: Pull, merged: bool) -> None:
        now = self.clock()
        pull.state = "closed"
        pull.closed_at = pull.updated_at = now
        pull.closed_by = pull.user
        if merged:
            pull.merged = True
            pull.merged_at = now
            pull.merged_by = pull.user
            merge_sha = pull.merge_commit_sha or self._sha()
            repo.commits[merge_sha] = Commit(
                merge_sha, pull.user, now, f"Merge pull request #{pull.number}"
            )
            repo.branches[pull.base_ref] = merge_sha
            repo.pushed_at = now
        self._emit(repo, pull, "closed", pull.user)

    def _add_deployment_status(
        self,
        deployment: Deployment,
        state: str,
        creator: User,
        description: str,
        environment_url: str,
        log_url: str,
    ) -> DeploymentStatus:
        now = self.clock()
        status = DeploymentStatus(
            id=self._next_id("deployment_status", 4_000_000_000),
            state=state,
            creator=creator,
            description=description,
            environment=deployment.environment,
            environment_url=environment_url,
            log_url=log_url,
            created_at=now,
        )
        deployment.statuses.append(status)
        deployment.updated_at = now
        return status

    def _add_commit_status(
        self,
        repo: Repo,
        sha: str,
        state: str | None,
        context: str,
        description: str | None,
        target_url: str | None,
        creator: User,
    ) -> CommitStatus:
        if state not in COMMIT_STATES:
            raise invalid("Status", "state", "custom", "state is not included in the list")
        status = CommitStatus(
            id=self._next_id("status", 30_000_000_000),
            state=state,
            context=context,
            description=description,
            target_url=target_url,
            creator=creator,
            created_at=self.clock(),
        )
        repo.statuses.setdefault(sha, []).append(status)
        return status

    # ------------------------------------------------------------------ rendering helpers

    def _repo_json(self, api: str, repo: Repo) -> JSON:
        open_count = sum(1 for p in repo.pulls.values() if p.state == "open")
        return repo_json(api, repo, open_count)

    def _part_json(self, api: str, repo: Repo, ref: str, sha: str) -> JSON:
        return {
            "label": f"{repo.owner.login}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": user_json(api, repo.owner),
            "repo": self._repo_json(api, repo),
        }

    def _pull_json(self, api: str, repo: Repo, pull: Pull, full: bool = False) -> JSON:
        """A pull request as `GET /pulls` lists it; `full` adds what `GET /pulls/{n}` adds."""
        base = f"{api}/repos/{repo.full_name}"
        url = f"{base}/pulls/{pull.number}"
        html = f"{HTML}/{repo.full_name}/pull/{pull.number}"
        data: JSON = {
            "url": url,
            "id": pull.id,
            "node_id": node_id("PullRequest", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{base}/issues/{pull.number}",
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": user_json(api, pull.user),
            "body": pull.body or None,
            "created_at": iso(pull.created_at),
            "updated_at": iso(pull.updated_at),
            "closed_at": iso(pull.closed_at),
            "merged_at": iso(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": [label_json(api, repo, label) for label in pull.labels],
            "milestone": None,
            "draft": pull.draft,
            "commits_url": f"{url}/commits",
            "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{base}/pulls/comments{{/number}}",
            "comments_url": f"{base}/issues/{pull.number}/comments",
            "statuses_url": f"{base}/statuses/{pull.head_sha}",
            "head": self._part_json(api, repo, pull.head_ref, pull.head_sha),
            "base": self._part_json(api, repo, pull.base_ref, pull.base_sha),
            "_links": {
                "self": {"href": url},
                "html": {"href": html},
                "issue": {"href": f"{base}/issues/{pull.number}"},
                "comments": {"href": f"{base}/issues/{pull.number}/comments"},
                "review_comments": {"href": f"{url}/comments"},
                "review_comment": {"href": f"{base}/pulls/comments{{/number}}"},
                "commits": {"href": f"{url}/commits"},
                "statuses": {"href": f"{base}/statuses/{pull.head_sha}"},
            },
            "author_association": association(repo, pull.user),
            "auto_merge": None,
            "active_lock_reason": None,
        }
        if full:
            is_open = pull.state == "open"
            data.update(
                {
                    "merged": pull.merged,
                    "mergeable": True if is_open else None,
                    "rebaseable": True if is_open else None,
                    "mergeable_state": ("draft" if pull.draft else "clean")
                    if is_open
                    else "unknown",
                    "merged_by": user_json(api, pull.merged_by) if pull.merged_by else None,
                    "comments": pull.comments,
                    "review_comments": 0,
                    "maintainer_can_modify": False,
                    "commits": pull.commits,
                    "additions": 0,
                    "deletions": 0,
                    "changed_files": 0,
                }
            )
        return data

    def _issue_json(self, api: str, repo: Repo, pull: Pull) -> JSON:
        """The issue every pull request also is (`GET /issues/{n}`)."""
        base = f"{api}/repos/{repo.full_name}"
        url = f"{base}/issues/{pull.number}"
        html = f"{HTML}/{repo.full_name}/pull/{pull.number}"
        return {
            "url": url,
            "repository_url": base,
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": html,
            "id": pull.issue_id,
            "node_id": node_id("Issue", pull.issue_id),
            "number": pull.number,
            "title": pull.title,
            "user": user_json(api, pull.user),
            "labels": [label_json(api, repo, label) for label in pull.labels],
            "state": pull.state,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": pull.comments,
            "created_at": iso(pull.created_at),
            "updated_at": iso(pull.updated_at),
            "closed_at": iso(pull.closed_at),
            "author_association": association(repo, pull.user),
            "active_lock_reason": None,
            "draft": pull.draft,
            "pull_request": {
                "url": f"{base}/pulls/{pull.number}",
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": iso(pull.merged_at),
            },
            "body": pull.body or None,
            "closed_by": user_json(api, pull.closed_by) if pull.closed_by else None,
            "reactions": reactions_json(f"{url}/reactions"),
            "timeline_url": f"{url}/timeline",
            "performed_via_github_app": None,
            "state_reason": ("completed" if pull.state == "closed" else None),
        }

    def _modified(self, response: Response, updated_at: float) -> Response:
        response.headers["Last-Modified"] = formatdate(updated_at, usegmt=True)
        return response

    def _page(self, call: Call, items: list[Any], render: Callable[[Any], JSON]) -> Response:
        """One page of `items` with GitHub's `Link` header (prev, next, last, first)."""
        per_page = min(max(int_arg(call.request, "per_page", 30), 1), 100)
        page = max(int_arg(call.request, "page", 1), 1)
        last = max(1, math.ceil(len(items) / per_page))
        links = []
        if page > 1:
            links.append((page - 1, "prev"))
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links.append((1, "first"))
        headers = {}
        if links:
            query = [
                (k, v) for k, values in call.request.query.items() if k != "page" for v in values
            ]
            headers["Link"] = ", ".join(
                f'<{call.api}{call.path}?{urlencode([*query, ("page", n)])}>; rel="{rel}"'
                for n, rel in links
            )
        start = (page - 1) * per_page
        return Response.json(
            [render(item) for item in items[start : start + per_page]], headers=headers
        )

    # ------------------------------------------------------------------ webhooks

    def _emit(self, repo: Repo, pull: Pull, action: str, sender: User, **extra: Any) -> None:
        """Queue a `pull_request` event for `pull` (nothing when no webhook URL is set)."""
        if not self.webhook_url:
            return
        api = self._public_api()
        payload: JSON = {"action": action, "number": pull.number}
        if "changes" in extra:
            payload["changes"] = extra["changes"]
        if "label" in extra:
            payload["label"] = label_json(api, repo, extra["label"])
        payload["pull_request"] = self._pull_json(api, repo, pull, full=True)
        if "before" in extra:
            payload["before"], payload["after"] = extra["before"], extra["after"]
        payload["repository"] = self._repo_json(api, repo)
        payload["sender"] = user_json(api, sender)
        self._enqueue("pull_request", payload, repo.id)

    def _enqueue(self, event: str, payload: JSON, target_id: int) -> str | None:
        url = self.webhook_url
        if not url or self._stopping.is_set():
            return None
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery: JSON = {
            "id": str(uuid.uuid4()),
            "event": event,
            "action": payload.get("action"),
            "status": None,
            "attempts": 0,
            "error": None,
            "url": url,
            "payload": payload,
        }
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/sandbox",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery["id"],  # the same on every retry
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Hook-Installation-Target-ID": str(target_id),
        }
        if self.webhook_secret:  # GitHub signs only when the hook has a secret
            sha1 = hmac.new(self.webhook_secret.encode(), body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature"] = f"sha1={sha1}"
            headers["X-Hub-Signature-256"] = signature(self.webhook_secret, body)
        self.deliveries.append(delivery)
        self._pending += 1
        self._queue.put((delivery, url, body, headers))
        return str(delivery["id"])

    def _deliver_loop(self) -> None:
        # One thread delivers in order, so a receiver sees `opened` before `labeled`.
        while True:
            item = self._queue.get()
            if item is None or self._stopping.is_set():
                return
            try:
                self._deliver(*item)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, delivery: JSON, url: str, body: bytes, headers: dict[str, str]) -> None:
        for attempt, delay in enumerate((0.0, *self.retry_delays), start=1):
            if delay and self._stopping.wait(delay):
                return
            status: int | None = None
            error: str | None = None
            try:
                status = requests.post(url, data=body, headers=headers, timeout=10).status_code
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                delivery.update(status=status, attempts=attempt, error=error)
            if status is not None and 200 <= status < 300:
                log.debug("webhook %s %s delivered to %s", delivery["id"], delivery["event"], url)
                return
            log.warning(
                "webhook %s %s/%s to %s failed (attempt %d): %s",
                delivery["id"],
                delivery["event"],
                delivery["action"],
                url,
                attempt,
                error or f"HTTP {status}",
            )
        log.error("webhook %s to %s given up after %d attempts", delivery["id"], url, attempt)
