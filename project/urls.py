"""The demo project's URLs: the chat at /chat/, login at /accounts/, the admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("chat/", include("chatmemory.urls")),
    path("", RedirectView.as_view(pattern_name="chatmemory:sessions")),
]
