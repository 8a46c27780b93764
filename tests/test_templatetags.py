"""chatmemory_compat: templates work on Django 5.2 and 6.x alike."""

from __future__ import annotations

import django
import pytest
from django.template import Context, Template

TEMPLATE = Template(
    "{% load chatmemory_compat %}<script {% csp_nonce_attr %}></script>"
)


def test_no_nonce_renders_nothing() -> None:
    assert TEMPLATE.render(Context({})) == "<script ></script>"


@pytest.mark.skipif(django.VERSION < (6, 0), reason="CSP nonces came in Django 6.0")
def test_nonce_renders_the_attribute() -> None:
    from django.utils.csp import CONTEXT_KEY

    rendered = TEMPLATE.render(Context({CONTEXT_KEY: 'n"1'}))

    assert rendered == '<script nonce="n&quot;1"></script>'
