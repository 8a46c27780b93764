"""The chat views: my sessions, a chat page, rename, delete, and a streamed turn.

Every view needs a logged-in user and only shows that user's sessions: any
other session id is a 404, whether it belongs to someone else or to no one.
Redis being down gives a 503 page (an ``error`` event on the stream).

The stream is Server-Sent Events on a POST. Django serves a streaming body
incrementally only when its iterator matches the server: a sync generator
under WSGI, an async one under ASGI (a mismatch is consumed whole, then sent).
So :func:`stream` hands the response the iterator that fits the request it got.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from . import chains, store
from .conf import conf
from .exceptions import StoreUnavailable
from .forms import MessageForm, RenameForm
from .owners import owner_id
from .store import transfer

logger = logging.getLogger("chatmemory")

STORE_DOWN = (
    "The chat history store is not reachable right now, so nothing can be "
    "loaded or saved. Please try again in a minute."
)
MODEL_MISCONFIGURED = (
    "The chat model is not configured correctly (see 'manage.py check'); "
    "nothing was saved."
)

View = Callable[..., HttpResponseBase]

UNITS = (("hour", 3600), ("minute", 60), ("second", 1))


# ---------------------------------------------------------------------------
# Helpers


def owner_of_user(user: Any) -> str:
    """The owner id of a user (see :mod:`chatmemory.owners`)."""
    return owner_id(user)


def owner_of(request: HttpRequest) -> str:
    """The owner id of the request's user."""
    return owner_of_user(request.user)


def get_owned_session(request: HttpRequest, session_id: str) -> store.SessionInfo:
    """The user's session ``session_id``, or 404 (also for other users' ones)."""
    try:
        store.validate_session_id(session_id)
    except ValueError:
        raise Http404("No such chat session.") from None
    info = store.get_session(session_id)
    if info is None or info.owner != owner_of(request):
        raise Http404("No such chat session.")
    return info


def quota_owner(request: HttpRequest) -> str | None:
    """The owner whose limits a turn counts against; None when exempt (staff)."""
    if conf.QUOTA_EXEMPT_STAFF and getattr(request.user, "is_staff", False):
        return None
    return owner_of(request)


def _wait_words(seconds: int) -> str:
    parts = []
    for unit, size in UNITS:
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount} {unit}{'' if amount == 1 else 's'}")
    return " ".join(parts[:2])


def refusal_message(admission: store.Admission) -> str:
    """Words for a refused turn, saying which limit and when to try again."""
    wait = store.quota.seconds_until(admission)
    when = f"Try again in {_wait_words(wait)}."
    if admission.refused == "turns":
        return (
            f"You have sent {conf.TURNS_PER_MINUTE} messages in the last minute, "
            f"the most allowed. {when}"
        )
    if admission.refused == "streams":
        return (
            f"You already have {conf.CONCURRENT_STREAMS} replies being written, "
            f"the most allowed at once. Wait for one to finish. {when}"
        )
    return (
        f"You have used today's allowance of {conf.TOKENS_PER_DAY:,} tokens. "
        f"It resets at midnight UTC. {when}"
    )


def admit(request: HttpRequest) -> store.Admission:
    """Count a turn against the user's limits (checked before the model runs)."""
    owner = quota_owner(request)
    if owner is None:
        return store.Admission("")
    return store.admit_turn(owner)


def release(request: HttpRequest, admission: store.Admission) -> None:
    """Give back the stream slot of an admitted turn; never raises."""
    owner = quota_owner(request)
    if owner is None or not admission.holds_stream:
        return
    try:
        store.release_turn(owner, admission)
    except StoreUnavailable:  # the slot lapses at its lease
        logger.warning("chatmemory: could not release a stream slot", exc_info=True)


