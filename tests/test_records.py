from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from chatmemory import records


def ai(**data: Any) -> dict[str, Any]:
    return {"type": "ai", "data": {"content": "", **data}}


def test_a_plain_message() -> None:
    shown = records.read({"type": "human", "data": {"content": "Hi <b>"}})
    assert (shown.kind, shown.role, shown.text) == ("human", "human", "Hi <b>")
    assert shown.blocks == () and shown.tool_calls == () and not shown.interrupted
    assert shown.problem == ""


def test_text_blocks_are_joined_by_a_blank_line_other_blocks_kept_apart() -> None:
    content = [
        "Hello",
        {"type": "text", "text": "world"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": 5},  # not text: shown as a block
    ]
    shown = records.read({"type": "human", "data": {"content": content}})
    assert shown.text == "Hello\n\nworld"
    assert shown.blocks == (
        '{"image_url": {"url": "data:,"}, "type": "image_url"}',
        '{"text": 5, "type": "text"}',
    )
    # The title is the same text on one line.
    assert records.title([{"type": "human", "data": {"content": content}}]) == (
        "Hello world"
    )


def test_chunks_read_as_their_message_and_chat_messages_have_their_role() -> None:
    assert records.read({"type": "AIMessageChunk", "data": {"content": "x"}}).kind == (
        "ai"
    )
    chat = records.read({"type": "chat", "data": {"content": "x", "role": "critic"}})
    assert (chat.kind, chat.role) == ("chat", "critic")
    odd = records.read({"type": "mystery", "data": {"content": "x"}})
    assert (odd.kind, odd.role, odd.text) == ("other", "mystery", "x")


def test_tool_calls_and_the_interrupted_flag() -> None:
    shown = records.read(
        ai(
            tool_calls=[
                {"name": "search", "args": {"q": "tea"}, "id": "c1"},
                {"args": None},
                "not a call",
            ],
            response_metadata={records.INTERRUPTED: True},
        )
    )
    assert shown.tool_calls == (
        records.ToolCall("search", "c1", '{"q": "tea"}'),
        records.ToolCall("?", "", "null"),
    )
    assert shown.interrupted
    # Only True means stopped; a truthy string is not the flag.
    assert not records.read(ai(response_metadata={"interrupted": "yes"})).interrupted
    assert records.read(ai(tool_calls=7)).tool_calls == ()


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ([1, 2], "a JSON list, not a message record"),
        ({"type": "ai"}, "not a message record"),
        ({"type": 3, "data": {}}, "not a message record"),
        ({"type": "ai", "data": []}, "not a message record"),
        ({"type": "ai", "data": {"content": 7}}, "its content is a int"),
        ({"type": "ai", "data": {}}, "its content is a NoneType"),
    ],
)
def test_what_is_not_a_message_record_is_unreadable(
    record: object, problem: str
) -> None:
    shown = records.read(record)
    assert shown.kind == "unreadable" and problem in shown.problem
    assert shown.text == "" and shown.tool_calls == ()


def test_titles() -> None:
    long = "word " * 40
    assert records.title([]) == ""
    assert records.title(
        [
            ai(content="I am not the title"),
            {"type": "human", "data": {"content": "  \n "}},
            "garbage",
            {"type": "human", "data": {"content": 7}},
            {"type": "human", "data": {"content": f"Plans\nfor {long}"}},
        ]
    ) == records.shorten(f"Plans for {long}".strip(), records.TITLE_LENGTH)
    title = records.title([{"type": "human", "data": {"content": long}}])
    assert len(title) == records.TITLE_LENGTH and title.endswith("\u2026")
    assert records.shorten("short", 10) == "short"


def test_dumps_shows_anything() -> None:
    assert records.dumps({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert records.dumps({1: "x", "y": 2}) == repr({1: "x", "y": 2})  # unsortable
    deep: list[Any] = []
    for _ in range(sys.getrecursionlimit() + 10):
        deep = [deep]
    assert records.dumps(deep).startswith("[[[[")  # repr's own guard


def test_records_store_and_admin_do_not_import_langchain() -> None:
    code = (
        "import sys, django; django.setup(); "
        "import chatmemory.records, chatmemory.store, chatmemory.admin; "
        "print(sorted(m for m in sys.modules if m.startswith('langchain')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
