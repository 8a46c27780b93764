"""Tests of chatmemory.admin.transcript: a session's transcript and its export."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import redis
from django.test import Client
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.timezone import localtime
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
)

from chatmemory import store
from chatmemory.admin import transcript
from chatmemory.admin.options import ChatSessionAdmin
from chatmemory.history import DjangoRedisChatMessageHistory
from chatmemory.owners import owner_id
from tests.admin_helpers import (
    LIST_URL,
    chat,
    delete_url,
    export_url,
    make_user,
    text,
    transcript_url,
)

pytestmark = pytest.mark.django_db


def body(response: Any) -> bytes:
    """A streamed response's body, whole."""
    assert response.streaming
    return b"".join(response.streaming_content)


def rich_conversation() -> list[BaseMessage]:
    return [
        SystemMessage("You are terse."),
        HumanMessage("What's the weather in Paris?", id="msg-1"),
        AIMessage(
            "",
            tool_calls=[
                {
                    "name": "get_weather",
                    "args": {"city": "Paris", "unit": "celsius"},
                    "id": "call_42",
                    "type": "tool_call",
                }
            ],
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 7,
                "total_tokens": 19,
                "input_token_details": {"cache_read": 3},
            },
            response_metadata={"model_name": "demo-model", "finish_reason": "tool"},
        ),
        ToolMessage("18 degrees, sunny", tool_call_id="call_42", name="get_weather"),
        AIMessage(
            [{"type": "text", "text": "It is sunny."}, {"type": "image", "url": "x"}],
            additional_kwargs={"refusal": None, "custom": "value"},
        ),
        HumanMessage("long " * 400),
    ]


def test_transcript_shows_every_message_readably(admin_client: Client) -> None:
    alice = make_user("alice")
    chat("weather", *rich_conversation(), owner=alice)
    response = admin_client.get(transcript_url("weather"))
    assert response.status_code == 200
    page = text(response)
    # session metadata on top
    head = page[: page.index('<ol class="chatmemory-transcript">')]
    assert "<code>weather</code>" in head
    assert "What&#x27;s the weather in Paris?" in head  # the title
    assert "<dt>Messages</dt><dd>6</dd>" in head
    # one date format for the list and the transcript
    info = store.get_session("weather")
    assert info is not None
    stamp = date_format(localtime(info.created), "DATETIME_FORMAT")
    assert f"<dt>Created</dt><dd>{stamp}</dd>" in head
    assert f'<td class="field-created">{stamp}</td>' in text(admin_client.get(LIST_URL))
    assert reverse("admin:auth_user_change", args=[alice.pk]) in head
    # every message with its role
    entries = response.context["page"].messages
    assert [m.role for m in entries] == ["System", "Human", "AI", "Tool", "AI", "Human"]
    assert page.count('<li class="') >= 6
    assert "You are terse." in page
    # the tool call with its arguments, the tool result, the usage
    assert "Tool call: get_weather" in page
    assert "call_42" in page
    assert "&quot;city&quot;: &quot;Paris&quot;" in page
    assert "result of tool call call_42" in page
    assert "18 degrees, sunny" in page
    assert "input tokens: 12" in page and "total tokens: 19" in page
    assert "input token details: cache read 3" in page
    assert "demo-model" in page  # under the message's details
    # content blocks: text shown as text, other blocks as JSON
    assert "It is sunny." in page
    assert "&quot;image&quot;" in page
    # long content collapsible
    assert entries[5].collapsed and not entries[1].collapsed
    assert "<details><summary>long long" in page
    # each row through its own template, which a project can override
    used = [t.name for t in response.templates]
    assert used.count("admin/chatmemory/chatsession/transcript_message.html") == 6
    assert "msg-1" in page
    # breadcrumbs back to the list, export and delete buttons
    assert f'<a href="{LIST_URL}">Chat sessions</a>' in page
    assert export_url("weather") in page
    assert delete_url("weather") in page


def test_transcript_of_an_empty_session(admin_client: Client) -> None:
    store.create_session("empty", title="Nothing yet")
    page = text(admin_client.get(transcript_url("empty")))
    assert "This session has no messages." in page
    assert "Nothing yet" in page


