"""Early pytest plugin (loaded with `-p tests.services`, before Django settings are read).

It points the suite at the real PostgreSQL (127.0.0.1:5432, database `test`) and Redis
(127.0.0.1:6379) when they answer. When one does not: with REQUIRE_SERVICES=1 the run stops
with the reason; otherwise the suite runs on SQLite and the tests needing the server skip.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
DEFAULT_DATABASE_URL = f"postgres://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
DEFAULT_REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/14"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "") == "1"


POSTGRES_UP = reachable(POSTGRES_HOST, POSTGRES_PORT)
REDIS_UP = reachable(REDIS_HOST, REDIS_PORT)

if "DATABASE_URL" not in os.environ and POSTGRES_UP:
    os.environ["DATABASE_URL"] = DEFAULT_DATABASE_URL
if "REDIS_URL" not in os.environ and REDIS_UP:
    os.environ["REDIS_URL"] = DEFAULT_REDIS_URL
# Tests run with DEBUG on (dev secret key); production refusal is tested in a subprocess.
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("ENVPORTAL_LOCAL_DIR", f"/tmp/envportal-test-{os.getpid()}")


def pytest_configure(config: pytest.Config) -> None:
    if services_required():
        missing = [
            name
            for name, up in (
                (f"PostgreSQL {POSTGRES_HOST}:{POSTGRES_PORT}", POSTGRES_UP),
                (f"Redis {REDIS_HOST}:{REDIS_PORT}", REDIS_UP),
            )
            if not up
        ]
        if missing:
            raise pytest.UsageError(
                f"REQUIRE_SERVICES=1 but {', '.join(missing)} is unreachable (see DEVELOPERS notes "
                "in README: start it, or unset REQUIRE_SERVICES to skip those tests)"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    db = os.environ.get("DATABASE_URL", "sqlite (PostgreSQL unreachable)")
    redis = os.environ.get("REDIS_URL", "none (Redis unreachable)")
    return [f"envportal services: database={db} redis={redis}"]


def need_postgres() -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) unless the suite runs on PostgreSQL."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    reason = f"needs PostgreSQL at 127.0.0.1:5432 (suite is running on {connection.vendor})"
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def need_redis() -> str:
    """The Redis URL for tests; skip (or fail under REQUIRE_SERVICES=1) when Redis is down."""
    url = os.environ.get("REDIS_URL", "")
    if url and REDIS_UP:
        return url
    reason = f"needs Redis at {REDIS_HOST}:{REDIS_PORT}"
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)
