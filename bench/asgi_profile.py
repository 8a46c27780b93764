"""Where a streamed chat turn's time goes under Django's ASGI handler, against WSGI.

Run by hand (never a test), from the project root::

    .venv/bin/python bench/asgi_profile.py            # --turns 200 --rounds 5

It serves chatmemory's stream view and the bare view (``bench/bare.py``, the
views benchmark's reference) with the views benchmark's settings, through
Django's real handlers in this process, as the servers call them:
``WSGIHandler`` (a ``start_response``, the body iterated) and ``ASGIHandler``
(``scope``, ``receive`` and ``send`` on one event loop, as uvicorn calls it;
unlike the ``AsyncClient`` of ``bench_views.py`` this includes the handler's
per-request thread, its disconnect listener and its send loop). Printed:

1. ms per turn for each handler and view, in rounds of ``--turns`` turns per
   kind in a shuffled order: median [min .. max] over rounds, and the ratios
   ASGI / WSGI round by round.
2. Thread hops per ASGI turn (``sync_to_async`` calls) by what they run, with
   their wall time and the part of it spent running in the thread; the rest
   is the hop itself (handing the call to the thread and the result back).
3. Counts from cProfile, which do not depend on the machine's load: Python
   function calls, asyncio tasks created and event loop iterations per turn.
4. The pieces, each alone in a loop (µs): one hop, one per-request thread
   (``ThreadSensitiveContext``), one asyncio task, chatmemory's turn without
   Django (``ChatTurn.stream`` and ``astream``), the model's ``stream`` and
   ``astream``, and one Redis read, sync and async.

The model is the demo model with no delay between tokens (about 40 tokens).
Redis: a throwaway ``redis-server`` on a free port, or ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_views import cleanup, prepare_env  # noqa: E402

TURNS_PER_SESSION = 10
PATHS = {"chatmemory": "/chat/{}/stream/", "bare": "/bench/bare/{}/stream/"}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="turns per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per kind")
    return parser.parse_args()


class Server:
    """Django's two handlers, driven as a WSGI and an ASGI server drive them."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model
        from django.core.handlers.asgi import ASGIHandler
        from django.core.handlers.wsgi import WSGIHandler
        from django.middleware.csrf import _get_new_csrf_string
        from django.test import Client

        client = Client()
        client.force_login(get_user_model().objects.get(username="bench"))
        self.client = client
        self.token = _get_new_csrf_string()
        self.cookie = (
            f"sessionid={client.cookies['sessionid'].value}; csrftoken={self.token}"
        )
        self.wsgi = WSGIHandler()
        self.asgi = ASGIHandler()
        self.loop = asyncio.new_event_loop()

    def new_chat(self) -> str:
        """A new chat of the logged-in user's (remembered in their session)."""
        location = self.client.post("/chat/")["Location"]
        return str(location.strip("/").split("/")[-1])

    def body(self) -> bytes:
        return f"message=hello&csrfmiddlewaretoken={self.token}".encode()

    def wsgi_turn(self, path: str) -> bytes:
        body = self.body()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_COOKIE": self.cookie,
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        result = self.wsgi(environ, lambda status, headers: None)
        try:
            return b"".join(result)
        finally:
            result.close()

    async def asgi_turn(self, path: str) -> bytes:
        body = self.body()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", str(len(body)).encode()),
                (b"cookie", self.cookie.encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        finished = asyncio.Event()
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self.asgi(scope, receive, send)
        finished.set()
        return b"".join(parts)

    def turns(self, kind: str, handler: str, count: int) -> float:
        """Seconds per turn over ``count`` turns (a new chat every few)."""
        return self.timed_turns(kind, handler, count)[0]

    def timed_turns(self, kind: str, handler: str, count: int) -> tuple[float, float]:
        """Wall and CPU (all threads) seconds per turn over ``count`` turns."""
        chats = [self.new_chat() for _ in range(0, count, TURNS_PER_SESSION)]
        paths = [
            PATHS[kind].format(chats[i // TURNS_PER_SESSION]) for i in range(count)
        ]
        if handler == "WSGI":
            start, cpu = time.perf_counter(), time.process_time()
            for path in paths:
                body = self.wsgi_turn(path)
                assert b"event: done" in body, body[-300:]
        else:

            async def run() -> None:
                for path in paths:
                    body = await self.asgi_turn(path)
                    assert b"event: done" in body, body[-300:]

            start, cpu = time.perf_counter(), time.process_time()
            self.loop.run_until_complete(run())
        return (
            (time.perf_counter() - start) / count,
            (time.process_time() - cpu) / count,
        )


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """Median [min .. max]."""
    middle, low, high = (
        f"{value * scale:.{digits}f}"
        for value in (statistics.median(values), min(values), max(values))
    )
    return f"{middle} [{low} .. {high}]"


def timing(server: Server, turns: int, rounds: int) -> None:
    kinds = [(view, handler) for view in PATHS for handler in ("WSGI", "ASGI")]
    for view, handler in kinds:  # warm-up
        server.turns(view, handler, 20)
    wall: dict[tuple[str, str], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(kinds)
        for view, handler in kinds:
            seconds, used = server.timed_turns(view, handler, turns)
            wall[view, handler].append(seconds)
            cpu[view, handler].append(used)
    print(
        f"\n1. ms per turn through Django's handlers, {rounds} rounds of {turns} "
        "turns per kind: median [min .. max] over rounds"
    )
    print(f"  {'':<18}{'wall':<24}CPU (all threads)")
    for view in PATHS:
        for handler in ("WSGI", "ASGI"):
            key = view, handler
            print(
                f"  {view + ' ' + handler:<18}{spread(wall[key], 1000):<24}"
                f"{spread(cpu[key], 1000)}"
            )
    print("  ASGI / WSGI, round by round:")
    for view in PATHS:
        for label, found in (("wall", wall), ("CPU", cpu)):
            ratios = [
                a / w
                for a, w in zip(found[view, "ASGI"], found[view, "WSGI"], strict=True)
            ]
            print(f"    {view + ', ' + label:<18}{spread(ratios)}")


def hop_name(func: Any) -> str:
    func = getattr(func, "func", func)  # functools.partial
    name = getattr(func, "__qualname__", None) or getattr(
        getattr(func, "__func__", None), "__qualname__", None
    )
    return name or type(func).__name__


def hops(server: Server, turns: int) -> None:
    from asgiref import sync

    calls: Counter[str] = Counter()
    wall: dict[str, float] = defaultdict(float)
    inside: dict[str, float] = defaultdict(float)
    original = sync.SyncToAsync.__call__

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        func = self.func
        name = hop_name(func)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                inside[name] += time.perf_counter() - start

        self.func = timed
        start = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            self.func = func
            calls[name] += 1
            wall[name] += time.perf_counter() - start

    sync.SyncToAsync.__call__ = counted  # type: ignore[method-assign]
    try:
        print(f"\n2. Thread hops per ASGI turn ({turns} turns): count, µs wall, "
              "µs in the thread")  # fmt: skip
        for view in PATHS:
            server.turns(view, "ASGI", TURNS_PER_SESSION)
            calls.clear(), wall.clear(), inside.clear()
            per_turn = server.turns(view, "ASGI", turns)
            print(f"  {view}:")
            for name, count in calls.most_common():
                print(
                    f"    {count / turns:5.2f} {wall[name] / turns * 1e6:8.0f} "
                    f"{inside[name] / turns * 1e6:8.0f}  {name}"
                )
            total = sum(calls.values()) / turns
            hopping = sum(wall.values()) / turns
            running = sum(inside.values()) / turns
            print(
                f"    {total:5.2f} hops; of a {per_turn * 1e3:.2f} ms turn, "
                f"{hopping * 1e3:.2f} ms in hops ({running * 1e3:.2f} running "
                f"in the thread, {(hopping - running) * 1e3:.2f} handing over), "
                f"{(per_turn - hopping) * 1e3:.2f} in the event loop"
            )
    finally:
        sync.SyncToAsync.__call__ = original  # type: ignore[method-assign]


def counts(server: Server, turns: int) -> None:
    print(f"\n3. cProfile counts per turn ({turns} turns): Python function calls "
          "(in every thread), tasks created, loop iterations")  # fmt: skip
    for view in PATHS:
        for handler in ("WSGI", "ASGI"):
            server.turns(view, handler, TURNS_PER_SESSION)
            # Python 3.12's cProfile sees every thread (sys.monitoring).
            profile = cProfile.Profile()
            profile.enable()
            server.turns(view, handler, turns)
            profile.disable()
            stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
            total = sum(row[1] for row in stats.values())
            tasks = loops = 0
            for (filename, _, function), row in stats.items():
                if filename.endswith("asyncio/base_events.py"):
                    if function == "create_task":
                        tasks += row[1]
                    elif function == "_run_once":
                        loops += row[1]
            print(
                f"  {view + ' ' + handler:<18}{total / turns:9.0f}"
                f"{tasks / turns:7.1f}{loops / turns:7.1f}"
            )


def each(label: str, runs: int, call: Callable[[], Any]) -> None:
    """µs per ``call()``: median [min .. max] over 5 batches of ``runs``."""
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(runs):
            call()
        samples.append((time.perf_counter() - start) / runs)
    print(f"  {label:<46}{spread(samples, 1e6, 0)}")


def each_async(
    loop: asyncio.AbstractEventLoop,
    label: str,
    runs: int,
    make: Callable[[], Awaitable[Any]],
) -> None:
    """:func:`each` for an awaitable, timed inside the running loop."""

    async def batch() -> float:
        start = time.perf_counter()
        for _ in range(runs):
            await make()
        return (time.perf_counter() - start) / runs

    samples = [loop.run_until_complete(batch()) for _ in range(5)]
    print(f"  {label:<46}{spread(samples, 1e6, 0)}")


def pieces(server: Server) -> None:
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from langchain_core.messages import HumanMessage, SystemMessage

    from chatmemory import store
    from chatmemory.llm import get_chat_model
    from chatmemory.turn import ChatTurn

    loop = server.loop

    def nothing() -> None:
        return None

    hop = sync_to_async(nothing, thread_sensitive=True)

    async def context() -> None:
        async with ThreadSensitiveContext():
            await hop()

    async def task() -> None:
        await asyncio.create_task(asyncio.sleep(0))

    print("\n4. The pieces, each alone, µs per call: median [min .. max] of 5")
    each_async(loop, "sync_to_async hop", 1000, hop)
    each_async(loop, "per-request thread (+ its first hop)", 200, context)
    each_async(loop, "asyncio task", 2000, task)
    from django.http import StreamingHttpResponse

    events = [b"event: token\ndata: word\n\n"] * 1000

    async def async_events() -> Any:
        for part in events:
            yield part

    async def noop_send(message: dict[str, Any]) -> None:
        return None

    def sync_send() -> None:
        response = StreamingHttpResponse(iter(events))
        for _ in response:
            pass

    async def asgi_send() -> None:
        response = StreamingHttpResponse(async_events())
        await server.asgi.send_response(response, noop_send)

    each("1000 events, WSGI (the response's iterator)", 20, sync_send)
    each_async(loop, "1000 events, ASGI (send_response, no-op send)", 20, asgi_send)
    chats = [uuid.uuid4().hex]
    turns = [0]

    def chat() -> str:
        turns[0] += 1
        if turns[0] % TURNS_PER_SESSION == 0:
            chats[0] = uuid.uuid4().hex
        return chats[0]

    each(
        "ChatTurn.stream (no Django)",
        100,
        lambda: ChatTurn(chat(), "hello", owner="1", exclusive=True).run(),
    )
    each_async(
        loop,
        "ChatTurn.astream (no Django)",
        100,
        lambda: ChatTurn(chat(), "hello", owner="1", exclusive=True).arun(),
    )
    model = get_chat_model()
    prompt = [SystemMessage("You are a helpful assistant."), HumanMessage("hello")]
    each("model.stream", 200, lambda: list(model.stream(prompt)))

    async def astream() -> None:
        async for _ in model.astream(prompt):
            pass

    each_async(loop, "model.astream", 200, astream)
    session = chats[0]
    each("store.read_tail", 1000, lambda: store.read_tail(session, 64))
    each_async(loop, "store.aread_tail", 1000, lambda: store.aread_tail(session, 64))


def main() -> None:
    args = parse()
    prepare_env()
    import django

    django.setup()
    try:
        server = Server()
        timing(server, args.turns, args.rounds)
        hops(server, args.turns)
        counts(server, args.turns)
        pieces(server)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
