"""Export and import: store.transfer and the chatmemory_export/_import commands."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from chatmemory import store
from chatmemory.store import transfer
from tests.admin_helpers import set_activity
from tests.topologies import Topology, start_single


def human(text: str) -> dict[str, object]:
    return {"type": "human", "data": {"content": text}}


def ai(text: str, tokens: tuple[int, int] = (0, 0)) -> dict[str, object]:
    data: dict[str, object] = {"content": text}
    if any(tokens):
        data["usage_metadata"] = {
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "total_tokens": sum(tokens),
        }
    return {"type": "ai", "data": data}


def snapshot() -> dict[str, tuple[object, ...]]:
    """Every session under the current prefix: metadata (no TTL) and records."""
    result = {}
    page = store.list_sessions(limit=10_000)
    for info in page.sessions:
        full, records = store.read_session(info.session_id)
        assert full is not None
        result[info.session_id] = (
            full.owner,
            full.title,
            full.message_count,
            full.created,
            full.updated,
            full.input_tokens,
            full.output_tokens,
            full.total_tokens,
            tuple(json.dumps(r, sort_keys=True) for r in records),
        )
    return result


def seed() -> None:
    store.append_records("a", [human("hello"), ai("hi", (10, 3))], owner="1")
    store.append_records("b{x}%/é", [human("line\nbreak \u2028 ✓"), ai("ok")])
    store.append_records("c", [human("third")], owner="2")
    store.create_session("empty", owner="1", title="Nothing yet")
    store.set_title("c", "Renamed")


class TtyStringIO(StringIO):
    def isatty(self) -> bool:
        return True


def export(tmp_path: Path, *args: str) -> tuple[Path, str]:
    path = tmp_path / "out.ndjson"
    err = StringIO()
    call_command("chatmemory_export", "-o", str(path), *args, stderr=err)
    return path, err.getvalue()


def test_export_then_import_into_an_empty_prefix_gives_equal_sessions(
    tmp_path: Path, key_prefix: str, redis_client: redis.Redis
) -> None:
    seed()
    before = snapshot()
    path, err = export(tmp_path)
    assert "Exported 4 sessions (5 messages)" in err
    assert not (tmp_path / "out.ndjson.partial").exists()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4
    first = json.loads(next(line for line in lines if b'"id":"a"' in line))
    assert list(first) == [
        "id", "owner", "title", "created", "updated", "usage", "messages",
    ]  # fmt: skip
    assert first["usage"] == {
        "input_tokens": 10,
        "output_tokens": 3,
        "total_tokens": 13,
    }

    other = f"{key_prefix}-copy"
    try:
        with override_settings(CHATMEMORY_KEY_PREFIX=other):
            out = StringIO()
            call_command("chatmemory_import", str(path), stdout=out, stderr=StringIO())
            assert (
                "Imported 4 sessions (5 messages); 0 existed already" in out.getvalue()
            )
            assert snapshot() == before
            # importing twice changes nothing
            out = StringIO()
            call_command("chatmemory_import", str(path), stdout=out, stderr=StringIO())
            assert (
                "Imported 0 sessions (0 messages); 4 existed already" in out.getvalue()
            )
            assert snapshot() == before
            call_command(
                "chatmemory_import",
                str(path),
                "--replace",
                stdout=out,
                stderr=StringIO(),
            )
            assert snapshot() == before
            owned = {s.session_id for s in store.list_sessions(owner="1").sessions}
            assert owned == {"a", "empty"}
    finally:
        for key in redis_client.scan_iter(match=f"{other}:*"):
            redis_client.delete(key)


@pytest.fixture
def empty_redis() -> Iterator[Topology]:
    """A throwaway redis-server of its own, empty: where an import goes."""
    topology = start_single()
    yield topology
    topology.stop()


def ttls() -> dict[str, timedelta | None]:
    """Every session's time left to live, under the current prefix and alias."""
    page = store.list_sessions(limit=10_000)
    return {info.session_id: info.expires_in for info in page.sessions}