async def arelease(request: HttpRequest, admission: store.Admission) -> None:
    """Async :func:`release`."""
    owner = quota_owner(request)
    if owner is None or not admission.holds_stream:
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
        except StoreUnavailable:
            logger.exception("chatmemory: Redis unavailable in %s", request.path)
            response = render(
                request,
                "chatmemory/unavailable.html",
                {"message": STORE_DOWN},
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


_ROLES = {
    "human": "human",
    "HumanMessageChunk": "human",
    "ai": "ai",
    "AIMessageChunk": "ai",
    "system": "system",
    "SystemMessageChunk": "system",
}


def transcript(
    records: list[store.Record | store.UnreadableEntry],
) -> list[Entry]:
    """The entries to show for a session's stored records."""
    entries = []
    for record in records:
        if isinstance(record, store.UnreadableEntry):
            entries.append(Entry("unreadable", "(an unreadable entry was skipped)"))
            continue
        data = record.get("data")
        data = data if isinstance(data, dict) else {}
        metadata = data.get("response_metadata")
        interrupted = isinstance(metadata, dict) and bool(
            metadata.get(chains.INTERRUPTED)
        )
        role = _ROLES.get(str(record.get("type")), "other")
        entries.append(Entry(role, content_text(data.get("content")), interrupted))
    return entries


def content_text(content: object) -> str:
    """The text of a message's content (a string, or a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block if isinstance(block, str) else str(block.get("text", ""))
            for block in content
            if isinstance(block, (str, dict))
        )
    return "" if content is None else str(content)


def model_context() -> dict[str, Any]:
    """What the chat page says about the model that answers."""
    try:
        model = chains.get_chat_model()
    except ImproperlyConfigured as exc:
        return {"model_name": "", "demo_model": False, "model_error": str(exc)}
    return {
        "model_name": chains.model_name(model),
        "demo_model": chains.is_demo_model(model),
        "model_error": "",
    }


def render_chat(
    request: HttpRequest,
    info: store.SessionInfo,
    form: MessageForm | None = None,
    rename_form: RenameForm | None = None,
) -> HttpResponse:
    """The chat page: transcript, message box, rename form."""
    context = {
        "session": info,
        "entries": transcript(store.read_records(info.session_id)),
        "form": form or MessageForm(),
        "rename_form": rename_form or RenameForm(initial={"title": info.title}),
        **model_context(),
    }
    return render(request, "chatmemory/chat.html", context)


# ---------------------------------------------------------------------------
# Server-Sent Events

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(event: str, data: str) -> bytes:
    """One Server-Sent Event; every line of ``data`` gets its own ``data:`` field."""
    lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"event: {event}\n{lines}\n".encode()


def _done(turn: chains.ChatTurn) -> bytes:
    return sse_event("done", json.dumps({"message_count": turn.message_count}))


def sync_events(
    turn: chains.ChatTurn, on_end: Callable[[], None] = lambda: None
) -> Iterator[bytes]:
    """The turn as SSE, for WSGI servers; ``on_end`` runs when the stream ends."""
    try:
        yield b": stream open\n\n"  # sends the headers before the model starts
        try:
            with closing(turn.stream()) as tokens:
                for token in tokens:
                    yield sse_event("token", token)
        except chains.ModelFailed as exc:
            yield sse_event("error", exc.user_message)
            return
        except StoreUnavailable:
            logger.exception("chatmemory: Redis unavailable during a turn")
            yield sse_event("error", STORE_DOWN)
            return
        yield _done(turn)
    finally:
        on_end()


async def _nothing() -> None:
    return None


async def async_events(
    turn: chains.ChatTurn, on_end: Callable[[], Awaitable[None]] = _nothing
) -> AsyncIterator[bytes]:
    """The turn as SSE, for ASGI servers (native async Redis and model calls)."""
    try:
        yield b": stream open\n\n"
        try:
            async with aclosing(turn.astream()) as tokens:
                async for token in tokens:
                    yield sse_event("token", token)
        except chains.ModelFailed as exc:
            yield sse_event("error", exc.user_message)
            return
        except StoreUnavailable:
            logger.exception("chatmemory: Redis unavailable during a turn")
            yield sse_event("error", STORE_DOWN)
            return
        yield _done(turn)
    finally:
        await on_end()


def sse_error(message: str, status: int) -> HttpResponse:
    """A complete event stream holding one ``error`` event."""
    response = HttpResponse(
        sse_event("error", message), status=status, content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    return response


# ---------------------------------------------------------------------------
# Views


@login_required
@store_unavailable_page
@require_http_methods(["GET", "POST"])
def session_list(request: HttpRequest) -> HttpResponse:
    """My sessions, most recent first, paginated; POST starts a new chat."""
    if request.method == "POST":
        session_id = uuid.uuid4().hex
        store.create_session(session_id, owner=owner_of(request))
        return redirect("chatmemory:chat", session_id)
    per_page = conf.SESSIONS_PER_PAGE
    try:
        number = int(request.GET.get("page", "1"))
    except ValueError:
        raise Http404("No such page.") from None
    if number < 1:
        raise Http404("No such page.")
    page = store.list_sessions(
        owner=owner_of(request), offset=(number - 1) * per_page, limit=per_page
    )
    num_pages = max(1, math.ceil(page.total / per_page))
    if number > num_pages:
        raise Http404("No such page.")
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
@store_unavailable_page
@require_http_methods(["GET", "HEAD"])
def chat(request: HttpRequest, session_id: str) -> HttpResponse:
    """The transcript of my session and the message box."""
    return render_chat(request, get_owned_session(request, session_id))


@login_required
@store_unavailable_page
@require_POST
def send(request: HttpRequest, session_id: str) -> HttpResponse:
    """Run a turn without JavaScript: wait for the reply, then show the chat."""
    info = get_owned_session(request, session_id)
    form = MessageForm(request.POST)
    if not form.is_valid():
        return render_chat(request, info, form)
    admission = admit(request)
    if not admission.admitted:
        form.add_error(None, refusal_message(admission))
        response = render_chat(request, info, form)
        response.status_code = 429
        response["Retry-After"] = str(store.quota.seconds_until(admission))
        return response
    try:
        turn = chains.ChatTurn(
            session_id, form.cleaned_data["message"], owner=owner_of(request)
        )
        turn.run()
    except ImproperlyConfigured:
        logger.exception("chatmemory: the chat model cannot be built")
        form.add_error(None, MODEL_MISCONFIGURED)
        return render_chat(request, info, form)
    except chains.ModelFailed as exc:
        form.add_error(None, exc.user_message)
        return render_chat(request, info, form)
    finally:
        release(request, admission)
    return redirect("chatmemory:chat", session_id)


@login_required
@require_POST
def stream(request: HttpRequest, session_id: str) -> HttpResponseBase:
    """Run a turn, streaming the reply as ``token``, ``done`` or ``error`` events."""
    form = MessageForm(request.POST)
    try:
        get_owned_session(request, session_id)
    except StoreUnavailable:
        logger.exception("chatmemory: Redis unavailable in %s", request.path)
        return sse_error(STORE_DOWN, 503)
    if not form.is_valid():
        return sse_error(" ".join(str(error) for error in form.errors["message"]), 400)
    try:
        turn = chains.ChatTurn(
            session_id, form.cleaned_data["message"], owner=owner_of(request)
        )
    except ImproperlyConfigured:
        logger.exception("chatmemory: the chat model cannot be built")
        return sse_error(MODEL_MISCONFIGURED, 500)
    try:
        admission = admit(request)
    except StoreUnavailable:
        logger.exception("chatmemory: Redis unavailable in %s", request.path)
        return sse_error(STORE_DOWN, 503)
    if not admission.admitted:
        refused = sse_error(refusal_message(admission), 429)
        refused["Retry-After"] = str(store.quota.seconds_until(admission))
        return refused
    # GZipMiddleware only compresses for clients that accept gzip; a
    # compressed stream would reach the browser in lumps.
    request.META.pop("HTTP_ACCEPT_ENCODING", None)
    if isinstance(request, ASGIRequest):
        events: Iterator[bytes] | AsyncIterator[bytes] = async_events(
            turn, lambda: arelease(request, admission)
        )
    else:
        events = sync_events(turn, lambda: release(request, admission))
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@login_required
@store_unavailable_page
@require_POST
def rename(request: HttpRequest, session_id: str) -> HttpResponse:
    """Give my session a new title."""
    info = get_owned_session(request, session_id)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return render_chat(request, info, rename_form=form)
    store.set_title(session_id, form.cleaned_data["title"])
    return redirect("chatmemory:chat", session_id)


@login_required
@store_unavailable_page
@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, session_id: str) -> HttpResponse:
    """Ask (GET), then delete (POST) my session and all its messages."""
    info = get_owned_session(request, session_id)
    if request.method == "POST":
        store.delete_session(session_id)
        return redirect("chatmemory:sessions")
    return render(request, "chatmemory/delete.html", {"session": info})


@login_required
@store_unavailable_page
@require_http_methods(["GET", "HEAD"])
def download_all(request: HttpRequest) -> HttpResponse:
    """All my sessions as one JSON file (a list of sessions in the export's form)."""
    buffer = io.BytesIO()
    transfer.export_sessions(buffer, owner=owner_of(request))
    lines = buffer.getvalue().splitlines()
    response = HttpResponse(
        b"[" + b",\n".join(lines) + b"]\n", content_type="application/json"
    )
    response["Content-Disposition"] = 'attachment; filename="my-chats.json"'
    return response


@login_required
@store_unavailable_page
@require_http_methods(["GET", "POST"])
def delete_all(request: HttpRequest) -> HttpResponse:
    """Ask (GET), then delete (POST) all my sessions."""
    if request.method == "POST":
        store.delete_owner_sessions(owner_of(request))
        return redirect("chatmemory:sessions")
    total = store.list_sessions(owner=owner_of(request), limit=1).total
    return render(request, "chatmemory/delete_all.html", {"total": total})
