"""The chat views: my sessions, a chat page, rename, delete, and a streamed turn.

Every view needs a logged-in user and only shows that user's sessions: any
other session id is a 404, whether it belongs to someone else or to no one.
Redis being down gives a 503 page (an ``error`` event on the stream).

The stream is Server-Sent Events on a POST (:mod:`chatmemory.sse`), run by
the sync or the async iterator that fits the server the request came from.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, ngettext_lazy
from django.views.decorators.http import require_http_methods

from . import llm, records, sse, store
from .admin.transcript import thread_entries, thread_reader
from .conf import conf
from .exceptions import (
    ModelFailed,
    SessionNotFound,
    StoreUnavailable,
    TurnInProgress,
)
from .forms import MessageForm, RenameForm
from .owners import owner_id
from .store import transfer
from .turn import ChatTurn, entry_problem

logger = logging.getLogger("chatmemory")

UNREADABLE = gettext_lazy("(an unreadable entry was skipped)")
MODEL_MISCONFIGURED = gettext_lazy(
    "The chat model is not configured correctly (see 'manage.py check'); "
    "nothing was saved."
)

MAX_OFFSET = 2**53
"""No listing is longer: an offset past it is a page that cannot exist."""
BAD_TURN = gettext_lazy(
    "This request cannot be handled: reload the page and try again."
)

LONG_SEARCH = gettext_lazy("Search with at most %(length)d characters.")
EMPTY_SEARCH = gettext_lazy("Type some of a chat's title to search for it.")

View = Callable[..., HttpResponseBase]

UNITS = (
    (3600, ngettext_lazy("%(count)d hour", "%(count)d hours", "count")),
    (60, ngettext_lazy("%(count)d minute", "%(count)d minutes", "count")),
    (1, ngettext_lazy("%(count)d second", "%(count)d seconds", "count")),
)


# ---------------------------------------------------------------------------
# Helpers


def owner_of_user(user: Any) -> str:
    """The owner id of a user (see :mod:`chatmemory.owners`)."""
    return owner_id(user)


def owner_of(request: HttpRequest) -> str:
    """The owner id of the request's user."""
    return owner_of_user(request.user)


NEW_CHATS = "chatmemory_new_chats"
"""The request session key listing the ids of new chats not stored yet."""

NEW_CHATS_KEPT = 20
"""How many unsent new chats a user's session remembers."""


def _new_chats(request: HttpRequest) -> list[str]:
    value = request.session.get(NEW_CHATS, [])
    return [item for item in value if isinstance(item, str)]


def start_new_chat(request: HttpRequest) -> str:
    """A new chat's id, remembered in the user's session; nothing is stored yet.

    The chat is stored by its first message, so "New chat" clicks that are
    never used leave nothing behind in Redis.
    """
    session_id = uuid.uuid4().hex
    request.session[NEW_CHATS] = [*_new_chats(request), session_id][-NEW_CHATS_KEPT:]
    return session_id


def forget_new_chat(request: HttpRequest, session_id: str) -> None:
    """Drop ``session_id`` from the user's unsent new chats."""
    kept = _new_chats(request)
    if session_id in kept:
        request.session[NEW_CHATS] = [item for item in kept if item != session_id]


def get_owned_session(request: HttpRequest, session_id: str) -> store.SessionInfo:
    """The user's session ``session_id``, or 404 (also for other users' ones).

    A new chat this user started and has not sent anything to yet reads as an
    empty session of theirs.
    """
    try:
        store.validate_session_id(session_id)
    except ValueError:
        raise Http404(_("No such chat session.")) from None
    return owned_session(request, session_id, store.get_session(session_id))


