"""The demo project: its settings pass the checks and its migrations are complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_project_check_is_clean() -> None:
    result = manage("check", "--fail-level", "WARNING", REDIS_URL="redis://127.0.0.1:1")

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_migrations_are_complete() -> None:
    result = manage("makemigrations", "--check", "--dry-run")

    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_keeps_chat_data_on_its_own_alias_and_database() -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.CHATMEMORY_CACHE_ALIAS, s.CACHES['chatmemory']['LOCATION'], "
        "s.CACHES['default']['BACKEND'])"
    )
    result = manage(
        "shell", "--no-imports", "-c", code, REDIS_URL="redis://127.0.0.2:6400/"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "chatmemory",
        "redis://127.0.0.2:6400/1",
        "django.core.cache.backends.locmem.LocMemCache",
    ]
