"""Tests of chatmemory.admin.transcript: a session's transcript and its export."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import redis
from django.test import Client
from django.urls import reverse
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
from chatmemory.history import DjangoRedisChatMessageHistory

if TYPE_CHECKING:
    pass

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
    assert reverse("admin:auth_user_change", args=[alice.pk]) in head
    # every message with its role
    entries = response.context["entries"]
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
    entries = response.context["entries"]
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
    assert "3 unreadable entries" in page
    # the export leaves unreadable entries out
    exported = json.loads(admin_client.get(export_url("broken")).content)
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
    loaded = messages_from_dict(json.loads(response.content))
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
    assert view(0, {"type": "human", "data": {"content": 42}}).blocks == ["42"]
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
        0, {"type": "ai", "data": {"tool_calls": ["junk", {"args": {"a": 1}}]}}
    )
    assert view.text == "" and view.blocks == []
    assert [(c.name, c.arguments) for c in view.tool_calls] == [("?", '{"a": 1}')]