def owned_session(
    request: HttpRequest, session_id: str, info: store.SessionInfo | None
) -> store.SessionInfo:
    """``info`` (the session ``session_id`` as read) if it is the user's, or a
    new chat of theirs not stored yet; else 404."""
    if info is None and session_id in _new_chats(request):
        now = timezone.now()
        return store.SessionInfo(
            session_id=session_id,
            title="",
            owner=owner_of(request),
            message_count=0,
            created=now,
            updated=now,
            last_activity=now,
            expires_in=None,
        )
    if info is None or info.owner != owner_of(request):
        raise Http404(_("No such chat session."))
    forget_new_chat(request, session_id)  # stored now: nothing to remember
    return info


def private_page(view: View) -> View:
    """Per-user pages: never cached by anyone, never framed by another site."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        patch_cache_control(response, private=True, no_store=True)
        # The pages hold one-click destructive forms (delete, rename): no
        # framing, so no clickjacking.
        response["X-Frame-Options"] = "DENY"
        return response

    return wrapper


def post_only(view: View) -> View:
    """A POST-only action: any other method goes back to the chat page.

    A browser lands on these URLs with GET after a form error and a reload,
    or from the history; a blank 405 page helps nobody.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, session_id: str) -> HttpResponseBase:
        if request.method != "POST":
            return redirect("chatmemory:chat", session_id)
        return view(request, session_id)

    return wrapper


def quota_owner(request: HttpRequest) -> str | None:
    """The owner whose limits a turn counts against; None when exempt (staff)."""
    if conf.QUOTA_EXEMPT_STAFF and getattr(request.user, "is_staff", False):
        return None
    return owner_of(request)


def _wait_words(seconds: int) -> str:
    parts = []
    for size, words in UNITS:
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(words % {"count": amount})
    return " ".join(parts[:2])


def refusal_message(admission: store.Admission) -> str:
    """Words for a refused turn, saying which limit and when to try again."""
    wait = store.quota.seconds_until(admission)
    when = _("Try again in %(wait)s.") % {"wait": _wait_words(wait)}
    if admission.refused == "turns":
        limit = conf.TURNS_PER_MINUTE or 0
        said = ngettext(
            "You have sent %(limit)s message in the last minute, the most allowed.",
            "You have sent %(limit)s messages in the last minute, the most allowed.",
            limit,
        )
    elif admission.refused == "streams":
        limit = conf.CONCURRENT_STREAMS or 0
        said = ngettext(
            "You already have %(limit)s reply being written, the most allowed "
            "at once. Wait for it to finish.",
            "You already have %(limit)s replies being written, the most allowed "
            "at once. Wait for one to finish.",
            limit,
        )
    else:
        limit = conf.TOKENS_PER_DAY or 0
        said = ngettext(
            "You have used today's allowance of %(limit)s token. It resets at "
            "midnight UTC.",
            "You have used today's allowance of %(limit)s tokens. It resets at "
            "midnight UTC.",
            limit,
        )
    return f"{said % {'limit': f'{limit:,}'}} {when}"


def admit(request: HttpRequest) -> store.Admission:
    """Count a turn against the user's limits (checked before the model runs)."""
    owner = quota_owner(request)
    if owner is None:
        return store.Admission("")
    return store.admit_turn(owner)


def get_owned_session_and_admit(
    request: HttpRequest, session_id: str
) -> tuple[store.SessionInfo, store.Admission]:
    """:func:`get_owned_session` and :func:`admit` in one round trip.

    A turn counted for a session that is not the user's is given back.
    """
    owner = quota_owner(request)
    if owner is None:
        return get_owned_session(request, session_id), store.Admission("")
    try:
        store.validate_session_id(session_id)
    except ValueError:
        raise Http404(_("No such chat session.")) from None
    info, admission = store.get_session_and_admit(session_id, owner)
    try:
        return owned_session(request, session_id, info), admission
    except Http404:
        release(request, admission)
        raise


def release(request: HttpRequest, admission: store.Admission | None) -> None:
    """Give back the stream slot of an admitted turn; never raises."""
    owner = quota_owner(request)
    if owner is None or admission is None or not admission.holds_stream:
        return
    try:
        store.release_turn(owner, admission)
    except StoreUnavailable:  # the slot lapses at its lease
        logger.warning("chatmemory: could not release a stream slot", exc_info=True)


