from django.urls import path

from environments import api, views, webhooks

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "environments/<str:owner>/<str:repo>/<int:number>/<str:flavor>/",
        views.environment_detail,
        name="environment",
    ),
    path("webhooks/github/", webhooks.github_webhook, name="github-webhook"),
    path("api/v1/environments/", api.environment_list, name="api-environments"),
    path(
        "api/v1/environments/<str:owner>/<str:repo>/<int:number>/<str:flavor>/",
        api.environment_detail,
        name="api-environment",
    ),
]
