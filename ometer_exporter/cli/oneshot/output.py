"""What a bench run prints besides the live table: its columns, the exports, the exit code."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TextIO

from ometer_exporter.cli.oneshot.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Options
from ometer_exporter.store.records import ModelKey
from ometer_exporter.views import grades, table
from ometer_exporter.views import rows as export


def write_exports(
    opts: Options,
    rows: Sequence[export.Row],
    stdout: TextIO,
    stderr: TextIO,
    *,
    columns: Sequence[str] | None = None,
) -> int:
    """``--json``/``--csv``: the table's rows in the table's order (chat, then embedding); or,
    with ``columns``, other rows (``export.CAPACITY_COLUMNS``: the sweeps' levels) as given."""
    rows = table.by_kind(rows) if columns is None else list(rows)
    for path, encode in ((opts.json_path, export.to_json), (opts.csv_path, export.to_csv)):
        if path is None:
            continue
        text = encode(rows, columns=columns)
        if path == "-":
            stdout.write(text if text.endswith("\n") else text + "\n")
            stdout.flush()
            continue
        try:
            with open(Path(path).expanduser(), "w", encoding="utf-8", newline="") as handle:
                handle.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            print(f"ometer-exporter bench: cannot write {path}: {exc.strerror}", file=stderr)
            return EXIT_USAGE
        print(f"wrote {len(rows)} row{'' if len(rows) == 1 else 's'} to {path}", file=stderr)
    return EXIT_OK


def layout(opts: Options, *, targets: int, runs: int, history: bool = False) -> table.Layout:
    """Columns of the table; ``history`` adds when each stored result was taken."""
    measured = opts.measure or history
    both = not (opts.ttft or opts.tps)
    return table.Layout(
        ttft=measured and (opts.ttft or both),
        tps=measured and (opts.tps or both),
        runs=runs if opts.verbose and measured else 0,
        target=targets > 1,
        inventory=True,
        load=measured,
        benchmarked_at=history,
    )


def outcome(
    failed: Collection[ModelKey],
    selected: int,
    unreached: Sequence[str],
    stderr: TextIO,
    *,
    missing: str = "not measured",
) -> int:
    """EXIT_FAILED, said on stderr, when a model was ``missing`` (not measured, or its load
    sweep not finished) or a target not reached."""
    if not failed and not unreached:
        return EXIT_OK
    parts = []
    if failed:
        names = ", ".join(f"{grades.plain(m)} ({grades.plain(t)})" for t, m in sorted(failed))
        parts.append(f"{len(failed)} of {selected} model{'' if selected == 1 else 's'} "
                     f"{missing}: {names}")  # fmt: skip
    if unreached:
        parts.append(f"not reached: {', '.join(unreached)}")
    print(f"ometer-exporter bench: {'; '.join(parts)} (exit {EXIT_FAILED})", file=stderr)
    return EXIT_FAILED


def lengths_text(rows: Sequence[export.Row]) -> str:
    """The prompt-length axis (``--prompt-tokens``) under the table: one line per model and
    length, then each model's fitted TTFT per 1k prompt tokens; "" without it."""
    if not rows:
        return ""
    width = max(len(grades.plain(r["model"])) for r in rows)
    lines = [f"{'Prompt length':<{width}}  {'asked':>7}  {'counted':>7}  {'TTFT':>8}  "
             f"{'prefill tok/s':>13}"]  # fmt: skip
    slopes: dict[str, float] = {}
    for r in rows:
        name = grades.plain(r["model"])
        if r["skipped"]:
            lines.append(f"{name:<{width}}  {r['prompt_tokens']:>7}  skipped: {r['skipped']}")
            continue
        ttft = r["time_to_first_token_seconds"]
        prefill = r["prefill_tokens_per_second"]
        lines.append(
            f"{name:<{width}}  {r['prompt_tokens']:>7}  {r['actual_prompt_tokens'] or '—':>7}  "
            f"{grades.format_seconds(ttft) if ttft is not None else '—':>8}  "
            f"{f'{prefill:,.0f}' if prefill is not None else '—':>13}"
            f"{'  (capped)' if r['capped'] else ''}"
        )
        if r["ttft_seconds_per_1k_tokens"] is not None:
            slopes[name] = r["ttft_seconds_per_1k_tokens"]
    lines += [f"{name}: +{grades.format_seconds(s)} TTFT per 1k prompt tokens"
              for name, s in slopes.items()]  # fmt: skip
    return "\n".join(lines) + "\n"
