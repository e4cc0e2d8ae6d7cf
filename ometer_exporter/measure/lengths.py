"""The prompt-length axis: TTFT and prefill rate against prompt size, up to the model's context.

* **Lengths are planned against the context the model runs with**: ``/api/ps``'s
  ``context_length`` (Ollama 0.10+), else :data:`OLD_DEFAULT_CONTEXT` (the smallest default
  older servers had), never above the trained context. A length the context cannot hold is
  skipped with the reason; one that fits only without room for the reply and the chat template
  (:data:`CONTEXT_MARGIN`) is capped, and reported as capped. ``num_ctx`` is never sent: it
  would make Ollama reload the model for everyone.
* **The prompt** is filler from a fixed word list (deterministic, like Ollama's own benchmark),
  led by a nonce so the prefix cache cannot serve it. Its size is calibrated from the server's
  own count: a one-token calibration request gives the model's prompt tokens per word, which
  later runs (and later cycles) reuse.
* **Per length**: the median TTFT, prefill rate (``prompt_eval_count / prompt_eval_duration``)
  and actual prompt tokens over the good runs; over the lengths, the least-squares slope of TTFT
  against prompt tokens, in seconds per 1,000 tokens — the figure to compare models by.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

from ometer_exporter.measure.results import LengthResult, Plan, RunResult

CONTEXT_MARGIN: Final = 32  # tokens left for the chat template and the nonce
OLD_DEFAULT_CONTEXT: Final = 2048  # servers before 0.10 do not say; their smallest default
CALIBRATION_WORDS: Final = 256  # words in the calibration request
# Plain, common English words: one or two tokens each in every tokenizer.
_WORDS: Final = (
    "time person year way day thing man world life hand part child eye woman place work week "
    "case point government company number group problem fact river garden window table story "
    "music paper water money letter doctor mountain question answer evening summer morning"
)
FILLER: Final = tuple(_WORDS.split(" "))


def plan_lengths(
    lengths: Iterable[int], *, context: int, trained: int | None, num_predict: int
) -> list[Plan]:
    """Each length against the context the model runs with (see the module docstring)."""
    limit = min(context, trained) if trained else context
    room = limit - num_predict - CONTEXT_MARGIN
    plans = []
    for n in lengths:
        if n > limit or room < 1:
            why = (
                f"the model runs with a {limit}-token context, which cannot hold {n} prompt "
                "tokens (num_ctx is never sent: it would reload the model)"
            )
            plans.append(Plan(n, None, skipped=why))
        elif n > room:
            plans.append(Plan(n, room, capped=True))
        else:
            plans.append(Plan(n, n))
    return plans


def filler(words: int, nonce: str) -> str:
    """``words`` filler words after the nonce."""
    return f"[{nonce}] " + " ".join(FILLER[i % len(FILLER)] for i in range(max(1, words)))


def words_for(tokens: int, tokens_per_word: float) -> int:
    return max(1, round(tokens / tokens_per_word))


Run = Callable[[str, int, bool], Awaitable[RunResult]]  # (content, num_predict, warmup)
Check = Callable[[RunResult], Awaitable[RunResult]]  # the run, marked contended if it was


async def measure_lengths(
    run: Run,
    check: Check,
    plans: Sequence[Plan],
    *,
    runs: int,
    num_predict: int,
    tokens_per_word: float | None,
) -> tuple[RunResult | None, tuple[LengthResult, ...], float | None]:
    """Calibrate if needed, then ``runs`` runs per planned length, smallest first. Returns the
    calibration request (None when the ratio was known), each length's runs, and the ratio.
    A failed or contended request ends the axis for this cycle."""
    calibration: RunResult | None = None
    if tokens_per_word is None and any(p.tokens for p in plans):
        calibration = await check(await run(filler(CALIBRATION_WORDS, _nonce()), 1, True))
        count = calibration.done.prompt_eval_count
        if not calibration.ok or not count or calibration.discarded:
            return calibration, tuple(LengthResult(p) for p in plans), None
        tokens_per_word = count / CALIBRATION_WORDS
    results: list[LengthResult] = []
    stop = False
    for plan in plans:
        done: list[RunResult] = []
        while plan.tokens is not None and tokens_per_word and not stop and len(done) < runs:
            content = filler(words_for(plan.tokens, tokens_per_word), _nonce())
            result = await check(await run(content, num_predict, False))
            done.append(result)
            stop = not result.ok or "contended" in result.discarded
        results.append(LengthResult(plan, tuple(done)))
    return calibration, tuple(results), tokens_per_word


def _nonce() -> str:
    return secrets.token_hex(4)
