"""Fuzz: no stored entry, however odd, gives a 500 or cuts a stream.

Each session gets two good messages and random entries written straight into
Redis (as another program, or an older chatmemory, might have written them);
then the test opens its chat page, sends a message without JavaScript,
streams one, and opens its admin transcript. ``CHATMEMORY_FUZZ_CASES`` sets
the number of random entries (default 2,000), ``CHATMEMORY_FUZZ_PER_SESSION``
how many share a session (default 5; 1 counts failures per entry), and
``CHATMEMORY_FUZZ_SEED`` the seed. Then ``CHATMEMORY_FUZZ_REWRITES`` sessions
(default a quarter of the cases) end in a question and a reply either or both
made odd, and the test regenerates, edits or continues their last turn.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from typing import Any

import pytest
import redis
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)

from chatmemory import store
from chatmemory.owners import owner_id

pytestmark = pytest.mark.django_db

CASES = int(os.environ.get("CHATMEMORY_FUZZ_CASES", "2000"))
PER_SESSION = int(os.environ.get("CHATMEMORY_FUZZ_PER_SESSION", "5"))
SEED = int(os.environ.get("CHATMEMORY_FUZZ_SEED", "9"))
REWRITES = int(os.environ.get("CHATMEMORY_FUZZ_REWRITES", str(CASES // 4)))
REWRITE_ACTIONS = ("regenerate", "edit", "continue")
# Reads every human message of its prompt (.text), as models do; a short reply.
MODEL = {"factory": "tests.chat_models.HistoryModel"}


def value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, small."""
    pick = rng.randrange(10 if depth < 3 else 7)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randint(-(2**63), 2**63)
    if pick == 3:
        return rng.choice([0.5, -1e300, 1e-7])
    if pick in (4, 5, 6):
        return rng.choice(
            ["", "x", "text", "\n", "<b>hi</b>", "é\u2028", "human", "ai", "text"]
        )
    if pick in (7, 8):
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["type", "text", "id", "name", "args", "url", "role", "x"]
    return {rng.choice(keys): value(rng, depth + 1) for _ in range(rng.randrange(4))}


def content(rng: random.Random) -> Any:
    pick = rng.randrange(4)
    if pick == 0:
        return rng.choice(["", "hello", "line\nbreak", "<script>x</script>"])
    if pick == 1:
        return [{"type": "text", "text": "Hello"}, "world"]
    if pick == 2:
        return [{"type": "image_url", "image_url": {"url": "data:,"}}]
    return [value(rng) for _ in range(rng.randrange(3))]


def message(rng: random.Random) -> BaseMessage:
    text = rng.choice(["hi", "", "multi\nline"])
    pick = rng.randrange(9)
    if pick == 0:
        return HumanMessage(content=text)
    if pick == 1:
        return AIMessage(
            content=text,
            tool_calls=[{"name": "search", "args": {"q": "tea"}, "id": "call-1"}],
        )
    if pick == 2:
        return AIMessage(content="", response_metadata={"interrupted": True})
    if pick == 3:
        return SystemMessage(content=text)
    if pick == 4:
        return ToolMessage(content=text, tool_call_id="call-1")
    if pick == 5:
        return ChatMessage(content=text, role="critic")
    if pick == 6:
        return FunctionMessage(content=text, name="f")
    if pick == 7:
        return RemoveMessage(id="m-1")
    return AIMessageChunk(content=text)


def entry(rng: random.Random, made: BaseMessage | None = None) -> tuple[str, bytes]:
    """(what kind of oddity, the stored bytes) of ``made`` (else a random
    message) made odd."""
    record: Any = message_to_dict(message(rng) if made is None else made)
    pick = rng.randrange(12)
    if pick == 0:
        kind = f"valid {record['type']}"
    elif pick in (1, 2, 3, 4):
        field = rng.choice([*record["data"], "content"])
        record["data"][field] = value(rng)
        kind = f"{record['type']} with a wrong {field}"
    elif pick == 5:
        record["data"]["content"] = content(rng)
        kind = f"{record['type']} with odd content"
    elif pick == 6:
        field = rng.choice(list(record["data"]))
        del record["data"][field]
        kind = f"{record['type']} without {field}"
    elif pick == 7:
        record["data"][rng.choice(["extra", "tool_calls", "usage_metadata"])] = value(
            rng
        )
        kind = f"{record['type']} with an extra field"
    elif pick == 8:
        record["type"] = value(rng)
        kind = "a wrong type"
    elif pick == 9:
        record["data"] = value(rng)
        kind = "a wrong data"
    elif pick == 10:
        record = value(rng)
        kind = "not a record"
    else:
        raw = rng.choice([b"{", b"not json", b"[" * 5000, b'{"type": "ai"', b"\xff"])
        return "not JSON", raw
    return kind, json.dumps(record).encode()


