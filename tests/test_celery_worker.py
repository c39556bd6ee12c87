"""A task round-trips through a real worker process on the Redis broker (not eager mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import Celery

from tests.services import need_redis

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_a_task_round_trips_through_a_real_worker_on_redis(tmp_path):
    redis_url = need_redis()
    queue = f"envportal-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DEBUG": "true",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "REDIS_URL": redis_url,
        "ENVPORTAL_LOCAL_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "envportal", "worker", "--pool=solo",
         "-Q", queue, "-l", "info", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = Celery(broker=redis_url, backend=redis_url)
    try:
        result = client.send_task("environments.tasks.heartbeat", queue=queue)
        stamp = result.get(timeout=60)
        assert stamp.startswith("20")
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    assert f"environments.tasks.heartbeat[{result.id}] succeeded" in output
    assert "redis://" in output  # the worker really was on the Redis broker
