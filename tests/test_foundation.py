"""Migrations on PostgreSQL, beat's schedule in the database, pages."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from environments.schedule import PERIODIC_TASKS, ensure_periodic_tasks
from tests.services import need_postgres


@pytest.mark.django_db
def test_migrations_apply_on_postgresql():
    need_postgres()
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations")
        assert cursor.fetchone()[0] > 10


@pytest.mark.django_db
def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_beat_periodic_tasks_exist_after_migrate():
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {p.name for p in PERIODIC_TASKS} <= names


@pytest.mark.django_db
def test_an_admin_edit_to_a_periodic_task_is_kept():
    task = PeriodicTask.objects.get(name=PERIODIC_TASKS[0].name)
    task.interval = IntervalSchedule.objects.create(every=300, period=IntervalSchedule.SECONDS)
    task.enabled = False
    task.save()
    assert ensure_periodic_tasks() == []
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (300, False)


def test_the_login_page_is_served(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b"Sign in" in response.content


@pytest.mark.django_db
def test_the_home_page_needs_a_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_signed_in_user_sees_the_home_page(bob_client):
    response = bob_client.get("/")
    assert response.status_code == 200
    assert b"Environments" in response.content


def test_htmx_is_served_from_our_static_files(bob_client):
    html = bob_client.get("/").content.decode()
    assert "/static/vendor/htmx-" in html
    assert "unpkg" not in html and "cdn" not in html.lower()