async def arelease(request: HttpRequest, admission: store.Admission | None) -> None:
    """Async :func:`release`."""
    owner = quota_owner(request)
    if owner is None or admission is None or not admission.holds_stream:
        return
    try:
        await store.arelease_turn(owner, admission)
    except StoreUnavailable:  # the slot lapses at its lease
        logger.warning("chatmemory: could not release a stream slot", exc_info=True)


def store_unavailable_page(view: View) -> View:
    """Answer StoreUnavailable with a 503 page instead of a traceback."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except StoreUnavailable as exc:
            logger.exception("chatmemory: Redis unavailable in %s", request.path)
            response = render(
                request,
                "chatmemory/unavailable.html",
                {"message": exc.user_message},
                status=503,
            )
            response["Retry-After"] = "60"
            return response

    return wrapper


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a transcript, as the template shows it."""

    role: str
    """human, ai, system, other or unreadable."""
    text: str
    interrupted: bool = False
    tool_calls: tuple[records.ToolCall, ...] = ()
    created: datetime | None = None
    """When the message was stored (None for records written without a time)."""


_ROLES = {"human": "human", "ai": "ai", "system": "system", "unreadable": "unreadable"}


def transcript(
    entries: list[store.Record | store.UnreadableEntry],
) -> list[Entry]:
    """The entries to show for a session's stored records.

    Those a turn's prompt leaves out (:func:`chatmemory.turn.entry_problem`:
    a ``RemoveMessage``, a record with wrongly typed fields...) show as
    unreadable, so the page shows what the model is given.
    """
    shown = []
    for entry in entries:
        if isinstance(entry, store.UnreadableEntry):
            shown.append(Entry("unreadable", str(UNREADABLE)))
            continue
        record = records.read(entry)
        role = _ROLES.get(record.kind, "other")
        if role == "unreadable" or entry_problem(entry):
            shown.append(Entry("unreadable", str(UNREADABLE)))
            continue
        shown.append(
            Entry(
                role,
                record.text,
                record.interrupted,
                record.tool_calls,
                stored_at(entry),
            )
        )
    return shown


def stored_at(record: store.Record) -> datetime | None:
    """When a record was written (its ``at`` field), if it says so sensibly."""
    at = record.get("at")
    if type(at) is not int or not 0 < at < 253_402_300_800_000:  # before year 10000
        return None
    return datetime.fromtimestamp(at / 1000, tz=UTC)


def conversation_entries(
    info: store.SessionInfo,
) -> list[store.Record | store.UnreadableEntry]:
    """A chat's stored messages: a history session's, or a LangGraph thread's
    (the messages of its latest checkpoint)."""
    if info.kind == "thread":
        return thread_entries(info.session_id)
    return store.read_records(info.session_id)


# ---------------------------------------------------------------------------
# The chat mode: what runs a turn


AGENT_CHAT = gettext_lazy(
    'This chat was written by the agent (chat mode "agent"); without the '
    "agent it cannot go on. Start a new chat."
)


def mode_problem(info: store.SessionInfo) -> str:
    """Why the chat mode cannot run a turn on this chat ('' when it can).

    A chain turn cannot go on with an agent's thread; an agent turn refuses a
    chain chat itself (see :mod:`chatmemory.agent`).
    """
    if conf.CHAT_MODE != "agent" and info.kind == "thread":
        return str(AGENT_CHAT)
    return ""


def new_turn(
    request: HttpRequest,
    session_id: str,
    message: str,
    *,
    must_exist: bool = False,
    turn_id: str | None = None,
    rewrite: str | None = None,
) -> ChatTurn:
    """The turn ``CHATMEMORY_CHAT_MODE`` runs: a chain's, or an agent's.

    Raises ``ImproperlyConfigured`` (model, tools or LangGraph missing) and
    ``ValueError`` (a turn id or an action no page of ours sends).
    """
    kind: type[ChatTurn] = ChatTurn
    if conf.CHAT_MODE == "agent":
        kind = agent_module().AgentTurn
    return kind(
        session_id,
        message,
        owner=owner_of(request),
        exclusive=True,
        must_exist=must_exist,
        turn_id=turn_id,
        rewrite=rewrite,
    )


