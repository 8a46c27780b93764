"""Benchmark: server time of the chat session admin pages.

Run by hand (never a test), from the project root::

    .venv/bin/python bench/bench_admin.py            # 41 runs per case
    .venv/bin/python bench/bench_admin.py --runs 11  # quicker

Cases, each the median of ``--runs`` requests by a logged-in superuser through
Django's test client (middleware, view, template rendering; no network):

- the session list at 1,000 and at 100,000 sessions, and their ratio (the
  list pages through the Redis indexes, so the target is at most 1.3);
- a session id prefix search, an owner search and a title word search at
  100,000 sessions (every search also reads the titles of the 5,000 most
  recently active sessions: the admin's title search window);
- a transcript page (first and last) of a 1,000- and a 100,000-message
  session, and their ratio (a page reads one range of the list, so the target
  is at most 1.3);
- the "No owner" filter at 100,000 sessions;
- the JSON export (body streamed and read whole) of both sessions, with the
  peak memory Python allocates for the 100,000-message one.

It also prints the Redis commands one list page costs at each size (they must
be equal). Requests of the two sizes are interleaved run by run, so drift in
machine load hits both alike.

Redis: a throwaway ``redis-server`` on a free loopback port (persistence off),
or the server of ``BENCH_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/15``); the
benchmark then deletes only the keys under its own random prefix.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = f"bench-admin-{uuid.uuid4().hex[:10]}"
LIST_URL = "/admin/chatmemory/chatsession/"


def redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL", "").rstrip("/")
    if url:
        return url
    from tests.redis_server import start_redis_server

    _, url = start_redis_server()  # stopped at exit
    return f"{url}/0"


def configure_django(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "chatmemory",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="project.urls",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [ROOT / "templates"],
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ],
                },
            }
        ],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
        },
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            # As in project/settings.py.
            "chatmemory": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
            },
        },
        CHATMEMORY_CACHE_ALIAS="chatmemory",
        CHATMEMORY_KEY_PREFIX=PREFIX,
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        STATIC_URL="static/",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@contextmanager
def key_prefix(name: str) -> Iterator[None]:
    from django.test import override_settings

    with override_settings(CHATMEMORY_KEY_PREFIX=f"{PREFIX}:{name}"):
        yield


def seed(count: int, owners: list[str]) -> float:
    """Load ``count`` one-message sessions; return the seconds it took."""
    from chatmemory import store

    now = datetime.now(UTC)
    started = time.perf_counter()
    store.import_sessions(
        store.ImportedSession(
            session_id=f"session-{i:06d}",
            records=[{"type": "human", "data": {"content": f"question number {i}"}}],
            owner=owners[i % len(owners)] if i % 3 else None,
            updated=now - timedelta(seconds=i),
        )
        for i in range(count)
    )
    return time.perf_counter() - started


def long_conversation(count: int) -> list[Any]:
    """Human questions, AI answers with usage metadata, now and then a tool call."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    messages: list[Any] = []
    turn = 0
    while len(messages) < count:
        turn += 1
        messages.append(HumanMessage(f"Question {turn}: " + "tell me more " * 8))
        usage = {"input_tokens": 40 * turn, "output_tokens": 90, "total_tokens": 0}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        if turn % 10 == 0:
            call = f"call_{turn}"
            messages.append(
                AIMessage(
                    "",
                    tool_calls=[
                        {
                            "name": "search",
                            "args": {"query": f"topic {turn}"},
                            "id": call,
                            "type": "tool_call",
                        }
                    ],
                    usage_metadata=usage,
                )
            )
            messages.append(ToolMessage(f"results for {turn}", tool_call_id=call))
        messages.append(
            AIMessage(
                f"Answer {turn}: " + "here is a detailed reply. " * (5 + turn % 40),
                usage_metadata=usage,
                response_metadata={"model_name": "demo", "finish_reason": "stop"},
            )
        )
    return messages[:count]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(get: Callable[[], Any]) -> float:
    started = time.perf_counter()
    response = get()
    if response.streaming:
        for _ in response.streaming_content:
            pass
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    return elapsed


