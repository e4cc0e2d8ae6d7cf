"""Deterministic stand-ins for tokenisation, generated text and embeddings."""

from __future__ import annotations

import functools
import hashlib
import math
import random
import struct
from collections.abc import Sequence

from .wire import Float32, RawJSON, go_json

_CONTENT = (  # noqa: SIM905 - prose reads better than a word list
    "The sky looks blue because air molecules scatter short wavelengths of sunlight far more "
    "strongly than long ones , an effect called Rayleigh scattering . At sunset the light "
    "crosses more air , so the blue is scattered away and reds and oranges remain ."
).split()

_THINKING = (  # noqa: SIM905
    "Okay , the user asks why the sky is blue . I should mention Rayleigh scattering , the "
    "wavelength dependence , and maybe sunsets . Keep it to a few clear sentences ."
).split()


def _piece(words: Sequence[str], i: int) -> str:
    w = words[i % len(words)]
    return w if i == 0 else " " + w


def content_piece(i: int) -> str:
    """The i-th content token's text (never empty)."""
    return _piece(_CONTENT, i)


def thinking_piece(i: int) -> str:
    """The i-th thinking token's text (never empty)."""
    return _piece(_THINKING, i)


def words(text: str) -> list[str]:
    """One token per whitespace-separated word: deterministic and good enough for timing."""
    return text.split()


def chat_prompt_tokens(messages: Sequence[tuple[str, str]]) -> list[str]:
    """A chat template's token stream: a role header and an end marker around each message's
    words, then the assistant header (so every message costs 2 template tokens, plus 1)."""
    out: list[str] = []
    for role, content in messages:
        out.append(f"<|{role}|>")
        out.extend(words(content))
        out.append("<|end|>")
    out.append("<|assistant|>")
    return out


def token_id(tok: str) -> int:
    """A stable fake vocabulary id (for /api/generate ``context``)."""
    return int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=4).digest()) % 128_000


@functools.lru_cache(maxsize=4096)
def embedding_json(model: str, text: str, length: int, dimensions: int) -> RawJSON:
    """An L2-normalised float32 vector, deterministic in (model, text), encoded as Go would."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\x00{text}".encode()).digest()[:8])
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(length)]
    if 0 < dimensions < length:
        vec = vec[:dimensions]
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    f32 = struct.unpack(f"<{len(vec)}f", struct.pack(f"<{len(vec)}f", *(x / norm for x in vec)))
    return RawJSON("[" + ",".join(map(_f32_text, f32)) + "]")


_F32 = struct.Struct("<f")


def _f32_text(f: float) -> str:
    """Go's text for a float32 ``f`` (already exactly representable): the shortest decimal
    that reads back as ``f``. A fast path for the usual 7–9 digit components of a normalised
    vector; anything else goes through the general encoder."""
    if not 1e-4 <= abs(f) < 1.0:  # Python's "g" would switch to exponent form
        return go_json(Float32(f))
    shortest = f"{f:.9g}"  # 9 digits always round-trip a float32
    for digits in (8, 7, 6, 5, 4, 3, 2, 1):  # round-tripping is monotone in the digit count
        s = f"{f:.{digits}g}"
        if _F32.unpack(_F32.pack(float(s)))[0] != f:
            break
        shortest = s
    return shortest
