"""What the list and the transcript both show of a session: its row and its owner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model
from django.http import Http404, HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _

from .. import owners as owners_module
from .. import store

if TYPE_CHECKING:
    from django.contrib.admin import AdminSite
    from django.db.models.options import Options


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session as the admin shows it: its metadata, links and owner."""

    info: store.SessionInfo
    url: str
    owner_label: str
    owner_url: str | None
    expires_at: datetime | None

    @property
    def time_left(self) -> str:
        """Until Redis expires the session, to the largest unit ("3 hours")."""
        return "" if self.expires_at is None else timeuntil(self.expires_at, depth=1)


def unknown_owner_label(owner: str) -> str:
    """How an owner id that names no user is shown."""
    return _("deleted user (#%(id)s)") % {"id": owner}


def users_by_owner(owners: Iterable[str | None]) -> dict[str, AbstractBaseUser]:
    """The accounts behind owner ids (see :mod:`chatmemory.owners`)."""
    return owners_module.users_by_owner(owners)


def user_url(admin_site: AdminSite, request: HttpRequest, user: Model) -> str | None:
    """The user's admin page, if the user model is there and visible."""
    user_model = type(user)
    if not admin_site.is_registered(user_model):
        return None
    user_admin = admin_site.get_model_admin(user_model)
    if not user_admin.has_view_or_change_permission(request, user):
        return None
    opts = user_model._meta
    try:
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=[quote(user.pk)],
            current_app=admin_site.name,
        )
    except NoReverseMatch:  # a user admin without the usual change page
        return None


def session_row(
    admin_site: AdminSite,
    opts: Options[Any],
    request: HttpRequest,
    info: store.SessionInfo,
    users: dict[str, AbstractBaseUser],
) -> SessionRow:
    """The row of one session, its owner looked up in ``users``."""
    owner_label, owner_url = "", None
    if info.owner is not None:
        user = users.get(info.owner)
        if user is None:
            owner_label = unknown_owner_label(info.owner)
        else:
            owner_label = user.get_username()
            owner_url = user_url(admin_site, request, user)
    return SessionRow(
        info=info,
        url=reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=[quote(info.session_id)],
            current_app=admin_site.name,
        ),
        owner_label=owner_label,
        owner_url=owner_url,
        expires_at=None
        if info.expires_in is None
        else timezone.now() + info.expires_in,
    )


def session_id_from_url(object_id: str) -> str:
    """The session id in a URL, or 404."""
    session_id = unquote(object_id)
    try:
        return store.validate_session_id(session_id)
    except ValueError:
        raise Http404(_("No chat session with this id.")) from None


def query_string(
    request: HttpRequest, names: Sequence[str], changes: Mapping[str, Any]
) -> str:
    """The request's parameters ``names`` as a query string, with ``changes``
    applied (None drops a parameter); "?" when none is left."""
    params: dict[str, str] = {}
    for name in names:
        value = request.GET.get(name)
        if value:
            params[name] = value
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return "?" + urlencode(sorted(params.items())) if params else "?"
