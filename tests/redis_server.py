"""A throwaway redis-server for the test run.

Started once per test process (on first import, from tests/settings.py) on a
free loopback port with persistence off, and stopped at exit. Subprocesses of
the tests (servers under test) inherit CHATMEMORY_TEST_REDIS_URL and reuse it.
Set CHATMEMORY_TEST_REDIS_URL yourself to run against a server of yours: the
tests then only delete keys under their own per-test prefixes.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

ENV = "CHATMEMORY_TEST_REDIS_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the test process dies, even killed
    # outright (atexit does not run then), so no throwaway server is left over.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: atexit still stops it
        pass


def start_redis_server() -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError(
            "The tests need redis-server (apt-get install redis-server), "
            f"or {ENV}=redis://host:port of a server to use."
        )
    workdir = tempfile.mkdtemp(prefix="chatmemory-redis-")
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start on port {port}"
                ) from None
            time.sleep(0.05)
    client.close()

    def stop() -> None:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(stop)
    return process, url


# Which test process started the server in ENV: a pytest-xdist worker inherits
# its controller's environment but needs a server of its own (tests count the
# server's commands), while the servers a worker starts (gunicorn, uvicorn)
# must share the worker's.
OWNER_ENV = "CHATMEMORY_TEST_REDIS_OWNER"


def _owner() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def test_redis_url() -> str:
    """The URL of the tests' Redis, starting a throwaway server if none is given."""
    url = os.environ.get(ENV)
    started_by = os.environ.get(OWNER_ENV)
    if not url or (started_by is not None and started_by != _owner()):
        _, url = start_redis_server()
        os.environ[ENV] = url
        os.environ[OWNER_ENV] = _owner()
    return url.rstrip("/")
