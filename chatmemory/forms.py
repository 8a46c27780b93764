"""The chat views' forms: a message, and a session's new title."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .conf import conf
from .records import TITLE_LENGTH


class MessageForm(forms.Form):
    """One message to the model; its limit is ``CHATMEMORY_MAX_MESSAGE_LENGTH``."""

    message = forms.CharField(
        label=_("Your message"),
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": _("Type a message…"), "autofocus": True}
        ),
        error_messages={"required": _("Type a message first: it is empty.")},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The limit is read per form, so a changed setting applies at once.
        limit = conf.MAX_MESSAGE_LENGTH
        field = self.fields["message"]
        assert isinstance(field, forms.CharField)
        field.max_length = limit
        field.widget.attrs["maxlength"] = str(limit)
        field.validators = [self._check_length]

    def _check_length(self, value: str) -> None:
        limit = conf.MAX_MESSAGE_LENGTH
        if len(value) > limit:
            raise forms.ValidationError(
                _(
                    "Your message is %(length)d characters long; the limit is "
                    "%(limit)d. Shorten it and send it again."
                ),
                code="max_length",
                params={"length": len(value), "limit": limit},
            )


class RenameForm(forms.Form):
    """A session's new title."""

    title = forms.CharField(
        label=_("Title"),
        max_length=TITLE_LENGTH,
        error_messages={"required": _("A title cannot be empty.")},
    )
