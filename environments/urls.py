from django.urls import path

from environments import views

urlpatterns = [
    path("", views.home, name="home"),
]
