"""The views benchmark's settings: the test servers' settings plus bench/bare.py."""

from __future__ import annotations

from tests.settings_server import *  # noqa: F403

ROOT_URLCONF = "bench.bare"