def test_export_then_import_into_an_empty_redis_gives_equal_sessions_and_ttls(
    tmp_path: Path, empty_redis: Topology
) -> None:
    from django.conf import settings

    with override_settings(CHATMEMORY_TTL=3600):
        seed()
        store.append_records("d", [human("kept a day")])
        before, lives = snapshot(), ttls()
        assert all(lives.values())
        path, _ = export(tmp_path)
        caches = {**settings.CACHES, "empty": empty_redis.caches_entry()}
        with override_settings(CACHES=caches, CHATMEMORY_CACHE_ALIAS="empty"):
            target = empty_redis.client()
            try:
                assert target.dbsize() == 0
                out = StringIO()
                call_command("chatmemory_import", str(path), stdout=out)
                assert "Imported 5 sessions (6 messages)" in out.getvalue()
                assert target.dbsize() > 0
                assert snapshot() == before
                after = ttls()
            finally:
                target.close()
    assert after.keys() == lives.keys()
    for session_id, left in lives.items():
        now = after[session_id]
        assert left is not None and now is not None
        assert abs(now - left) < timedelta(seconds=5), session_id


def test_export_filters_owner_session_and_since(tmp_path: Path) -> None:
    seed()
    path, _ = export(tmp_path, "--owner", "1")
    assert sorted(json.loads(x)["id"] for x in path.read_bytes().splitlines()) == [
        "a",
        "empty",
    ]
    path, _ = export(tmp_path, "--session", "c", "--session", "missing")
    assert [json.loads(x)["id"] for x in path.read_bytes().splitlines()] == ["c"]
    path, _ = export(tmp_path, "--since", "2999-01-01")
    assert path.read_bytes() == b""
    path, _ = export(
        tmp_path, "--since", (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    )
    assert len(path.read_bytes().splitlines()) == 4
    with pytest.raises(CommandError, match="not a date"):
        export(tmp_path, "--since", "yesterday")


def test_export_streams_long_sessions_in_slices_and_to_stdout(
    redis_client: redis.Redis,
) -> None:
    records = [human(f"m{i}") for i in range(transfer.SLICE * 2 + 7)]
    store.append_records("long", records)
    # an entry another tool wrote: not JSON; left out and counted
    redis_client.rpush(store.messages_key("long"), b"{broken")
    out, err = StringIO(), StringIO()
    call_command("chatmemory_export", stdout=out, stderr=err)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["messages"] == records
    assert "1 unreadable entries left out" in err.getvalue()


def test_export_progress_on_a_terminal_only(tmp_path: Path) -> None:
    seed()
    tty = TtyStringIO()
    call_command("chatmemory_export", "-o", str(tmp_path / "x"), stderr=tty)
    assert "/4 sessions" in tty.getvalue() and "/s" in tty.getvalue()
    quiet = TtyStringIO()
    call_command(
        "chatmemory_export", "-o", str(tmp_path / "x"), "--verbosity", "0", stderr=quiet
    )
    assert quiet.getvalue() == ""
    plain = StringIO()
    call_command("chatmemory_export", "-o", str(tmp_path / "x"), stderr=plain)
    assert "/s" not in plain.getvalue()


def last_progress(tty: StringIO) -> str:
    """The last progress line a command drew on its terminal."""
    return tty.getvalue().split("\r\x1b[K")[-1].strip()


def test_export_since_counts_what_its_total_counts(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    seed()
    for sid in ("a", "c", "empty"):
        set_activity(redis_client, sid, datetime.now(UTC) - timedelta(days=10))
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    tty = TtyStringIO()
    call_command(
        "chatmemory_export", "-o", str(tmp_path / "x"), "--since", since, stderr=tty
    )
    assert last_progress(tty).startswith("1/1 sessions")


def test_file_import_progress_shows_bytes_of_the_files_size(
    tmp_path: Path, key_prefix: str, redis_client: redis.Redis
) -> None:
    seed()
    path, _ = export(tmp_path)
    size = path.stat().st_size
    other = f"{key_prefix}-copy"
    try:
        with override_settings(CHATMEMORY_KEY_PREFIX=other):
            tty = TtyStringIO()
            call_command(
                "chatmemory_import", str(path), "--batch-size", "1", "--dry-run",
                stdout=StringIO(), stderr=tty,
            )  # fmt: skip
            assert f"/{size:,} bytes" in tty.getvalue()
            assert "left" in tty.getvalue()  # a total: a time left
            assert last_progress(tty).startswith(f"{size:,}/{size:,} bytes")
            assert "4 sessions" in last_progress(tty)
            tty = TtyStringIO()
            call_command(
                "chatmemory_import", str(path), "--batch-size", "1",
                stdout=StringIO(), stderr=tty,
            )  # fmt: skip
            assert "left" in tty.getvalue()
            assert "4 sessions, 5 messages written" in last_progress(tty)
            out, quiet = TtyStringIO(), TtyStringIO()
            call_command(
                "chatmemory_import", str(path), "--replace", "--verbosity", "0",
                stdout=out, stderr=quiet,
            )  # fmt: skip
            assert out.getvalue() == quiet.getvalue() == ""
    finally:
        for key in redis_client.scan_iter(match=f"{other}:*"):
            redis_client.delete(key)


def test_import_dry_run_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    line = transfer.session_line(
        store.SessionInfo(
            "x", "T", "5", 1, datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), None,
        ),
        [human("q")],
    )  # fmt: skip
    path.write_bytes(line + b"\n" + line.replace(b'"id":"x"', b'"id":"y"'))
    store.append_records("y", [human("already here")])
    out = StringIO()
    call_command(
        "chatmemory_import", str(path), "--dry-run", stdout=out, stderr=StringIO()
    )
    assert "would write 1 of 2 sessions (1 messages); 1 exist already" in out.getvalue()
    assert store.get_session("x") is None
    call_command("chatmemory_import", str(path), stdout=out, stderr=StringIO())
    x = store.get_session("x")
    assert x is not None
    assert (x.owner, x.title, x.created.year, x.updated.day) == ("5", "T", 2026, 2)
    assert store.read_records("y") == [human("already here")]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"{nope", "line 2: not JSON"),
        (b"[1]", "line 2: a JSON list"),
        (b'{"id": ""}', "line 2: 'id': session_id must not be empty"),
        (b'{"id": "z", "owner": 5}', "'owner' must be"),
        (b'{"id": "z", "title": 5}', "'title' must be"),
        (b'{"id": "z", "messages": {}}', "'messages' must be a list"),
        (b'{"id": "z", "messages": [{"type": "human"}]}', "message 0 is not"),
        (b'{"id": "z", "created": "soon"}', "'created' is not an ISO 8601"),
        (b'{"id": "z", "updated": 5}', "'updated' must be an ISO 8601"),
        (b'{"id": "z", "usage": []}', "'usage' must be an object"),
        (b'{"id": "z", "usage": {"input_tokens": -1}}', "'usage' counts"),
    ],
)
def test_import_reports_a_bad_line_and_keeps_what_came_before(
    tmp_path: Path, line: bytes, error: str
) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"id": "good", "messages": []}\n' + line + b"\n")
    with pytest.raises(CommandError, match=error) as raised:
        call_command(
            "chatmemory_import", str(path), stdout=StringIO(), stderr=StringIO()
        )
    assert "run the command again" in str(raised.value)


