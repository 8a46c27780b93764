"""Helpers shared by the admin tests (tests/test_admin_*.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import redis
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse
from langchain_core.messages import (
    BaseMessage,
)

from chatmemory import store
from chatmemory.history import DjangoRedisChatMessageHistory
from chatmemory.models import ChatSession
from chatmemory.owners import owner_id

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response


LIST_URL = "/admin/chatmemory/chatsession/"


def transcript_url(session_id: str) -> str:
    return reverse("admin:chatmemory_chatsession_change", args=[quote(session_id)])


def export_url(session_id: str) -> str:
    return reverse("admin:chatmemory_chatsession_export", args=[quote(session_id)])


def delete_url(session_id: str) -> str:
    return reverse("admin:chatmemory_chatsession_delete", args=[quote(session_id)])


def text(response: Response) -> str:
    return response.content.decode()


def make_user(
    username: str, *perms: str, staff: bool = True, superuser: bool = False
) -> User:
    user = User.objects.create_user(
        username,
        email=f"{username}@example.com",
        password="pw",
        is_staff=staff,
        is_superuser=superuser,
    )
    if perms:
        content_type = ContentType.objects.get_for_model(ChatSession)
        user.user_permissions.set(
            Permission.objects.filter(content_type=content_type, codename__in=perms)
        )
    return user


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def chat(session_id: str, *messages: BaseMessage, owner: User | None = None) -> None:
    history = DjangoRedisChatMessageHistory(
        session_id, owner=None if owner is None else owner_id(owner)
    )
    history.add_messages(list(messages))


def rows(response: Response) -> list[str]:
    """The session ids listed on a list page, in order."""
    return [row.info.session_id for row in response.context["rows"]]


def set_activity(redis_client: redis.Redis, session_id: str, when: datetime) -> None:
    """Move a session's last activity back in time, in its meta and indexes."""
    millis = int(when.timestamp() * 1000)
    meta = store.meta_key(session_id)
    redis_client.hset(meta, "updated", millis)
    redis_client.zadd(store.sessions_key(), {session_id: millis})
    owner: bytes | None = redis_client.hget(meta, "owner")  # type: ignore[assignment]
    if owner is not None:
        redis_client.zadd(store.owner_key(owner.decode()), {session_id: millis})
    else:
        redis_client.zadd(store.no_owner_key(), {session_id: millis})
