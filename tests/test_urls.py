from __future__ import annotations

from urllib.parse import unquote

import pytest
from django.test import Client
from django.urls import resolve, reverse

from chatmemory import views


@pytest.mark.parametrize(
    ("name", "view"),
    [
        ("chat", views.chat),
        ("send", views.send),
        ("stream", views.stream),
        ("rename", views.rename),
        ("delete", views.delete),
    ],
)
def test_session_urls_round_trip_any_session_id(name: str, view: object) -> None:
    for session_id in [
        "abc123",
        "with/slash",
        "odd ?#% id",
        "send",
        "x/send",
        "line\nbreak\r\n",
        "a/../b",
        "..",
        "under_score_2F",
        "nul\x00tab\t",
        "caf\xe9 \U0001f600",
    ]:
        url = reverse(f"chatmemory:{name}", args=[session_id])
        match = resolve(unquote(url))  # as the server decodes PATH_INFO
        assert match.func is view
        assert match.kwargs == {"session_id": session_id}
        assert match.namespace == "chatmemory"
        # One path segment: browsers and proxies normalise nothing away.
        assert url.count("/") == (2 if name == "chat" else 3) + 1


def test_hexadecimal_ids_read_as_they_are() -> None:
    assert reverse("chatmemory:chat", args=["0af3"]) == "/chat/0af3/"
    assert reverse("chatmemory:chat", args=["a/b"]) == "/chat/a_2Fb/"


def test_the_demo_mounts_the_chat_under_chat() -> None:
    assert reverse("chatmemory:sessions") == "/chat/"
    assert reverse("chatmemory:chat", args=["x"]) == "/chat/x/"
    assert reverse("login") == "/accounts/login/"
    assert reverse("logout") == "/accounts/logout/"


def test_the_root_redirects_to_the_chat(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/chat/"
