"""The Redis store: metadata, indexes, listing, search, deletion, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.test import override_settings

from chatmemory import store
from chatmemory.exceptions import OwnerMismatch, StoreUnavailable
from chatmemory.store import operations


def human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"content": text}}


def ai(text: str) -> dict[str, Any]:
    return {"type": "ai", "data": {"content": text}}


def test_keys_share_a_hash_tag_and_the_prefix(key_prefix: str) -> None:
    assert store.messages_key("foo") == f"{key_prefix}:{{foo}}:messages"
    assert store.meta_key("foo") == f"{key_prefix}:{{foo}}:meta"
    assert store.meta_key("a{b}") == f"{key_prefix}:{{a%7Bb%7D}}:meta"
    assert store.sessions_key() == f"{key_prefix}:sessions"
    assert store.owner_key("3") == f"{key_prefix}:owner:3"


def test_metadata_of_a_session() -> None:
    before = datetime.now(UTC)
    store.append_records("s1", [ai("hello"), human("  first   question  ")], owner="4")
    time.sleep(0.01)
    store.append_records("s1", [human("second question")])

    info = store.get_session("s1")

    assert info is not None
    assert info.session_id == "s1"
    assert info.title == "first question"
    assert info.owner == "4"
    assert info.message_count == 3
    assert before - timedelta(seconds=1) <= info.created < info.updated
    assert info.updated <= datetime.now(UTC)
    assert info.last_activity == info.updated
    assert info.expires_in is None


def test_title_is_cut_and_taken_from_text_blocks() -> None:
    blocks = {
        "type": "human",
        "data": {
            "content": [
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "describe"},
                "this " * 40,
            ]
        },
    }
    store.append_records("t", [blocks])

    info = store.get_session("t")

    assert info is not None
    assert info.title.startswith("describe this this")
    assert len(info.title) <= store.TITLE_LENGTH
    assert info.title.endswith("\u2026")


def test_session_without_human_message_has_no_title() -> None:
    store.append_records("untitled", [ai("hi")])
    assert store.get_session("untitled").title == ""  # type: ignore[union-attr]


def test_create_session_is_idempotent_and_owned() -> None:
    assert store.create_session("new", owner="9", title="My chat")
    assert not store.create_session("new", owner="10", title="Other")

    info = store.get_session("new")
    assert info is not None
    assert (info.title, info.owner, info.message_count) == ("My chat", "9", 0)
    assert [s.session_id for s in store.list_sessions(owner="9").sessions] == ["new"]
    assert store.read_records("new") == []


def test_an_untitled_new_session_is_named_by_its_first_question() -> None:
    store.create_session("fresh", owner="9")
    assert store.get_session("fresh").title == ""  # type: ignore[union-attr]

    store.append_records("fresh", [human("What is Redis?"), ai("A database.")])
    store.append_records("fresh", [human("And Django?")])

    assert store.get_session("fresh").title == "What is Redis?"  # type: ignore[union-attr]


@override_settings(CHATMEMORY_TTL=30)
def test_created_session_gets_the_ttl(redis_client: redis.Redis) -> None:
    store.create_session("ttl-new")

    info = store.get_session("ttl-new")

    assert info is not None and info.expires_in is not None
    assert timedelta(seconds=29) < info.expires_in <= timedelta(seconds=30)


def test_set_title() -> None:
    store.append_records("named", [human("original")])

    assert store.set_title("named", "  Renamed\n chat ")
    assert not store.set_title("missing", "x")
    assert store.get_session("named").title == "Renamed chat"  # type: ignore[union-attr]
    store.append_records("named", [human("more")])
    assert store.get_session("named").title == "Renamed chat"  # type: ignore[union-attr]


def test_list_sessions_newest_first_with_pages() -> None:
    for i in range(7):
        store.append_records(f"s{i}", [human(f"q{i}")], owner="1" if i % 2 else "2")
        time.sleep(0.002)
    store.append_records("s0", [ai("bumped")])  # s0 is now the most recent

    first = store.list_sessions(limit=3)
    second = store.list_sessions(offset=3, limit=3)
    third = store.list_sessions(offset=6, limit=3)

    assert [s.session_id for s in first.sessions] == ["s0", "s6", "s5"]
    assert [s.session_id for s in second.sessions] == ["s4", "s3", "s2"]
    assert [s.session_id for s in third.sessions] == ["s1"]
    assert first.total == second.total == third.total == 7
    mine = store.list_sessions(owner="1")
    assert [s.session_id for s in mine.sessions] == ["s5", "s3", "s1"]
    assert mine.total == 3


def test_list_sessions_active_since(redis_client: redis.Redis) -> None:
    store.append_records("old", [human("old")])
    store.append_records("recent", [human("recent")])
    week_ago = int((time.time() - 8 * 86400) * 1000)
    redis_client.zadd(store.sessions_key(), {"old": week_ago})

    page = store.list_sessions(active_since=datetime.now(UTC) - timedelta(days=7))

    assert [s.session_id for s in page.sessions] == ["recent"]
    assert page.total == 1


def test_ghost_sessions_disappear_from_listings(redis_client: redis.Redis) -> None:
    for sid in ("a", "b", "c"):
        store.append_records(sid, [human(sid)], owner="5")
    redis_client.delete(store.meta_key("b"), store.messages_key("b"))

    page = store.list_sessions()
    owner_page = store.list_sessions(owner="5")

    assert [s.session_id for s in page.sessions] == ["c", "a"]
    assert page.total == 2
    assert [s.session_id for s in owner_page.sessions] == ["c", "a"]
    assert redis_client.zscore(store.sessions_key(), "b") is None
    assert redis_client.zscore(store.ids_key(), "b") is None
    assert redis_client.zscore(store.owner_key("5"), "b") is None
    assert store.list_sessions().total == 2


@override_settings(CHATMEMORY_TTL=1)
def test_expired_sessions_are_pruned_from_every_index(
    redis_client: redis.Redis,
) -> None:
    store.append_records("soon-gone", [human("x")], owner="8")
    time.sleep(1.1)
    store.append_records("alive", [human("y")], owner="8")

    assert [s.session_id for s in store.list_sessions().sessions] == ["alive"]
    assert [s.session_id for s in store.list_sessions(owner="8").sessions] == ["alive"]
    assert redis_client.zscore(store.ids_key(), "soon-gone") is None
    assert store.search_session_ids("soon").sessions == []


def test_prefix_search() -> None:
    for sid in ("alpha-1", "alpha-2", "alpha-3", "alphabet", "beta", "alp\u00e9"):
        store.append_records(sid, [human(sid)])

    page = store.search_session_ids("alpha-", limit=2)
    rest = store.search_session_ids("alpha-", offset=2, limit=2)
    exact = store.search_session_ids("beta")

    assert [s.session_id for s in page.sessions] == ["alpha-1", "alpha-2"]
    assert page.total == 3  # counted, not guessed
    assert [s.session_id for s in rest.sessions] == ["alpha-3"]
    assert rest.total == 3
    assert [s.session_id for s in exact.sessions] == ["beta"]
    assert exact.total == 1
    assert store.search_session_ids("alpha").total == 4
    assert store.search_session_ids("alp").total == 5
    assert [s.session_id for s in store.search_session_ids("alp\u00e9").sessions] == [
        "alp\u00e9"
    ]
    assert store.search_session_ids("gamma").sessions == []


def test_get_sessions_keeps_order_and_drops_unknown() -> None:
    store.append_records("x", [human("x")])
    store.append_records("y", [human("y")])

    infos = store.get_sessions(["y", "nope", "x"])

    assert [i.session_id for i in infos] == ["y", "x"]
    assert store.get_sessions([]) == []


def test_delete_session(redis_client: redis.Redis) -> None:
    store.append_records("gone", [human("x")], owner="2")

    assert store.delete_session("gone")
    assert not store.delete_session("gone")
    assert store.get_session("gone") is None
    assert redis_client.zcard(store.owner_key("2")) == 0


def test_decode_records_marks_unreadable_entries() -> None:
    good = store.encode_record(human("ok"))

    decoded = store.decode_records([good, b"[1", b"2]", b"7", good])

    assert decoded[0] == human("ok")
    assert decoded[4] == human("ok")
    bad = decoded[1:4]
    assert all(isinstance(entry, store.UnreadableEntry) for entry in bad)
    assert [e.position for e in bad] == [1, 2, 3]  # type: ignore[union-attr]
    assert "a JSON int" in bad[2].reason  # type: ignore[union-attr]
    assert store.decode_records([]) == []


@pytest.mark.parametrize(
    "entry",
    [
        b'{"n":123456789012345678901234567890}',  # past 64 bits: orjson says float
        b'{"n":-9223372036854775809}',
        # 2**64 at each offset of the every-third-byte scan (decode_records).
        b'{"n":18446744073709551616}',
        b'{"p":"x","n":18446744073709551616}',
        b'{"p":"xy","n":18446744073709551616}',
        b'{"n":NaN,"m":Infinity}',  # orjson refuses these; json reads them
        b'{"s":"\\ud800"}',  # a lone surrogate
        b'{"x":1E400}',
        b'\xef\xbb\xbf{"bom":1}',
    ],
)
def test_decode_records_reads_what_json_reads(entry: bytes) -> None:
    import json

    expected = json.loads(entry)

    (decoded,) = store.decode_records([entry])
    both = store.decode_records([store.encode_record(human("a")), entry])

    assert repr(decoded) == repr(expected)  # repr: NaN != NaN, 1 == 1.0
    assert repr(both[1]) == repr(expected)


def test_decode_records_reads_long_integers_in_a_long_history() -> None:
    # Past the size where decode_records looks at every byte at once.
    filler = [store.encode_record(human("x" * 1000)) for _ in range(70)]
    entry = b'{"n":18446744073709551616}'

    decoded = store.decode_records([*filler, entry])

    assert len(decoded) == 71
    assert decoded[-1] == {"n": 2**64}
    assert type(decoded[-1]["n"]) is int  # type: ignore[index]


def test_encode_exact_only_when_orjson_reads_back_the_record() -> None:
    import uuid

    record = human("h\u00e9")

    assert store.encode_exact(record) == store.encode_record(record)
    assert store.encode_exact({"n": float("nan")}) is None  # orjson: null
    assert store.encode_exact({"u": uuid.uuid4()}) is None  # orjson: a string
    assert store.encode_exact({"big": 2**64}) is None  # orjson refuses it
    assert store.encode_exact({1: "non-str key"}) is None
    # Nested one level, as a record's data is.
    assert store.encode_exact({"data": {"f": float("-inf")}}) is None
    assert store.encode_exact({"data": {"u": uuid.uuid4()}}) is None
    assert store.encode_exact({"data": {"big": -(2**63) - 1}}) is None
    plain = {"type": "human", "data": {"content": "x\u00e9", "n": 2**63}, "at": 1}
    assert store.encode_exact(plain) == store.encode_record(plain)


def test_encode_exact_bytes_read_back_as_json_s_would() -> None:
    import enum
    import json
    import random

    class Colour(enum.IntEnum):
        RED = 1

    class Text(str):
        pass

    leaves: list[Any] = [
        "x", "\u00e9\U0001f600", "\ud800", 0, -5, 2**63, 2**64, -(2**63) - 1,
        True, False, None, 1.5, float("nan"), float("inf"), (1, 2), Colour.RED,
        Text("t"), b"bytes",
    ]  # fmt: skip

    def value(rng: random.Random, depth: int) -> Any:
        if depth > 6 or rng.random() < 0.55:
            return rng.choice(leaves)
        if rng.random() < 0.5:
            return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        keys: list[Any] = ["a", "b", "c", 1] if rng.random() < 0.05 else ["a", "b"]
        return {rng.choice(keys): value(rng, depth + 1) for _ in range(3)}

    def same(a: Any, b: Any) -> bool:
        if type(a) is not type(b):
            return False
        if type(a) is dict:
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if type(a) is list:
            return len(a) == len(b) and all(map(same, a, b))
        return bool(a == b)

    rng = random.Random(3)
    exact = 0
    for _ in range(3000):
        record = {"type": "ai", "data": value(rng, 0), "at": 1}
        data = store.encode_exact(record)
        if data is not None:
            exact += 1
            # What json would have written, as json reads it back.
            assert same(json.loads(data), json.loads(store.encode_record(record)))
    assert 300 < exact < 2700  # both answers were put to the test

    # The history's own records: only their data dict goes through orjson,
    # with the same answer, byte for byte, as for the whole record.
    exact = 0
    for _ in range(3000):
        data = {"content": value(rng, 1), "id": value(rng, 1)}
        whole = store.encode_exact({"type": "ai", "data": data, "at": 17})
        assert store.encode_exact_record("ai", data, 17) == whole
        exact += whole is not None
    assert 300 < exact < 2700
    assert store.encode_exact_record("ai", {}, True) is None  # type: ignore[arg-type]


def test_encode_record_keeps_unicode_readable() -> None:
    assert store.encode_record(human("h\u00e9")) == (
        '{"type":"human","data":{"content":"h\u00e9"}}'.encode()
    )


def test_check_connection_and_unavailable_message() -> None:
    store.check_connection()
    from tests.test_history import closed_port_caches

    caches = closed_port_caches()
    with override_settings(CACHES=caches):
        with pytest.raises(StoreUnavailable) as excinfo:
            store.check_connection()
        with pytest.raises(StoreUnavailable):
            store.list_sessions()
        with pytest.raises(StoreUnavailable):
            store.get_session("x")
    port = caches["chatmemory"]["LOCATION"].rsplit(":", 1)[1].split("/")[0]
    assert f"127.0.0.1:{port}" in str(excinfo.value)


def test_unix_socket_address_is_named() -> None:
    client = redis.Redis(unix_socket_path="/nonexistent/redis.sock")
    with pytest.raises(StoreUnavailable, match="unix:/nonexistent/redis.sock"):
        with store.client.translate_errors(client):
            client.ping()


def test_misconfigured_alias_is_a_clear_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(CHATMEMORY_CACHE_ALIAS="nope"):
        with pytest.raises(ImproperlyConfigured, match="not in CACHES"):
            store.read_records("x")
    with override_settings(CHATMEMORY_CACHE_ALIAS="default"):
        with pytest.raises(ImproperlyConfigured, match="not a django-redis cache"):
            store.read_records("x")


async def test_async_misconfigured_alias_is_a_clear_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(CHATMEMORY_CACHE_ALIAS="nope"):
        with pytest.raises(ImproperlyConfigured, match="not in CACHES"):
            await store.aread_records("x")


def test_async_client_takes_the_cache_options() -> None:
    caches = {
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:6390/3,redis://127.0.0.1:6391/3",
            "OPTIONS": {
                "PASSWORD": "secret",
                "SOCKET_TIMEOUT": 4,
                "CONNECTION_POOL_KWARGS": {"max_connections": 7},
            },
        }
    }
    with override_settings(CACHES=caches):
        url, kwargs = store.client.location("chatmemory")

    assert url == "redis://127.0.0.1:6390/3"
    assert kwargs == {"password": "secret", "socket_timeout": 4, "max_connections": 7}


def test_read_session_does_not_restart_the_ttl(redis_client: redis.Redis) -> None:
    with override_settings(CHATMEMORY_TTL=100, CHATMEMORY_REFRESH_TTL_ON_READ=True):
        store.append_records("kept-short", [human("x")])
        redis_client.pexpire(store.meta_key("kept-short"), 5000)
        info, entries = store.read_session("kept-short")
    assert info is not None and info.expires_in is not None
    assert info.expires_in <= timedelta(seconds=5)
    assert [entry["data"]["content"] for entry in entries] == ["x"]  # type: ignore[index]
    assert redis_client.pttl(store.meta_key("kept-short")) <= 5000
    assert store.read_session("missing") == (None, [])


def test_sessions_without_an_owner_have_their_own_index(
    redis_client: redis.Redis,
) -> None:
    store.append_records("anon-1", [human("x")])
    store.create_session("anon-2")
    store.import_sessions([store.ImportedSession("anon-3", [human("y")])])
    store.append_records("owned", [human("z")], owner="5")
    store.import_sessions([store.ImportedSession("owned-2", [human("y")], owner="5")])

    def ownerless() -> list[str]:
        return sorted(
            s.session_id for s in store.list_sessions(ownerless=True).sessions
        )

    assert ownerless() == ["anon-1", "anon-2", "anon-3"]
    assert store.list_sessions(ownerless=True).total == 3
    # a first owner moves the session to its owner's index
    store.append_records("anon-1", [human("mine now")], owner="6")
    assert ownerless() == ["anon-2", "anon-3"]
    assert [s.session_id for s in store.list_sessions(owner="6").sessions] == ["anon-1"]
    # deleting removes it; rebuilding the indexes brings the index back
    store.delete_session("anon-2")
    assert ownerless() == ["anon-3"]
    redis_client.delete(store.no_owner_key())
    assert ownerless() == []
    assert store.rebuild_indexes() == 4
    assert ownerless() == ["anon-3"]
    # a stale entry (a session with an owner) is dropped when listing meets it
    redis_client.zadd(store.no_owner_key(), {"owned": 1})
    page = store.list_sessions(ownerless=True)
    assert [s.session_id for s in page.sessions] == ["anon-3"] and page.total == 1
    assert redis_client.zscore(store.no_owner_key(), "owned") is None


def test_reading_refreshes_the_no_owner_index(redis_client: redis.Redis) -> None:
    with override_settings(CHATMEMORY_TTL=100, CHATMEMORY_REFRESH_TTL_ON_READ=True):
        store.append_records("anon", [human("x")])
        redis_client.zadd(store.no_owner_key(), {"anon": 1})
        store.read_records("anon")
        score = redis_client.zscore(store.no_owner_key(), "anon")
        assert score is not None and score > 1
        assert [s.session_id for s in store.list_sessions(ownerless=True).sessions] == [
            "anon"
        ]


def test_read_session_range(redis_client: redis.Redis) -> None:
    store.import_sessions(
        [store.ImportedSession("long", [human(f"m{i}") for i in range(10)])]
    )
    redis_client.rpush(store.messages_key("long"), b"{broken")

    info, count, entries = store.read_session_range("long", 4, 3)
    tail_info, tail_count, tail = store.read_session_range("long", 9, 5)

    assert info is not None and info.session_id == "long"
    assert count == tail_count == 11  # the list's length, unreadable entries too
    assert [e["data"]["content"] for e in entries] == ["m4", "m5", "m6"]  # type: ignore[index]
    assert tail[0]["data"]["content"] == "m9"  # type: ignore[index]
    assert isinstance(tail[1], store.UnreadableEntry)
    assert store.read_session_range("long", 20, 5)[1:] == (11, [])
    assert store.read_session_range("long", 0, 0)[1:] == (11, [])
    assert store.read_session_range("missing", 0, 5) == (None, 0, [])


def test_count_owner_sessions() -> None:
    store.append_records("a1", [human("x")], owner="11")
    store.append_records("a2", [human("x")], owner="11")
    store.append_records("b1", [human("x")], owner="12")
    assert store.count_owner_sessions(["11", "nobody"]) == {"11": 2}
    assert store.count_owner_sessions([]) == {}


def test_import_sessions(redis_client: redis.Redis) -> None:
    now = datetime.now(UTC)
    records = [
        {"type": "system", "data": {"content": "sys"}},
        {"type": "human", "data": {"content": "first   question"}},
        {"type": "ai", "data": {"content": "answer"}},
    ]
    with override_settings(CHATMEMORY_TTL=3600, CHATMEMORY_MAX_MESSAGES=2):
        written = store.import_sessions(
            [
                store.ImportedSession("imp-1", records, owner="7", updated=now),
                store.ImportedSession(
                    "imp-2",
                    [],
                    title="Named",
                    created=now - timedelta(minutes=30),
                    updated=now - timedelta(minutes=10),
                ),
                store.ImportedSession(
                    "too-old", records, updated=now - timedelta(hours=2)
                ),
                store.ImportedSession("imp-3", records[:1]),
            ],
            batch_size=2,
        )
    assert written == 3
    assert store.get_session("too-old") is None
    one = store.get_session("imp-1")
    assert one is not None
    assert (one.owner, one.message_count, one.title) == ("7", 2, "first question")
    assert one.expires_in is not None and one.expires_in > timedelta(minutes=59)
    assert store.read_records("imp-1") == records[1:]
    two = store.get_session("imp-2")
    assert two is not None
    assert (two.title, two.message_count, two.owner) == ("Named", 0, None)
    assert two.created < two.last_activity
    assert two.expires_in is not None and two.expires_in < timedelta(minutes=51)
    assert [s.session_id for s in store.list_sessions().sessions] == [
        "imp-3",
        "imp-1",
        "imp-2",
    ]
    assert [s.session_id for s in store.list_sessions(owner="7").sessions] == ["imp-1"]
    assert [s.session_id for s in store.search_session_ids("imp-").sessions] == [
        "imp-1",
        "imp-2",
        "imp-3",
    ]
    # importing again replaces the session
    store.import_sessions([store.ImportedSession("imp-1", records[:1])])
    assert store.read_records("imp-1") == records[:1]


def test_owner_index_keys_are_found_when_the_caller_does_not_know_the_owner(
    redis_client: redis.Redis,
) -> None:
    store.append_records(
        "owned", [{"type": "human", "data": {"content": "hi"}}], owner="7"
    )
    # A fresh process knows no owners: each script is first sent with no owner
    # index key, answers with the recorded owner, and is sent again with it.
    operations._known_owners.clear()
    store.append_records("owned", [{"type": "ai", "data": {"content": "yo"}}])
    assert [s.session_id for s in store.list_sessions(owner="7").sessions] == ["owned"]
    assert store.get_session("owned").message_count == 2  # type: ignore[union-attr]

    operations._known_owners.clear()
    assert store.delete_session("owned") is True
    assert redis_client.exists(store.owner_key("7")) == 0
    assert store.delete_session("owned") is False


def test_read_refresh_finds_the_owner_index(redis_client: redis.Redis) -> None:
    with override_settings(CHATMEMORY_TTL=100, CHATMEMORY_REFRESH_TTL_ON_READ=True):
        store.append_records(
            "owned", [{"type": "human", "data": {"content": "hi"}}], owner="7"
        )
        redis_client.zadd(store.owner_key("7"), {"owned": 1})
        operations._known_owners.clear()
        assert len(store.read_records("owned")) == 1
        assert redis_client.zscore(store.owner_key("7"), "owned") > 1  # type: ignore[operator]


def test_owner_mismatch_writes_nothing() -> None:
    store.append_records(
        "owned", [{"type": "human", "data": {"content": "a"}}], owner="1"
    )
    with pytest.raises(OwnerMismatch):
        store.append_records(
            "owned", [{"type": "human", "data": {"content": "b"}}], owner="2"
        )
    assert len(store.read_records("owned")) == 1


async def test_async_twins_match_the_sync_operations() -> None:
    assert await store.acreate_session("a", owner="5", title="T") is True
    assert await store.aset_title("a", "New") is True
    page = await store.alist_sessions(owner="5")
    assert [s.title for s in page.sessions] == ["New"]
    assert [s.session_id for s in (await store.asearch_session_ids("a")).sessions] == [
        "a"
    ]
    assert [s.session_id for s in await store.aget_sessions(["a", "zz"])] == ["a"]
    assert await store.acount_owner_sessions(["5", "6"]) == {"5": 1}
    info, records = await store.aread_session("a")
    assert info is not None and records == []
    assert (await store.alist_sessions(ownerless=True)).total == 0
    info, count, records = await store.aread_session_range("a", 0, 10)
    assert info is not None and count == 0 and records == []
    await store.acheck_connection()
    assert await store.arebuild_indexes() == 1
    assert await store.aimport_sessions([store.ImportedSession("b", [])]) == 1
    assert await store.adelete_session("a") is True


# --- turn locks -----------------------------------------------------------------


def test_a_turn_lock_is_held_by_one_token_until_released_or_expired(
    redis_client: redis.Redis,
) -> None:
    assert store.lock_turn("l1", "first", seconds=30)
    assert not store.lock_turn("l1", "second", seconds=30)
    assert 0 < redis_client.pttl(store.turn_lock_key("l1")) <= 30_000
    assert store.turn_lock_key("l1").endswith("{l1}:turn-lock")  # the session's slot
    assert not store.unlock_turn("l1", "second")  # not its lock
    assert store.unlock_turn("l1", "first")
    assert not store.unlock_turn("l1", "first")  # already released
    assert store.lock_turn("l1", "second", seconds=0.05)
    time.sleep(0.1)
    assert store.lock_turn("l1", "third", seconds=30)  # the old one expired
    assert store.lock_turn("l2", "first", seconds=30)  # per session


async def test_async_turn_locks() -> None:
    assert await store.alock_turn("l3", "a", seconds=30)
    assert not await store.alock_turn("l3", "b", seconds=30)
    assert not await store.aunlock_turn("l3", "b")
    assert await store.aunlock_turn("l3", "a")
    with pytest.raises(ValueError):
        await store.alock_turn("", "a", seconds=1)


# --- write ids, caps, must_exist, TTL pruning ---------------------------------


def test_a_repeated_write_id_is_applied_once() -> None:
    write_id = store.new_write_id()
    assert store.append_records("w", [human("q"), ai("a")], write_id=write_id) == 2
    assert store.append_records("w", [human("q"), ai("a")], write_id=write_id) == 2
    assert store.append_records("w", [human("q2")]) == 3
    assert [r["data"]["content"] for r in store.read_records("w")] == ["q", "a", "q2"]  # type: ignore[index]


async def test_a_repeated_write_id_is_applied_once_async() -> None:
    write_id = store.new_write_id()
    assert await store.aappend_records("wa", [human("q")], write_id=write_id) == 1
    assert await store.aappend_records("wa", [human("q")], write_id=write_id) == 1


def test_the_cap_keeps_whole_turns() -> None:
    with override_settings(CHATMEMORY_MAX_MESSAGES=3):
        store.append_records("cap", [human("q1"), ai("a1")])
        store.append_records("cap", [human("q2"), ai("a2")])
        # Three would start with a1, inside the first turn: it goes too.
        assert [r["type"] for r in store.read_records("cap")] == ["human", "ai"]
        assert store.get_session("cap").message_count == 2  # type: ignore[union-attr]
        store.append_records("cap", [ai("a2, more"), human("q3")])
        assert [r["data"]["content"] for r in store.read_records("cap")] == [  # type: ignore[index]
            "q3"
        ]


def test_a_cap_without_a_human_message_in_reach_keeps_the_cap() -> None:
    with override_settings(CHATMEMORY_MAX_MESSAGES=2):
        store.append_records("ais", [ai("1"), ai("2"), ai("3")])
        assert len(store.read_records("ais")) == 2


def test_must_exist_refuses_a_missing_session_and_writes_nothing() -> None:
    from chatmemory.exceptions import SessionNotFound

    with pytest.raises(SessionNotFound):
        store.append_records("never", [human("q")], owner="1", must_exist=True)
    assert store.get_session("never") is None
    store.create_session("there", owner="1")
    assert store.append_records("there", [human("q")], owner="1", must_exist=True) == 1


def test_expired_index_entries_are_never_counted_and_pruned_by_writes(
    redis_client: redis.Redis,
) -> None:
    with override_settings(CHATMEMORY_TTL=60):
        for i in range(40):
            store.append_records(f"old{i}", [human("x")], owner="9")
        old = operations.now_ms() - 120_000  # as if written two minutes ago
        for i in range(40):
            redis_client.zadd(store.sessions_key(), {f"old{i}": old})
            redis_client.zadd(store.owner_key("9"), {f"old{i}": old})
            redis_client.delete(
                store.meta_key(f"old{i}"), store.messages_key(f"old{i}")
            )
        store.append_records("live", [human("y")], owner="9")

        # One write took a bounded step: 16 of the 40 expired entries (on
        # Cluster too, in its second step).
        assert redis_client.zcard(store.sessions_key()) == 1 + 40 - 16
        assert redis_client.zcard(store.owner_key("9")) == 1 + 40 - 16
        store.append_records("live", [human("z")], owner="9")
        assert redis_client.zcard(store.sessions_key()) == 1 + 40 - 32
        # Listings never count what is known to be expired.
        with override_settings(CHATMEMORY_TTL=60):
            assert store.list_sessions(owner="9").total == 1
            assert store.list_sessions().total == 1


def test_a_search_reads_past_expired_ids(redis_client: redis.Redis) -> None:
    for i in range(150):
        store.append_records(f"match-{i:03}", [human("x")])
    store.append_records("match-999", [human("live")])
    for i in range(150):  # expired behind our back: their ids are still indexed
        redis_client.delete(store.meta_key(f"match-{i:03}"))

    page = store.search_session_ids("match-", limit=10)

    assert [info.session_id for info in page.sessions] == ["match-999"]
    assert page.total == 1
    assert redis_client.zcard(store.ids_key()) == 1


# --- index TTLs: an index lives as long as its longest-lived session ---------


def kept(ttl: int) -> int:
    """The most ms an index is kept for a session that lives ``ttl`` ms (a
    64th more, so that the writes that follow need not lengthen it)."""
    return ttl + ttl // 64


def index_keys(*owners: str | None) -> list[str]:
    """The activity and id indexes, and those of ``owners`` (None: no owner)."""
    return [store.sessions_key(), store.ids_key()] + [
        store.no_owner_key() if owner is None else store.owner_key(owner)
        for owner in owners
    ]


def test_indexes_expire_with_their_last_session(redis_client: redis.Redis) -> None:
    # CHATMEMORY_TTL is whole seconds; a fraction keeps this test short.
    with override_settings(CHATMEMORY_TTL=0.4):
        for i in range(6):
            owner = str(i % 3) if i < 5 else None
            store.append_records(f"s{i}", [human("x")], owner=owner)
        store.create_session("made", owner="7")
        names = index_keys("0", "1", "2", "7", None)
        assert all(0 < redis_client.pttl(name) <= kept(400) for name in names)
        # No index expires before a session in it.
        assert store.check_consistency().ok
        time.sleep(0.45)
    # Nobody wrote since: every index went with its sessions.
    assert [name for name in names if redis_client.exists(name)] == []


def test_a_session_without_a_ttl_keeps_its_indexes_for_ever(
    redis_client: redis.Redis,
) -> None:
    names = index_keys("5")
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("brief", [human("x")], owner="5")
    assert all(redis_client.pttl(name) > 0 for name in names)
    store.append_records("kept", [human("y")], owner="5")
    assert [redis_client.pttl(name) for name in names] == [-1, -1, -1]
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("brief", [human("z")])
        store.create_session("brief-2", owner="5")
    # A write with a TTL never gives a kept index one.
    assert [redis_client.pttl(name) for name in names] == [-1, -1, -1]
    assert store.check_consistency().ok


def test_a_shorter_ttl_never_shortens_an_index(redis_client: redis.Redis) -> None:
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("long", [human("x")], owner="6")
    with override_settings(CHATMEMORY_TTL=1):
        store.append_records("short", [human("y")], owner="6")
        store.create_session("short-2", owner="6")
    # The index outlives the session that lives 60 s, not 1 s.
    assert all(redis_client.pttl(name) > 50_000 for name in index_keys("6"))


def test_reading_lengthens_the_indexes(redis_client: redis.Redis) -> None:
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("read", [human("x")], owner="8")
        store.append_records("read-anon", [human("x")])
    with override_settings(CHATMEMORY_TTL=120, CHATMEMORY_REFRESH_TTL_ON_READ=True):
        store.read_records("read")
        store.read_records("read-anon")
        assert all(redis_client.pttl(name) > 110_000 for name in index_keys("8", None))
        assert store.check_consistency().ok


def test_imported_sessions_keep_their_indexes(redis_client: redis.Redis) -> None:
    def imported(session_id: str, owner: str | None, seconds: int) -> Any:
        left = timedelta(seconds=seconds)
        return store.ImportedSession(
            session_id, [human("x")], owner=owner, expires_in=left
        )

    store.import_sessions(
        [imported("i1", "3", 50), imported("i2", "3", 90), imported("i3", None, 70)]
    )
    *shared, owned, ownerless = (redis_client.pttl(n) for n in index_keys("3", None))
    assert all(80_000 < ttl <= kept(90_000) for ttl in (*shared, owned))
    assert 60_000 < ownerless <= kept(70_000)
    assert store.check_consistency().ok
    store.import_sessions([store.ImportedSession("i4", [human("y")], owner="3")])
    assert [redis_client.pttl(name) for name in index_keys("3")] == [-1, -1, -1]


def test_a_new_owner_index_outlives_the_sessions_moved(
    redis_client: redis.Redis,
) -> None:
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("moved", [human("x")], owner="old")
    assert store.rename_owner("old", "new") == 1
    assert 50_000 < redis_client.pttl(store.owner_key("new")) <= kept(60_000)
    store.append_records("moved-2", [human("x")], owner="old")
    store.rename_owner("old", "new")
    assert redis_client.pttl(store.owner_key("new")) == -1


def test_reindex_gives_each_index_the_ttl_its_sessions_need(
    redis_client: redis.Redis,
) -> None:
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("a", [human("x")], owner="1")
        store.append_records("b", [human("x")])
        names = index_keys("1", None)
        for name in names:  # as an older version, or sessions now gone, left them
            redis_client.persist(name)
        assert store.check_consistency().counts == {"index_never_expires": 4}
        store.rebuild_indexes()
        assert all(50_000 < redis_client.pttl(name) <= 60_000 for name in names)
        assert store.check_consistency().ok
    # Without a TTL setting, a session without a TTL keeps its indexes for ever;
    # the reindex only lengthens the others'.
    redis_client.persist(store.meta_key("a"))
    assert store.check_consistency().counts == {"index_expires_first": 1}
    store.rebuild_indexes()
    assert [redis_client.pttl(name) for name in index_keys("1")] == [-1, -1, -1]
    assert 50_000 < redis_client.pttl(store.no_owner_key()) <= 60_000
    assert store.check_consistency().ok


async def test_a_server_that_lost_the_scripts_gets_them_again(
    redis_client: redis.Redis,
) -> None:
    # A restarted or failed-over server has no scripts: the write loads its
    # script and is applied once, sync and async.
    store.append_records("flushed", [human("one")])
    redis_client.script_flush()
    assert store.append_records("flushed", [ai("two")]) == 2
    redis_client.script_flush()
    assert await store.aappend_records("flushed", [human("three")]) == 3
    await store.aclose_clients()
    assert [r["data"]["content"] for r in store.read_records("flushed")] == [
        "one",
        "two",
        "three",
    ]
