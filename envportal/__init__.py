"""envportal: a portal for ephemeral pull-request environments on Kubernetes."""

from envportal.celery import app as celery_app

__all__ = ("celery_app",)