def agent_module() -> Any:
    """:mod:`chatmemory.agent` (LangGraph is an optional dependency)."""
    try:
        from . import agent
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODE is 'agent', which needs LangGraph: {exc}"
        ) from exc
    return agent


def model_context() -> dict[str, Any]:
    """What the chat page says about the model that answers."""
    try:
        model = llm.get_chat_model()
    except ImproperlyConfigured as exc:
        return {"model_name": "", "demo_model": False, "model_error": str(exc)}
    return {
        "model_name": llm.model_name(model),
        "demo_model": llm.is_demo_model(model),
        "model_error": "",
    }


def render_chat(
    request: HttpRequest,
    info: store.SessionInfo,
    form: MessageForm | None = None,
    rename_form: RenameForm | None = None,
) -> HttpResponse:
    """The chat page: transcript, message box, rename form, my chats."""
    sid = [info.session_id]
    context = {
        "session": info,
        "entries": transcript(conversation_entries(info)),
        "form": form or MessageForm(),
        "rename_form": rename_form or RenameForm(initial={"title": info.title}),
        "send_url": reverse("chatmemory:send", args=sid),
        "stream_url": reverse("chatmemory:stream", args=sid),
        "stop_url": reverse("chatmemory:stop", args=sid),
        **sidebar_context(request, info.session_id),
        **model_context(),
    }
    return render(request, "chatmemory/chat.html", context)


SIDEBAR_LENGTH = 50
"""How many of my most recent chats the chat page's sidebar lists."""


def sidebar_context(request: HttpRequest, current: str = "") -> dict[str, Any]:
    """My most recent chats, for the chat page's sidebar.

    ``current_listed`` says whether the chat ``current`` is among them (a new
    chat is not, until its first reply: the page then shows its entry).
    """
    page = store.list_sessions(owner=owner_of(request), offset=0, limit=SIDEBAR_LENGTH)
    return {
        "chats": page.sessions,
        "more_chats": page.total > len(page.sessions),
        "current_listed": any(chat.session_id == current for chat in page.sessions),
        "title_length": store.TITLE_LENGTH,
        "search_length": SEARCH_LENGTH,
    }


SEARCH_SCANNED = 500
"""How many of my chats one search request reads (their titles), at most."""
SEARCH_RESULTS = 50
"""How many matching chats one search request lists, at most."""
SEARCH_LENGTH = 200
"""The longest search text (no title is longer than ``TITLE_LENGTH``)."""


def find_chats(owner: str, query: str, start: int) -> dict[str, Any]:
    """My chats whose titles hold each word of ``query`` (any case), among the
    :data:`SEARCH_SCANNED` most recent from the ``start``-th
    (:func:`chatmemory.store.search_titles`, as the admin's title search).

    ``found`` counts the matches of that window, of which the first
    :data:`SEARCH_RESULTS` are listed (newest first); ``searched`` is where the
    window ended, of ``total`` chats, and ``next`` the ``start`` to go on from
    (None once every chat was read). Chats that move while one searches on (a
    new reply makes a chat the newest) may be read twice or skipped.
    """
    window = store.search_titles(
        store.title_words(query), owner=owner, start=start, size=SEARCH_SCANNED
    )
    listed = [session_id for session_id, _owner in window.matches][:SEARCH_RESULTS]
    # A chat deleted (or made again by someone else) since its title was read
    # is left out.
    infos = [
        info
        for info in (store.get_sessions(listed) if listed else [])
        if info.owner == owner
    ]
    searched = window.start + window.searched
    return {
        "results": [
            {
                "title": info.title,
                "url": reverse("chatmemory:chat", args=[info.session_id]),
            }
            for info in infos
        ],
        "found": len(window.matches) - (len(listed) - len(infos)),
        "searched": searched,
        "total": window.indexed,
        "next": None if window.complete else searched,
    }


