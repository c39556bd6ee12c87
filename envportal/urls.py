from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from environments import probes

urlpatterns = [
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("environments.urls")),
]

handler404 = "environments.api.page_not_found"
