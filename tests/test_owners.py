"""Owner ids (owners.py), deleting a user (signals.py), chatmemory_purge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import Client, override_settings

from chatmemory import store
from chatmemory.owners import owner_id, primary_key_text, users_by_owner
from chatmemory.store import keys
from tests.admin_helpers import set_activity

pytestmark = pytest.mark.django_db(transaction=True)

HUMAN = {"type": "human", "data": {"content": "q"}}


def test_a_new_account_reusing_a_primary_key_is_another_owner() -> None:
    old = User.objects.create_user("old", date_joined=datetime(2020, 1, 1, tzinfo=UTC))
    old_owner, pk = owner_id(old), old.pk
    assert old_owner.startswith(f"{pk}:")
    assert primary_key_text(old_owner) == str(pk)
    assert primary_key_text("legacy-7") == "legacy-7"
    with override_settings(CHATMEMORY_KEEP_SESSIONS_OF_DELETED_USERS=True):
        old.delete()
    new = User.objects.create_user("new", pk=pk)
    assert owner_id(new) != old_owner
    assert users_by_owner([old_owner, None, str(pk), "x:y"]) == {}
    assert users_by_owner([owner_id(new)]) == {owner_id(new): new}


def test_the_chat_views_never_show_a_reused_keys_old_chats() -> None:
    old = User.objects.create_user("old", date_joined=datetime(2020, 1, 1, tzinfo=UTC))
    pk = old.pk
    store.create_session("old-chat", owner=owner_id(old), title="Secret")
    with override_settings(CHATMEMORY_KEEP_SESSIONS_OF_DELETED_USERS=True):
        old.delete()
    client = Client()
    client.force_login(User.objects.create_user("new", pk=pk))
    assert "Secret" not in client.get("/chat/").content.decode()
    assert client.get("/chat/old-chat/").status_code == 404


def test_deleting_a_user_deletes_their_sessions(redis_client: redis.Redis) -> None:
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    for sid in ("a1", "a2"):
        store.append_records(sid, [HUMAN], owner=owner_id(alice))
    store.append_records("b1", [HUMAN], owner=owner_id(bob))
    alice_owner = owner_id(alice)
    alice.delete()
    assert store.get_session("a1") is None and store.get_session("a2") is None
    assert not redis_client.exists(store.owner_key(alice_owner))
    assert store.get_session("b1") is not None
    # a rolled-back deletion keeps them
    with pytest.raises(RuntimeError), transaction.atomic():
        bob.delete()
        raise RuntimeError
    assert store.get_session("b1") is not None


def test_deleting_a_user_deletes_their_usage_and_limit_keys(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    ai = {
        "type": "ai",
        "data": {
            "content": "a",
            "usage_metadata": {
                "input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
            },
        },
    }  # fmt: skip
    lee, max_ = User.objects.create_user("lee"), User.objects.create_user("max")
    limits = store.Limits(turns_per_minute=5, concurrent_streams=2)
    for user in (lee, max_):
        store.append_records(f"{user.username}-1", [HUMAN, ai], owner=owner_id(user))
        assert not store.admit_turn(owner_id(user), limits).refused
    lee_owner, day = owner_id(lee), datetime.now(UTC).strftime("%Y-%m-%d")

    def owner_keys(owner: str) -> list[bytes]:
        return sorted(
            key
            for key in redis_client.scan_iter(match=f"{key_prefix}:*")
            if keys.escape(owner).encode() in key
        )

    def ranked(owner: str) -> object:
        return redis_client.zscore(keys.usage_day_key(day), owner)

    mine = {
        keys.usage_key(lee_owner, day).encode(),
        keys.quota_turns_key(lee_owner).encode(),
        keys.quota_streams_key(lee_owner).encode(),
    }
    assert mine <= set(owner_keys(lee_owner))
    assert ranked(lee_owner) == 7
    lee.delete()
    assert owner_keys(lee_owner) == [] and ranked(lee_owner) is None
    assert len(owner_keys(owner_id(max_))) >= 3 and ranked(owner_id(max_)) == 7
    # a user deleted while Redis was down: chatmemory_purge --orphaned finishes
    with override_settings(CHATMEMORY_KEEP_SESSIONS_OF_DELETED_USERS=True):
        max_owner = owner_id(max_)
        max_.delete()
    assert "Deleted 1 sessions" in purge("--orphaned")
    assert owner_keys(max_owner) == [] and ranked(max_owner) is None


@override_settings(CHATMEMORY_KEEP_SESSIONS_OF_DELETED_USERS=True)
def test_a_setting_keeps_them_and_the_admin_says_deleted_user(
    admin_client: Client,
) -> None:
    carol = User.objects.create_user("carol")
    store.append_records("c1", [HUMAN], owner=owner_id(carol))
    carol.delete()
    assert store.get_session("c1") is not None
    page = admin_client.get("/admin/chatmemory/chatsession/").content.decode()
    assert "deleted user (#" in page


def test_a_history_given_a_user_is_that_users_session(admin_client: Client) -> None:
    from langchain_core.messages import HumanMessage

    from chatmemory.history import DjangoRedisChatMessageHistory

    ivy = User.objects.create_user("ivy")
    DjangoRedisChatMessageHistory("ivy-1", owner=ivy).add_messages([HumanMessage("q")])
    info = store.get_session("ivy-1")
    assert info is not None and info.owner == owner_id(ivy)
    assert DjangoRedisChatMessageHistory("x", owner=owner_id(ivy)).owner == info.owner
    page = admin_client.get("/admin/chatmemory/chatsession/").content.decode()
    assert "deleted user" not in page and "ivy" in page
    assert "would delete 0 sessions" in purge("--orphaned", "--dry-run")
    ivy.delete()
    assert store.get_session("ivy-1") is None


def test_redis_down_when_a_user_is_deleted_logs_and_keeps_the_user_deleted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.test_history import closed_port_caches

    dave = User.objects.create_user("dave")
    with override_settings(CACHES=closed_port_caches()):
        dave.delete()
    assert not User.objects.filter(username="dave").exists()
    assert "chatmemory_purge --orphaned" in caplog.text


def purge(*args: str) -> str:
    out = StringIO()
    call_command("chatmemory_purge", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_purge_by_owner_age_and_orphans(redis_client: redis.Redis) -> None:
    erin = User.objects.create_user("erin")
    erin_owner = owner_id(erin)
    old = datetime.now(UTC) - timedelta(days=40)
    for sid, owner in (
        ("e-old", erin_owner), ("e-new", erin_owner), ("gone-1", "999:abc"),
        ("gone-2", "999:abc"), ("nobody-old", None), ("nobody-new", None),
    ):  # fmt: skip
        store.append_records(sid, [HUMAN], owner=owner)
    for sid in ("e-old", "nobody-old"):
        set_activity(redis_client, sid, old)
    cutoff = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()

    assert "would delete 2 sessions" in purge("--orphaned", "--dry-run")
    assert "would delete 2 sessions" in purge("--before", cutoff, "--dry-run")
    assert "would delete 1 sessions" in purge(
        "--owner", erin_owner, "--before", cutoff, "--dry-run"
    )
    assert store.list_sessions().total == 6

    assert "Deleted 1 sessions" in purge("--owner", erin_owner, "--before", cutoff)
    assert store.get_session("e-old") is None and store.get_session("e-new")
    assert "Deleted 2 sessions" in purge("--orphaned")
    assert store.get_session("gone-1") is None
    assert "Deleted 1 sessions" in purge("--before", cutoff)
    assert store.get_session("nobody-old") is None
    assert "Deleted 0 sessions" in purge("--before", cutoff)  # safe to rerun
    assert {s.session_id for s in store.list_sessions().sessions} == {
        "e-new", "nobody-new",
    }  # fmt: skip
    assert "Deleted 1 sessions" in purge("--owner", erin_owner)


def test_purge_needs_a_criterion_and_reports_redis_down() -> None:
    from tests.test_history import closed_port_caches

    with pytest.raises(CommandError, match="Say what to purge"):
        purge()
    with override_settings(CACHES=closed_port_caches()):
        with pytest.raises(CommandError, match="unavailable"):
            purge("--orphaned")


class TtyStringIO(StringIO):
    def isatty(self) -> bool:
        return True


def test_purge_progress_has_a_total_and_is_quiet_at_verbosity_0(
    redis_client: redis.Redis,
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    for i in range(4):
        store.append_records(f"old-{i}", [HUMAN], owner="999:abc")
        set_activity(redis_client, f"old-{i}", old)
    store.append_records("new", [HUMAN], owner="999:abc")
    cutoff = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    tty = TtyStringIO()
    call_command(
        "chatmemory_purge", "--before", cutoff, "--dry-run",
        stdout=StringIO(), stderr=tty,
    )  # fmt: skip
    # a total (the candidates, not every session), so a time left
    assert "1/4 sessions" in tty.getvalue() and "left" in tty.getvalue()
    assert "4/4 sessions" in tty.getvalue()
    tty = TtyStringIO()
    call_command(
        "chatmemory_purge", "--orphaned", "--before", cutoff,
        stdout=StringIO(), stderr=tty,
    )  # fmt: skip
    assert "4/4 sessions" in tty.getvalue()
    assert store.list_sessions().total == 1
    out, quiet = TtyStringIO(), TtyStringIO()
    call_command(
        "chatmemory_purge", "--owner", "999:abc", "--verbosity", "0",
        stdout=out, stderr=quiet,
    )  # fmt: skip
    assert out.getvalue() == quiet.getvalue() == ""
    assert store.list_sessions().total == 0


def test_commands_take_a_username_for_an_owner(tmp_path: Any) -> None:
    import json

    jo = User.objects.create_user("jo")
    store.append_records("jo-1", [HUMAN], owner=owner_id(jo))
    store.append_records("other", [HUMAN], owner="7:abc")
    path = tmp_path / "jo.ndjson"
    call_command(
        "chatmemory_export", "--user", "jo", "-o", str(path), stderr=StringIO()
    )
    assert [json.loads(x)["id"] for x in path.read_bytes().splitlines()] == ["jo-1"]
    for command in ("chatmemory_export", "chatmemory_purge"):
        with pytest.raises(CommandError, match="No user 'nobody'"):
            call_command(command, "--user", "nobody", stdout=StringIO())
        with pytest.raises(CommandError, match="not allowed with argument"):
            call_command(command, "--user", "jo", "--owner", "7:abc", stdout=StringIO())
    assert "would delete 1 sessions" in purge("--user", "jo", "--dry-run")
    assert "Deleted 1 sessions" in purge("--user", "jo")
    assert store.get_session("jo-1") is None
    assert store.get_session("other") is not None


def test_my_chats_download_and_delete_all(redis_client: redis.Redis) -> None:
    frank, gina = User.objects.create_user("frank"), User.objects.create_user("gina")
    store.append_records("f1", [HUMAN], owner=owner_id(frank))
    store.create_session("f2", owner=owner_id(frank), title="Second")
    store.append_records("g1", [HUMAN], owner=owner_id(gina))
    client = Client()
    client.force_login(frank)
    assert "Download all my chats" in client.get("/chat/").content.decode()
    response = client.get("/chat/_all/download/")
    assert response["Content-Disposition"] == 'attachment; filename="my-chats.json"'
    assert response.streaming
    chats: list[dict[str, Any]] = json.loads(b"".join(response.streaming_content))
    assert sorted(c["id"] for c in chats) == ["f1", "f2"]
    assert next(c for c in chats if c["id"] == "f1")["messages"] == [HUMAN]
    assert "All 2 chats" in client.get("/chat/_all/delete/").content.decode()
    assert client.post("/chat/_all/delete/").status_code == 302
    assert store.list_sessions(owner=owner_id(frank)).total == 0
    assert store.get_session("g1") is not None
    empty = client.get("/chat/_all/download/")
    assert b"".join(empty.streaming_content) == b"[]\n"


def download(client: Client) -> bytes:
    response = client.get("/chat/_all/download/")
    assert response.status_code == 200 and response.streaming
    return b"".join(response.streaming_content)


def test_download_all_streams_the_same_file_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from chatmemory import views
    from chatmemory.store import transfer

    nia = User.objects.create_user("nia")
    long = [HUMAN, {"type": "ai", "data": {"content": "a\nb ✓"}}] * 700
    store.append_records("n1", long, owner=owner_id(nia))
    for sid in ("n2", "n3"):
        store.append_records(sid, [HUMAN], owner=owner_id(nia))
    store.create_session("n4", owner=owner_id(nia), title="Empty")
    # What the view sent before it streamed: the NDJSON lines in a JSON array.
    buffer = io.BytesIO()
    transfer.export_sessions(buffer, owner=owner_id(nia))
    before = b"[" + b",\n".join(buffer.getvalue().splitlines()) + b"]\n"
    client = Client()
    client.force_login(nia)
    assert download(client) == before
    monkeypatch.setattr(views, "DOWNLOAD_CHUNK", 100)
    response = client.get("/chat/_all/download/")
    chunks = list(response.streaming_content)
    assert len(chunks) > 4 and b"".join(chunks) == before
    assert len(json.loads(before)) == 4
    assert json.loads(before)[0]["messages"][1]["data"]["content"] == "a\nb ✓"


async def test_download_all_under_asgi_is_an_async_stream() -> None:
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    oli = await sync_to_async(User.objects.create_user)("oli")
    store.append_records("o1", [HUMAN], owner=owner_id(oli))
    client = AsyncClient()
    await client.aforce_login(oli)
    response = await client.get("/chat/_all/download/")
    assert response.is_async
    body = b"".join([part async for part in response.streaming_content])
    assert [c["id"] for c in json.loads(body)] == ["o1"]


def test_reindex_upgrades_bare_primary_key_owner_ids(redis_client: redis.Redis) -> None:
    hank = User.objects.create_user("hank")
    bare = str(hank.pk)
    store.append_records("h1", [HUMAN], owner=bare)
    store.append_records("h2", [HUMAN], owner=bare)
    store.append_records("stray", [HUMAN], owner="424242")
    out = StringIO()
    call_command("chatmemory_reindex", "--upgrade-owner-ids", stdout=out)
    assert "Gave 2 sessions" in out.getvalue()
    info = store.get_session("h1")
    assert info is not None and info.owner == owner_id(hank)
    mine = store.list_sessions(owner=owner_id(hank)).sessions
    assert {s.session_id for s in mine} == {
        "h1", "h2",
    }  # fmt: skip
    assert not redis_client.exists(store.owner_key(bare))
    assert store.get_session("stray").owner == "424242"  # type: ignore[union-attr]
    call_command("chatmemory_reindex", "--upgrade-owner-ids", stdout=out)
    assert "Gave 0 sessions" in out.getvalue()
