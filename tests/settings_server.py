"""Settings for the servers the tests start (gunicorn, uvicorn) as subprocesses.

The test settings, plus a file-based database (so a login made in one process
holds in another), the key prefix of the test that started the server, its chat
mode, and a slow demo model, so streaming can be seen token by token.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["CHATMEMORY_TEST_DB"],
    }
}
CHATMEMORY_KEY_PREFIX = os.environ["CHATMEMORY_TEST_KEY_PREFIX"]
CHATMEMORY_CHAT_MODEL = {
    "factory": os.environ.get("CHATMEMORY_TEST_MODEL", "chatmemory.llm.DemoChatModel"),
    "token_delay": float(os.environ.get("CHATMEMORY_TEST_TOKEN_DELAY", "0.05")),
}
CHATMEMORY_CHAT_MODE = os.environ.get("CHATMEMORY_TEST_CHAT_MODE", "chain")
# The benchmark caps histories, so thousands of turns keep a constant cost.
CHATMEMORY_MAX_MESSAGES = int(os.environ.get("CHATMEMORY_TEST_MAX_MESSAGES", 0)) or None
