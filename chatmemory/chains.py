"""Compatibility names: the chat code now lives in :mod:`chatmemory.llm` (the
model factory and the demo model) and :mod:`chatmemory.turn` (one turn).

``from chatmemory.chains import ChatTurn`` and the other names below keep
working; new code imports from those modules.
"""

from __future__ import annotations

from .exceptions import ModelFailed
from .llm import (
    DemoChatModel,
    build_chat_model,
    demo_reply,
    describe_failure,
    get_chat_model,
    is_demo_model,
    model_name,
)
from .records import INTERRUPTED
from .turn import ChatTurn, achat, build_prompt, chat

__all__ = [
    "INTERRUPTED",
    "ChatTurn",
    "DemoChatModel",
    "ModelFailed",
    "achat",
    "build_chat_model",
    "build_prompt",
    "chat",
    "demo_reply",
    "describe_failure",
    "get_chat_model",
    "is_demo_model",
    "model_name",
]
