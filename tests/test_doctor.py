"""manage.py chatmemory_doctor."""

from __future__ import annotations

from io import StringIO

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from chatmemory import store
from tests.redis_server import free_port


def record(text: str) -> dict[str, object]:
    return {"type": "human", "data": {"content": text}}


def test_doctor_reports_the_server_and_the_indexes() -> None:
    store.append_records("a", [record("hi")], owner="1")
    out = StringIO()
    # the tests' server runs without persistence: one problem
    with pytest.raises(CommandError, match=r"1 problem\(s\) found"):
        call_command("chatmemory_doctor", stdout=out)
    text = out.getvalue()
    assert "Redis               7." in text or "Redis               " in text
    assert "Eviction policy     noeviction" in text
    assert "Append-only file    off" in text
    assert "[chatmemory.W102]" in text
    assert "Sessions            1" in text
    assert "Indexes             consistent" in text


def test_doctor_names_inconsistencies(redis_client: redis.Redis) -> None:
    store.append_records("a", [record("hi")], owner="1")
    redis_client.zrem(store.sessions_key(), "a")
    out = StringIO()
    with pytest.raises(CommandError, match=r"2 problem\(s\) found"):
        call_command("chatmemory_doctor", stdout=out)
    assert "1 sessions missing from the activity index (e.g. 'a')" in out.getvalue()
    assert "chatmemory_reindex" in out.getvalue()


def test_doctor_can_skip_the_consistency_check(redis_client: redis.Redis) -> None:
    store.append_records("a", [record("hi")])
    redis_client.zrem(store.sessions_key(), "a")
    out = StringIO()
    with pytest.raises(CommandError, match=r"1 problem\(s\) found"):
        call_command("chatmemory_doctor", "--no-consistency", stdout=out)
    assert "Sessions" not in out.getvalue()


def test_doctor_says_all_is_well(redis_client: redis.Redis) -> None:
    redis_client.config_set("appendonly", "yes")
    try:
        out = StringIO()
        call_command("chatmemory_doctor", stdout=out)
    finally:
        redis_client.config_set("appendonly", "no")
    assert "No problems found." in out.getvalue()


def test_doctor_when_redis_is_down() -> None:
    port = free_port()
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        },
    }
    with override_settings(CACHES=caches):
        with pytest.raises(CommandError, match=f"127.0.0.1:{port}"):
            call_command("chatmemory_doctor", stdout=StringIO())


class TtyStringIO(StringIO):
    def isatty(self) -> bool:
        return True


def test_doctor_shows_the_consistency_checks_progress_on_a_terminal_only(
    redis_client: redis.Redis,
) -> None:
    for sid in ("a", "b", "c"):
        store.append_records(sid, [record(sid)])
    redis_client.config_set("appendonly", "yes")
    try:
        tty = TtyStringIO()
        call_command("chatmemory_doctor", stdout=StringIO(), stderr=tty)
        assert "3/3 sessions read" in tty.getvalue() and "/s" in tty.getvalue()
        assert tty.getvalue().endswith("\n")
        plain = StringIO()
        call_command("chatmemory_doctor", stdout=StringIO(), stderr=plain)
        assert plain.getvalue() == ""
        quiet = TtyStringIO()
        call_command(
            "chatmemory_doctor", "--verbosity", "0", stdout=StringIO(), stderr=quiet
        )
        assert quiet.getvalue() == ""
        skipped = TtyStringIO()
        call_command(
            "chatmemory_doctor", "--no-consistency", stdout=StringIO(), stderr=skipped
        )
        assert skipped.getvalue() == ""
    finally:
        redis_client.config_set("appendonly", "no")
