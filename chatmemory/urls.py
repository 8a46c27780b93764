"""The chat views' URLs, namespaced ``chatmemory``: include them under any prefix.

Session ids are any text (any Python caller may pick the id), so they travel
escaped the way the admin escapes primary keys (``quote()``: ``/`` is
``_2F``, a newline ``_0A``, ``_`` itself ``_5F``). Any id then fits in one
path segment, and none can reach another route or be mangled on the way
(``..``, a newline, a trailing ``/send``). Ids made by the views are
hexadecimal, so their URLs read as they are.
"""

from __future__ import annotations

from django.contrib.admin.utils import quote, unquote
from django.urls import path, register_converter
from django.views.i18n import JavaScriptCatalog

from . import views


class SessionIdConverter:
    """A session id in one path segment, escaped by the admin's ``quote()``."""

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return unquote(value)

    def to_url(self, value: str) -> str:
        return quote(value)


register_converter(SessionIdConverter, "chatmemory_session")

app_name = "chatmemory"

urlpatterns = [
    path("", views.session_list, name="sessions"),
    # No session id reaches these: quote() writes its "_" as "_5F".
    path("_all/download/", views.download_all, name="download_all"),
    path("_all/delete/", views.delete_all, name="delete_all"),
    path("_all/search/", views.search_chats, name="search"),
    # chat.js's strings, translated (gettext in the page).
    path(
        "jsi18n/",
        JavaScriptCatalog.as_view(packages=["chatmemory"]),
        name="jsi18n",
    ),
    path("<chatmemory_session:session_id>/send/", views.send, name="send"),
    path("<chatmemory_session:session_id>/stream/", views.stream, name="stream"),
    path("<chatmemory_session:session_id>/stop/", views.stop, name="stop"),
    path("<chatmemory_session:session_id>/rename/", views.rename, name="rename"),
    path("<chatmemory_session:session_id>/delete/", views.delete, name="delete"),
    path("<chatmemory_session:session_id>/", views.chat, name="chat"),
]
