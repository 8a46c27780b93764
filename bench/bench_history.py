"""Benchmark: chatmemory's history against its floor, the anchor and raw redis-py.

Run by hand (never a test)::

    bench/run                      # builds bench/.venv, then runs this script
    bench/run --quick              # fewer repetitions
    bench/run --profile            # also cProfile chatmemory in each case
    bench/run --block 20           # consecutive calls per implementation

Implementations, on the same Redis, in one run:

chatmemory
    ``DjangoRedisChatMessageHistory`` on the django-redis ``chatmemory`` alias,
    with chatmemory's default settings but for ``CHATMEMORY_TTL``.
floor
    chatmemory's exact Redis work without chatmemory's Python around it: the
    same append script by EVALSHA with the same keys and arguments, records
    serialised as ``orjson.dumps(message_to_dict(m))`` (the message_to_dict
    form every earlier chatmemory record has; chatmemory's own records may be
    smaller, see the bytes line), and the same read (LRANGE; the read script
    when ``CHATMEMORY_REFRESH_TTL_ON_READ`` is on) decoded by ``orjson.loads``
    into dicts: no message objects. Every target is a ratio to this row.
anchor
    ``langchain_community``'s ``RedisChatMessageHistory``: one round trip per
    message (two with a TTL: LPUSH then EXPIRE), a new connection per object.
cm, no messages (b20 only, no target)
    chatmemory's turn reading the session as records (decoded, checked dicts,
    ``store.read_records``) instead of messages: what building the message
    objects costs.
raw, raw orjson (peers, no target)
    What a hand-written redis-py history does: one RPUSH+EXPIRE pipeline per
    write, one LRANGE per read; ``message_to_dict`` + ``json.dumps`` (or
    ``orjson.dumps``) per written message, ``json.loads`` per read item.

Cases: (a) ``add_messages`` of 10 messages; (b) a chat turn through a per-turn
factory (build the history object, read, add human + AI in one call) on
sessions growing from 0 to 18 messages; (b20) the same turn on a session that
holds 20 messages; (c) reading a 10,000-message history (the floor reads
chatmemory's own key, so the same bytes); (d) turns per second from 8 threads
on distinct sessions, chatmemory against the floor's turn.

Timing: every round runs a block of ``--block`` consecutive calls of each
implementation, in a new shuffled order (fixed seed) every round, so drift in
the machine's load hits them alike; warm-up rounds are dropped. Each call is
timed with the collection it leaves due: chatmemory pauses the collector
while it decodes, and the young-generation pass that this defers runs at the
caller's next allocation, so the timed region ends with one allocation and a
function entry (where CPython runs a due collection) while the result is
still alive, then drops the result. The collector stays enabled, nothing is
collected by force between the calls of a block; each block starts on a
fully collected heap, and a block's figure is the mean of its calls but the
slowest tenth (see :func:`block_mean`: time stolen by other processes). Ratios
are taken round by round, between blocks run side by side, and printed as
the median over rounds with their spread [p10 .. p90] (min .. max with fewer
than 10 rounds).

Cases (a) and (b20) are then measured a second way, call by call (see
:func:`paired`): chatmemory and the floor one right after the other, a
thousand times, and the ratio is one plus the mean difference over the
floor's mean call. Load that drifts between blocks cancels out of it, so it
settles a few percent that the block ratios, spread over tens of percent on
a shared machine, cannot; the floor measured against itself shows the
measure's own bias. Their calls leave little for the collector (the same
ratios with it off), so neither's collections land in the other's call; a
10,000-message read (c) does, and has block ratios only. Both verdicts are
printed.

Redis: a throwaway ``redis-server`` on a free loopback port (persistence off),
or the server of ``BENCH_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/15``); the
benchmark then deletes only the keys under its own random prefix.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TTL = 3600
PREFIX = f"bench-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# Set-up


def redis_url() -> tuple[str, bool]:
    """The Redis URL, and whether it is a throwaway server of our own."""
    url = os.environ.get("BENCH_REDIS_URL", "").rstrip("/")
    if url:
        return url, False
    from tests.redis_server import start_redis_server

    _, url = start_redis_server()  # stopped at exit
    return f"{url}/0", True


def configure_django(url: str, *, own_server: bool) -> None:
    import django
    from django.conf import settings

    # chatmemory's defaults but for the TTL, as a project would run it; on a
    # server of the user's (BENCH_REDIS_URL), keys go under a random prefix.
    extra = {} if own_server else {"CHATMEMORY_KEY_PREFIX": f"{PREFIX}:cm"}
    settings.configure(
        # chatmemory's signals import the user model.
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "chatmemory",
        ],
        DATABASES={},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            # As in project/settings.py.
            "chatmemory": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
            },
        },
        CHATMEMORY_TTL=TTL,
        USE_TZ=True,
        **extra,
    )
    django.setup()


# ---------------------------------------------------------------------------
# Messages


def conversation_messages(count: int, *, seed: int = 0) -> list[Any]:
    """A realistic mix: human questions, AI answers with metadata, a few tool calls."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "redis",
        "django",
        "history",
        "session",
        "message",
        "model",
        "token",
        "answer",
        "question",
        "python",
        "list",
        "cache",
        "key",
        "value",
        "time",
        "stream",
        "user",
        "chat",
        "reply",
        "context",
        "prompt",
    ]

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    messages: list[Any] = []
    turn = 0
    while len(messages) < count:
        turn += 1
        messages.append(HumanMessage(content=text(5, 40)))
        usage = {
            "input_tokens": rng.randint(50, 3000),
            "output_tokens": rng.randint(10, 600),
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        metadata = {
            "model_name": "gpt-4o-mini-2024-07-18",
            "finish_reason": "stop",
            "system_fingerprint": "fp_0ba0d124f1",
        }
        if turn % 10 == 0:
            call_id = f"call_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}"
            messages.append(
                AIMessage(
                    content="",
                    tool_calls=[
                        {
                            "name": "search",
                            "args": {"query": text(2, 6)},
                            "id": call_id,
                            "type": "tool_call",
                        }
                    ],
                    response_metadata={**metadata, "finish_reason": "tool_calls"},
                    usage_metadata=usage,  # type: ignore[arg-type]
                    id=f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
                )
            )
            messages.append(ToolMessage(content=text(10, 60), tool_call_id=call_id))
        messages.append(
            AIMessage(
                content=text(20, 150),
                response_metadata=metadata,
                usage_metadata=usage,  # type: ignore[arg-type]
                id=f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
            )
        )
    return messages[:count]


# ---------------------------------------------------------------------------
# Timing


def _noop() -> None:
    pass


def settle() -> None:
    """Run the collection the last call left due, as the caller's next step would.

    An allocation arms a collection once the young generation is over its
    threshold, and CPython (3.12+) runs an armed collection at the next
    function entry. A call that paused the collector leaves that pass to
    whoever allocates next; this makes it run inside the timing.
    """
    _ = [None]
    _noop()


@dataclass
class Series:
    """One implementation's timings in one case."""

    name: str
    calls: list[float] = field(default_factory=list)
    """Every timed call, in seconds."""
    blocks: list[float] = field(default_factory=list)
    """The mean call of each block, in round order."""

    @property
    def median(self) -> float:
        return statistics.median(self.calls)

    @property
    def mean(self) -> float:
        return statistics.median(self.blocks)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, and p10/p90 (min/max with fewer than 10 values)."""
    ordered = sorted(values)
    if len(ordered) >= 10:
        low, *_, high = statistics.quantiles(ordered, n=10)
    else:
        low, high = ordered[0], ordered[-1]
    return statistics.median(ordered), low, high


def block_mean(times: Sequence[float]) -> float:
    """The mean of a block's calls, without its slowest tenth.

    On a machine shared with other work, a call now and then loses the CPU
    for milliseconds, which swamps a block's plain mean; the slowest tenth is
    where that lands. The collections a block's calls trigger stay in the
    other nine tenths (a young collection comes every few calls).
    """
    kept = sorted(times)[: max(1, len(times) - len(times) // 10)]
    return sum(kept) / len(kept)


def measure(
    cases: dict[str, Callable[[int], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    block: int,
) -> dict[str, Series]:
    """Run ``warmup + rounds`` rounds of ``block`` calls per case (module docstring).

    Call ``i`` of every case in a round gets the same index, so the cases can
    name their sessions alike.
    """
    names = list(cases)
    series = {name: Series(name) for name in names}
    clock = time.perf_counter
    shuffle = random.Random(0).shuffle
    for round_ in range(warmup + rounds):
        shuffle(names)
        first = round_ * block
        for name in names:
            fn = cases[name]
            gc.collect()  # no block pays for another's garbage
            times = []
            for i in range(first, first + block):
                start = clock()
                result = fn(i)
                settle()
                del result
                times.append(clock() - start)
            if round_ >= warmup:
                series[name].calls.extend(times)
                series[name].blocks.append(block_mean(times))
    return {name: series[name] for name in cases}


def paired(
    mine: Callable[[int], Any],
    floor: Callable[[int], Any],
    *,
    pairs: int,
    first: int = 0,
    chunks: int = 10,
) -> tuple[float, float, float, tuple[float, float, float]]:
    """chatmemory against the floor call by call: each pair runs one call of
    each, one right after the other (which goes first alternates), each timed
    with its due collection (see :func:`settle`), so drift in the machine's
    load, which swamps a difference of a few percent between blocks, hits both
    alike. Call ``first + k`` of both gets index ``first + k``.

    Returns the mean difference per call (chatmemory minus floor; see
    :func:`trimmed_mean`), the differences' quartiles, and the ratio ``1 +
    difference / floor call`` (the floor's mean as :func:`block_mean` takes
    it) with its spread over ``chunks`` consecutive parts of the pairs:
    overall, min, max. The first tenth of the pairs warms up and is dropped.
    """
    clock = time.perf_counter
    warmup = max(1, pairs // 10)
    differences: list[float] = []
    floors: list[float] = []
    gc.collect()
    for k in range(warmup + pairs):
        i = first + k
        took = {}
        for which, fn in (("mine", mine), ("floor", floor))[:: 1 if k % 2 else -1]:
            start = clock()
            result = fn(i)
            settle()
            del result
            took[which] = clock() - start
        if k >= warmup:
            differences.append(took["mine"] - took["floor"])
            floors.append(took["floor"])
    low, _, high = statistics.quantiles(differences, n=4)
    size = len(differences) // chunks
    parts = [
        1 + trimmed_mean(differences[j : j + size]) / block_mean(floors[j : j + size])
        for j in range(0, size * chunks, size)
    ]
    extra = trimmed_mean(differences)
    ratio = 1 + extra / block_mean(floors)
    return extra, low, high, (ratio, min(parts), max(parts))


def trimmed_mean(values: Sequence[float]) -> float:
    """The mean without the lowest and highest twentieth.

    A difference of two calls takes a stolen time slice on either side; the
    collections that one implementation triggers more often than the other
    (every few calls) stay in (a median would drop them).
    """
    cut = len(values) // 20
    kept = sorted(values)[cut : len(values) - cut]
    return sum(kept) / len(kept)


def report_paired(
    result: tuple[float, float, float, tuple[float, float, float]],
    pairs: int,
    bound: float,
) -> bool:
    """Print a :func:`paired` result against the target ``bound``; whether met."""
    extra, low, high, (ratio, least, most) = result
    ok = ratio <= bound
    print(
        f"  paired ({pairs} pairs of a chatmemory and a floor call, one after the "
        f"other): chatmemory takes {extra * 1e6:+.1f} us a call (IQR "
        f"{low * 1e6:+.1f} .. {high * 1e6:+.1f}), ratio {ratio:.3f} [{least:.3f} .. "
        f"{most:.3f} over tenths]; target <= {bound:g}: {'MET' if ok else 'MISSED'}"
    )
    return ok


def fmt(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def ratios(series: Series, reference: Series) -> list[float]:
    """Round by round: this block's mean call over the reference's."""
    return [
        mine / theirs
        for mine, theirs in zip(series.blocks, reference.blocks, strict=True)
    ]


def report(
    title: str,
    results: dict[str, Series],
    *,
    reference: str = "floor",
    target: tuple[str, str, float] | None = None,
    speedup: tuple[str, str, float] | None = None,
) -> tuple[dict[str, tuple[float, float, float]], bool]:
    """Print a case; return each ratio to ``reference`` (median, low, high), and
    whether the targets are met.

    ``target`` (name, label, at most) is met when the median ratio of ``name``
    to the reference is at most the bound; ``speedup`` (slower, faster, at
    least) when the median ratio of ``slower`` to ``faster`` is at least it.
    """
    ref = results[reference]
    rounds = len(ref.blocks)
    per_block = len(ref.calls) // max(rounds, 1)
    print(
        f"\n{title}\n  {rounds} rounds of {per_block} calls; per call: median "
        f"[p10 .. p90]; per block: median of block means; ratio to {reference}: "
        "median of rounds [spread]"
    )
    found: dict[str, tuple[float, float, float]] = {}
    for name, series in results.items():
        low, *_, high = statistics.quantiles(series.calls, n=10)
        ratio = spread(ratios(series, ref))
        found[name] = ratio
        print(
            f"  {name:<16}{fmt(series.median):>10} [{fmt(low)} .. {fmt(high)}]"
            f"{fmt(series.mean):>11}   {ratio[0]:5.2f}x "
            f"[{ratio[1]:.2f} .. {ratio[2]:.2f}]"
        )
    met = True
    if target is not None:
        name, label, bound = target
        values = ratios(results[name], ref)
        ok = statistics.median(values) <= bound
        hits = sum(value <= bound for value in values)
        print(
            f"  target: {label} (median of rounds): {'MET' if ok else 'MISSED'}"
            f" ({hits} of {len(values)} rounds within it)"
        )
        met &= ok
    if speedup is not None:
        slower, faster, bound = speedup
        values = ratios(results[slower], results[faster])
        median, low, high = spread(values)
        ok = median >= bound
        print(
            f"  target: {slower}/{faster} >= {bound:g}: {median:.2f} "
            f"[{low:.2f} .. {high:.2f}]: {'MET' if ok else 'MISSED'}"
        )
        met &= ok
    return found, met


def profile(title: str, fn: Callable[[int], Any], calls: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        fn(i)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(18)
    print(f"\n--- profile of chatmemory, {title} ({calls} calls), by own time")
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print("\n".join(lines[start - 2 :]).rstrip())


def _threaded_rate(
    turn: Callable[[int, int, int], Any], round_: int, threads: int, seconds: float
) -> float:
    """Turns per second of ``turn`` run by ``threads`` threads for ``seconds``."""
    counts = [0] * threads
    start_line = threading.Barrier(threads + 1)
    stop = [0.0]

    def work(index: int) -> None:
        start_line.wait()
        k = 0
        while time.perf_counter() < stop[0]:
            turn(round_, index, k)
            k += 1
        counts[index] = k

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    gc.collect()
    begin = time.perf_counter()
    stop[0] = begin + seconds
    start_line.wait()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - begin)


def throughput(
    turns: dict[str, Callable[[int, int, int], Any]],
    *,
    threads: int,
    seconds: float,
    rounds: int,
) -> dict[str, list[float]]:
    """Turns per second of each implementation from ``threads`` threads, per round.

    ``turns[name](round, thread, k)`` runs the k-th turn of a thread; every
    thread works on sessions of its own. Rounds run the implementations in a
    shuffled order; the first round is a warm-up.
    """
    names = list(turns)
    rates: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(1).shuffle
    for round_ in range(rounds + 1):
        shuffle(names)
        for name in names:
            rate = _threaded_rate(turns[name], round_, threads, seconds)
            if round_:
                rates[name].append(rate)
    return {name: rates[name] for name in turns}


# ---------------------------------------------------------------------------
# References


def chatmemory_script(name: str) -> str:
    """The source of one of chatmemory's Lua scripts."""
    try:
        from chatmemory.store import scripts

        return scripts.source(name)
    except ImportError:  # the single-module store of earlier versions
        from chatmemory import store

        return str(store._SCRIPTS[name])  # type: ignore[attr-defined]


class Floor:
    """chatmemory's Redis work by hand: same script, keys, arguments; orjson.

    The keys and arguments follow the append script's contract (the header of
    ``chatmemory/store/lua/append.lua``; no owner, as in the cases here);
    :meth:`check` proves they leave Redis as chatmemory leaves it.
    """

    def __init__(self, client: Any, prefix: str, *, ttl: int, cap: int) -> None:
        import orjson
        from langchain_core.messages import message_to_dict

        self.client = client
        self.prefix = prefix
        self.sha = client.script_load(chatmemory_script("append"))
        self.ttl_ms = ttl * 1000
        self.cap = cap
        self.sessions = f"{prefix}:sessions"
        self.ids = f"{prefix}:session-ids"
        self._dumps = orjson.dumps
        self._loads = orjson.loads
        self._to_dict = message_to_dict

    def messages_key(self, session_id: str) -> str:
        return f"{self.prefix}:{{{session_id}}}:messages"

    def write(
        self,
        session_id: str,
        messages: Sequence[Any],
        title: str,
        usage: tuple[int, int, int] = (0, 0, 0),
    ) -> Any:
        """Append ``messages`` (title and usage worked out beforehand: constant)."""
        dumps, to_dict = self._dumps, self._to_dict
        return self.client.evalsha(
            *self.args(
                session_id,
                title,
                [dumps(to_dict(message)) for message in messages],
                usage,
            )
        )

    def args(
        self,
        session_id: str,
        title: str,
        items: Sequence[bytes],
        usage: tuple[int, int, int] = (0, 0, 0),
    ) -> list[Any]:
        """EVALSHA's arguments appending the encoded ``items`` (a fresh write id
        each call, no owner; the title and token usage worked out beforehand,
        as chatmemory works them out from the messages)."""
        session = f"{self.prefix}:{{{session_id}}}"
        no_owner = f"{self.prefix}:no-owner"
        return [
            self.sha,
            7,
            f"{session}:messages",
            f"{session}:meta",
            f"{session}:write-ids",
            self.sessions,
            self.ids,
            no_owner,  # the index of the owner (none)
            no_owner,
            session_id,
            time.time_ns() // 1_000_000,
            self.ttl_ms,
            self.cap,
            title,
            "",  # no owner given
            "",  # the owner whose index is among the keys: none
            *usage,  # input, output, total tokens (into the session's meta)
            0,  # usage keys' ttl (no owner: no usage keys)
            uuid.uuid4().hex,  # the write id
            "0",  # the session need not exist
            -1,  # a plain append: no expected length...
            0,  # ...and no expected last entries
            *items,
        ]

    def read(self, session_id: str, key: str | None = None) -> list[Any]:
        """The records of a session (or of any list ``key``), as dicts."""
        loads = self._loads
        raw = self.client.lrange(key or self.messages_key(session_id), 0, -1)
        return [loads(item) for item in raw]

    def check(
        self, messages: Sequence[Any], title: str, usage: tuple[int, int, int]
    ) -> None:
        """Fail loudly when the floor no longer does what chatmemory does."""
        from langchain_core.messages import messages_from_dict

        from chatmemory import store
        from chatmemory.history import DjangoRedisChatMessageHistory

        DjangoRedisChatMessageHistory("parity").add_messages(messages)
        self.write("parity", messages, title, usage)
        client = self.client
        mine_meta = client.hgetall(f"{self.prefix}:{{parity}}:meta")
        theirs_meta = client.hgetall(store.meta_key("parity"))
        assert sorted(mine_meta) == sorted(theirs_meta), (mine_meta, theirs_meta)
        assert mine_meta[b"count"] == theirs_meta[b"count"]
        assert mine_meta.get(b"title") == theirs_meta.get(b"title")
        for tokens in (b"input_tokens", b"output_tokens", b"total_tokens"):
            assert mine_meta.get(tokens) == theirs_meta.get(tokens), tokens
        mine = messages_from_dict(self.read("parity"))
        theirs = messages_from_dict(self.read("", store.messages_key("parity")))
        assert mine == theirs == list(messages), "the floor stored something else"
        assert client.pttl(self.messages_key("parity")) > 0
        assert client.zscore(self.sessions, "parity") is not None
        assert client.zscore(self.ids, "parity") is not None


def record_bytes(client: Any, key: str) -> float:
    """Mean stored bytes per entry of a list."""
    items = client.lrange(key, 0, -1)
    return sum(map(len, items)) / len(items)


# ---------------------------------------------------------------------------
# Cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile chatmemory per case"
    )
    parser.add_argument(
        "--block",
        type=int,
        default=100,
        help="consecutive calls of one implementation in cases (a), (b), (b20) "
        "(rounds: 2000 calls, or 500 with --quick, over the block)",
    )
    parser.add_argument(
        "--history", type=int, default=10_000, help="messages in case (c)"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads in case (d)")
    parser.add_argument(
        "--only", default="", help="run only these cases, e.g. 'a,b20' (default all)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    only = set(filter(None, args.only.split(",")))

    def wanted(case: str) -> bool:
        return not only or case in only

    url, own_server = redis_url()
    configure_django(url, own_server=own_server)

    import warnings

    import redis

    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_message_histories import (
            RedisChatMessageHistory,
        )
    import django_redis
    import langchain_community
    import langchain_core
    import orjson
    from langchain_core.messages import AIMessage, HumanMessage, message_to_dict

    from chatmemory import store
    from chatmemory.conf import conf
    from chatmemory.history import DjangoRedisChatMessageHistory

    # The floor reads with LRANGE, as chatmemory does with these settings.
    assert not conf.REFRESH_TTL_ON_READ and not conf.MAX_MESSAGES

    raw_client = redis.Redis.from_url(url)
    info = raw_client.info("server")
    print(
        f"Python {sys.version.split()[0]}, redis-server {info['redis_version']} at "
        f"{url}, redis-py {redis.__version__}, django-redis "
        f"{django_redis.__version__}, langchain-core {langchain_core.__version__}, "
        f"langchain-community {langchain_community.__version__}, orjson "
        f"{orjson.__version__}; TTL {TTL} s; {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}"
    )

    floor = Floor(raw_client, f"{PREFIX}:floor", ttl=TTL, cap=0)
    anchor_prefix = f"{PREFIX}:anchor:"

    def anchor(session_id: str) -> RedisChatMessageHistory:
        return RedisChatMessageHistory(
            session_id, url=url, key_prefix=anchor_prefix, ttl=TTL
        )

    def raw_key(session_id: str) -> str:
        return f"{PREFIX}:raw:{session_id}"

    def encode(message: Any) -> str:
        return json.dumps(message_to_dict(message))

    def encode_orjson(message: Any) -> bytes:
        return orjson.dumps(message_to_dict(message))

    def raw_write(
        session_id: str, messages: Sequence[Any], dumps: Callable[[Any], Any] = encode
    ) -> None:
        pipe = raw_client.pipeline(transaction=False)
        key = raw_key(session_id)
        pipe.rpush(key, *[dumps(m) for m in messages])
        pipe.expire(key, TTL)
        pipe.execute()

    def raw_read(session_id: str) -> list[Any]:
        return [
            json.loads(item) for item in raw_client.lrange(raw_key(session_id), 0, -1)
        ]

    def summary_of(messages: Sequence[Any]) -> tuple[str, tuple[int, int, int]]:
        """The title and token usage chatmemory works out for a write."""
        from chatmemory.store.codec import usage_of_records

        records = [message_to_dict(m) for m in messages]
        return store.title_from_records(records), usage_of_records(records)

    summary: dict[str, dict[str, tuple[float, float, float]]] = {}
    targets_met = paired_met = True
    # Pairs of calls in the paired measure of each case with a target.
    pairs = 250 if quick else 1000
    # The same calls per implementation whatever the block: smaller blocks
    # make more rounds, which sample a machine whose load swings more evenly.
    rounds = max(2, (500 if quick else 2000) // args.block)

    # --- (a) add_messages of 10 messages -----------------------------------
    batch = conversation_messages(10, seed=1)
    batch_title, batch_usage = summary_of(batch)
    floor.check(batch, batch_title, batch_usage)
    if wanted("a"):
        cm_a = DjangoRedisChatMessageHistory("a")
        anchor_a = anchor("a")
        cases_a: dict[str, Callable[[int], Any]] = {
            "floor": lambda i: floor.write("a", batch, batch_title, batch_usage),
            "chatmemory": lambda i: cm_a.add_messages(batch),
            "anchor": lambda i: anchor_a.add_messages(batch),
            "raw": lambda i: raw_write("a", batch),
            "raw orjson": lambda i: raw_write("a-orjson", batch, encode_orjson),
        }
        results = measure(cases_a, rounds=rounds, block=args.block)
        summary["a"], met = report(
            "(a) add_messages of 10 messages, one object per implementation",
            results,
            target=("chatmemory", "chatmemory <= 1.1x floor", 1.1),
        )
        targets_met &= met
        result = paired(cases_a["chatmemory"], cases_a["floor"], pairs=pairs)
        summary["a"]["chatmemory paired"] = result[3]
        paired_met &= report_paired(result, pairs, 1.1)
        # The measure's own bias (which call goes first, the caches each one
        # leaves the other): the floor against itself should come out at 1.
        extra, *_, (ratio, least, most) = paired(
            cases_a["floor"], cases_a["floor"], pairs=pairs
        )
        print(
            f"  paired, the floor against itself: {extra * 1e6:+.1f} us a call, "
            f"ratio {ratio:.3f} [{least:.3f} .. {most:.3f}]"
        )
        if args.profile:
            profile("(a)", cases_a["chatmemory"], 2000)

    # --- (b) a chat turn through a per-turn factory ------------------------
    # Conversations of 10 turns: turn i goes to session i // 10, so the history
    # read grows from 0 to 18 messages and is the same for every implementation.
    turn = conversation_messages(2, seed=2)
    human, ai = HumanMessage(content=turn[0].content), turn[1]
    assert isinstance(ai, AIMessage)
    pair = [human, ai]
    pair_title, pair_usage = summary_of(pair)

    def cm_turn(session_id: str) -> Any:
        history = DjangoRedisChatMessageHistory(session_id)
        messages = history.messages
        history.add_messages(pair)
        return messages

    def floor_turn(session_id: str) -> Any:
        records = floor.read(session_id)
        floor.write(session_id, pair, pair_title, pair_usage)
        return records

    def anchor_turn(session_id: str) -> Any:
        history = anchor(session_id)
        messages = history.messages
        history.add_messages(pair)
        return messages

    def raw_turn(session_id: str) -> Any:
        messages = raw_read(session_id)
        raw_write(session_id, pair)
        return messages

    def raw_orjson_turn(session_id: str) -> Any:
        messages = raw_read(session_id)
        raw_write(session_id, pair, encode_orjson)
        return messages

    turns: dict[str, Callable[[str], Any]] = {
        "floor": floor_turn,
        "chatmemory": cm_turn,
        "anchor": anchor_turn,
        "raw": raw_turn,
        "raw orjson": raw_orjson_turn,
    }

    if wanted("b"):
        cases_b: dict[str, Callable[[int], Any]] = {
            name: (lambda i, fn=fn: fn(f"b-{i // 10}")) for name, fn in turns.items()
        }
        results = measure(cases_b, rounds=rounds, block=args.block)
        summary["b"], met = report(
            "(b) chat turn: new history object, read (0 to 18 messages), "
            "add human + AI",
            results,
        )
        targets_met &= met
        if args.profile:
            profile("(b)", lambda i: cm_turn(f"b-profile-{i // 10}"), 2000)

    # --- (b20) a chat turn on a 20-message session -------------------------
    if wanted("b20"):
        session = conversation_messages(20, seed=4)
        # Every call takes a session of its own: the blocks' and the pairs'.
        blocks_end = (rounds + 1) * args.block
        sessions = blocks_end + pairs + max(1, pairs // 10)
        DjangoRedisChatMessageHistory("b20-check").add_messages(session)
        pipe = raw_client.pipeline(transaction=False)
        session_title, session_usage = summary_of(session)
        anchor_items = [encode(m) for m in session]
        raw_items = [encode(m) for m in session]
        raw_orjson_items = [encode_orjson(m) for m in session]
        for i in range(sessions):
            sid = f"b20-{i}"
            seed_args = floor.args(sid, session_title, raw_orjson_items, session_usage)
            seed_args[12] = 0  # no cap (the 20 messages stay)
            pipe.evalsha(*seed_args)
            pipe.lpush(anchor(sid).key, *anchor_items)
            pipe.expire(anchor(sid).key, TTL)
            pipe.rpush(raw_key(sid), *raw_items)
            pipe.rpush(raw_key(f"{sid}-orjson"), *raw_orjson_items)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
        for i in range(sessions):
            DjangoRedisChatMessageHistory(f"b20-{i}").add_messages(session)
        # What the message objects cost: chatmemory's turn reading the
        # records (decoded, checked dicts) instead of messages, on sessions of
        # its own (diagnostic, no target).
        for i in range((rounds + 1) * args.block):
            DjangoRedisChatMessageHistory(f"b20r-{i}").add_messages(session)

        def records_turn(session_id: str) -> Any:
            records = store.read_records(session_id)
            DjangoRedisChatMessageHistory(session_id).add_messages(pair)
            return records

        cases_b20: dict[str, Callable[[int], Any]] = {
            name: (lambda i, fn=fn: fn(f"b20-{i}")) for name, fn in turns.items()
        }
        cases_b20["raw orjson"] = lambda i: raw_orjson_turn(f"b20-{i}-orjson")
        cases_b20["cm, no messages"] = lambda i: records_turn(f"b20r-{i}")
        assert len(cases_b20["chatmemory"](sessions)) == 0  # a spare, empty one
        assert len(DjangoRedisChatMessageHistory("b20-0").messages) == 20
        assert len(floor.read("b20-0")) == 20
        assert len(anchor("b20-0").messages) == 20
        results = measure(cases_b20, rounds=rounds, block=args.block)
        summary["b20"], met = report(
            "(b20) chat turn on a 20-message session: new history object, "
            "read 20 messages, add human + AI",
            results,
            target=("chatmemory", "chatmemory <= 1.2x floor", 1.2),
        )
        targets_met &= met
        result = paired(
            cases_b20["chatmemory"], cases_b20["floor"], pairs=pairs, first=blocks_end
        )
        summary["b20"]["chatmemory paired"] = result[3]
        paired_met &= report_paired(result, pairs, 1.2)
        if args.profile:
            for i in range(2000):
                DjangoRedisChatMessageHistory(f"b20-p{i}").add_messages(session)
            profile("(b20)", lambda i: cm_turn(f"b20-p{i}"), 2000)

    # --- (c) reading a long history ----------------------------------------
    if wanted("c"):
        long = conversation_messages(args.history, seed=3)
        cm_c = DjangoRedisChatMessageHistory("c")
        for start in range(0, len(long), 1000):
            cm_c.add_messages(long[start : start + 1000])
        anchor_c = anchor("c")
        # The anchor's own format (newest first, LPUSH), written in one pipeline.
        pipe = raw_client.pipeline(transaction=False)
        pipe.lpush(anchor_c.key, *[encode(m) for m in long])
        pipe.expire(anchor_c.key, TTL)
        pipe.execute()
        for start in range(0, len(long), 1000):
            raw_write("c", long[start : start + 1000])
        cm_key = store.messages_key("c")
        # Same data everywhere, and read back equal.
        assert cm_c.messages == long, "chatmemory did not read back what it wrote"
        assert anchor_c.messages == long, "the anchor did not read back its data"
        assert len(raw_read("c")) == len(long)
        assert len(floor.read("c", cm_key)) == len(long)
        floor_bytes = sum(len(encode_orjson(m)) for m in long) / len(long)
        print(
            f"\nStored bytes per message in (c): chatmemory "
            f"{record_bytes(raw_client, cm_key):.0f}, the floor (orjson, "
            f"message_to_dict) {floor_bytes:.0f}, the anchor and raw (json.dumps) "
            f"{record_bytes(raw_client, raw_key('c')):.0f}"
        )
        cases_c: dict[str, Callable[[int], Any]] = {
            "floor": lambda i: floor.read("c", cm_key),
            "chatmemory": lambda i: cm_c.messages,
            "anchor": lambda i: anchor_c.messages,
            "raw": lambda i: raw_read("c"),
            "LRANGE only": lambda i: raw_client.lrange(cm_key, 0, -1),
        }
        results = measure(cases_c, rounds=6 if quick else 12, block=2)
        summary["c"], met = report(
            f"(c) read a {len(long):,}-message history (floor: LRANGE of "
            "chatmemory's key, orjson.loads per entry, dicts)",
            results,
            target=("chatmemory", "chatmemory <= 1.5x floor", 1.5),
            speedup=("anchor", "chatmemory", 2.0),
        )
        targets_met &= met
        # No paired measure here: a 10,000-message read leaves collections
        # due that the next allocations run, which in a pair would be the
        # other implementation's call (the blocks keep each one's own).
        if args.profile:
            profile("(c)", cases_c["chatmemory"], 10)

    # --- (d) turns per second from many threads ----------------------------
    if wanted("d"):
        threads = args.threads

        def threaded(
            fn: Callable[[str], Any], tag: str
        ) -> Callable[[int, int, int], Any]:
            return lambda r, t, k: fn(f"d{tag}-{r}-{t}-{k // 10}")

        rates = throughput(
            {
                "floor": threaded(floor_turn, "f"),
                "chatmemory": threaded(cm_turn, "c"),
            },
            threads=threads,
            seconds=0.5 if quick else 1.0,
            rounds=6 if quick else 12,
        )
        print(
            f"\n(d) chat turns (sessions of 0 to 18 messages) from {threads} "
            "threads on distinct sessions: turns/s per round"
        )
        for name, values in rates.items():
            median, low, high = spread(values)
            print(f"  {name:<16}{median:>9.0f} turns/s [{low:.0f} .. {high:.0f}]")
        shares = [
            mine / theirs
            for mine, theirs in zip(rates["chatmemory"], rates["floor"], strict=True)
        ]
        share = spread(shares)
        summary["d"] = {"chatmemory": share}
        ok = share[0] >= 0.7
        print(
            f"  target: chatmemory >= 0.70 of the floor's turns/s: {share[0]:.2f} "
            f"[{share[1]:.2f} .. {share[2]:.2f}]: {'MET' if ok else 'MISSED'}"
        )
        targets_met &= ok

    print("\nSummary (ratios to the floor, median of rounds [spread]):")
    for case, found in summary.items():
        print(
            f"  ({case}) "
            + "   ".join(
                f"{name} {median:.2f} [{low:.2f} .. {high:.2f}]"
                for name, (median, low, high) in found.items()
                if name != "floor"
            )
        )
    print(
        f"All targets {'met' if targets_met else 'NOT met'} by the median of "
        f"rounds; {'met' if paired_met else 'NOT met'} by the paired measure."
    )

    keys = list(raw_client.scan_iter(match=f"{PREFIX}:*", count=1000))
    for start in range(0, len(keys), 1000):
        raw_client.delete(*keys[start : start + 1000])
    raw_client.close()
    return 0 if targets_met and paired_met else 1


if __name__ == "__main__":
    sys.exit(main())
