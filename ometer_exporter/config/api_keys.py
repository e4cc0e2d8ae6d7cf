"""A target's API key: from the environment variable or the file its config names.

The key itself is never shown in a problem: only where it was looked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from ometer_exporter.config.checks import Checker, join_path, show_path

API_KEY_TEXT: Final = re.compile(r"[\x21-\x7e]+")  # one header-safe token: printable ASCII
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_KEY_FILE_BYTES: Final = 64 * 1024

KeyAndSource = tuple[str | None, str | None]


def read_api_key(
    checker: Checker, section: Mapping[str, object], path: str, env: Mapping[str, str],
    base_dir: str,
) -> KeyAndSource:  # fmt: skip
    """(key, where it came from). No key at all is fine; a named source that fails is not."""
    if "api_key_env" in section and "api_key_file" in section:
        checker.add(path, "both api_key_env and api_key_file are set; allowed: at most one of them")
        return None, None
    if "api_key_env" in section:
        return _key_from_env(checker, section["api_key_env"], join_path(path, "api_key_env"), env)
    if "api_key_file" in section:
        at = join_path(path, "api_key_file")
        return _key_from_file(checker, section["api_key_file"], at, base_dir)
    return None, None


def _key_from_env(
    checker: Checker, name: object, path: str, env: Mapping[str, str]
) -> KeyAndSource:
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        # Not echoed: a value that is no variable name may well be the key itself.
        checker.add(
            path,
            "is not an environment variable name (value not shown: it may be the "
            "key itself); allowed: letters, digits and _, e.g. OLLAMA_API_KEY",
        )
        return None, None
    raw = env.get(name)
    if raw is None:
        checker.add(
            path,
            f"environment variable {name!r} is not set; allowed: the name of a "
            "set, non-empty variable holding the key (or remove api_key_env)",
        )
        return None, None
    return checked_key(checker, path, raw, f"environment variable {name!r}"), f"env {name}"


def _key_from_file(checker: Checker, given: object, path: str, base_dir: str) -> KeyAndSource:
    name = checker.text(given, path, "the path of a file holding the key")
    if name is None:
        return None, None
    # Relative to the config file, as Prometheus resolves its *_file settings.
    file = os.path.normpath(os.path.join(base_dir, os.path.expanduser(name)))
    try:
        with open(file, "rb") as handle:
            raw_bytes = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        checker.add(
            path,
            f"cannot read {show_path(file)}: {error.strerror or type(error).__name__}; "
            "allowed: a readable file holding the key",
        )
        return None, None
    where = f"file {show_path(file)}"
    if len(raw_bytes) > _MAX_KEY_FILE_BYTES:
        checker.add(
            path,
            f"{where} is larger than {_MAX_KEY_FILE_BYTES // 1024} KiB; allowed: "
            "a file holding just the key",
        )
        return None, None
    try:
        raw = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        checker.add(
            path,
            f"{where} is not UTF-8 text (content not shown); allowed: a file holding just the key",
        )
        return None, None
    return checked_key(checker, path, raw, where), f"file {file}"


def checked_key(checker: Checker, path: str, raw: str, where: str) -> str | None:
    """The key in `raw` (surrounding whitespace dropped), or None with the problem recorded."""
    key = raw.strip()
    if not key:
        checker.add(path, f"{where} is empty; allowed: a non-empty API key")
        return None
    if not API_KEY_TEXT.fullmatch(key):
        checker.add(
            path,
            f"the key in {where} contains spaces, line breaks or non-ASCII characters "
            "(content not shown); allowed: one line of printable ASCII",
        )
        return None
    return key
