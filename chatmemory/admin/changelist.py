"""The session list: search, filters, paging and counts, read from the Redis indexes.

:class:`SessionChangeList` plays the part of Django's ``ChangeList``: it reads
the request's parameters once and works out one page of sessions, its count
and the filter choices. Every page costs work proportional to its size, never
to the number of sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import owners as owner_ids
from .. import store
from ..conf import conf
from .utils import query_string, session_row, unknown_owner_label, users_by_owner

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.utils.functional import _StrPromise as StrPromise

SEARCH_VAR = "q"
PAGE_VAR = "p"
OWNER_VAR = "owner"
NO_OWNER_VAR = "owner__isnull"
ACTIVE_VAR = "active"
TITLE_WINDOW_VAR = "tw"
QUERY_VARS = (
    SEARCH_VAR,
    PAGE_VAR,
    OWNER_VAR,
    NO_OWNER_VAR,
    ACTIVE_VAR,
    TITLE_WINDOW_VAR,
)
"""The list's own parameters (the page's links carry them)."""

ACTIVITY_CHOICES: tuple[tuple[str, StrPromise], ...] = (
    ("today", gettext_lazy("Today")),
    ("7d", gettext_lazy("Past 7 days")),
    ("30d", gettext_lazy("Past 30 days")),
)
_ACTIVITY_DAYS = {"today": 0, "7d": 7, "30d": 30}

OWNER_SEARCH_LIMIT = 10
"""At most this many users match one search (by username or email)."""

OWNER_FILTER_CANDIDATES = 100
"""The owner filter looks for sessions among this many users (by username)."""

TITLE_SEARCH_WINDOW = 5000
"""Sessions whose titles one search page reads (the most recently active first);
``ChatSessionAdmin.title_search_window`` overrides it."""

MAX_OFFSET = 2**32
"""No sorted set holds more members: a page past it is 404 without asking Redis."""

Fetch = Callable[[int, int], store.SessionPage]
"""One source of sessions: (offset, limit) -> a page of it."""

Choice = tuple[str, str, bool]


@dataclass(frozen=True, slots=True)
class Source:
    """One source of the listed sessions."""

    fetch: Fetch
    kind: str
    """What it matches ("all", "ids", "owner"); sources of one kind never overlap."""
    filtered: bool = False
    """Whether a filter drops rows its total counts (the total is then a bound)."""


"""(label, link, selected) of one filter choice."""


class SessionChangeList:
    """One page of the session list, as the request asks for it."""

    def __init__(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> None:
        self.request = request
        self.model_admin = model_admin
        self.query = request.GET.get(SEARCH_VAR, "").strip()
        self.ownerless = request.GET.get(NO_OWNER_VAR) == "1"
        self.owner = None if self.ownerless else request.GET.get(OWNER_VAR) or None
        self.active = request.GET.get(ACTIVE_VAR, "")
        self.active_since = activity_start(self.active)
        self.page_number = page_number_or_404(request.GET.get(PAGE_VAR))
        self.title_window = page_number_or_404(request.GET.get(TITLE_WINDOW_VAR))
        self.title_search: store.TitleMatches | None = None
        """What the title search covered (None when there was none)."""
        self.per_page = max(1, conf.SESSIONS_PER_PAGE)
        self.has_filters = bool(self.owner or self.ownerless or self.active_since)

        offset = (self.page_number - 1) * self.per_page
        if offset >= MAX_OFFSET:  # past any index, and past Redis's integers
            raise Http404(_("No such page."))
        sources = self.sources()
        page, totals = concatenate([s.fetch for s in sources], offset, self.per_page)
        if self.page_number > 1 and offset >= page.total:
            raise Http404(_("No such page."))
        self.total = page.total
        found = [source for source, total in zip(sources, totals, strict=True) if total]
        kinds = {source.kind for source in found}
        self.total_is_estimate = (
            any(source.filtered for source in found)
            or {
                "ids",
                "owner",
            }
            <= kinds
        )
        """True when ``total`` is an upper bound rather than an exact count."""
        self.users = users_by_owner(
            {s.owner for s in page.sessions if s.owner} | {self.owner}
        )
        self.rows = [
            session_row(
                model_admin.admin_site, model_admin.opts, request, info, self.users
            )
            for info in page.sessions
        ]

    # --- sources ---------------------------------------------------------------

    def sources(self) -> list[Source]:
        """Where the listed sessions come from, in the order they are listed."""
        owner, ownerless, active_since = self.owner, self.ownerless, self.active_since
        if self.query:
            return self.search_sources()
        return [
            Source(
                lambda off, lim: store.list_sessions(
                    owner=owner,
                    ownerless=ownerless,
                    offset=off,
                    limit=lim,
                    active_since=active_since,
                ),
                kind="all",
            )
        ]

    def search_sources(self) -> list[Source]:
        """Sessions whose id starts with the query (the exact id first), then
        the sessions of the users whose username or email it is, then those
        whose titles hold the query's words (within a window of recent ones).

        Each source is counted by its index. A count is only an upper bound
        when a filter drops rows the index counted (the owner and activity
        filters on an id search), or when both an id and a user match (a
        session found both ways is listed once). The title matches leave out
        the sessions the other sources list, before they are counted.
        """
        query, owner, active_since = self.query, self.owner, self.active_since
        ownerless = self.ownerless
        if self.title_window > 1:  # older sessions: their titles only
            return [self.title_source(valid_id=False, owners=[])]
        try:
            store.validate_session_id(query)
        except ValueError:
            valid_id = False
        else:
            valid_id = True
        sources: list[Source] = []
        if valid_id:

            def by_id(offset: int, limit: int) -> store.SessionPage:
                return store.search_session_ids(query, offset=offset, limit=limit)

            def keep(info: store.SessionInfo) -> bool:
                if owner is not None and info.owner != owner:
                    return False
                if ownerless and info.owner is not None:
                    return False
                return active_since is None or info.last_activity >= active_since

            filtered = owner is not None or ownerless or active_since is not None
            sources.append(
                Source(without(by_id, keep) if filtered else by_id, "ids", filtered)
            )
        owners = [] if ownerless else matching_owners(query)
        for owner_id in owners:
            if owner is not None and owner_id != owner:
                continue

            def owned(offset: int, limit: int, o: str = owner_id) -> store.SessionPage:
                return store.list_sessions(
                    owner=o, offset=offset, limit=limit, active_since=active_since
                )

            sources.append(
                Source(
                    # Sessions the id search lists already are not listed twice.
                    without(owned, lambda info: not info.session_id.startswith(query))
                    if valid_id
                    else owned,
                    "owner",
                )
            )
        if store.title_words(query):
            sources.append(self.title_source(valid_id=valid_id, owners=owners))
        return sources

    def title_source(self, *, valid_id: bool, owners: Sequence[str]) -> Source:
        """The sessions of this title window whose titles hold the query's
        words, less those the id and owner sources list."""
        size = max(
            1, getattr(self.model_admin, "title_search_window", TITLE_SEARCH_WINDOW)
        )
        start = (self.title_window - 1) * size
        if start >= MAX_OFFSET:
            raise Http404(_("No such page."))
        found = store.search_titles(
            store.title_words(self.query),
            owner=self.owner,
            ownerless=self.ownerless,
            active_since=self.active_since,
            start=start,
            size=size,
        )
        if self.title_window > 1 and start >= found.indexed:
            raise Http404(_("No such page."))
        self.title_search = found
        listed_owners = set(owners)
        query = self.query
        ids = [
            session_id
            for session_id, session_owner in found.matches
            if not (valid_id and session_id.startswith(query))
            and session_owner not in listed_owners
        ]

        def by_title(offset: int, limit: int) -> store.SessionPage:
            wanted = ids[offset : offset + limit]
            infos = store.get_sessions(wanted) if wanted else []
            # A session deleted since the titles were read is counted out.
            return store.SessionPage(infos, len(ids) - (len(wanted) - len(infos)))

        return Source(by_title, "title")

    def title_search_note(self) -> dict[str, Any] | None:
        """What the title search covered, for the page to say so; None when it
        read every session's title (its count is then exact, with no caveat)."""
        found = self.title_search
        if found is None or (found.start == 0 and found.complete):
            return None
        return {
            "first": found.start + 1,
            "last": found.start + found.searched,
            "indexed": found.indexed,
            "next_url": None
            if found.complete
            else self.get_query(
                {TITLE_WINDOW_VAR: self.title_window + 1, PAGE_VAR: None}
            ),
            "newest_url": self.get_query({TITLE_WINDOW_VAR: None, PAGE_VAR: None})
            if self.title_window > 1
            else None,
        }

    # --- what the template shows -------------------------------------------------

    def page_links(self) -> list[tuple[int | str, str | None]]:
        """(number, link) of the paginator; no link for the current page."""
        paginator = Paginator(range(self.total), self.per_page)
        if paginator.num_pages <= 1:
            return []
        shown = min(self.page_number, paginator.num_pages)
        return [
            (n, None if n == self.page_number else self.get_query({PAGE_VAR: n}))
            for n in paginator.get_elided_page_range(shown)
        ]

    def owner_choices(self) -> list[Choice]:
        """(label, link, selected) for the owner filter.

        Offered: the owners on this page, and the users (the first
        OWNER_FILTER_CANDIDATES by username) who have sessions; any other owner
        is a search away.
        """
        selected = self.owner
        user_model = get_user_model()
        candidates = list(
            user_model._default_manager.order_by(user_model.USERNAME_FIELD)[
                :OWNER_FILTER_CANDIDATES
            ]
        )
        with_sessions = store.count_owner_sessions(
            [owner_ids.owner_id(u) for u in candidates]
        )
        labels: dict[str, str] = {
            owner_ids.owner_id(u): u.get_username()
            for u in candidates
            if owner_ids.owner_id(u) in with_sessions
        }
        for row in self.rows:
            if row.info.owner is not None:
                labels[row.info.owner] = row.owner_label
        if selected is not None:
            user = self.users.get(selected)
            labels[selected] = (
                user.get_username()
                if user is not None
                else unknown_owner_label(selected)
            )
        choices = [
            (
                _("All"),
                self.get_query(
                    {
                        OWNER_VAR: None,
                        NO_OWNER_VAR: None,
                        PAGE_VAR: None,
                        TITLE_WINDOW_VAR: None,
                    }
                ),
                selected is None and not self.ownerless,
            ),
            (
                _("No owner"),
                self.get_query(
                    {
                        OWNER_VAR: None,
                        NO_OWNER_VAR: "1",
                        PAGE_VAR: None,
                        TITLE_WINDOW_VAR: None,
                    }
                ),
                self.ownerless,
            ),
        ]
        for owner_id, label in sorted(labels.items(), key=lambda item: item[1]):
            choices.append(
                (
                    label,
                    self.get_query(
                        {
                            OWNER_VAR: owner_id,
                            NO_OWNER_VAR: None,
                            PAGE_VAR: None,
                            TITLE_WINDOW_VAR: None,
                        }
                    ),
                    owner_id == selected,
                )
            )
        return choices

    def activity_choices(self) -> list[Choice]:
        """(label, link, selected) for the last-activity filter."""
        current = self.active if self.active in _ACTIVITY_DAYS else ""
        choices = [
            (
                _("Any date"),
                self.get_query(
                    {ACTIVE_VAR: None, PAGE_VAR: None, TITLE_WINDOW_VAR: None}
                ),
                not current,
            )
        ]
        for value, label in ACTIVITY_CHOICES:
            choices.append(
                (
                    str(label),
                    self.get_query(
                        {ACTIVE_VAR: value, PAGE_VAR: None, TITLE_WINDOW_VAR: None}
                    ),
                    value == current,
                )
            )
        return choices

    def hidden_params(self) -> list[tuple[str, str]]:
        """The filters the search form carries along."""
        return [
            (name, value)
            for name, value in (
                (OWNER_VAR, self.owner),
                (NO_OWNER_VAR, "1" if self.ownerless else None),
                (ACTIVE_VAR, self.active),
            )
            if value
        ]

    def get_query(self, changes: dict[str, Any]) -> str:
        """The list's query string with ``changes`` applied (None drops a key)."""
        return query_string(self.request, QUERY_VARS, changes)

    def context(self) -> dict[str, Any]:
        """The template's view of this page."""
        return {
            "rows": self.rows,
            "total": self.total,
            "total_is_estimate": self.total_is_estimate,
            "page_number": self.page_number,
            "page_links": self.page_links(),
            "ellipsis": Paginator.ELLIPSIS,
            "show_expiry": conf.TTL is not None
            or any(row.expires_at for row in self.rows),
            "search_var": SEARCH_VAR,
            "query": self.query,
            "title_search": self.title_search_note(),
            "hidden_params": self.hidden_params(),
            "owner_choices": self.owner_choices(),
            "activity_choices": self.activity_choices(),
            "has_active_filters": self.has_filters,
            "clear_filters_url": self.get_query(
                {
                    OWNER_VAR: None,
                    NO_OWNER_VAR: None,
                    ACTIVE_VAR: None,
                    PAGE_VAR: None,
                    TITLE_WINDOW_VAR: None,
                }
            ),
        }


