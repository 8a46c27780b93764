"""The chatmemory_reindex management command."""

from __future__ import annotations

from io import StringIO

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from chatmemory import store


def record(text: str) -> dict[str, object]:
    return {"type": "human", "data": {"content": text}}


def test_reindex_rebuilds_every_index(redis_client: redis.Redis) -> None:
    for sid, owner in (("a", "1"), ("b{x}%", "1"), ("c", None), ("d", "2")):
        store.append_records(sid, [record(sid)], owner=owner)
    before = {
        key: redis_client.zrange(key, 0, -1, withscores=True)
        for key in (
            store.sessions_key(),
            store.ids_key(),
            store.owner_key("1"),
            store.owner_key("2"),
        )
    }
    redis_client.delete(store.sessions_key(), store.owner_key("2"))
    redis_client.zadd(store.ids_key(), {"ghost": 0})
    redis_client.zadd(store.owner_key("3"), {"ghost": 1})
    out = StringIO()

    call_command("chatmemory_reindex", stdout=out)

    after = {key: redis_client.zrange(key, 0, -1, withscores=True) for key in before}
    assert after == before
    assert not redis_client.exists(store.owner_key("3"))
    assert "Indexed 4 chat sessions." in out.getvalue()


def test_reindex_only_touches_its_prefix(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    store.append_records("mine", [record("x")])
    with override_settings(CHATMEMORY_KEY_PREFIX=f"{key_prefix}-other"):
        store.append_records("theirs", [record("y")])
        try:
            call_command("chatmemory_reindex", stdout=StringIO())
            assert store.list_sessions().total == 1
        finally:
            store.delete_session("theirs")

    call_command("chatmemory_reindex", stdout=StringIO())

    assert [s.session_id for s in store.list_sessions().sessions] == ["mine"]


def test_reindex_reports_redis_down() -> None:
    from tests.test_history import closed_port_caches

    with (
        override_settings(CACHES=closed_port_caches()),
        pytest.raises(CommandError, match="unavailable"),
    ):
        call_command("chatmemory_reindex", stdout=StringIO())


class TtyStringIO(StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.django_db
def test_reindex_progress_on_a_terminal_and_quiet_at_verbosity_0() -> None:
    for sid, owner in (("a", "1"), ("b", "1"), ("c", None)):
        store.append_records(sid, [record(sid)], owner=owner)
    tty = TtyStringIO()
    call_command("chatmemory_reindex", stdout=StringIO(), stderr=tty)
    shown = tty.getvalue()
    # each stage: count/total, rate; both lines ended
    assert "3/3 sessions indexed" in shown and "/s" in shown
    # the activity, id, owner "1" and no-owner indexes: 3 + 3 + 2 + 1 entries
    assert "9/9 index entries checked" in shown
    assert shown.endswith("\n")
    plain = StringIO()
    call_command("chatmemory_reindex", stdout=StringIO(), stderr=plain)
    assert plain.getvalue() == ""
    out, quiet = TtyStringIO(), TtyStringIO()
    call_command(
        "chatmemory_reindex", "--upgrade-owner-ids", "--verbosity", "0",
        stdout=out, stderr=quiet,
    )  # fmt: skip
    assert out.getvalue() == quiet.getvalue() == ""
