"""The Spanish translation ships compiled, complete, and is used."""

from __future__ import annotations

import gettext
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import translation

from chatmemory import llm, views
from chatmemory.exceptions import TurnInProgress
from chatmemory.forms import MessageForm

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "chatmemory" / "locale"
MESSAGES = LOCALE / "es" / "LC_MESSAGES"
DOMAINS = ["django", "djangojs"]
needs_gettext = pytest.mark.skipif(
    shutil.which("msgfmt") is None or shutil.which("xgettext") is None,
    reason="needs GNU gettext",
)


def statistics(po: Path, mo: Path) -> str:
    """Compile ``po`` to ``mo``; msgfmt's tally of the catalog."""
    done = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", str(mo), str(po)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@needs_gettext
@pytest.mark.parametrize("domain", DOMAINS)
def test_the_catalog_compiles_and_the_committed_mo_matches_it(
    tmp_path: Path, domain: str
) -> None:
    fresh = tmp_path / f"{domain}.mo"
    tally = statistics(MESSAGES / f"{domain}.po", fresh)
    # Every message translated: no "untranslated" or "fuzzy" in the tally.
    assert "untranslated" not in tally and "fuzzy" not in tally, tally
    with fresh.open("rb") as new, (MESSAGES / f"{domain}.mo").open("rb") as committed:
        assert gettext.GNUTranslations(new)._catalog == (  # type: ignore[attr-defined]
            gettext.GNUTranslations(committed)._catalog  # type: ignore[attr-defined]
        ), "run: ./scripts/messages compile"


@needs_gettext
def test_every_string_of_the_code_has_a_spanish_translation(tmp_path: Path) -> None:
    """makemessages on a copy of the app finds nothing new to translate."""
    app = tmp_path / "chatmemory"
    shutil.copytree(
        ROOT / "chatmemory", app, ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [str(ROOT / "scripts" / "messages"), str(app)],
        capture_output=True,
        text=True,
        # makemessages needs no settings (and the copy has no tests package).
        env={
            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            "PYTHON": sys.executable,
        },
    )
    assert done.returncode == 0, done.stderr
    for domain in DOMAINS:
        po = app / "locale" / "es" / "LC_MESSAGES" / f"{domain}.po"
        tally = statistics(po, tmp_path / f"{domain}.mo")
        assert "untranslated" not in tally and "fuzzy" not in tally, (
            f"{domain}: {tally.strip()}: run ./scripts/messages, translate, then "
            "./scripts/messages compile"
        )
    scripts = (app / "locale" / "es" / "LC_MESSAGES" / "djangojs.po").read_text()
    references = " ".join(
        line[3:] for line in scripts.splitlines() if line.startswith("#: ")
    ).split()
    # Only chat.js: the vendored libraries are not ours to translate.
    assert {ref.split(":")[0] for ref in references} == {"static/chatmemory/chat.js"}


def test_the_chat_speaks_spanish() -> None:
    with translation.override("es"):
        form = MessageForm({"message": ""})
        assert not form.is_valid()
        assert form.errors["message"] == ["Escriba primero un mensaje: está vacío."]
        assert form.fields["message"].label == "Su mensaje"
        assert TurnInProgress("s").user_message.startswith("Ya se está escribiendo")
        assert llm.describe_failure(TimeoutError()).startswith("El modelo no respondió")
        assert views._wait_words(3725) == "1 hora 2 minutos"
        assert views._wait_words(1) == "1 segundo"
    assert llm.describe_failure(TimeoutError()).startswith("The model did not answer")
