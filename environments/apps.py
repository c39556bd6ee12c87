from django.apps import AppConfig
from django.db.models.signals import post_migrate


class EnvironmentsConfig(AppConfig):
    name = "environments"
    verbose_name = "Environments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from environments import permissions, schedule

        post_migrate.connect(schedule.ensure_periodic_tasks_after_migrate, sender=self)
        # environments comes after auth and django_celery_beat in INSTALLED_APPS: their
        # permissions exist by the time this runs.
        post_migrate.connect(permissions.ensure_role_groups, sender=self)
