"""The admin for chat sessions kept in Redis.

The unmanaged :class:`~chatmemory.models.ChatSession` gives the admin its entry,
breadcrumbs and the ``view``/``delete`` permissions; every page here reads
Redis through :mod:`chatmemory.store` instead of a database table:

- the list (newest activity first, paginated through the Redis indexes, with
  search by session id or owner and filters by owner and last activity),
- a session's transcript, its JSON export, and deletion (one, or in bulk).

Viewing and exporting need the ``view`` permission, deleting the ``delete``
permission. This module works on plain message dicts and never imports
LangChain.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Model, Q
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.http import content_disposition_header, urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.generic import RedirectView

from . import store
from .conf import conf
from .exceptions import StoreUnavailable
from .models import ChatSession

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise as StrPromise

logger = logging.getLogger("chatmemory")

SEARCH_VAR = "q"
PAGE_VAR = "p"
OWNER_VAR = "owner"
ACTIVE_VAR = "active"
ACTION_CHECKBOX_NAME = "_selected_action"
DELETE_ACTION = "delete_selected"

ACTIVITY_CHOICES: tuple[tuple[str, StrPromise], ...] = (
    ("today", gettext_lazy("Today")),
    ("7d", gettext_lazy("Past 7 days")),
    ("30d", gettext_lazy("Past 30 days")),
)
_ACTIVITY_DAYS = {"today": 0, "7d": 7, "30d": 30}

OWNER_SEARCH_LIMIT = 10
"""At most this many users match one search (by username or email)."""

OWNER_FILTER_CANDIDATES = 100
"""The owner filter looks for sessions among this many users (by username)."""

COLLAPSE_AFTER = 600
"""Message text longer than this (characters) is collapsed on the transcript."""

COLLAPSE_LINES = 12
"""Message text of more lines than this is collapsed on the transcript."""

RAW_PREVIEW = 2000
"""How much of an unreadable entry the transcript shows, in characters."""

_ROLES = {
    "human": "Human",
    "ai": "AI",
    "system": "System",
    "tool": "Tool",
    "function": "Function",
    "chat": "Chat",
    "remove": "Remove",
}
_CHUNK_TYPES = {
    "HumanMessageChunk": "human",
    "AIMessageChunk": "ai",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "function",
    "ChatMessageChunk": "chat",
}
# Message fields shown on their own; the rest of a record goes under "Details".
_SHOWN_FIELDS = frozenset(
    {
        "content",
        "type",
        "id",
        "name",
        "role",
        "tool_calls",
        "tool_call_id",
        "status",
        "usage_metadata",
    }
)


Fetch = Callable[[int, int], store.SessionPage]
"""One source of sessions: (offset, limit) -> a page of it."""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One line of the session list."""

    info: store.SessionInfo
    url: str
    owner_label: str
    owner_url: str | None
    expires_at: datetime | None

    @property
    def time_left(self) -> str:
        """Until Redis expires the session, to the largest unit ("3 hours")."""
        return "" if self.expires_at is None else timeuntil(self.expires_at, depth=1)


@dataclass(slots=True)
class ToolCall:
    """A tool call an AI message asked for."""

    name: str
    call_id: str
    arguments: str