def last_turn(rng: random.Random) -> list[tuple[str, bytes]]:
    """A last turn, a question and its reply, either or both made odd."""
    text = rng.choice(["hi", "", "multi\nline"])
    reply = rng.choice(
        [
            AIMessage(content=text),
            AIMessage(content=text, response_metadata={"interrupted": True}),
            AIMessage(
                content=text,
                tool_calls=[{"name": "search", "args": {"q": "tea"}, "id": "c"}],
            ),
        ]
    )
    return [entry(rng, HumanMessage(content=text)), entry(rng, reply)]


def last_event(body: bytes) -> str:
    blocks = [block for block in body.decode().split("\n\n") if block.strip()]
    names = [
        line[len("event: ") :]
        for line in (blocks[-1] if blocks else "").split("\n")
        if line.startswith("event: ")
    ]
    return names[0] if names else ""


def test_no_stored_entry_gives_a_500_or_a_cut_stream(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    user = User.objects.create_superuser("fuzz", "fuzz@example.com", "pw")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    rng = random.Random(SEED)
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}

    def failed(where: str, kind: str, raw: bytes) -> None:
        failures[where] += 1
        examples.setdefault(where, f"{kind}: {raw[:200]!r}")

    def seed(session_id: str, made: list[tuple[str, bytes]]) -> tuple[str, bytes]:
        """A chat of one plain turn followed by the entries ``made``."""
        store.append_records(
            session_id,
            [
                {"type": "human", "data": {"content": "first"}},
                {"type": "ai", "data": {"content": "reply"}},
            ],
            owner=owner_id(user),
        )
        redis_client.rpush(store.messages_key(session_id), *(r for _, r in made))
        return " + ".join(k for k, _ in made), b" + ".join(r for _, r in made)

    def check_stream(what: str, streamed: Any, kind: str, raw: bytes) -> None:
        if streamed.status_code != 200:
            failed(f"{what} {streamed.status_code}", kind, raw)
            return
        try:
            body = b"".join(streamed.streaming_content)
        except Exception:
            failed(f"{what} cut (exception)", kind, raw)
        else:
            if last_event(body) not in ("done", "error"):
                failed(f"{what} cut", kind, raw)

    with override_settings(CHATMEMORY_CHAT_MODEL=MODEL):
        for number in range(0, CASES, PER_SESSION):
            session_id = f"fuzz-{number}"
            kind, raw = seed(
                session_id,
                [entry(rng) for _ in range(min(PER_SESSION, CASES - number))],
            )

            page = client.get(reverse("chatmemory:chat", args=[session_id]))
            if page.status_code != 200:
                failed(f"chat page {page.status_code}", kind, raw)
            sent = client.post(
                reverse("chatmemory:send", args=[session_id]), {"message": "next"}
            )
            if sent.status_code not in (200, 302):
                failed(f"send {sent.status_code}", kind, raw)
            streamed = client.post(
                reverse("chatmemory:stream", args=[session_id]), {"message": "more"}
            )
            check_stream("stream", streamed, kind, raw)
            transcript = client.get(
                reverse("admin:chatmemory_chatsession_change", args=[quote(session_id)])
            )
            if transcript.status_code != 200:
                failed(f"admin transcript {transcript.status_code}", kind, raw)
        # Regenerate, edit and continue on a last turn that is odd.
        for number in range(REWRITES):
            session_id = f"fuzz-turn-{number}"
            kind, raw = seed(session_id, last_turn(rng))
            action = REWRITE_ACTIONS[number % 3]
            streamed = client.post(
                reverse("chatmemory:stream", args=[session_id]),
                {"message": "edited", "action": action},
            )
            check_stream(action, streamed, kind, raw)
    sessions = -(-CASES // PER_SESSION)
    report = ", ".join(
        f"{where}: {count}/"
        f"{REWRITES if where.startswith(REWRITE_ACTIONS) else sessions}"
        for where, count in failures.items()
    )
    print(
        f"\nfuzz ({CASES} entries, {PER_SESSION} a session, seed {SEED}): "
        f"{report or 'no failure'}"
    )
    assert not failures, f"{report}; e.g. {examples}"
