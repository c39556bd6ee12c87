"""schemathesis against the OpenAPI document the API serves (/api/v1/openapi.json): requests
generated from the document, valid and invalid, to the webhook, the JSON API and the plugin
endpoint, each answered without a 5xx and as the document says (status, content type, schema).

With a user's token, the plugin token and environments to find; the webhook's deliveries are
unsigned or wrongly signed, so every one must be refused (tests/test_bad_input.py signs them).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import negative_data_rejection

from environments.models import ApiToken, Environment, PullRequest, Repository

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
PLUGIN_TOKEN = "plugin-token-for-schemathesis"


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """As Django's test client does: a request's end must not close the test's connection
    (the raw WSGI app would, and with it the test's transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def tokens(db, settings, django_user_model):
    from django.contrib.auth.models import Group

    settings.ARGOCD_PLUGIN_TOKEN = PLUGIN_TOKEN
    settings.GITHUB_WEBHOOK_SECRET = "webhook-secret"
    user = django_user_model.objects.create_user("ci")
    user.groups.set([Group.objects.get(name="platform")])
    repo = Repository.objects.create(
        owner="acme", name="shop", applicationsets=["shop"], pulls_synced_at=timezone.now()
    )
    pr = PullRequest.objects.create(repository=repo, number=1, title="<b>x</b>", branch="fix")
    Environment.objects.create(pull_request=pr, flavor="namespace", state="ready")
    _, raw = ApiToken.issue(user, "schemathesis")
    return {"token": raw, "plugin": PLUGIN_TOKEN}


@schema.parametrize()
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_documented_and_none_is_a_server_error(case, tokens):
    token = (
        tokens["plugin"] if case.operation.path == "/api/v1/getparams.execute" else tokens["token"]
    )
    headers = {"Authorization": f"Bearer {token}"}  # schemathesis tries wrong ones itself
    # Unknown query parameters are ignored, as HTTP APIs do: not a "schema-violating request
    # accepted". Every other check runs (no 5xx; status, content type, headers and body as
    # documented; a request with missing or wrong credentials refused).
    case.call_and_validate(headers=headers, excluded_checks=[negative_data_rejection])
