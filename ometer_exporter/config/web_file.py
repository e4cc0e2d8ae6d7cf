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

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ometer_exporter.config.checks import Checker, ConfigError, join_path
from ometer_exporter.config.yaml_file import read_yaml

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
_VERIFYING: Final = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
_TOP_KEYS: Final = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS: Final = (
    "cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
    "cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
)  # fmt: skip
_HTTP_KEYS: Final = ("headers", "http2")
_TLS: Final = "tls_server_config"
_USERS: Final = "basic_auth_users"
_HTTP: Final = "http_server_config"
_BCRYPT_HELP: Final = "allowed: a bcrypt hash (make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')"


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
    checker = Checker()
    base = Path(path).resolve().parent
    document = read_yaml(checker, path, "--web.config.file", "web config file")
    if checker.problems:
        raise ConfigError(checker.problems, source=path)
    if document is not None and not isinstance(document, dict):
        checker.wrong_type("top level", document, f"a mapping with keys {', '.join(_TOP_KEYS)}")
    top = checker.mapping(document, "", _TOP_KEYS) or {}
    tls = None  # no TLS unless the section is there
    if top.get(_TLS) is not None:
        tls = checker.mapping(top[_TLS], _TLS, _TLS_KEYS)
    context, files = _tls(checker, tls, base) if tls is not None else (None, None)
    users = _users(checker, top.get(_USERS))
    headers = _headers(checker, top.get(_HTTP))
    if checker.problems:
        raise ConfigError(checker.problems, source=path)
    return WebConfig(ssl_context=context, cert_files=files, users=users, headers=headers)


def _tls(
    checker: Checker, section: Mapping[str, object], base: Path
) -> tuple[ssl.SSLContext | None, tuple[Path, Path] | None]:
    """The server's TLS context and its (cert, key) files; (None, None) after a problem."""
    start = len(checker.problems)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    files = _certificate(checker, section, base, context)
    _client_auth(checker, section, base, context)
    _versions(checker, section, context)
    if len(checker.problems) > start or files is None:
        return None, None
    return context, files


def _certificate(
    checker: Checker, section: Mapping[str, object], base: Path, context: ssl.SSLContext
) -> tuple[Path, Path] | None:
    names: list[str | None] = []
    for name, example in (("cert_file", "server.crt"), ("key_file", "server.key")):
        if name not in section:
            checker.add(_TLS, f"missing required key {name!r} (e.g. {name}: {example})")
            names.append(None)
        else:
            names.append(checker.text(section[name], join_path(_TLS, name), "a file path"))
    cert, key = names
    if cert is None or key is None:
        return None
    try:
        context.load_cert_chain(base / cert, base / key)
    except (OSError, ssl.SSLError) as exc:
        checker.add(
            _TLS,
            f"cannot load cert_file {cert} / key_file {key}: "
            f"{getattr(exc, 'strerror', None) or exc}; allowed: a readable PEM certificate "
            "and its private key",
        )
        return None
    return base / cert, base / key


def _client_auth(
    checker: Checker, section: Mapping[str, object], base: Path, context: ssl.SSLContext
) -> None:
    auth_path = join_path(_TLS, "client_auth_type")
    auth = section.get("client_auth_type", "NoClientCert")
    mode = checker.choice(auth, auth_path, _CLIENT_AUTH, fold_case=False)
    if mode is None:
        return
    context.verify_mode = mode
    ca_path = join_path(_TLS, "client_ca_file")
    ca = section.get("client_ca_file")
    if ca:
        try:
            context.load_verify_locations(base / str(ca))
        except (OSError, ssl.SSLError) as exc:
            checker.add(ca_path, f"cannot load {ca}: {exc}; allowed: a readable PEM CA file")
    elif auth in _VERIFYING:
        checker.add(ca_path, f"missing, required by {auth}; allowed: the CA file to verify with")


def _versions(checker: Checker, section: Mapping[str, object], context: ssl.SSLContext) -> None:
    for name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if section.get(name) is None:
            continue
        at = join_path(_TLS, name)
        version = checker.choice(section[name], at, _TLS_VERSIONS, fold_case=False)
        if version is not None:
            setattr(context, attr, version)


def _users(checker: Checker, section: object) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):  # never echoed: it may hold a password
        checker.add(_USERS, "is not a mapping (value not shown); allowed: user names mapped to "
                            "bcrypt hashes")  # fmt: skip
        return {}
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        text = str(hashed) if hashed is not None else ""
        if not text.startswith(("$2a$", "$2b$", "$2y$")):
            # The value may be a plain password pasted by mistake: never echo it.
            checker.add(join_path(_USERS, str(user)), f"not a bcrypt hash (value not shown); "
                                                      f"{_BCRYPT_HELP}")  # fmt: skip
            continue
        users[str(user)] = text.encode()
    return users


def _headers(checker: Checker, value: object) -> dict[str, str]:
    section = checker.mapping(value, _HTTP, _HTTP_KEYS)
    headers = (section or {}).get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        checker.wrong_type(join_path(_HTTP, "headers"), headers, "a mapping of names to values")
        return {}
    return {str(k): str(v) for k, v in headers.items()}