@dataclass(slots=True)
class MessageView:
    """One transcript row: a message, or an entry that could not be read."""

    position: int
    kind: str
    role: str
    text: str = ""
    collapsed: bool = False
    summary: str = ""
    blocks: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""
    status: str = ""
    usage: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""
    message_id: str = ""
    name: str = ""
    unreadable_reason: str = ""
    raw: str = ""


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ChatSession]
else:  # ModelAdmin is only generic in django-stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(ChatSession)
class ChatSessionAdmin(_ModelAdmin):
    """Browse, read, export and delete the chat sessions kept in Redis."""

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

        query = request.GET.get(SEARCH_VAR, "").strip()
        owner = request.GET.get(OWNER_VAR) or None
        active = request.GET.get(ACTIVE_VAR, "")
        active_since = _activity_start(active)
        number = _page_number(request.GET.get(PAGE_VAR))
        per_page = max(1, conf.SESSIONS_PER_PAGE)
        offset = (number - 1) * per_page

        if query:
            sources = self._search_sources(query, owner, active_since)
        else:
            sources = [
                lambda off, lim: store.list_sessions(
                    owner=owner, offset=off, limit=lim, active_since=active_since
                )
            ]
        page = concatenate(sources, offset, per_page)

        users = self._users({s.owner for s in page.sessions if s.owner} | {owner})
        rows = [self._row(request, info, users) for info in page.sessions]
        paginator = Paginator(range(page.total), per_page)
        shown = min(number, paginator.num_pages)
        page_links = [
            (n, None if n == number else self._query(request, {PAGE_VAR: n}))
            for n in paginator.get_elided_page_range(shown)
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Select chat session to view"),
            "subtitle": None,
            "rows": rows,
            "total": page.total,
            "total_is_lower_bound": bool(query),
            "page_number": number,
            "page_links": page_links if paginator.num_pages > 1 else [],
            "ellipsis": Paginator.ELLIPSIS,
            "show_expiry": conf.TTL is not None or any(row.expires_at for row in rows),
            "can_delete": self.has_delete_permission(request),
            "search_var": SEARCH_VAR,
            "query": query,
            "hidden_params": [
                (name, value)
                for name, value in ((OWNER_VAR, owner), (ACTIVE_VAR, active))
                if value
            ],
            "owner_choices": self._owner_choices(request, owner, users, rows),
            "activity_choices": self._activity_choices(request, active),
            "has_active_filters": bool(owner or active_since),
            "clear_filters_url": self._query(
                request, {OWNER_VAR: None, ACTIVE_VAR: None, PAGE_VAR: None}
            ),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "delete_action": DELETE_ACTION,
        }
        return TemplateResponse(
            request, "admin/chatmemory/chatsession/session_list.html", context
        )

    def transcript_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Every message of one session, with its metadata on top."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        session_id = _session_id(object_id)
        info, entries = store.read_session(session_id)
        if info is None:
            raise Http404(_("No chat session with this id."))
        views = [message_view(i, entry) for i, entry in enumerate(entries)]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": info.title or session_id,
            "subtitle": None,
            "session": info,
            "session_id_quoted": quote(session_id),
            "row": self._row(request, info, self._users({info.owner})),
            "entries": views,
            "transcript": render_messages(views),
            "unreadable_count": sum(view.kind == "unreadable" for view in views),
            "can_delete": self.has_delete_permission(request),
        }
        return TemplateResponse(
            request, "admin/chatmemory/chatsession/transcript.html", context
        )

    def export_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The session's messages as a JSON download (``message_to_dict`` form).

        ``langchain_core.messages.messages_from_dict`` loads the file back;
        unreadable entries are left out.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        session_id = _session_id(object_id)
        info, entries = store.read_session(session_id)
        if info is None:
            raise Http404(_("No chat session with this id."))
        records = [entry for entry in entries if isinstance(entry, dict)]
        body = json.dumps(records, ensure_ascii=False, indent=2)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
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
        session_id = _session_id(object_id)
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

    # --- listing helpers -------------------------------------------------------

    def _search_sources(
        self, query: str, owner: str | None, active_since: datetime | None
    ) -> list[Fetch]:
        """The exact id, then the sessions of matching users, then id prefixes."""

        def keep(info: store.SessionInfo) -> bool:
            if owner is not None and info.owner != owner:
                return False
            return active_since is None or info.last_activity >= active_since

        try:
            store.validate_session_id(query)
        except ValueError:
            valid_id = False
        else:
            valid_id = True
        owners = [
            o for o in self._matching_owners(query) if owner is None or o == owner
        ]
        sources: list[Fetch] = []
        if valid_id:

            def exact(offset: int, limit: int) -> store.SessionPage:
                info = store.get_session(query)
                found = [info] if info is not None and keep(info) else []
                return store.SessionPage(found[offset : offset + limit], len(found))

            sources.append(exact)
        for owner_id in owners:
            sources.append(
                _without(
                    lambda off, lim, o=owner_id: store.list_sessions(  # type: ignore[misc]
                        owner=o, offset=off, limit=lim, active_since=active_since
                    ),
                    lambda info: info.session_id != query,
                )
            )
        if valid_id:
            matched = set(owners)
            sources.append(
                _without(
                    lambda off, lim: store.search_session_ids(
                        query, offset=off, limit=lim
                    ),
                    lambda info: (
                        info.session_id != query
                        and info.owner not in matched
                        and keep(info)
                    ),
                )
            )
        return sources

    def _matching_owners(self, query: str) -> list[str]:
        """Owner ids of users whose username or email is ``query`` (any case)."""
        user_model = get_user_model()
        lookup = Q(**{f"{user_model.USERNAME_FIELD}__iexact": query})
        email = user_model.get_email_field_name()
        try:
            user_model._meta.get_field(email)
        except FieldDoesNotExist:  # a custom user model without an email field
            pass
        else:
            lookup |= Q(**{f"{email}__iexact": query})
        pks = user_model._default_manager.filter(lookup).values_list("pk", flat=True)
        return [str(pk) for pk in pks[:OWNER_SEARCH_LIMIT]]

    def _users(self, owners: Iterable[str | None]) -> dict[str, AbstractBaseUser]:
        """The users behind owner ids (str of their pk); unknown ids are left out."""
        user_model = get_user_model()
        pk_field = user_model._meta.pk
        assert pk_field is not None
        pks: dict[Any, str] = {}
        for owner in owners:
            if owner is None:
                continue
            try:
                pks[pk_field.to_python(owner)] = owner
            except ValidationError:  # an owner id that is no pk of this user model
                continue
        if not pks:
            return {}
        found = user_model._default_manager.in_bulk(list(pks))
        return {pks[pk]: user for pk, user in found.items() if pk in pks}

    def _row(
        self,
        request: HttpRequest,
        info: store.SessionInfo,
        users: dict[str, AbstractBaseUser],
    ) -> SessionRow:
        owner_label, owner_url = "", None
        if info.owner is not None:
            user = users.get(info.owner)
            if user is None:
                owner_label = _("#%(id)s (no such user)") % {"id": info.owner}
            else:
                owner_label = user.get_username()
                owner_url = self._user_url(request, user)
        return SessionRow(
            info=info,
            url=reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[quote(info.session_id)],
                current_app=self.admin_site.name,
            ),
            owner_label=owner_label,
            owner_url=owner_url,
            expires_at=None
            if info.expires_in is None
            else timezone.now() + info.expires_in,
        )

    def _user_url(self, request: HttpRequest, user: Model) -> str | None:
        """The user's admin page, if the user model is there and visible."""
        user_model = type(user)
        if not self.admin_site.is_registered(user_model):
            return None
        user_admin = self.admin_site.get_model_admin(user_model)
        if not user_admin.has_view_or_change_permission(request, user):
            return None
        opts = user_model._meta
        try:
            return reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[quote(user.pk)],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:  # a user admin without the usual change page
            return None

    def _owner_choices(
        self,
        request: HttpRequest,
        selected: str | None,
        users: dict[str, AbstractBaseUser],
        rows: Sequence[SessionRow],
    ) -> list[tuple[str, str, bool]]:
        """(label, link, selected) for the owner filter.

        Offered: the owners on this page, and the users (the first
        OWNER_FILTER_CANDIDATES by username) who have sessions; any other owner
        is a search away.
        """
        user_model = get_user_model()
        candidates = list(
            user_model._default_manager.order_by(user_model.USERNAME_FIELD)[
                :OWNER_FILTER_CANDIDATES
            ]
        )
        with_sessions = store.count_owner_sessions([str(u.pk) for u in candidates])
        labels: dict[str, str] = {
            str(u.pk): u.get_username()
            for u in candidates
            if str(u.pk) in with_sessions
        }
        for row in rows:
            if row.info.owner is not None:
                labels[row.info.owner] = row.owner_label
        if selected is not None:
            user = users.get(selected)
            labels[selected] = (
                user.get_username()
                if user is not None
                else _("#%(id)s (no such user)") % {"id": selected}
            )
        choices = [
            (
                _("All"),
                self._query(request, {OWNER_VAR: None, PAGE_VAR: None}),
                selected is None,
            )
        ]
        for owner_id, label in sorted(labels.items(), key=lambda item: item[1]):
            choices.append(
                (
                    label,
                    self._query(request, {OWNER_VAR: owner_id, PAGE_VAR: None}),
                    owner_id == selected,
                )
            )
        return choices

    def _activity_choices(
        self, request: HttpRequest, active: str
    ) -> list[tuple[str, str, bool]]:
        """(label, link, selected) for the last-activity filter."""
        current = active if active in _ACTIVITY_DAYS else ""
        choices = [
            (
                _("Any date"),
                self._query(request, {ACTIVE_VAR: None, PAGE_VAR: None}),
                not current,
            )
        ]
        for value, label in ACTIVITY_CHOICES:
            choices.append(
                (
                    str(label),
                    self._query(request, {ACTIVE_VAR: value, PAGE_VAR: None}),
                    value == current,
                )
            )
        return choices

    def _query(self, request: HttpRequest, changes: dict[str, Any]) -> str:
        """The list's query string with ``changes`` applied (None drops a key)."""
        params: dict[str, str] = {}
        for key in (SEARCH_VAR, PAGE_VAR, OWNER_VAR, ACTIVE_VAR):
            value = request.GET.get(key)
            if value:
                params[key] = value
        for key, value in changes.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = str(value)
        return "?" + urlencode(sorted(params.items())) if params else "?"

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