def redirect_back(request: HttpRequest, default: str) -> HttpResponse:
    """Redirect to the form's ``next`` (a URL of this site), else to ``default``."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


# ---------------------------------------------------------------------------
# Views


@login_required
@private_page
@store_unavailable_page
@require_http_methods(["GET", "POST"])
def session_list(request: HttpRequest) -> HttpResponse:
    """My sessions, most recent first, paginated; POST starts a new chat."""
    if request.method == "POST":
        return redirect("chatmemory:chat", start_new_chat(request))
    per_page = conf.SESSIONS_PER_PAGE
    try:
        number = int(request.GET.get("page", "1"))
    except ValueError:
        raise Http404(_("No such page.")) from None
    if number < 1 or (number - 1) * per_page > MAX_OFFSET:
        raise Http404(_("No such page."))
    page = store.list_sessions(
        owner=owner_of(request), offset=(number - 1) * per_page, limit=per_page
    )
    num_pages = max(1, math.ceil(page.total / per_page))
    if number > num_pages:
        raise Http404(_("No such page."))
    context = {
        "sessions": page.sessions,
        "total": page.total,
        "page_number": number,
        "num_pages": num_pages,
        "previous_page": number - 1 if number > 1 else None,
        "next_page": number + 1 if number < num_pages else None,
    }
    return render(request, "chatmemory/session_list.html", context)


@login_required
@private_page
@require_http_methods(["GET", "HEAD"])
def search_chats(request: HttpRequest) -> JsonResponse:
    """My chats whose titles hold each word of ``q`` (JSON), from offset ``from``.

    The answer says how many chats were searched of how many, and the offset
    to go on from: one request reads a bounded number of chats
    (:func:`find_chats`).
    """
    needle = request.GET.get("q", "")
    try:
        start = int(request.GET.get("from", "0"))
    except ValueError:
        start = -1
    if not 0 <= start <= MAX_OFFSET:
        return JsonResponse({"error": str(BAD_TURN)}, status=400)
    if len(needle) > SEARCH_LENGTH:
        error = LONG_SEARCH % {"length": SEARCH_LENGTH}
        return JsonResponse({"error": error}, status=400)
    if not store.title_words(needle):
        return JsonResponse({"error": str(EMPTY_SEARCH)}, status=400)
    try:
        found = find_chats(owner_of(request), needle, start)
    except StoreUnavailable as exc:
        logger.exception("chatmemory: Redis unavailable in %s", request.path)
        return JsonResponse({"error": str(exc.user_message)}, status=503)
    return JsonResponse(found)


@login_required
@private_page
@store_unavailable_page
@require_http_methods(["GET", "HEAD"])
def chat(request: HttpRequest, session_id: str) -> HttpResponse:
    """The transcript of my session and the message box."""
    return render_chat(request, get_owned_session(request, session_id))


@login_required
@post_only
@private_page
@store_unavailable_page
def send(request: HttpRequest, session_id: str) -> HttpResponse:
    """Run a turn without JavaScript: wait for the reply, then show the chat."""
    info = get_owned_session(request, session_id)
    # A stored chat deleted (in another tab) while the reply is written stays
    # deleted; a new chat is stored by this turn.
    must_exist = session_id not in _new_chats(request)
    form = MessageForm(request.POST)
    if not form.is_valid():
        return render_chat(request, info, form)
    if problem := mode_problem(info):
        form.add_error(None, problem)
        return render_chat(request, info, form)
    admission = admit(request)
    if not admission.admitted:
        form.add_error(None, refusal_message(admission))
        response = render_chat(request, info, form)
        response.status_code = 429
        response["Retry-After"] = str(store.quota.seconds_until(admission))
        return response
    try:
        new_turn(
            request, session_id, form.cleaned_data["message"], must_exist=must_exist
        ).run()
    except ImproperlyConfigured:
        logger.exception("chatmemory: the chat model cannot be built")
        form.add_error(None, MODEL_MISCONFIGURED)
        return render_chat(request, info, form)
    except (ModelFailed, TurnInProgress) as exc:
        form.add_error(None, exc.user_message)
        return render_chat(request, info, form)
    except SessionNotFound:  # deleted (in another tab) while the model answered
        return redirect("chatmemory:sessions")
    finally:
        release(request, admission)
    forget_new_chat(request, session_id)
    return redirect("chatmemory:chat", session_id)


@login_required
@post_only
def stream(request: HttpRequest, session_id: str) -> HttpResponseBase:
    """Run a turn, streaming the reply as ``token``, ``done`` or ``error`` events.

    The checks that need no Redis come first; then one round trip reads the
    session and counts the turn against the user's limits.
    """
    form = MessageForm(request.POST)
    if not form.is_valid():
        return sse.error_response(
            " ".join(str(error) for error in form.errors["message"]), 400
        )
    try:
        turn = new_turn(
            request,
            session_id,
            form.cleaned_data["message"],
            turn_id=request.POST.get("turn") or None,
            rewrite=request.POST.get("action") or None,
        )
    except ImproperlyConfigured:
        logger.exception("chatmemory: the chat model cannot be built")
        return sse.error_response(str(MODEL_MISCONFIGURED), 500)
    except ValueError:  # a turn id or an action no page of ours sends
        return sse.error_response(str(BAD_TURN), 400)
    try:
        info, admission = get_owned_session_and_admit(request, session_id)
    except StoreUnavailable as exc:
        logger.exception("chatmemory: Redis unavailable in %s", request.path)
        return sse.error_response(str(exc.user_message), 503)
    if not admission.admitted:
        refused = sse.error_response(refusal_message(admission), 429)
        refused["Retry-After"] = str(store.quota.seconds_until(admission))
        return refused
    if problem := mode_problem(info):
        release(request, admission)
        return sse.error_response(problem, 409)
    # A stored chat must still exist when the reply is saved (see send()); a
    # new one is stored by it.
    turn.must_exist = session_id not in _new_chats(request)
    # The turn gives its stream slot back with its lock; if it never took the
    # lock (another turn held it), the stream's end does.
    turn.admission = admission
    # The id stays remembered until the chat is stored (get_owned_session
    # forgets it then): a first turn that fails stores nothing, and the page
    # must still be able to send again.
    # GZipMiddleware only compresses for clients that accept gzip; a
    # compressed stream would reach the browser in lumps.
    request.META.pop("HTTP_ACCEPT_ENCODING", None)
    if isinstance(request, ASGIRequest):
        events: Iterator[bytes] | AsyncIterator[bytes] = sse.async_events(
            turn, lambda: arelease(request, turn.admission)
        )
    else:
        events = sse.sync_events(turn, lambda: release(request, turn.admission))
    return sse.response(events)


STOP_WAIT = 5.0
"""Seconds the stop view waits for the stopped turn to be saved."""


@login_required
@post_only
@store_unavailable_page
def stop(request: HttpRequest, session_id: str) -> HttpResponse:
    """The page stopped a reply: save it as the text the page showed (204).

    The server learns of a closed stream only when it next writes to it, so
    the stopped turn may not be saved yet: the view waits for it a little, so
    that the page's next turn comes after it. If it takes longer, the turn
    applies the text itself when it saves.
    """
    try:
        get_owned_session(request, session_id)
    except Http404:
        # A new chat's first turn may be stopped before it is stored: then
        # there is nothing to protect yet (only a reply bearing this turn's
        # id, which only its page knows, is ever cut). Anyone else's chat
        # stays a 404.
        try:
            stored = store.get_session(session_id)
        except ValueError:  # not even a session id
            raise Http404(_("No such chat session.")) from None
        if stored is not None:
            raise
    try:
        turn = store.validate_turn_id(request.POST.get("turn"))
    except ValueError:
        return HttpResponse(str(BAD_TURN), status=400)
    shown = request.POST.get("shown", "")

    def apply() -> store.StopResult:
        if conf.CHAT_MODE == "agent":  # the reply is in the thread
            return agent_module().cut_stopped_reply(session_id, turn, shown)  # type: ignore[no-any-return]
        return store.apply_stop(session_id, turn)

    # The note waits for the turn, which applies it if it saves after this.
    result = store.note_stop(session_id, turn, shown)
    if conf.CHAT_MODE == "agent":
        result = apply()
    deadline = time.monotonic() + STOP_WAIT
    while result == "missing" and time.monotonic() < deadline:
        time.sleep(0.05)
        result = apply()
    return HttpResponse(status=204)


@login_required
@post_only
@private_page
@store_unavailable_page
def rename(request: HttpRequest, session_id: str) -> HttpResponse:
    """Give my session a new title (a new chat is stored by being named)."""
    info = get_owned_session(request, session_id)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return render_chat(request, info, rename_form=form)
    title = form.cleaned_data["title"]
    if not store.set_title(session_id, title):
        store.create_session(session_id, owner=owner_of(request), title=title)
        forget_new_chat(request, session_id)
    return redirect_back(request, reverse("chatmemory:chat", args=[session_id]))


@login_required
@private_page
@store_unavailable_page
@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, session_id: str) -> HttpResponse:
    """Ask (GET), then delete (POST) my session and all its messages."""
    info = get_owned_session(request, session_id)
    if request.method == "POST":
        store.delete_session(session_id)
        forget_new_chat(request, session_id)
        return redirect_back(request, reverse("chatmemory:sessions"))
    return render(request, "chatmemory/delete.html", {"session": info})


DOWNLOAD_CHUNK = 64 * 1024
"""Bytes of the "download all" file sent at a time."""


def chunked(parts: Iterator[bytes], size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
    """``parts`` joined into chunks of about ``size`` bytes."""
    buffer: list[bytes] = []
    held = 0
    for part in parts:
        buffer.append(part)
        held += len(part)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


async def in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A sync iterator read in a worker thread, for an ASGI server."""

    def pull() -> bytes | None:
        return next(chunks, None)

    read = sync_to_async(pull, thread_sensitive=False)
    while (chunk := await read()) is not None:
        yield chunk