def test_corrupt_entries_show_as_unreadable_rows(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    chat("broken", HumanMessage("before"))
    key = store.messages_key("broken")
    redis_client.rpush(key, b"{not json <b>")
    redis_client.rpush(key, b"[1, 2]")
    redis_client.rpush(key, b'{"no": "type"}')
    redis_client.rpush(key, b'{"type": "alien", "data": {"content": "zork"}}')
    chat("broken", AIMessage("after"))
    response = admin_client.get(transcript_url("broken"))
    assert response.status_code == 200
    page = text(response)
    entries = response.context["page"].messages
    assert [m.kind for m in entries] == [
        "human",
        "unreadable",
        "unreadable",
        "unreadable",
        "other",
        "ai",
    ]
    assert page.count("Unreadable entry") == 3
    assert "not JSON" in page
    assert "{not json &lt;b&gt;" in page
    assert "a JSON list" in page
    assert "not a message record" in page
    assert "zork" in page and "before" in page and "after" in page
    assert "3 unreadable entries on this page" in page
    # the export leaves unreadable entries out
    exported = json.loads(body(admin_client.get(export_url("broken"))))
    assert [r.get("data", {}).get("content") for r in exported] == [
        "before",
        None,
        "zork",
        "after",
    ]


def test_escaping(admin_client: Client) -> None:
    evil = "<script>alert(1)</script>"
    chat(f"x{evil}", HumanMessage(evil), AIMessage(f"**{evil}**"))
    store.create_session("titled", title=evil)
    for url in (LIST_URL, transcript_url(f"x{evil}"), transcript_url("titled")):
        page = text(admin_client.get(url))
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    page = text(admin_client.get(delete_url(f"x{evil}")))
    assert "<script>alert(1)" not in page


def test_export_round_trips_through_messages_from_dict(admin_client: Client) -> None:
    messages = rich_conversation()
    chat("export-me", *messages)
    response = admin_client.get(export_url("export-me"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="chat-session-export-me.json"'
    )
    loaded = messages_from_dict(json.loads(body(response)))
    assert loaded == messages
    assert loaded == DjangoRedisChatMessageHistory("export-me").messages


def test_export_filename_of_an_odd_id(admin_client: Client) -> None:
    chat("caf\xe9/1", HumanMessage("x"))
    response = admin_client.get(export_url("caf\xe9/1"))
    assert "chat-session-caf" in response["Content-Disposition"]
    assert "attachment" in response["Content-Disposition"]
    assert "/" not in response["Content-Disposition"].split("filename", 1)[1]


def test_message_view_of_odd_records() -> None:
    view = transcript.message_view
    assert view(
        0, {"type": "chat", "data": {"content": "x", "role": "critic"}}
    ).role == ("critic")
    assert view(0, {"type": "AIMessageChunk", "data": {"content": "x"}}).kind == "ai"
    # Content that is neither text nor blocks cannot be a message: shown raw.
    odd = view(0, {"type": "human", "data": {"content": 42}})
    assert odd.kind == "unreadable" and "content is a int" in odd.unreadable_reason
    assert odd.raw == '{"data": {"content": 42}, "type": "human"}'
    assert view(0, {"type": "human", "data": {"content": [7]}}).blocks == ["7"]
    assert view(0, {"type": "human", "data": {"content": ["a", "b"]}}).text == "a\n\nb"
    assert view(0, {"type": 3, "data": {}}).kind == "unreadable"
    lines = view(0, {"type": "human", "data": {"content": "l\n" * 20}})
    assert lines.collapsed
    raw = store.UnreadableEntry(3, b"x" * 5000, "not JSON")
    unreadable = view(3, raw)
    assert unreadable.kind == "unreadable"
    assert len(unreadable.raw) == transcript.RAW_PREVIEW + 1


def test_message_view_skips_malformed_tool_calls_and_no_content() -> None:
    view = transcript.message_view(
        0,
        {
            "type": "ai",
            "data": {"content": "", "tool_calls": ["junk", {"args": {"a": 1}}]},
        },
    )
    assert view.text == "" and view.blocks == []
    assert [(c.name, c.arguments) for c in view.tool_calls] == [("?", '{"a": 1}')]


# --- paging, streaming, audit -----------------------------------------------------


def long_session(session_id: str, count: int) -> None:
    store.import_sessions(
        [
            store.ImportedSession(
                session_id,
                [
                    {
                        "type": "human" if i % 2 == 0 else "ai",
                        "data": {"content": f"m{i}"},
                    }
                    for i in range(count)
                ],
            )
        ]
    )


def test_transcript_pages(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChatSessionAdmin, "transcript_per_page", 4)
    long_session("long", 10)
    pages = {}
    for number in ("", "1", "2", "3"):
        response = admin_client.get(
            transcript_url("long"), {"p": number} if number else {}
        )
        assert response.status_code == 200
        pages[number] = [m.text for m in response.context["page"].messages]
        assert "<dt>Messages</dt><dd>10</dd>" in text(response)
    assert pages[""] == pages["1"] == ["m0", "m1", "m2", "m3"]
    assert pages["2"] == ["m4", "m5", "m6", "m7"]
    assert pages["3"] == ["m8", "m9"]
    page = text(admin_client.get(transcript_url("long"), {"p": "2"}))
    # positions count from the session's start; links to the other pages
    assert 'id="message-4"' in page and 'id="message-7"' in page
    assert 'href="?p=1"' in page and 'href="?p=3"' in page
    assert "Entries 4–7 of 10" in page
    for bad in ("4", "0", "-1", "x", "368934881474191034"):
        response = admin_client.get(transcript_url("long"), {"p": bad})
        assert response.status_code == 404, bad
    # one page only: no paginator
    long_session("short", 3)
    assert "Entries" not in text(admin_client.get(transcript_url("short")))


def test_export_streams_in_batches(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_session("long", 11)
    monkeypatch.setattr(transcript, "EXPORT_BATCH", 3)
    response = admin_client.get(export_url("long"))
    assert response.streaming
    pieces = list(response.streaming_content)
    # "[", one piece per batch of records (4 batches), then "]"
    assert len(pieces) == 6
    exported = json.loads(b"".join(pieces))
    assert [r["data"]["content"] for r in exported] == [f"m{i}" for i in range(11)]
    empty = store.create_session("empty")
    assert empty
    assert json.loads(body(admin_client.get(export_url("empty")))) == []


def test_reading_and_exporting_are_audited(
    admin_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    alice = make_user("alice")
    chat("secret", HumanMessage("my secret"), owner=alice)
    with caplog.at_level("INFO", logger="chatmemory.audit"):
        admin_client.get(transcript_url("secret"))
        admin_client.get(transcript_url("secret"), {"p": "1"})
        body(admin_client.get(export_url("secret")))
        admin_client.get(transcript_url("no-such"))  # nothing read: not recorded
    records = [r for r in caplog.records if r.name == "chatmemory.audit"]
    assert [(r.audit_action, r.page) for r in records] == [  # type: ignore[attr-defined]
        ("view", 1),
        ("view", 1),
        ("export", None),
    ]
    for record in records:
        assert record.session_id == "secret"  # type: ignore[attr-defined]
        assert record.session_owner == owner_id(alice)  # type: ignore[attr-defined]
        assert record.username == "root"  # type: ignore[attr-defined]
        assert record.levelname == "INFO"
    assert records[0].getMessage() == (
        f"root viewed chat session 'secret' (owner {owner_id(alice)}), page 1"
    )
    assert records[2].getMessage() == (
        f"root exported chat session 'secret' (owner {owner_id(alice)})"
    )


# --- fuzz: no stored entry breaks the transcript -----------------------------------

FUZZ_ENTRIES = 2000


def fuzz_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, biased towards the shapes message records have."""
    kinds = ["str", "int", "float", "bool", "null"]
    if depth < 3:
        kinds += ["list", "dict", "blocks"]
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", "x", "<b>&</b>", "\n" * 30, "é" * 700, "a" * 3000])
    if kind == "int":
        return rng.choice([0, -1, 42, 2**70])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e308])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "blocks":
        return [
            rng.choice(
                [
                    {"type": "text", "text": fuzz_value(rng, depth + 1)},
                    {"type": fuzz_value(rng, depth + 1)},
                    "plain",
                ]
            )
            for _ in range(rng.randint(0, 3))
        ]
    fields = ["content", "tool_calls", "usage_metadata", "id", "name", "role"]
    fields += ["tool_call_id", "status", "response_metadata", "additional_kwargs"]
    return {
        rng.choice(fields): fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 5))
    }


def fuzz_entry(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice([b"{", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b"null"])
    types = ["human", "ai", "system", "tool", "chat", "remove", "AIMessageChunk"]
    record = {
        "type": rng.choice([*types, fuzz_value(rng, 2)]),
        "data": fuzz_value(rng) if roll < 0.3 else fuzz_value(rng, 1) or {},
    }
    if isinstance(record["data"], dict) and rng.random() < 0.5:
        record["data"]["content"] = fuzz_value(rng, 1)
    return json.dumps(record).encode()


def test_fuzzed_entries_never_break_the_transcript(
    admin_client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261129)
    chat("fuzz", HumanMessage("first"))
    redis_client.rpush(
        store.messages_key("fuzz"), *(fuzz_entry(rng) for _ in range(FUZZ_ENTRIES))
    )
    monkeypatch.setattr(ChatSessionAdmin, "transcript_per_page", 250)
    shown = 0
    for number in range(1, FUZZ_ENTRIES // 250 + 2):
        response = admin_client.get(transcript_url("fuzz"), {"p": number})
        assert response.status_code == 200, number
        shown += len(response.context["page"].messages)
    assert shown == FUZZ_ENTRIES + 1
    exported = json.loads(body(admin_client.get(export_url("fuzz"))))
    assert exported[0]["data"]["content"] == "first"


def test_an_entry_that_breaks_the_view_shows_as_unreadable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(position: int, entry: Any) -> Any:
        raise TypeError("unforeseen shape")

    monkeypatch.setattr(transcript, "_message_view", broken)
    view = transcript.message_view(7, {"type": "human", "data": {"content": "x"}})
    assert view.kind == "unreadable" and view.position == 7
    assert "unforeseen shape" in view.unreadable_reason
    assert "entry 7 cannot be shown" in caplog.text
