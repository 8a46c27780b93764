"""The ModelAdmin of chat sessions kept in Redis: its URLs, pages and permissions.

The unmanaged :class:`~chatmemory.models.ChatSession` gives the admin its entry,
breadcrumbs and the ``view``/``delete`` permissions; every page here reads
Redis through :mod:`chatmemory.store` instead of a database table. The list is
worked out by :mod:`.changelist`, a transcript's rows by :mod:`.transcript`.

Viewing and exporting need the ``view`` permission, deleting the ``delete``
permission.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import content_disposition_header, urlencode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.generic import RedirectView

from .. import store
from ..exceptions import StoreUnavailable
from ..models import ChatSession
from .audit import EXPORT, VIEW, record_access
from .changelist import (
    OWNER_VAR,
    PAGE_VAR,
    TITLE_SEARCH_WINDOW,
    SessionChangeList,
    page_number_or_404,
)
from .transcript import export_json, read_transcript_page
from .usage import UsageList
from .utils import session_id_from_url, session_row, users_by_owner

logger = logging.getLogger("chatmemory")

ACTION_CHECKBOX_NAME = "_selected_action"
DELETE_ACTION = "delete_selected"


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ChatSession]
else:  # ModelAdmin is only generic in django-stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(ChatSession)
class ChatSessionAdmin(_ModelAdmin):
    """Browse, read, export and delete the chat sessions kept in Redis."""

    transcript_per_page = 100
    """Entries per transcript page (the session list uses SESSIONS_PER_PAGE)."""

    title_search_window = TITLE_SEARCH_WINDOW
    """Sessions whose titles one search page reads, most recently active first
    (the page offers the next ones): the bound on a title search's work."""

    usage_per_page = 50
    """(Owner, day) rows per page of the token usage page."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Sessions are created by chatting, never in the admin."""
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: ChatSession | None = None
    ) -> bool:
        """Transcripts are read-only."""
        return False

    def get_urls(self) -> list[URLPattern]:
        """The Redis-backed pages, in place of the ORM ones."""
        name = f"{self.opts.app_label}_{self.opts.model_name}"

        def wrap(view: Callable[..., HttpResponseBase]) -> Callable[..., Any]:
            return self.admin_site.admin_view(self._store_errors(view))

        return [
            path("", wrap(self.session_list_view), name=f"{name}_changelist"),
            # Before the object URLs (as the admin's "add/" is): a session
            # whose id is "usage" is still reached at usage/change/.
            path("usage/", wrap(self.usage_view), name=f"{name}_usage"),
            path(
                "<path:object_id>/export/",
                wrap(self.export_view),
                name=f"{name}_export",
            ),
            path(
                "<path:object_id>/delete/",
                wrap(self.session_delete_view),
                name=f"{name}_delete",
            ),
            # The admin's own name for an object's page, so links the admin
            # builds to a session (e.g. from LogEntry) reach its transcript.
            path(
                "<path:object_id>/change/",
                wrap(self.transcript_view),
                name=f"{name}_change",
            ),
            # As the admin does for ORM objects: an object's bare URL goes to
            # its page.
            path(
                "<path:object_id>/",
                wrap(
                    RedirectView.as_view(
                        pattern_name=f"{self.admin_site.name}:{name}_change",
                        permanent=False,
                    )
                ),
            ),
        ]

    # --- pages ---------------------------------------------------------------

    def session_list_view(self, request: HttpRequest) -> HttpResponseBase:
        """The sessions, newest activity first; POST runs the bulk delete action."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self._bulk_action(request)

        changelist = SessionChangeList(request, self)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Select chat session to view"),
            "subtitle": None,
            "cl": changelist,
            **changelist.context(),
            "can_delete": self.has_delete_permission(request),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "delete_action": DELETE_ACTION,
        }
        return TemplateResponse(
            request, "admin/chatmemory/chatsession/session_list.html", context
        )

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        """Tokens per owner per UTC day over a range of days, a page at a time."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        usage = UsageList(request, self, self.usage_per_page)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Token usage"),
            "subtitle": None,
            "cl": usage,
            **usage.context(),
        }
        return TemplateResponse(
            request, "admin/chatmemory/chatsession/usage.html", context
        )

    def transcript_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One page of a session's messages, with its metadata on top."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        session_id = session_id_from_url(object_id)
        number = page_number_or_404(request.GET.get(PAGE_VAR))
        info, page = read_transcript_page(session_id, number, self.transcript_per_page)
        if info is None:
            raise Http404(_("No chat session with this id."))
        record_access(request, info, VIEW, page=number)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": info.title or session_id,
            "subtitle": None,
            "session": info,
            "session_id_quoted": quote(session_id),
            "row": session_row(
                self.admin_site, self.opts, request, info, users_by_owner([info.owner])
            ),
            "page": page,
            "page_links": [
                (n, f"?{PAGE_VAR}={n}" if isinstance(n, int) and n != number else None)
                for n in page.page_range()
            ],
            "ellipsis": Paginator.ELLIPSIS,
            "unreadable_count": sum(m.kind == "unreadable" for m in page.messages),
            "usage_url": None
            if info.owner is None
            else self._usage_url() + "?" + urlencode({OWNER_VAR: info.owner}),
            "can_delete": self.has_delete_permission(request),
        }
        return TemplateResponse(
            request, "admin/chatmemory/chatsession/transcript.html", context
        )

    def export_view(
        self, request: HttpRequest, object_id: str
    ) -> StreamingHttpResponse:
        """The session's messages as a JSON download (``message_to_dict`` form).

        ``langchain_core.messages.messages_from_dict`` loads the file back;
        unreadable entries are left out. The body is streamed, a batch of
        records at a time, so a long session is never held whole.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        session_id = session_id_from_url(object_id)
        info, body = export_json(session_id)
        if info is None:
            raise Http404(_("No chat session with this id."))
        record_access(request, info, EXPORT)
        response = StreamingHttpResponse(
            body, content_type="application/json; charset=utf-8"
        )
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=_export_filename(session_id)
        )
        return response

    def session_delete_view(
        self, request: HttpRequest, object_id: str
    ) -> HttpResponseBase:
        """Confirm (GET), then delete one session (POST)."""
        if not self.has_delete_permission(request):
            raise PermissionDenied
        session_id = session_id_from_url(object_id)
        info = store.get_session(session_id)
        if info is None:
            raise Http404(_("No chat session with this id."))
        if request.method == "POST":
            deleted = self.delete_sessions(request, [session_id])
            if deleted:
                self.message_user(
                    request,
                    _("The chat session “%(id)s” was deleted successfully.")
                    % {"id": session_id},
                    messages.SUCCESS,
                )
            else:  # it vanished between the check above and the deletion
                self.message_user(
                    request,
                    _("The chat session “%(id)s” was already gone.")
                    % {"id": session_id},
                    messages.WARNING,
                )
            return HttpResponseRedirect(self._changelist_url())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Are you sure?"),
            "subtitle": None,
            "session": info,
            "session_id_quoted": quote(session_id),
        }
        return TemplateResponse(
            request, "admin/chatmemory/chatsession/session_delete.html", context
        )

    # --- deletion --------------------------------------------------------------

    def delete_sessions(self, request: HttpRequest, session_ids: Sequence[str]) -> int:
        """Delete sessions and record each deletion in the admin's LogEntry.

        Only sessions that were really deleted are logged, also when Redis
        fails half-way.
        """
        deleted: list[ChatSession] = []
        try:
            for session_id in session_ids:
                if store.delete_session(session_id):
                    deleted.append(ChatSession(session_id=session_id))
        finally:
            if deleted:
                self.log_deletions(request, deleted)  # type: ignore[arg-type]
        return len(deleted)

    def _bulk_action(self, request: HttpRequest) -> HttpResponseBase:
        if not self.has_delete_permission(request):
            raise PermissionDenied
        back = request.get_full_path()
        if request.POST.get("action") != DELETE_ACTION:
            self.message_user(request, _("No action selected."), messages.WARNING)
            return HttpResponseRedirect(back)
        session_ids = _valid_ids(request.POST.getlist(ACTION_CHECKBOX_NAME))
        if not session_ids:
            self.message_user(
                request,
                _(
                    "Items must be selected in order to perform actions on them. "
                    "No items have been changed."
                ),
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        if request.POST.get("post") == "yes":
            count = self.delete_sessions(request, session_ids)
            self.message_user(
                request,
                ngettext(
                    "Successfully deleted %(count)d chat session.",
                    "Successfully deleted %(count)d chat sessions.",
                    count,
                )
                % {"count": count},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(back)
        sessions = store.get_sessions(session_ids)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Are you sure?"),
            "subtitle": None,
            "sessions": sessions,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "delete_action": DELETE_ACTION,
        }
        return TemplateResponse(
            request,
            "admin/chatmemory/chatsession/sessions_delete.html",
            context,
        )

    def _usage_url(self) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_usage",
            current_app=self.admin_site.name,
        )

    def _changelist_url(self) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )

    # --- errors ----------------------------------------------------------------

    def _store_errors(
        self, view: Callable[..., HttpResponseBase]
    ) -> Callable[..., HttpResponseBase]:
        """Turn an unreachable Redis into an admin page saying so (503)."""

        @wraps(view)
        def guarded(
            request: HttpRequest, *args: Any, **kwargs: Any
        ) -> HttpResponseBase:
            try:
                return view(request, *args, **kwargs)
            except StoreUnavailable as exc:
                logger.warning("chatmemory admin: %s", exc)
                context = {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "title": _("Chat sessions are unavailable"),
                    "subtitle": None,
                    "error": exc,
                }
                return TemplateResponse(
                    request,
                    "admin/chatmemory/chatsession/store_unavailable.html",
                    context,
                    status=503,
                )

        return guarded


def _valid_ids(values: Iterable[str]) -> list[str]:
    ids: list[str] = []
    for value in values:
        try:
            ids.append(store.validate_session_id(value))
        except ValueError:  # a forged or outdated form: skip that id
            continue
    return list(dict.fromkeys(ids))


def _export_filename(session_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in session_id)
    return f"chat-session-{safe[:100]}.json"
