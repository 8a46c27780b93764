from __future__ import annotations

import pytest
from django.test import override_settings

from chatmemory.forms import MessageForm, RenameForm


def test_a_message_is_kept_as_typed_inside_and_stripped_outside() -> None:
    form = MessageForm({"message": "  two\nlines  "})
    assert form.is_valid()
    assert form.cleaned_data["message"] == "two\nlines"


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_an_empty_or_blank_message_is_an_error(text: str) -> None:
    form = MessageForm({"message": text})
    assert not form.is_valid()
    assert form.errors["message"] == ["Type a message first: it is empty."]


def test_the_length_limit_follows_the_setting() -> None:
    with override_settings(CHATMEMORY_MAX_MESSAGE_LENGTH=10):
        assert MessageForm({"message": "x" * 10}).is_valid()
        form = MessageForm({"message": "x" * 11})
        assert not form.is_valid()
        assert form.errors["message"] == [
            "Your message is 11 characters long; the limit is 10. "
            "Shorten it and send it again."
        ]
        assert 'maxlength="10"' in str(form["message"])
    assert MessageForm({"message": "x" * 11}).is_valid()


def test_the_text_stays_in_the_box_after_an_error() -> None:
    with override_settings(CHATMEMORY_MAX_MESSAGE_LENGTH=3):
        form = MessageForm({"message": "<b>long</b>"})
        assert not form.is_valid()
        assert "&lt;b&gt;long&lt;/b&gt;" in str(form["message"])


def test_rename_form() -> None:
    form = RenameForm({"title": " Trip plans "})
    assert form.is_valid() and form.cleaned_data["title"] == "Trip plans"
    form = RenameForm({"title": "  "})
    assert not form.is_valid()
    assert form.errors["title"] == ["A title cannot be empty."]
    assert not RenameForm({"title": "x" * 81}).is_valid()
