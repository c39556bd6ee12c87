"""Shared fixtures: alice is a platform engineer (staff), bob a tester, charlie has no account."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", password="alice-password-1", is_staff=True)


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def bob_client(bob: User) -> Client:
    client = Client()
    client.force_login(bob)
    return client


from tests.sandbox_fixtures import world  # noqa: E402, F401 - shared fixture


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
