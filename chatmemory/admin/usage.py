"""The token usage page: every owner's tokens per UTC day over a range of days.

:class:`UsageList` reads the request (the range, the order, the page's cursor,
an optional owner) and works out one page of (owner, day) rows from the usage
indexes the writes keep (see :mod:`chatmemory.store.usage`): a page costs
O(days x page), never the number of owners, and the figures are Redis's own.
Each row is rendered by ``admin/chatmemory/chatsession/usage_row.html``
(override it by path).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django import forms
from django.http import Http404, HttpRequest
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import store
from .changelist import OWNER_VAR
from .utils import query_string, unknown_owner_label, user_url, users_by_owner

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

START_VAR = "start"
END_VAR = "end"
ORDER_VAR = "o"
AFTER_VAR = "after"
SHOWN_VAR = "n"
QUERY_VARS = (START_VAR, END_VAR, ORDER_VAR, OWNER_VAR, AFTER_VAR, SHOWN_VAR)
"""The page's own parameters (its links carry them)."""

DEFAULT_DAYS = 7
"""The range shown when none is asked for: the last 7 UTC days."""

MAX_DAYS = 92
"""The longest range one page may cover (a page reads each day's index)."""

ORDER_CHOICES = (
    (store.BY_TOTAL, gettext_lazy("Most tokens first")),
    (store.BY_DAY, gettext_lazy("Newest day first")),
)


def today() -> date:
    """The current UTC day (usage is counted per UTC day)."""
    return datetime.now(UTC).date()