def test_import_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Give an NDJSON file"):
        call_command("chatmemory_import")
    with pytest.raises(CommandError, match="--owner and --user only apply"):
        call_command("chatmemory_import", "f", "--owner", "1")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("chatmemory_import", str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="--batch-size"):
        call_command("chatmemory_import", "f", "--batch-size", "0")


def test_commands_report_redis_down(tmp_path: Path) -> None:
    from tests.test_history import closed_port_caches

    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"id": "good", "messages": []}\n')
    with override_settings(CACHES=closed_port_caches()):
        with pytest.raises(CommandError, match="unavailable"):
            call_command(
                "chatmemory_export", "-o", str(tmp_path / "o"), stderr=StringIO()
            )
        with pytest.raises(CommandError, match="unavailable"):
            call_command("chatmemory_import", str(path), stdout=StringIO())


# ---------------------------------------------------------------------------
# From langchain_community's RedisChatMessageHistory


@pytest.fixture(scope="module")
def langchain_redis() -> Iterator[Topology]:
    """A throwaway redis-server of its own: the "old" LangChain deployment."""
    topology = start_single()
    yield topology
    topology.stop()


def test_import_from_langchain_redis(
    langchain_redis: Topology, redis_client: redis.Redis
) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, message_to_dict

    with warnings.catch_warnings():
        # langchain-community 0.4.2 warns on import that it is being sunset;
        # it is the package whose data the import reads, so it is used anyway.
        warnings.filterwarnings("ignore", "`langchain-community` is being sunset")
        from langchain_community.chat_message_histories import (
            RedisChatMessageHistory,
        )

    url = langchain_redis.single_url()
    source = redis.Redis.from_url(url)
    source.flushdb()  # our own throwaway server
    first = RedisChatMessageHistory("s1", url=url)
    conversation = [
        HumanMessage("first question"),
        AIMessage(
            "first answer",
            usage_metadata={"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
        ),
        HumanMessage("second question"),
        AIMessage("second answer"),
    ]
    for message in conversation:
        first.add_message(message)
    RedisChatMessageHistory("s2", url=url, ttl=3600).add_messages([HumanMessage("x")])
    RedisChatMessageHistory("s3", url=url, key_prefix="other:").add_messages(
        [HumanMessage("elsewhere")]
    )
    source.rpush("message_store:s4", b"not json")
    before = {key: source.dump(key) for key in source.scan_iter()}

    out = StringIO()
    call_command(
        "chatmemory_import", "--from-langchain-redis", url, "--dry-run",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    assert "would write 3 of 3 sessions (5 messages)" in out.getvalue()
    assert store.list_sessions().total == 0

    err = StringIO()
    call_command(
        "chatmemory_import", "--from-langchain-redis", url, "--owner", "9",
        stdout=out, stderr=err,
    )  # fmt: skip
    assert "Imported 3 sessions (5 messages)" in out.getvalue()
    assert "Left out 1 unreadable entries" in err.getvalue()
    assert store.read_records("s1") == [message_to_dict(m) for m in conversation]
    s1, s2 = store.get_session("s1"), store.get_session("s2")
    assert s1 is not None and s2 is not None
    assert (s1.owner, s1.title, s1.message_count, s1.expires_in) == (
        "9", "first question", 4, None,
    )  # fmt: skip
    assert (s1.input_tokens, s1.output_tokens, s1.total_tokens) == (7, 2, 9)
    assert s2.expires_in is not None
    assert timedelta(minutes=59) < s2.expires_in <= timedelta(hours=1)
    assert store.get_session("s3") is None
    assert {s.session_id for s in store.list_sessions(owner="9").sessions} == {
        "s1", "s2", "s4",
    }  # fmt: skip

    # idempotent: a second run leaves everything as it is
    first.add_message(HumanMessage("later"))
    out = StringIO()
    call_command(
        "chatmemory_import",
        "--from-langchain-redis",
        url,
        stdout=out,
        stderr=StringIO(),
    )
    assert "Imported 0 sessions (0 messages); 3 existed already" in out.getvalue()
    assert store.get_session("s1").message_count == 4  # type: ignore[union-attr]
    # --replace brings the newer messages over
    call_command(
        "chatmemory_import", "--from-langchain-redis", url, "--replace", "--owner", "9",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    assert store.get_session("s1").message_count == 5  # type: ignore[union-attr]
    # other prefix, and the source is never changed
    call_command(
        "chatmemory_import", "--from-langchain-redis", url, "--key-prefix", "other:",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    assert store.read_records("s3") == [message_to_dict(HumanMessage("elsewhere"))]
    before[b"message_store:s1"] = source.dump("message_store:s1")
    assert {key: source.dump(key) for key in source.scan_iter()} == before
    source.close()


@pytest.mark.django_db
def test_import_from_langchain_redis_owner_none_by_default_or_a_users(
    langchain_redis: Topology,
) -> None:
    from django.contrib.auth.models import User

    from chatmemory.owners import owner_id

    url = langchain_redis.single_url()
    source = redis.Redis.from_url(url)
    source.flushdb()  # our own throwaway server
    source.lpush("message_store:lc-1", json.dumps(human("q")))
    source.close()

    def run(*args: str) -> None:
        call_command(
            "chatmemory_import", "--from-langchain-redis", url, "--replace", *args,
            stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip

    run()
    info = store.get_session("lc-1")
    assert info is not None and info.owner is None
    ownerless = store.list_sessions(ownerless=True).sessions
    assert [s.session_id for s in ownerless] == ["lc-1"]
    kim = User.objects.create_user("kim")
    run("--user", "kim")
    info = store.get_session("lc-1")
    assert info is not None and info.owner == owner_id(kim)
    with pytest.raises(CommandError, match="No user 'nobody'"):
        run("--user", "nobody")
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("--user", "kim", "--owner", "9")
    with pytest.raises(CommandError, match="only apply to --from-langchain-redis"):
        call_command("chatmemory_import", "x.ndjson", "--user", "kim")


def test_import_from_langchain_redis_that_is_down() -> None:
    from tests.redis_server import free_port

    with pytest.raises(CommandError, match="Cannot read LangChain's Redis"):
        call_command(
            "chatmemory_import",
            "--from-langchain-redis",
            f"redis://127.0.0.1:{free_port()}/0",
            stdout=StringIO(),
        )


def test_a_langgraph_thread_round_trips_through_export_and_import(
    tmp_path: Path,
) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from chatmemory.langgraph import DjangoRedisSaver, thread_records
    from tests.test_langgraph import ToolCallingModel, config_for

    @tool
    def weather(x: int) -> str:
        """The weather."""
        return f"sunny {x}"

    agent = create_agent(ToolCallingModel(), [weather], checkpointer=DjangoRedisSaver())
    config = config_for("t/1", owner="7")
    agent.invoke({"messages": [("user", "use: weather")]}, config)
    store.set_title("t/1", "Weather talk")
    store.append_records("s", [human("a session")], owner="7")
    messages = thread_records("t/1")
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]

    path, err = export(tmp_path)
    assert "Exported 2 sessions (5 messages)" in err
    assert "(1 of them LangGraph threads)" in err
    line = json.loads(next(x for x in path.read_bytes().splitlines() if b"t/1" in x))
    assert line["kind"] == "thread" and line["owner"] == "7"
    assert line["title"] == "Weather talk" and line["messages"] == messages

    DjangoRedisSaver().delete_thread("t/1")
    store.delete_session("s")
    out = StringIO()
    call_command("chatmemory_import", str(path), "--dry-run", stdout=out)
    assert "would restore 1 of 1" in out.getvalue()
    assert store.get_session("t/1") is None
    call_command("chatmemory_import", str(path), stdout=out, stderr=StringIO())
    assert "restored 1 of 1" in out.getvalue()
    assert "Imported 1 sessions (1 messages)" in out.getvalue()
    info = store.get_session("t/1")
    assert info is not None and info.kind == "thread"
    assert (info.owner, info.title, info.message_count) == ("7", "Weather talk", 4)
    assert thread_records("t/1") == messages
    # The agent goes on from the restored thread: it sees every earlier turn.
    agent = create_agent(ToolCallingModel(), [weather], checkpointer=DjangoRedisSaver())
    result = agent.invoke({"messages": [("user", "and now?")]}, config)
    assert result["messages"][-1].text == "you said: use: weather | and now?"
    # A second import leaves it alone; --replace writes it again.
    again = StringIO()
    call_command("chatmemory_import", str(path), stdout=again, stderr=StringIO())
    assert "restored 0 of 1 (1 existed already" in again.getvalue()
    assert len(thread_records("t/1")) == 6
    call_command(
        "chatmemory_import", str(path), "--replace", stdout=again, stderr=StringIO()
    )
    assert thread_records("t/1") == messages


def test_a_thread_line_into_a_history_session_is_refused(tmp_path: Path) -> None:
    store.append_records("taken", [human("mine")])
    line = transfer.session_line(
        store.SessionInfo(
            "taken", "", None, 1, datetime.now(UTC), datetime.now(UTC),
            datetime.now(UTC), None, kind="thread",
        ),
        [human("theirs")],
    )  # fmt: skip
    path = tmp_path / "thread.ndjson"
    path.write_bytes(line)
    with pytest.raises(CommandError, match="is a chat history session"):
        call_command("chatmemory_import", str(path), stdout=StringIO())
    assert [r["data"]["content"] for r in store.read_records("taken")] == ["mine"]  # type: ignore[index]
    with pytest.raises(CommandError, match="'kind' must be 'session' or 'thread'"):
        path.write_bytes(line.replace(b'"kind":"thread"', b'"kind":"graph"'))
        call_command("chatmemory_import", str(path), stdout=StringIO())
