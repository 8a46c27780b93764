"""The Lua scripts (``lua/*.lua``), read once, registered once per client.

Every key a script touches is passed in KEYS; none is built inside Lua, so
Redis Cluster and proxies that route by declared keys accept them. A line
``-- include: <name>`` stands for the text of ``lua/<name>.lua`` (the shared
index TTL functions of ``_index_keep.lua`` and ``_index_ttl.lua``).
"""

from __future__ import annotations

import re
import weakref
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

    from .client import AsyncClient, SyncClient


_INCLUDE = re.compile(r"^-- include: ([\w-]+)$", re.MULTILINE)


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, its includes in place."""
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
    return _INCLUDE.sub(lambda found: source(found.group(1)), text)


@cache
def compact(name: str) -> str:
    """:func:`source` without comment lines and indentation: a script sent
    whole with EVAL (in a Redis Cluster pipeline, where EVALSHA could meet a
    node that has not loaded it)."""
    lines = (line.strip() for line in source(name).splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("--"))


_sync: weakref.WeakKeyDictionary[SyncClient, dict[str, Script]] = (
    weakref.WeakKeyDictionary()
)
_async: weakref.WeakKeyDictionary[AsyncClient, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def sync_script(client: SyncClient, name: str) -> Script:
    """The script bound to ``client`` (SHA cached; EVALSHA reloads on NOSCRIPT)."""
    scripts = _sync.get(client)
    if scripts is None:
        scripts = _sync[client] = {}
    script = scripts.get(name)
    if script is None:
        script = scripts[name] = client.register_script(source(name))
    return script


def async_script(client: AsyncClient, name: str) -> AsyncScript:
    """The script bound to the async ``client``."""
    scripts = _async.get(client)
    if scripts is None:
        scripts = _async[client] = {}
    script = scripts.get(name)
    if script is None:
        script = scripts[name] = client.register_script(source(name))
    return script
