"""ASGI entry point of the demo project (uvicorn)."""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_asgi_application()
if settings.DEBUG:
    # runserver serves static files itself; under uvicorn the demo does it here.
    application = ASGIStaticFilesHandler(application)  # type: ignore[assignment]