# --- helpers -----------------------------------------------------------------


def concatenate(sources: Sequence[Fetch], offset: int, limit: int) -> store.SessionPage:
    """One page of the sources listed one after the other.

    Each source reports its total, so the page costs one call per source and
    work proportional to ``limit``. The total is the sum of theirs (a lower
    bound when the last one's is).
    """
    sessions: list[store.SessionInfo] = []
    total = 0
    for fetch in sources:
        page = fetch(max(offset - total, 0), limit - len(sessions))
        sessions.extend(page.sessions)
        total += page.total
    return store.SessionPage(sessions, total)


def _without(fetch: Fetch, keep: Callable[[store.SessionInfo], bool]) -> Fetch:
    """``fetch`` with rows dropped that another source shows or a filter rejects.

    The page can come out shorter than asked; its total is left as is.
    """

    def filtered(offset: int, limit: int) -> store.SessionPage:
        page = fetch(offset, limit)
        return store.SessionPage([s for s in page.sessions if keep(s)], page.total)

    return filtered


def _activity_start(choice: str) -> datetime | None:
    """Start of the last-activity filter's period: midnight, local time."""
    days = _ACTIVITY_DAYS.get(choice)
    if days is None:
        return None
    now = timezone.now()
    if timezone.is_aware(now):
        now = timezone.localtime(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


def _page_number(value: str | None) -> int:
    try:
        number = int(value or 1)
    except ValueError:
        return 1
    return max(number, 1)


def _session_id(object_id: str) -> str:
    """The session id in a URL, or 404."""
    session_id = unquote(object_id)
    try:
        return store.validate_session_id(session_id)
    except ValueError:
        raise Http404(_("No chat session with this id.")) from None


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


# --- transcript --------------------------------------------------------------


def message_view(
    position: int, entry: store.Record | store.UnreadableEntry
) -> MessageView:
    """What the transcript shows of one stored entry."""
    if isinstance(entry, store.UnreadableEntry):
        return _unreadable(position, entry.reason, entry.raw.decode(errors="replace"))
    kind = entry.get("type")
    data = entry.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        return _unreadable(position, _("not a message record"), _dumps(entry))
    kind = _CHUNK_TYPES.get(kind, kind)
    role = _ROLES.get(kind, kind)
    if kind == "chat" and data.get("role"):
        role = str(data["role"])
    view = MessageView(
        position=position,
        kind=kind if kind in _ROLES else "other",
        role=role,
        message_id=str(data.get("id") or ""),
        name=str(data.get("name") or ""),
        tool_call_id=str(data.get("tool_call_id") or ""),
        status=str(data.get("status") or ""),
    )
    content = data.get("content")
    if isinstance(content, str):
        view.text = content
    elif isinstance(content, list):
        texts = []
        for block in content:
            if isinstance(block, str):
                texts.append(block)
            elif (
                isinstance(block, dict)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ):
                texts.append(block["text"])
            else:
                view.blocks.append(_dumps(block))
        view.text = "\n\n".join(texts)
    elif content is not None:
        view.blocks.append(_dumps(content))
    if len(view.text) > COLLAPSE_AFTER or view.text.count("\n") >= COLLAPSE_LINES:
        view.collapsed = True
        first = " ".join(view.text[:300].split())
        view.summary = first[:160].rstrip() + "\u2026"
    for call in data.get("tool_calls") or ():
        if isinstance(call, dict):
            view.tool_calls.append(
                ToolCall(
                    name=str(call.get("name") or "?"),
                    call_id=str(call.get("id") or ""),
                    arguments=_dumps(call.get("args", {})),
                )
            )
    usage = data.get("usage_metadata")
    if isinstance(usage, dict):
        view.usage = [
            (_label(key), _usage_value(value)) for key, value in usage.items()
        ]
    extra = {
        key: value
        for key, value in data.items()
        if key not in _SHOWN_FIELDS and value not in (None, {}, [], "")
    }
    if extra:
        view.details = _dumps(extra)
    return view


def _label(key: object) -> str:
    return str(key).replace("_", " ")


def _usage_value(value: object) -> str:
    """A usage figure, or a breakdown like ``cache read 3, reasoning 0``."""
    if isinstance(value, dict):
        return ", ".join(f"{_label(k)} {v}" for k, v in value.items())
    return str(value)


def _unreadable(position: int, reason: str, raw: str) -> MessageView:
    if len(raw) > RAW_PREVIEW:
        raw = raw[:RAW_PREVIEW] + "\u2026"
    return MessageView(
        position=position,
        kind="unreadable",
        role=_("Unreadable entry"),
        unreadable_reason=reason,
        raw=raw,
    )


def _dumps(value: object) -> str:
    # No indent: json's C encoder only runs without one (a 1,000-message
    # transcript dumps hundreds of values); the page wraps long lines.
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def render_messages(views: Iterable[MessageView]) -> SafeString:
    """The transcript's rows as HTML, every value escaped.

    Built in Python rather than in a template loop: a template costs about a
    quarter of a millisecond per message, which a 1,000-message transcript
    would feel (see bench/bench_admin.py).
    """
    labels = {
        "result": _("result of tool call %(id)s"),
        "status": escape(_("status:")),
        "tool call": escape(_("Tool call:")),
        "usage": escape(_("Token usage")),
        "details": escape(_("Details")),
    }
    # Safe: _message_html escapes every value it puts in.
    return mark_safe("".join(_message_html(view, labels) for view in views))


def _escape(value: str) -> str:
    # django.utils.html.escape's escaping, without its lazy-string wrapper
    # (a third of the cost of rendering a transcript).
    return html.escape(value)


def _message_html(m: MessageView, labels: dict[str, str]) -> str:
    e = _escape
    head = [f'<span class="chatmemory-role">{e(m.role)}</span>']
    if m.name:
        head.append(f"<span>{e(m.name)}</span>")
    if m.tool_call_id:
        head.append(
            '<span class="chatmemory-quiet">'
            + e(labels["result"] % {"id": m.tool_call_id})
            + "</span>"
        )
    if m.status:
        head.append(
            f'<span class="chatmemory-quiet">{labels["status"]} {e(m.status)}</span>'
        )
    ident = f" · {e(m.message_id)}" if m.message_id else ""
    head.append(f'<span class="chatmemory-quiet">#{m.position}{ident}</span>')
    parts = [
        f'<li class="{e(m.kind)}" id="message-{m.position}">',
        f'<div class="chatmemory-head">{"".join(head)}</div>',
    ]
    if m.kind == "unreadable":
        parts.append(f"<p>{e(m.unreadable_reason)}</p><pre>{e(m.raw)}</pre></li>")
        return "".join(parts)
    if m.collapsed:
        parts.append(
            f"<details><summary>{e(m.summary)}</summary>"
            f'<p class="chatmemory-text">{e(m.text)}</p></details>'
        )
    elif m.text:
        parts.append(f'<p class="chatmemory-text">{e(m.text)}</p>')
    parts.extend(f"<pre>{e(block)}</pre>" for block in m.blocks)
    for call in m.tool_calls:
        call_id = (
            f' <span class="chatmemory-quiet">{e(call.call_id)}</span>'
            if call.call_id
            else ""
        )
        parts.append(
            f'<div class="chatmemory-tool-call"><strong>{labels["tool call"]} '
            f"{e(call.name)}</strong>{call_id}<pre>{e(call.arguments)}</pre></div>"
        )
    if m.usage:
        items = "".join(f"<li>{e(key)}: {e(value)}</li>" for key, value in m.usage)
        parts.append(
            '<ul class="chatmemory-usage chatmemory-quiet" '
            f'aria-label="{labels["usage"]}">{items}</ul>'
        )
    if m.details:
        parts.append(
            f"<details><summary>{labels['details']}</summary>"
            f"<pre>{e(m.details)}</pre></details>"
        )
    parts.append("</li>")
    return "".join(parts)
