"""Persisted LLM chat sessions for Django.

I have a Django project with django-redis, and I want my LangChain chat history in it::

    from chatmemory.history import DjangoRedisChatMessageHistory

    history = DjangoRedisChatMessageHistory("foo")
    history.add_user_message("hi!")
    history.add_ai_message("whats up?")
    history.messages  # [HumanMessage(content='hi!'), AIMessage(content='whats up?')]
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"
