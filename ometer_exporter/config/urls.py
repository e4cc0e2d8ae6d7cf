"""Server addresses in Ollama's own forms (``OLLAMA_HOST``), and which hosts are Ollama Cloud."""

from __future__ import annotations

from ometer_exporter.config.checks import show, show_url

_OLLAMA_PORT = 11434

# ---------------------------------------------------------------------------------------------
# URLs and addresses


def normalize_ollama_host(value: str) -> str:
    """The server URL meant by an ``OLLAMA_HOST`` value, in Ollama's own forms.

    ``"0.0.0.0"`` -> ``"http://127.0.0.1:11434"``, ``"host:8080"`` -> ``"http://host:8080"``,
    ``":11434"`` -> ``"http://127.0.0.1:11434"``, ``"https://host/"`` -> ``"https://host"``.
    Without a scheme, http and port 11434 are assumed; with one, the port is left to the scheme.
    A bind-all address is not a destination: 0.0.0.0 and :: become 127.0.0.1 and [::1].
    Raises ValueError for another scheme or a bad port.
    """
    text = value.strip().strip("\"'")
    scheme, has_scheme, rest = text.partition("://")
    if has_scheme:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"{show_url(text)} has scheme {show(scheme)}; allowed: http or https")
        default_port: int | None = None
    else:
        scheme, rest, default_port = "http", text, _OLLAMA_PORT
    hostport, slash, path = rest.partition("/")
    host, port_text = _split_host_port(hostport)
    if port_text is None:
        port = default_port
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(
            f"{show_url(text)} has port {show(port_text)}; allowed: a port from 1 to 65535"
        )
    host = host.lower()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{scheme}://{netloc}" + (f"/{path}".rstrip("/") if slash else "")


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """ "[::1]:80" -> ("::1", "80"); "::1" -> ("::1", None); "h:80" -> ("h", "80")."""
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        return host, (after[1:] if after.startswith(":") else None)
    if hostport.count(":") > 1:  # a bare IPv6 address
        return hostport, None
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)


def is_cloud_host(host: str) -> bool:
    return host == "ollama.com" or host.endswith(".ollama.com")