def peak_kib(get: Callable[[], Any]) -> float:
    """Peak memory Python allocates while ``get`` runs and its body is read."""
    import tracemalloc

    tracemalloc.start()
    try:
        timed(get)
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def list_commands(client: Any, redis_client: Any, params: dict[str, str]) -> int:
    before = redis_client.info("commandstats")
    client.get(LIST_URL, params)
    after = redis_client.info("commandstats")
    calls: int = sum(
        stats["calls"] - before.get(name, {}).get("calls", 0)
        for name, stats in after.items()
    )
    return calls - 1  # the second INFO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=41, help="requests per case")
    options = parser.parse_args()

    url = redis_url()
    configure_django(url)

    import redis
    from django.contrib.auth.models import User
    from django.test import Client

    from chatmemory.history import DjangoRedisChatMessageHistory
    from chatmemory.owners import owner_id

    redis_client = redis.Redis.from_url(url)
    owners = [
        owner_id(User.objects.create_user(f"user{i}", f"user{i}@example.com"))
        for i in range(20)
    ]
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)

    try:
        with key_prefix("small"):
            seconds = seed(1_000, owners)
            print(f"seeded 1,000 sessions in {seconds:.2f} s")
        with key_prefix("big"):
            seconds = seed(100_000, owners)
            print(f"seeded 100,000 sessions in {seconds:.2f} s")
            DjangoRedisChatMessageHistory("long-session").add_messages(
                long_conversation(1_000)
            )
            from chatmemory import store

            store.import_sessions(
                [
                    store.ImportedSession(
                        "huge-session",
                        [
                            {
                                "type": ("human", "ai")[i % 2],
                                "data": {"content": f"message {i} " * 10},
                            }
                            for i in range(100_000)
                        ],
                    )
                ]
            )

        def list_page(name: str, params: dict[str, str]) -> float:
            with key_prefix(name):
                return timed(lambda: client.get(LIST_URL, params))

        # warm up both sizes (connections, scripts, templates)
        for _ in range(3):
            list_page("small", {})
            list_page("big", {})

        small: list[float] = []
        big: list[float] = []
        for _ in range(options.runs):
            small.append(list_page("small", {}))
            big.append(list_page("big", {}))
        with key_prefix("small"):
            commands_small = list_commands(client, redis_client, {})
        with key_prefix("big"):
            commands_big = list_commands(client, redis_client, {})

        search = [list_page("big", {"q": "session-0421"}) for _ in range(options.runs)]
        later_page = [list_page("big", {"p": "1000"}) for _ in range(options.runs)]
        owner_search = [list_page("big", {"q": "user7"}) for _ in range(options.runs)]
        # Every search also reads the titles of the 5,000 most recent sessions.
        title_search = [
            list_page("big", {"q": "words in no title"}) for _ in range(options.runs)
        ]

        no_owner = [
            list_page("big", {"owner__isnull": "1"}) for _ in range(options.runs)
        ]

        with key_prefix("big"):
            pages: dict[str, list[float]] = {}
            for name, last in (("long-session", 10), ("huge-session", 1000)):
                for number in (1, last):
                    url = f"{LIST_URL}{name}/change/?p={number}"
                    timed(lambda url=url: client.get(url))  # type: ignore[misc]
                    pages[f"{name} {number}"] = []
            for _ in range(options.runs):  # interleaved, so drift hits all alike
                for case in pages:
                    name, number = case.split()
                    url = f"{LIST_URL}{name}/change/?p={number}"
                    pages[case].append(timed(lambda url=url: client.get(url)))  # type: ignore[misc]
            export = [
                timed(lambda: client.get(f"{LIST_URL}long-session/export/"))
                for _ in range(options.runs)
            ]
            huge_export = [
                timed(lambda: client.get(f"{LIST_URL}huge-session/export/"))
                for _ in range(3)
            ]
            huge_peak = peak_kib(lambda: client.get(f"{LIST_URL}huge-session/export/"))
            long_peak = peak_kib(lambda: client.get(f"{LIST_URL}long-session/export/"))

        ratio = statistics.median(big) / statistics.median(small)
        print()
        print(f"median of {options.runs} requests, superuser, Django test client")
        print(f"list page, 1,000 sessions        {median_ms(small):8.1f} ms")
        print(f"list page, 100,000 sessions      {median_ms(big):8.1f} ms")
        print(f"  ratio 100,000 / 1,000          {ratio:8.2f}   (target <= 1.3)")
        print(
            f"  Redis commands per list page   {commands_small} at 1,000, "
            f"{commands_big} at 100,000"
        )
        print(f"list page 1000 of 4000           {median_ms(later_page):8.1f} ms")
        print(
            "searches (each also reads the titles of the 5,000 most recent sessions):"
        )
        print(f"prefix search, 100,000 sessions  {median_ms(search):8.1f} ms")
        print(f"owner search, 100,000 sessions   {median_ms(owner_search):8.1f} ms")
        print(f"title words, 100,000 sessions    {median_ms(title_search):8.1f} ms")
        print(f"'No owner' filter, 100,000       {median_ms(no_owner):8.1f} ms")
        for case, samples in pages.items():
            name, number = case.split()
            size = "1,000" if name == "long-session" else "100,000"
            label = f"transcript p{number}, {size} msgs"
            print(f"{label:<33}{median_ms(samples):8.1f} ms")
        worst = max(
            statistics.median(pages[f"huge-session {n}"]) for n in (1, 1000)
        ) / min(statistics.median(pages[f"long-session {n}"]) for n in (1, 10))
        print(f"  ratio 100,000 / 1,000 (worst)  {worst:8.2f}   (target <= 1.3)")
        print(f"JSON export, 1,000 messages      {median_ms(export):8.1f} ms")
        print(
            f"JSON export, 100,000 messages    {median_ms(huge_export):8.1f} ms "
            f"(median of 3)"
        )
        print(
            f"  peak Python memory             {long_peak:8.0f} KiB at 1,000, "
            f"{huge_peak:.0f} KiB at 100,000"
        )
    finally:
        keys = list(redis_client.scan_iter(match=f"{PREFIX}:*", count=1000))
        for start in range(0, len(keys), 1000):
            redis_client.delete(*keys[start : start + 1000])


if __name__ == "__main__":
    main()
