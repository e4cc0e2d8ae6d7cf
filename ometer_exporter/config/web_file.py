"""The Prometheus exporter-toolkit web configuration file (``--web.config.file``).

Supported, in the toolkit's format::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: ca.crt
      min_version: TLS12                               # TLS10 … TLS13
      max_version: TLS13
    http_server_config:
      headers: {X-Frame-Options: deny}                 # added to every response
    basic_auth_users:
      alice: $2y$10$…                                  # bcrypt hash (htpasswd -nBC 10 "" …)

Relative paths are relative to the file. Passwords are checked with bcrypt in a worker thread
(a check costs ~50-250 ms of CPU) and the outcome is cached, as exporter-toolkit does, so a
scraper sending the same credentials every 15 s pays for one check.
"""

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from ometer_exporter.config.checks import ConfigError

_TLS_VERSIONS: Final = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH: Final = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TOP_KEYS: Final = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS: Final = (
    "cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
    "cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
)  # fmt: skip
_HTTP_KEYS: Final = ("headers", "http2")




@dataclass(frozen=True, slots=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    cert_files: tuple[Path, Path] | None = None  # (cert, key), reloaded into the live context
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)


def load_web_config(path: str | None) -> WebConfig:
    """Parse and check the file; every problem is reported at once as a ConfigError."""
    if not path:
        return WebConfig()
    problems: list[str] = []
    base = Path(path).resolve().parent
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"--web.config.file: cannot read {path}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}YAML syntax error: {getattr(exc, 'problem', exc)}"],
                          source=path) from None  # fmt: skip
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["the web configuration must be a mapping"], source=path)
    _unknown(raw, _TOP_KEYS, "", problems)

    tls = raw.get("tls_server_config")
    context = _tls(tls, base, problems)
    users = _users(raw.get("basic_auth_users"), problems)
    headers = _headers(raw.get("http_server_config"), problems)
    if problems:
        raise ConfigError(problems, source=path)
    files = None
    if context is not None and isinstance(tls, dict):
        files = (base / str(tls["cert_file"]), base / str(tls["key_file"]))
    return WebConfig(ssl_context=context, cert_files=files, users=users, headers=headers)


def _unknown(section: Mapping[Any, Any], allowed: tuple[str, ...], prefix: str,
             problems: list[str]) -> None:  # fmt: skip
    for key in section:
        if key not in allowed:
            problems.append(f"{prefix}{key}: unknown key (allowed: {', '.join(allowed)})")


def _tls(section: Any, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.append("tls_server_config: must be a mapping")
        return None
    _unknown(section, _TLS_KEYS, "tls_server_config.", problems)
    cert, key = section.get("cert_file"), section.get("key_file")
    if not cert or not key:
        problems.append("tls_server_config: cert_file and key_file are both required")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(base / str(cert), base / str(key))
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"tls_server_config: cannot load cert_file {cert} / key_file {key}: "
                        f"{getattr(exc, 'strerror', None) or exc}")  # fmt: skip
        return None
    auth = section.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type: {auth!r} is not allowed "
                        f"(use {', '.join(_CLIENT_AUTH)})")  # fmt: skip
    else:
        context.verify_mode = _CLIENT_AUTH[auth]
        ca = section.get("client_ca_file")
        if ca:
            try:
                context.load_verify_locations(base / str(ca))
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"tls_server_config.client_ca_file: cannot load {ca}: {exc}")
        elif auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
            problems.append(f"tls_server_config.client_ca_file: required by {auth}")
    for name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        value = section.get(name)
        if value is None:
            continue
        if value not in _TLS_VERSIONS:
            problems.append(f"tls_server_config.{name}: {value!r} is not allowed "
                            f"(use {', '.join(_TLS_VERSIONS)})")  # fmt: skip
        else:
            setattr(context, attr, _TLS_VERSIONS[value])
    return context


def _users(section: Any, problems: list[str]) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        problems.append("basic_auth_users: must map user names to bcrypt hashes")
        return {}
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        text = str(hashed) if hashed is not None else ""
        if not text.startswith(("$2a$", "$2b$", "$2y$")):
            # The value may be a plain password pasted by mistake: never echo it.
            problems.append(f"basic_auth_users.{user}: not a bcrypt hash (make one with "
                            "htpasswd -nBC 10 \"\" | tr -d ':\\n')")  # fmt: skip
            continue
        users[str(user)] = text.encode()
    return users


def _headers(section: Any, problems: list[str]) -> dict[str, str]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        problems.append("http_server_config: must be a mapping")
        return {}
    _unknown(section, _HTTP_KEYS, "http_server_config.", problems)
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        problems.append("http_server_config.headers: must map header names to values")
        return {}
    return {str(k): str(v) for k, v in headers.items()}
