"""Settings come from the environment; production refuses insecure defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envportal.settings import database_from_url

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "k" + "x7Qp2LmZ9vR4tY8wE1uI6oA3sD5fG0hJ-_" * 2
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": GOOD_KEY,
    "ALLOWED_HOSTS": "envportal.example.com",
    "DATABASE_URL": "postgres://envportal:pw@db.example.com:5432/envportal",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
    "REDIS_URL": "redis://redis.example.com:6379/1",
}


def run_django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.endswith("_FILE")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_to_start_without_a_secret_key():
    result = run_django({**PRODUCTION, "SECRET_KEY": ""}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_it_refuses_the_development_secret_key():
    key = "django-insecure-envportal-local-development-only"
    result = run_django({**PRODUCTION, "SECRET_KEY": key}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize("hosts", ["*", ""])
def test_it_refuses_wildcard_or_missing_hosts(hosts):
    result = run_django({**PRODUCTION, "ALLOWED_HOSTS": hosts}, "check")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_check_deploy_is_clean_with_production_settings():
    result = run_django(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_secrets_can_come_from_files(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(GOOD_KEY + "\n")
    env = {**PRODUCTION, "SECRET_KEY_FILE": str(key_file)}
    del env["SECRET_KEY"]
    code = f"from django.conf import settings; print(settings.SECRET_KEY == {GOOD_KEY!r})"
    result = run_django(env, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")


def test_an_unreadable_secret_file_is_named():
    env = {**PRODUCTION, "GITHUB_TOKEN_FILE": "/nonexistent/token"}
    result = run_django(env, "check")
    assert result.returncode != 0
    assert "GITHUB_TOKEN_FILE=/nonexistent/token cannot be read" in result.stderr


def test_database_urls_are_parsed():
    pg = database_from_url("postgres://u:p%40ss@h:5433/envportal?sslmode=require")
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == ("u", "p@ss", "h", "5433")
    assert pg["OPTIONS"] == {"sslmode": "require"}
    sqlite = database_from_url("sqlite:////tmp/x.db")
    assert sqlite == {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.db"}


def test_find_python_finds_a_312_or_newer_interpreter():
    path = subprocess.run(
        [str(ROOT / "scripts" / "find-python")], capture_output=True, text=True, check=True
    ).stdout.strip()
    version = subprocess.run(
        [path, "-c", "import sys; print(sys.version_info >= (3, 12))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == "True"