@login_required
@private_page
@store_unavailable_page
@require_http_methods(["GET", "HEAD"])
def download_all(request: HttpRequest) -> HttpResponseBase:
    """All my sessions as one JSON file (a list of sessions in the export's
    form), streamed: the sessions are read one at a time as it is sent."""
    parts = transfer.export_parts(
        transfer.ExportProgress(),
        owner=owner_of(request),
        thread_records=thread_reader(),
    )
    # Read the first session now: Redis being down is a 503 page, not a cut file.
    first = next(parts, b"")
    chunks = chunked(
        transfer.json_array(itertools.chain([first], parts)), DOWNLOAD_CHUNK
    )
    body: Iterator[bytes] | AsyncIterator[bytes] = (
        in_thread(chunks) if isinstance(request, ASGIRequest) else chunks
    )
    response = StreamingHttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="my-chats.json"'
    return response


@login_required
@private_page
@store_unavailable_page
@require_http_methods(["GET", "POST"])
def delete_all(request: HttpRequest) -> HttpResponse:
    """Ask (GET), then delete (POST) all my sessions."""
    if request.method == "POST":
        store.delete_owner_sessions(owner_of(request))
        return redirect("chatmemory:sessions")
    total = store.list_sessions(owner=owner_of(request), limit=1).total
    return render(request, "chatmemory/delete_all.html", {"total": total})
