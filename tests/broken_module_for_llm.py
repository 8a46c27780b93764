"""A module that fails while it is imported (tests/test_llm.py)."""

from __future__ import annotations

raise RuntimeError("this module is broken on purpose")