def matching_owners(query: str) -> list[str]:
    """Owner ids of users whose username or email is ``query`` (any case)."""
    user_model = get_user_model()
    lookup = Q(**{f"{user_model.USERNAME_FIELD}__iexact": query})
    email = user_model.get_email_field_name()
    try:
        user_model._meta.get_field(email)
    except FieldDoesNotExist:  # a custom user model without an email field
        pass
    else:
        lookup |= Q(**{f"{email}__iexact": query})
    users = user_model._default_manager.filter(lookup)[:OWNER_SEARCH_LIMIT]
    return [owner_ids.owner_id(user) for user in users]


def concatenate(
    sources: Sequence[Fetch], offset: int, limit: int
) -> tuple[store.SessionPage, list[int]]:
    """One page of the sources listed one after the other, and each one's total.

    Each source reports its total, so the page costs one call per source and
    work proportional to ``limit``. The page's total is the sum of theirs.
    """
    sessions: list[store.SessionInfo] = []
    totals: list[int] = []
    for fetch in sources:
        page = fetch(max(offset - sum(totals), 0), limit - len(sessions))
        sessions.extend(page.sessions)
        totals.append(page.total)
    return store.SessionPage(sessions, sum(totals)), totals


def without(fetch: Fetch, keep: Callable[[store.SessionInfo], bool]) -> Fetch:
    """``fetch`` with rows dropped that another source shows or a filter rejects.

    The page can come out shorter than asked; its total is left as is.
    """

    def filtered(offset: int, limit: int) -> store.SessionPage:
        page = fetch(offset, limit)
        return store.SessionPage([s for s in page.sessions if keep(s)], page.total)

    return filtered


def activity_start(choice: str) -> datetime | None:
    """Start of the last-activity filter's period: midnight, local time."""
    days = _ACTIVITY_DAYS.get(choice)
    if days is None:
        return None
    now = timezone.now()
    if timezone.is_aware(now):
        now = timezone.localtime(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


def page_number_or_404(value: str | None) -> int:
    """The page number asked for (1 when none is); 404 unless a whole number >= 1."""
    if value is None or value == "":
        return 1
    try:
        number = int(value)
    except ValueError:
        raise Http404(_("No such page.")) from None
    if number < 1:
        raise Http404(_("No such page."))
    return number