class UsageRangeForm(forms.Form):
    """The range of UTC days and the order of the usage page."""

    start = forms.DateField(
        label=gettext_lazy("From"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    end = forms.DateField(
        label=gettext_lazy("To"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    o = forms.ChoiceField(
        label=gettext_lazy("Order"), required=False, choices=ORDER_CHOICES
    )

    def clean(self) -> dict[str, Any]:
        """Fill in the defaults; the range must run forward, at most MAX_DAYS."""
        data = super().clean() or {}
        end = data.get("end") or today()
        start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise forms.ValidationError(
                _("The range must start on or before its last day.")
            )
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(
                _("A range covers at most %(days)d days.") % {"days": MAX_DAYS}
            )
        data.update(start=start, end=end, o=data.get("o") or store.BY_TOTAL)
        return data


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One owner's tokens on one UTC day, as the page shows them."""

    usage: store.Usage
    day: date
    owner_label: str
    owner_url: str | None
    """The user's admin page (None when there is no such user, or no access)."""
    sessions_url: str
    """The session list filtered to this owner."""
    usage_url: str
    """This page for this owner alone, same range."""


class UsageList:
    """One page of the usage page, as the request asks for it."""

    def __init__(
        self, request: HttpRequest, model_admin: ModelAdmin[Any], per_page: int
    ) -> None:
        self.request = request
        self.model_admin = model_admin
        self.form = UsageRangeForm(request.GET)
        self.owner = request.GET.get(OWNER_VAR) or None
        self.rows: list[UsageRow] = []
        self.count = 0
        self.shown_before = 0
        self.next_url: str | None = None
        self.sums: tuple[int, int, int] | None = None
        """The owner's summed tokens over the range (with an owner only)."""
        self.start: date | None = None
        self.end: date | None = None
        self.order = store.BY_TOTAL
        if not self.form.is_valid():
            return
        start: date = self.form.cleaned_data["start"]
        end: date = self.form.cleaned_data["end"]
        self.start, self.end = start, end
        self.order = self.form.cleaned_data["o"]
        # Shown with the range in effect (the defaults filled in).
        self.form = UsageRangeForm(
            initial={"start": start, "end": end, "o": self.order}
        )
        days = [
            (start + timedelta(days=i)).isoformat()
            for i in range((end - start).days + 1)
        ]
        if self.owner is not None:
            usages = self._owner_days(self.owner, days)
        else:
            usages = self._page(days, per_page)
        users = users_by_owner({u.owner for u in usages})
        self.rows = [self._row(usage, users) for usage in usages]

    def _owner_days(self, owner: str, days: list[str]) -> list[store.Usage]:
        """The owner's days with usage in the range (one round trip)."""
        usages = [
            u
            for u in store.owner_usage(owner, days)
            if u.input_tokens or u.output_tokens or u.total_tokens
        ]
        if self.order == store.BY_TOTAL:
            usages.sort(key=lambda u: (u.total_tokens, u.day), reverse=True)
        else:
            usages.sort(key=lambda u: u.day, reverse=True)
        self.count = len(usages)
        self.sums = (
            sum(u.input_tokens for u in usages),
            sum(u.output_tokens for u in usages),
            sum(u.total_tokens for u in usages),
        )
        return usages

    def _page(self, days: list[str], per_page: int) -> list[store.Usage]:
        after = None
        raw_after = self.request.GET.get(AFTER_VAR)
        if raw_after:
            try:
                after = store.UsageCursor.decode(raw_after)
                shown = int(self.request.GET.get(SHOWN_VAR) or 0)
            except ValueError:
                raise Http404(_("No such page.")) from None
            if after.day not in days or shown < 0:
                raise Http404(_("No such page."))
            self.shown_before = shown
        page = store.usage_page(days, by=self.order, after=after, limit=per_page)
        self.count = page.count
        if page.next is not None:
            self.next_url = self.get_query(
                {
                    AFTER_VAR: page.next.encode(),
                    SHOWN_VAR: self.shown_before + len(page.rows),
                }
            )
        return page.rows

    def _row(self, usage: store.Usage, users: dict[str, Any]) -> UsageRow:
        admin_site, opts = self.model_admin.admin_site, self.model_admin.opts
        user = users.get(usage.owner)
        if user is None:
            label, url = unknown_owner_label(usage.owner), None
        else:
            label, url = user.get_username(), user_url(admin_site, self.request, user)
        changelist = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_changelist",
            current_app=admin_site.name,
        )
        return UsageRow(
            usage=usage,
            day=date.fromisoformat(usage.day),
            owner_label=label,
            owner_url=url,
            sessions_url=f"{changelist}?{urlencode({OWNER_VAR: usage.owner})}",
            usage_url=self.get_query(
                {OWNER_VAR: usage.owner, AFTER_VAR: None, SHOWN_VAR: None}
            ),
        )

    def get_query(self, changes: dict[str, Any]) -> str:
        """This page's query string with ``changes`` applied (None drops a key)."""
        return query_string(self.request, QUERY_VARS, changes)

    def order_links(self) -> list[tuple[str, str, bool]]:
        """(label, link, selected) of each order."""
        return [
            (
                str(label),
                self.get_query({ORDER_VAR: value, AFTER_VAR: None, SHOWN_VAR: None}),
                value == self.order,
            )
            for value, label in ORDER_CHOICES
        ]

    def context(self) -> dict[str, Any]:
        """The template's view of this page."""
        owner_label = None
        if self.owner is not None:
            user = users_by_owner([self.owner]).get(self.owner)
            owner_label = (
                user.get_username()
                if user is not None
                else unknown_owner_label(self.owner)
            )
        return {
            "form": self.form,
            "rows": self.rows,
            "count": self.count,
            "first_row": self.shown_before + 1,
            "last_row": self.shown_before + len(self.rows),
            "next_url": self.next_url,
            "first_url": self.get_query({AFTER_VAR: None, SHOWN_VAR: None})
            if self.shown_before
            else None,
            "start": self.start,
            "end": self.end,
            "order": self.order,
            "order_links": self.order_links(),
            "owner": self.owner,
            "owner_label": owner_label,
            "all_owners_url": self.get_query(
                {OWNER_VAR: None, AFTER_VAR: None, SHOWN_VAR: None}
            ),
            "sums": self.sums,
            "max_days": MAX_DAYS,
        }
