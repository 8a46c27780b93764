"""The chat views' URLs, namespaced ``chatmemory``: include them under any prefix.

Session ids may contain slashes (any Python caller may pick the id), hence the
``path`` converter; the action routes come first so they win.
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "chatmemory"

urlpatterns = [
    path("", views.session_list, name="sessions"),
    # Before the session routes; a session id of "_all" would be shadowed.
    path("_all/download/", views.download_all, name="download_all"),
    path("_all/delete/", views.delete_all, name="delete_all"),
    path("<path:session_id>/send/", views.send, name="send"),
    path("<path:session_id>/stream/", views.stream, name="stream"),
    path("<path:session_id>/rename/", views.rename, name="rename"),
    path("<path:session_id>/delete/", views.delete, name="delete"),
    path("<path:session_id>/", views.chat, name="chat"),
]
