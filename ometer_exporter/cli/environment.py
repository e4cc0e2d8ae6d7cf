"""The process environment as both commands see it: the real one over the ``.env`` files.

``serve`` (the default command) and ``bench`` read the same files in the same order, through
this one function, so the two never measure different servers from the same directory.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from dotenv import dotenv_values

# Lowest precedence last: the real environment beats ./.env, which beats ~/.env, which beats
# OMeter's own ~/.config/ometer/.env.
DOTENV_FILES: Final = (".env", "~/.env", "~/.config/ometer/.env")


def parse_dotenv(text: str) -> dict[str, str]:
    """The variables a ``.env`` text sets, read by python-dotenv: quotes, escapes, ``export``.

    No ``${VAR}`` expansion (the values are taken as written); a name without ``=`` sets nothing.
    """
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


def with_dotenv(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` over ``./.env`` over ``~/.env`` over ``~/.config/ometer/.env``.

    ``~`` is ``env``'s ``HOME`` (else the user's home); ``.`` the working directory. A file
    that is missing or unreadable sets nothing.
    """
    home = env.get("HOME") or str(Path.home())
    merged: dict[str, str] = {}
    for name in reversed(DOTENV_FILES):
        path = Path(home, name[2:]) if name.startswith("~/") else Path.cwd() / name
        with contextlib.suppress(OSError, UnicodeDecodeError):
            merged.update(parse_dotenv(path.read_text(encoding="utf-8")))
    merged.update(env)
    return merged
