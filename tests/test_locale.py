"""The Spanish translation ships compiled, complete, and is used."""

from __future__ import annotations

import gettext
import shutil
import subprocess
from pathlib import Path

import pytest
from django.utils import translation

from chatmemory import llm
from chatmemory.exceptions import TurnInProgress
from chatmemory.forms import MessageForm

LOCALE = Path(__file__).resolve().parent.parent / "chatmemory" / "locale"
PO = LOCALE / "es" / "LC_MESSAGES" / "django.po"
MO = LOCALE / "es" / "LC_MESSAGES" / "django.mo"


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="needs GNU gettext")
def test_the_catalog_compiles_and_the_committed_mo_matches_it(tmp_path: Path) -> None:
    fresh = tmp_path / "django.mo"
    done = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", str(fresh), str(PO)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # Every message translated: no "untranslated" or "fuzzy" in the tally.
    assert "untranslated" not in done.stderr and "fuzzy" not in done.stderr
    with fresh.open("rb") as new, MO.open("rb") as committed:
        assert gettext.GNUTranslations(new)._catalog == (  # type: ignore[attr-defined]
            gettext.GNUTranslations(committed)._catalog  # type: ignore[attr-defined]
        ), "run: cd chatmemory && django-admin compilemessages"


def test_the_chat_speaks_spanish() -> None:
    with translation.override("es"):
        form = MessageForm({"message": ""})
        assert not form.is_valid()
        assert form.errors["message"] == ["Escriba primero un mensaje: está vacío."]
        assert form.fields["message"].label == "Su mensaje"
        assert TurnInProgress("s").user_message.startswith("Ya se está escribiendo")
        assert llm.describe_failure(TimeoutError()).startswith("El modelo no respondió")
    assert llm.describe_failure(TimeoutError()).startswith("The model did not answer")
