from django.urls import path

from environments import api, views, webhooks

ENV = "environments/<str:owner>/<str:repo>/<int:number>/<str:flavor>/"
API_ENV = "api/v1/" + ENV

urlpatterns = [
    path("", views.home, name="home"),
    path(ENV, views.environment_detail, name="environment"),
    path(ENV + "<str:kind>/", views.act, name="act"),
    path("tokens/", views.tokens, name="tokens"),
    path("webhooks/github/", webhooks.github_webhook, name="github-webhook"),
    path("api/v1/openapi.json", api.openapi, name="api-openapi"),
    path("api/v1/environments/", api.environment_list, name="api-environments"),
    path("api/v1/getparams.execute", api.plugin_getparams, name="plugin-getparams"),
    path(API_ENV, api.environment_detail, name="api-environment"),
    path(API_ENV + "<str:kind>/", api.environment_action, name="api-environment-action"),
]
