"""Ollama's model-name conventions, the vocabulary every stage shares: tags, cloud names, family
matching (include, exclude, `/export?model=`), parameter sizes."""

from __future__ import annotations

import re

_CLOUD_NAME = re.compile(r"(?::cloud|-cloud)$", re.IGNORECASE)
_PARAMETER_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def is_cloud_name(name: str) -> bool:
    """``glm-5.1:cloud`` and ``gpt-oss:120b-cloud`` are served by Ollama Cloud."""
    return bool(_CLOUD_NAME.search(name))


def canonical_name(name: str) -> str:
    """Ollama's display form always carries a tag: ``llama3.2`` -> ``llama3.2:latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def parse_parameter_size(text: str) -> int | None:
    """``"8.2B"`` -> 8_200_000_000; None when it is not a size."""
    match = _PARAMETER_SIZE.match(text)
    if not match:
        return None
    return round(float(match.group(1)) * _SCALE[match.group(2).upper()])


def match_model(query: str, name: str) -> bool:
    """OMeter's match: the exact name, or the family (the name without its tag).

    ``llama3.2`` matches ``llama3.2:latest`` and ``llama3.2:1b``; ``llama3.2:1b`` matches only
    itself. Case-insensitive, as Ollama's own lookup.
    """
    q, n = query.strip().lower(), name.lower()
    if not q:
        return False
    if q == n or canonical_name(q) == n:
        return True
    return ":" not in q.rsplit("/", 1)[-1] and n.rsplit(":", 1)[0] == q
