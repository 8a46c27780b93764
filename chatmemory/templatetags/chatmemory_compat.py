"""Template tags that keep chatmemory's templates working on Django 5.2 and 6.x."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def csp_nonce_attr(context: template.Context, media: Any = None) -> str:
    """Django 6's tag of the same name; nothing on Django 5.2, which has no CSP."""
    try:
        from django.utils import csp
    except ImportError:  # pragma: no cover (Django 5.2)
        return ""
    nonce_attr: str = csp.nonce_attr(context, media)
    return nonce_attr
