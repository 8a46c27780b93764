"""Benchmark: a chat turn through the chat views, in process and under load.

Run by hand (never a test), from the project root::

    bench/.venv/bin/python bench/bench_views.py           # defaults below
    bench/.venv/bin/python bench/bench_views.py --turns 100 --seconds 5 --clients 4

(``bench/run`` builds ``bench/.venv``; the project's ``.venv`` works as well.)
The model is the offline demo model with no delay between tokens (it answers
at once, about 40 tokens), so the figures are the cost of everything around
the model. The reference is a bare Django view (``bench/bare.py``): the same
two round trips and the same model, streamed as Server-Sent Events, with
nothing of chatmemory's view, turn or history code around them.

1. In process (Django's test client, no network, one request at a time):
   where a streamed chat turn (POST .../stream/, body read to the end) and
   the chat page (GET) spend their time: Redis (every call into
   chatmemory.store, timed), template rendering (Template.render, timed),
   LangChain and SSE (the event generator, minus its Redis calls), and
   Django (the rest: middleware, session and user lookup, URL, form). Then
   chatmemory's streamed turn and the bare view's, each through Django's
   WSGI handler (Client) and its ASGI handler (AsyncClient, on an event loop
   that lives for the whole run), in rounds of ``--block`` turns per kind in
   a shuffled order; the ratios are taken round by round and printed as the
   median [min .. max] over rounds.
2. Under load: gunicorn (WSGI, sync workers) and uvicorn (ASGI) each with
   ``--workers`` processes on a loopback port, both running for the whole
   test, loaded in turn (``--rounds`` rounds of chatmemory's view and the
   bare view on each server, in a shuffled order) for ``--seconds`` with
   ``--clients`` concurrent connections: turns per second, the median/p90
   latency seen by the client, and the server's CPU time per turn (all its
   processes, from /proc), which does not depend on how much of the machine
   other work takes. Every turn comes on a new connection
   (``Connection: close``), as gunicorn's sync workers do anyway: uvicorn's
   workers share the listening socket and keep a connection for its whole
   life, so with kept-alive connections the figure mostly showed how the
   kernel happened to hand them out (all on one worker: about half the rate).
   The load comes from ``wrk`` when it is on PATH (``apt-get install wrk``;
   POSTs rotating over 16 chat sessions, histories capped at 20 messages),
   else from a bounded Python generator (threads with httpx, a new chat every
   10 turns). Either shares the CPUs with the server.

Redis: a throwaway ``redis-server`` on a free loopback port (persistence off),
or ``BENCH_REDIS_URL``; only keys under the benchmark's own prefix are deleted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = f"bench-views-{uuid.uuid4().hex[:10]}"
TURNS_PER_SESSION = 10  # a fresh chat every few turns keeps histories short
SETUP = """
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", verbosity=0)
get_user_model().objects.create_user("bench", password="pw")
"""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=300, help="in-process turns")
    parser.add_argument(
        "--block", type=int, default=30, help="in-process turns per kind per round"
    )
    parser.add_argument("--seconds", type=float, default=5, help="load per run")
    parser.add_argument("--rounds", type=int, default=3, help="load runs per kind")
    parser.add_argument("--clients", type=int, default=8, help="load threads")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    return parser.parse_args()


def prepare_env() -> dict[str, str]:
    """Environment for the servers and this process: Redis, DB file, settings."""
    url = os.environ.get("BENCH_REDIS_URL", "").rstrip("/")
    if not url:
        from tests.redis_server import start_redis_server

        _, url = start_redis_server()
    workdir = tempfile.mkdtemp(prefix="chatmemory-bench-")
    env = {
        **os.environ,
        "CHATMEMORY_TEST_REDIS_URL": url,
        "DJANGO_SETTINGS_MODULE": "bench.bare_settings",
        "CHATMEMORY_TEST_DB": str(Path(workdir) / "db.sqlite3"),
        "CHATMEMORY_TEST_KEY_PREFIX": PREFIX,
        "CHATMEMORY_TEST_TOKEN_DELAY": "0",
        "CHATMEMORY_TEST_MAX_MESSAGES": "20",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([sys.executable, "-c", SETUP], env=env, check=True, cwd=ROOT)
    os.environ.update(env)
    return env


# --- 1. in process -------------------------------------------------------------


class Timers:
    """Wall time spent inside wrapped functions, per category (outermost only)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, owner: Any, name: str, category: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[category] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth[category] -= 1
                if not self._depth[category]:
                    self.spent[category] += time.perf_counter() - start

        setattr(owner, name, timed)

    def wrap_generator(self, owner: Any, name: str, category: str) -> None:
        original = getattr(owner, name)
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            iterator = original(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    spent[category] += time.perf_counter() - start
                    return
                spent[category] += time.perf_counter() - start
                yield item

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.spent.clear()


def in_process(turns: int) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.template.backends.django import Template
    from django.test import Client

    from chatmemory import store, views

    try:  # where the event generators live: sse.py once chains.py is split
        from chatmemory import sse as events_module
    except ImportError:
        events_module = views  # type: ignore[assignment]
    timers = Timers()
    for name in (
        "get_session",
        "set_title",
        "read_records",
        "append_records",
        "create_session",
    ):
        timers.wrap(store, name, "redis")
    timers.wrap(Template, "render", "templates")
    timers.wrap_generator(events_module, "sync_events", "langchain+sse")

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))

    def new_session() -> str:
        location = client.post("/chat/")["Location"]
        return str(location.strip("/").split("/")[-1])

    def measure(
        label: str, request: Callable[[str], None], runs: int
    ) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = defaultdict(list)
        session_id = new_session()
        for run in range(runs + 20):
            if run % TURNS_PER_SESSION == 0:
                session_id = new_session()
            timers.reset()
            start = time.perf_counter()
            request(session_id)
            total = time.perf_counter() - start
            if run < 20:
                continue  # warm-up
            timers.spent.pop("redis-in-events", None)
            samples["total"].append(total)
            for category, spent in timers.spent.items():
                samples[category].append(spent)
            samples["django"].append(total - sum(timers.spent.values()))
        return samples

    def turn(session_id: str) -> None:
        response = client.post(f"/chat/{session_id}/stream/", {"message": "hello"})
        body = b"".join(response.streaming_content)
        assert b"event: done" in body, body[-200:]

    def page(session_id: str) -> None:
        response = client.get(f"/chat/{session_id}/")
        assert response.status_code == 200

    # Redis calls made while the event generator runs are counted once, as
    # Redis, and taken out of the generator's share.
    original_sync_events = events_module.sync_events

    def split_events(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        before = timers.spent["redis"]
        yield from original_sync_events(*args, **kwargs)
        inside = timers.spent["redis"] - before
        timers.spent["langchain+sse"] -= inside
        timers.spent["redis-in-events"] += inside

    events_module.sync_events = split_events

    print(f"\n1. In process (Django test client), median of {turns} requests, ms")
    print(f"{'':22}{'total':>8}{'redis':>8}{'templates':>11}{'langchain+sse':>15}"
          f"{'django':>8}")  # fmt: skip
    for label, request in (("streamed turn (POST)", turn), ("chat page (GET)", page)):
        samples = measure(label, request, turns)
        row = f"{label:22}"
        for category, width in (
            ("total", 8),
            ("redis", 8),
            ("templates", 11),
            ("langchain+sse", 15),
            ("django", 8),
        ):
            values = samples.get(category) or [0.0]
            row += f"{statistics.median(values) * 1000:>{width}.2f}"
        print(row)
    events_module.sync_events = original_sync_events


def block_mean(times: list[float]) -> float:
    """A block's mean turn without its slowest tenth (time stolen by other work)."""
    kept = sorted(times)[: max(1, len(times) - len(times) // 10)]
    return sum(kept) / len(kept)


def spread(values: list[float]) -> str:
    """Median [min .. max]."""
    return f"{statistics.median(values):.2f} [{min(values):.2f} .. {max(values):.2f}]"


def compare_in_process(turns: int, block: int) -> None:
    """chatmemory's turn against the bare view's, under WSGI and ASGI, in rounds."""
    import asyncio
    import random

    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model
    from django.test import AsyncClient, Client

    user = get_user_model().objects.get(username="bench")
    client = Client()
    client.force_login(user)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    async def async_login() -> AsyncClient:
        async_client = AsyncClient()
        await async_client.aforce_login(
            await sync_to_async(get_user_model().objects.get)(username="bench")
        )
        return async_client

    async_client = on_loop(async_login())
    paths = {"chatmemory": "/chat/{}/stream/", "bare": "/bench/bare/{}/stream/"}

    def new_session() -> str:
        return str(client.post("/chat/")["Location"].strip("/").split("/")[-1])

    def wsgi_block(kind: str, count: int) -> list[float]:
        times = []
        session_id = ""
        for run in range(count):
            if run % TURNS_PER_SESSION == 0:
                session_id = new_session()
            start = time.perf_counter()
            response = client.post(paths[kind].format(session_id), {"message": "hello"})
            body = b"".join(response.streaming_content)
            times.append(time.perf_counter() - start)
            assert b"event: done" in body, body[-200:]
        return times

    def asgi_block(kind: str, count: int) -> list[float]:
        async def run() -> list[float]:
            # Made by the client that sends the turns: a new chat is its
            # browser session's until its first turn stores it.
            sessions = [
                str((await async_client.post("/chat/"))["Location"])
                .strip("/")
                .split("/")[-1]
                for _ in range(0, count, TURNS_PER_SESSION)
            ]
            times = []
            for run in range(count):
                session_id = sessions[run // TURNS_PER_SESSION]
                start = time.perf_counter()
                response = await async_client.post(
                    paths[kind].format(session_id), {"message": "hello"}
                )
                body = b"".join([part async for part in response.streaming_content])
                times.append(time.perf_counter() - start)
                assert b"event: done" in body, body[-200:]
            return times

        result: list[float] = on_loop(run())
        return result

    kinds: dict[str, Callable[[], list[float]]] = {
        "chatmemory WSGI": lambda: wsgi_block("chatmemory", block),
        "bare WSGI": lambda: wsgi_block("bare", block),
        "chatmemory ASGI": lambda: asgi_block("chatmemory", block),
        "bare ASGI": lambda: asgi_block("bare", block),
    }
    for fn in kinds.values():  # warm-up
        fn()
    rounds = max(1, turns // block)
    names = list(kinds)
    samples: dict[str, list[float]] = {name: [] for name in names}
    means: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(names)
        for name in names:
            times = kinds[name]()
            samples[name] += times
            means[name].append(block_mean(times))
    loop.call_soon_threadsafe(loop.stop)
    thread.join()

    print(
        f"\nStreamed turn, chatmemory's view against the bare view: {rounds} rounds "
        f"of {block} turns per kind; ms per turn: median [p10 .. p90], and the "
        "median of block means (each without its slowest tenth)"
    )
    for name in kinds:
        low, *_, high = statistics.quantiles(samples[name], n=10)
        print(
            f"  {name:<18}{statistics.median(samples[name]) * 1000:7.2f} "
            f"[{low * 1000:.2f} .. {high * 1000:.2f}]"
            f"{statistics.median(means[name]) * 1000:9.2f}"
        )

    def per_round(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(means[a], means[b], strict=True)]

    print("  ratios of block means, median [min .. max] over rounds:")
    asgi_wsgi = per_round("chatmemory ASGI", "chatmemory WSGI")
    for label, values in (
        ("chatmemory / bare, WSGI", per_round("chatmemory WSGI", "bare WSGI")),
        ("chatmemory / bare, ASGI", per_round("chatmemory ASGI", "bare ASGI")),
        ("ASGI / WSGI, bare", per_round("bare ASGI", "bare WSGI")),
        ("ASGI / WSGI, chatmemory", asgi_wsgi),
    ):
        print(f"    {label:<26}{spread(values)}")
    met = statistics.median(asgi_wsgi) <= 1.2
    print(
        "  target: chatmemory's ASGI turn <= 1.2x its WSGI turn: "
        f"{'MET' if met else 'MISSED'}"
    )


# --- 2. under load -------------------------------------------------------------


def server_command(kind: str, port: int, workers: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if kind == "gunicorn":
        return [
            str(bin_dir / "gunicorn"), "project.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--log-level", "warning",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", "project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--lifespan", "off", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants.

    Read from /proc (Linux); 0.0 elsewhere. A server's CPU per turn does not
    depend on how much of the machine other work takes, as its turns/s does.
    """
    stats: dict[int, tuple[int, float]] = {}
    if not Path("/proc").is_dir():
        return 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        stats[int(entry.name)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    wanted, total = {pid}, 0.0
    while wanted:
        current = wanted.pop()
        total += stats.get(current, (0, 0.0))[1]
        wanted |= {child for child, (parent, _) in stats.items() if parent == current}
    return total


@contextmanager
def running(kind: str, env: dict[str, str], workers: int) -> Iterator[tuple[str, int]]:
    from tests.redis_server import free_port

    port = free_port()
    process = subprocess.Popen(server_command(kind, port, workers), env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded machine starts slowly
    while True:
        try:
            httpx.get(url + "/accounts/login/", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"{kind} did not start") from None
            time.sleep(0.1)
    try:
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_in(url: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, timeout=30)
    client.get("/accounts/login/")
    client.post(
        "/accounts/login/",
        data={
            "username": "bench",
            "password": "pw",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    return client, client.cookies["csrftoken"]


STREAM_PATHS = {"chatmemory": "/chat/{}/stream/", "bare": "/bench/bare/{}/stream/"}


def load(
    url: str, clients: int, seconds: float, view: str
) -> tuple[list[float], float]:
    """Turn latencies (s) and the wall time they took, from ``clients`` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def worker() -> None:
        client, token = log_in(url)
        mine: list[float] = []
        session_id = ""
        turns = 0
        start_line.wait()
        while time.monotonic() < stop_at[0]:
            if turns % TURNS_PER_SESSION == 0:
                location = client.post("/chat/", data={"csrfmiddlewaretoken": token})
                session_id = location.headers["Location"].strip("/").split("/")[-1]
            begin = time.perf_counter()
            response = client.post(
                STREAM_PATHS[view].format(session_id),
                data={"message": "hello", "csrfmiddlewaretoken": token},
                headers={"Connection": "close"},  # see the module docstring
            )
            mine.append(time.perf_counter() - begin)
            assert b"event: done" in response.content, response.content[-200:]
            turns += 1
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop_at.append(time.monotonic() + seconds + 0.5)
    start_line.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return latencies, time.monotonic() - began


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "%(cookie)s"
wrk.headers["Connection"] = "close" -- spread over the workers: see the top
local paths = {%(paths)s}
local body = "message=hello&csrfmiddlewaretoken=%(token)s"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n %% #paths) + 1], nil, body)
end
"""


def wrk_load(
    url: str, clients: int, seconds: float, view: str
) -> tuple[float, float, float, int]:
    """Turns/s, median and p90 latency (ms), turns: wrk against ``url``."""
    client, token = log_in(url)
    paths = []
    for _ in range(16):
        response = client.post("/chat/", data={"csrfmiddlewaretoken": token})
        session_id = response.headers["Location"].strip("/").split("/")[-1]
        paths.append(STREAM_PATHS[view].format(session_id))
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    client.close()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            WRK_SCRIPT
            % {
                "cookie": cookie,
                "paths": ", ".join(f'"{path}"' for path in paths),
                "token": token,
            }
        )
    command = ["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--latency"]
    out = subprocess.run(
        [*command, "-s", script.name, url], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")

    def millis(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        value, unit = float(match[1]), match[2]
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    assert rate and total, out
    return float(rate[1]), millis("50%"), millis("90%"), int(total[1])


def under_load(env: dict[str, str], args: argparse.Namespace) -> None:
    import random

    use_wrk = shutil.which("wrk") is not None
    generator = "wrk, 2 threads" if use_wrk else "Python/httpx threads"
    print(
        f"\n2. Under load: {args.clients} connections, {args.rounds} runs of "
        f"{args.seconds:.0f} s per server and view, {args.workers} server "
        f"processes each, loopback, load from {generator}"
    )

    Found = tuple[float, float, float, int, float]

    def run(server: tuple[str, int], view: str, seconds: float) -> Found:
        """Turns/s, median and p90 ms, turns, and the server's CPU ms per turn."""
        url, pid = server
        cpu = tree_cpu(pid)
        if use_wrk:
            rate, median, p90, turns = wrk_load(url, args.clients, seconds, view)
        else:
            latencies, wall = load(url, args.clients, seconds, view)
            latencies.sort()
            if not latencies:  # a machine so busy no turn started in time
                return 0.0, float("nan"), float("nan"), 0, float("nan")
            rate, median, p90, turns = (
                len(latencies) / wall,
                statistics.median(latencies) * 1000,
                latencies[int(len(latencies) * 0.9)] * 1000,
                len(latencies),
            )
        # The few requests that set a run up (log-in, new chats) count too.
        used = (tree_cpu(pid) - cpu) * 1000 / max(turns, 1)
        return rate, median, p90, turns, used

    with (
        running("gunicorn", env, args.workers) as gunicorn,
        running("uvicorn", env, args.workers) as uvicorn,
    ):
        combos = [
            (name, server, view)
            for name, server in (("gunicorn", gunicorn), ("uvicorn", uvicorn))
            for view in ("chatmemory", "bare")
        ]
        for _, server, view in combos:
            run(server, view, 2)  # warm-up
        found: dict[tuple[str, str], list[Found]] = defaultdict(list)
        shuffle = random.Random(0).shuffle
        for _ in range(args.rounds):
            shuffle(combos)
            for name, server, view in combos:
                found[name, view].append(run(server, view, args.seconds))
    print(
        f"{'':22}{'turns/s':>9}{'median ms':>11}{'p90 ms':>9}{'turns':>8}"
        f"{'server CPU ms/turn':>20}"
    )
    for server in ("gunicorn", "uvicorn"):
        for view in ("chatmemory", "bare"):
            runs = found[server, view]
            print(
                f"{server + ', ' + view:22}"
                f"{statistics.median(r[0] for r in runs):>9.1f}"
                f"{statistics.median(r[1] for r in runs):>11.2f}"
                f"{statistics.median(r[2] for r in runs):>9.2f}"
                f"{sum(r[3] for r in runs):>8}"
                f"{statistics.median(r[4] for r in runs):>20.2f}"
            )

    def rates(server: str, view: str) -> list[float]:
        return [r[0] for r in found[server, view]]

    def cpu(server: str, view: str) -> list[float]:
        return [r[4] for r in found[server, view]]

    def per_run(a: list[float], b: list[float]) -> list[float]:
        return [x / y if y else float("nan") for x, y in zip(a, b, strict=True)]

    print("  ratios of turns/s, median [min .. max] over runs:")
    share = per_run(rates("uvicorn", "chatmemory"), rates("gunicorn", "chatmemory"))
    for label, values in (
        (
            "chatmemory / bare, gunicorn",
            per_run(rates("gunicorn", "chatmemory"), rates("gunicorn", "bare")),
        ),
        (
            "chatmemory / bare, uvicorn",
            per_run(rates("uvicorn", "chatmemory"), rates("uvicorn", "bare")),
        ),
        (
            "uvicorn / gunicorn, bare",
            per_run(rates("uvicorn", "bare"), rates("gunicorn", "bare")),
        ),
        ("uvicorn / gunicorn, chatmemory", share),
    ):
        print(f"    {label:<32}{spread(values)}")
    print("  ratios of server CPU per turn, median [min .. max] over runs:")
    for view in ("chatmemory", "bare"):
        values = per_run(cpu("uvicorn", view), cpu("gunicorn", view))
        print(f"    {'uvicorn / gunicorn, ' + view:<32}{spread(values)}")
    met = statistics.median(share) >= 0.9
    print(
        "  target: uvicorn >= 90% of gunicorn's turns/s with chatmemory: "
        f"{'MET' if met else 'MISSED'}"
    )


def cleanup() -> None:
    import redis

    client = redis.Redis.from_url(os.environ["CHATMEMORY_TEST_REDIS_URL"])
    keys = list(client.scan_iter(match=f"{PREFIX}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


def main() -> None:
    args = parse()
    env = prepare_env()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; model: offline demo model, no token delay"
    )
    try:
        in_process(args.turns)
        compare_in_process(args.turns, args.block)
        under_load(env, args)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
