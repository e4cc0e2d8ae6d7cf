"""The one-shot's flags and environment (OMeter's), checked into :class:`Options`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TextIO

from ometer_exporter.cli.flags import Elsewhere, Parser
from ometer_exporter.cli.oneshot.screen import isatty
from ometer_exporter.config.api_keys import checked_key
from ometer_exporter.config.benchmark import parse_lengths
from ometer_exporter.config.capacity import parse_levels
from ometer_exporter.config.checks import Checker, ConfigError, format_duration, show_path
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import (
    CONCURRENCY_RANGE,
    NUM_PREDICT_RANGE,
    ONESHOT_RUNS_RANGE,
    PARALLEL_RANGE,
    REQUESTS_PER_LEVEL_RANGE,
    CapacitySettings,
    IntRange,
    Overrides,
    Settings,
    TargetSettings,
)
from ometer_exporter.views import query as queries

EXIT_OK: Final = 0
EXIT_NOTHING: Final = 1  # nothing matched, or no target could be reached
EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 3  # some models were not measured, or some target could not be reached
EXIT_INTERRUPTED: Final = 130

DEFAULT_CLOUD_URL: Final = "https://ollama.com"
CLOUD_TARGET: Final = "cloud"


def _span(bounds: IntRange) -> str:
    return f"{bounds.low}-{bounds.high}"


ENVIRONMENT_HELP: Final = f"""\
environment (also read from ./.env, ~/.env, ~/.config/ometer/.env; the real one wins):
  OLLAMA_LOCAL_BASE_URL  the local server (else OLLAMA_HOST, else http://localhost:11434)
  OLLAMA_CLOUD_BASE_URL  the cloud server (default https://ollama.com)
  OLLAMA_CLOUD_API_KEY   a cloud target exists only with a key (or when --config.file names one)
  OMETER_RUNS            runs per model, {_span(ONESHOT_RUNS_RANGE)}
  OMETER_PARALLEL        models at once per target, {_span(PARALLEL_RANGE)}
  NO_COLOR               no colours

exit codes:
  0  every model was measured (or listed, or swept)
  1  nothing matched (or nothing to sweep), or no target could be reached
  2  usage or configuration error
  3  some models failed (or were not measured, or their load sweep was aborted or
     refused), or some target could not be reached; the others are shown"""

log = logging.getLogger(__name__)


class UsageError(ConfigError):
    """Bad flags, environment values or combinations: exit 2 listing every problem."""

    def __init__(
        self, problems: Sequence[str], source: str | None = "the command line and environment"
    ) -> None:
        super().__init__(problems, source)


# -- command line ----------------------------------------------------------------------------

# The integer flags, checked after parsing so that every bad one is named at once.
_INT_FLAGS: Final = (
    ("--runs", "runs", ONESHOT_RUNS_RANGE),
    ("--parallel", "parallel", PARALLEL_RANGE),
    ("--num-predict", "num_predict", NUM_PREDICT_RANGE),
)


def _serve_parser() -> argparse.ArgumentParser:
    from ometer_exporter.cli.main import build_parser as serve_parser

    return serve_parser()


class _Parser(Parser):
    """An argument parser that checks the integer flags with the configuration's checker."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        checker = Checker()
        for flag, dest, bounds in _INT_FLAGS:
            text = getattr(parsed, dest, None)
            if isinstance(text, str):
                setattr(parsed, dest, checker.integer_text(text, f"flag {flag}", bounds))
        if checker.problems:
            self.error("; ".join(checker.problems))
        return parsed, rest


def _add_sweep_flags(parser: argparse.ArgumentParser) -> None:
    """``--capacity`` and the keys of ``benchmark.capacity`` a sweep from the terminal changes
    (the configuration's values are the defaults; these are the built-in ones)."""
    default = CapacitySettings()
    sweep = parser.add_argument_group(
        "load sweep (defaults: benchmark.capacity of the configuration)",
        "--capacity runs a load sweep instead of the regular runs: its first level is one user "
        "alone,\nso the runs would measure the same again (and load each model twice). The "
        "share of a level's\nrequests that must meet both SLOs is benchmark.capacity.slo."
        f"attainment (default {default.slo.attainment * 100:g} %).",
    )
    sweep.add_argument("--capacity", action="store_true",
                       help="sweep each selected local chat model: levels of concurrent users, "
                       "each level's TTFT, TPOT, tokens/s and goodput, the most users within "
                       "the SLO")  # fmt: skip
    sweep.add_argument("--concurrency", metavar="N,N…",
                       help=f"the levels, distinct, each {_span(CONCURRENCY_RANGE)} (default "
                       f"{','.join(map(str, default.concurrency))})")  # fmt: skip
    sweep.add_argument("--slo-ttft", metavar="DURATION",
                       help="time to first token a request must meet, e.g. 500ms (default "
                       f"{format_duration(default.slo.ttft)})")  # fmt: skip
    sweep.add_argument("--slo-tpot", metavar="DURATION",
                       help="time per output token after the first, e.g. 25ms (default "
                       f"{format_duration(default.slo.tpot)})")  # fmt: skip
    sweep.add_argument("--requests-per-level", metavar="N",
                       help="requests completed per level, at least the level itself, "
                       f"{_span(REQUESTS_PER_LEVEL_RANGE)} (default "
                       f"{default.requests_per_level})")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ometer-exporter bench",
        elsewhere=Elsewhere("ometer-exporter", _serve_parser),
        description="One benchmark cycle in the terminal (OMeter mode). Without --ttft or\n"
        "--tps it lists the models; with them it measures them and fills the table in as\n"
        "each model finishes.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_argument_group("which models")
    which.add_argument("--local", action="store_true", help="local targets only")
    which.add_argument("--cloud", action="store_true", help="cloud targets only")
    which.add_argument("--model", nargs="+", action="extend", default=[], metavar="NAME",
                       help="exact name or family (llama3.2 matches llama3.2:1b)")  # fmt: skip
    what = parser.add_argument_group("what to measure")
    what.add_argument("--ttft", action="store_true", help="measure and show time to first token")
    what.add_argument("--tps", action="store_true", help="measure and show tokens per second")
    what.add_argument("-v", "--verbose", action="store_true",
                      help="per-run columns (with --history: every stored result)")  # fmt: skip
    what.add_argument("--runs", metavar="N", help=f"runs per model, {_span(ONESHOT_RUNS_RANGE)} "
                      "(env OMETER_RUNS; default 3)")  # fmt: skip
    what.add_argument("--prompts", metavar="TEXT|FILE",
                      help="a prompt, or a file with one prompt per line")  # fmt: skip
    what.add_argument("--parallel", metavar="N", help="models at once per target, "
                      f"{_span(PARALLEL_RANGE)} (default 1)")  # fmt: skip
    what.add_argument("--num-predict", metavar="N",
                      help="output tokens per run, or per request of a load sweep "
                      "(default 128)")  # fmt: skip
    what.add_argument("--prompt-tokens", metavar="N,N…",
                      help="also measure TTFT and prefill at these prompt lengths in tokens, "
                      "e.g. 512,4096 (capped to the context each model runs with)")  # fmt: skip
    _add_sweep_flags(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--sort", choices=tuple(queries.SORT_KEYS),
                     help="sort best first: name A-Z, size/ctx largest, modified newest, "
                     "ttft lowest, tps highest, users (within the load sweep's SLO) "
                     "most")  # fmt: skip
    out.add_argument("--reverse", action="store_true", help="reverse --sort")
    out.add_argument("--json", nargs="?", const="-", metavar="PATH",
                     help="write JSON (to stdout without PATH); with --capacity a row per "
                     "model and level, as /export?view=capacity")  # fmt: skip
    out.add_argument("--csv", nargs="?", const="-", metavar="PATH",
                     help="write CSV (to stdout without PATH), the same rows")  # fmt: skip
    out.add_argument("--history", action="store_true",
                     help="show stored results instead of measuring (with --capacity: the "
                     "latest stored load sweeps)")  # fmt: skip
    conf = parser.add_argument_group("configuration (as serve)")
    conf.add_argument("--config.file", dest="config_file", metavar="PATH",
                      help="YAML configuration: its targets replace the environment's")  # fmt: skip
    conf.add_argument("--storage.path", dest="storage_path", metavar="DIR",
                      help="where results are stored (default ./ometer-data)")  # fmt: skip
    return parser


@dataclass(frozen=True, slots=True)
class CapacityFlags:
    """``--capacity`` and the flags that change its sweep (None: the configuration's)."""

    concurrency: tuple[int, ...] | None = None
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    requests_per_level: int | None = None

    def applied(self, base: CapacitySettings, num_predict: int | None) -> CapacitySettings:
        """``base`` (a target's ``benchmark.capacity``) with the flags given set."""
        slo = replace(
            base.slo,
            ttft=base.slo.ttft if self.slo_ttft is None else self.slo_ttft,
            tpot=base.slo.tpot if self.slo_tpot is None else self.slo_tpot,
        )
        return replace(
            base,
            concurrency=self.concurrency or base.concurrency,
            requests_per_level=self.requests_per_level or base.requests_per_level,
            num_predict=num_predict or base.num_predict,
            slo=slo,
        )


@dataclass(frozen=True, slots=True)
class Options:
    """Validated flags and environment of one bench invocation."""

    local: bool
    cloud: bool
    models: tuple[str, ...]
    measure: bool
    ttft: bool
    tps: bool
    verbose: bool
    runs: int | None
    prompts: tuple[str, ...] | None
    parallel: int
    num_predict: int | None
    prompt_tokens: tuple[int, ...] | None
    sort: str | None
    reverse: bool
    json_path: str | None
    csv_path: str | None
    history: bool
    capacity: CapacityFlags | None  # --capacity: load sweeps instead of the regular runs
    color: bool
    settings: Settings
    local_targets: tuple[TargetSettings, ...]
    cloud_targets: tuple[TargetSettings, ...]

    @property
    def to_stdout(self) -> bool:
        return "-" in (self.json_path, self.csv_path)


def parse_options(args: argparse.Namespace, env: Mapping[str, str], stdout: TextIO) -> Options:
    """Check the flags and environment (every problem at once), then load the configuration."""
    checker = Checker()
    _check_outputs(checker, args.json, args.csv)
    prompts = _prompts(checker, args.prompts) if args.prompts is not None else None
    runs = args.runs
    if runs is None:
        runs = _env_int(checker, env, "OMETER_RUNS", ONESHOT_RUNS_RANGE)
    parallel = args.parallel
    if parallel is None:
        parallel = _env_int(checker, env, "OMETER_PARALLEL", PARALLEL_RANGE) or 1
    lengths = None
    if args.prompt_tokens is not None:
        items: list[object] = [_int_or_text(t) for t in args.prompt_tokens.split(",") if t.strip()]
        lengths = parse_lengths(checker, items, "flag --prompt-tokens")
    capacity = _capacity_flags(checker, args)
    if checker.problems:
        raise UsageError(checker.problems)
    # --history reads the store only: it sends nothing, so it needs no key (nor reads one).
    settings = load_settings(
        Overrides(config_file=args.config_file, storage_path=args.storage_path),
        env,
        api_keys=not args.history,
    )
    local = tuple(t for t in settings.targets if not t.cloud)
    cloud = tuple(t for t in settings.targets if t.cloud)
    if settings.config_file is None and not args.history:
        cloud += _env_cloud_target(checker, env, settings)
    if checker.problems:
        raise UsageError(checker.problems)
    return Options(
        local=args.local,
        cloud=args.cloud,
        models=tuple(m for m in args.model if m.strip()),
        measure=args.ttft or args.tps,
        ttft=args.ttft,
        tps=args.tps,
        verbose=args.verbose,
        runs=runs,
        prompts=prompts,
        parallel=parallel,
        num_predict=args.num_predict,
        prompt_tokens=lengths,
        sort=args.sort,
        reverse=args.reverse,
        json_path=args.json,
        csv_path=args.csv,
        history=args.history,
        capacity=capacity,
        color=isatty(stdout) and not env.get("NO_COLOR"),
        settings=settings,
        local_targets=local,
        cloud_targets=cloud,
    )


def _int_or_text(text: str) -> object:
    """A flag's list item: an integer when it reads as one (the checker names it otherwise)."""
    text = text.strip()
    return int(text) if text.lstrip("+-").isdigit() else text


# Flags a load sweep has no use for: it measures TTFT and TPOT at every level (the first is one
# user alone), models one at a time, and shows a curve per model, not a table to sort.
_NOT_WITH_CAPACITY: Final = (
    ("--ttft", "ttft"), ("--tps", "tps"), ("--runs", "runs"), ("--parallel", "parallel"),
    ("--prompt-tokens", "prompt_tokens"), ("--verbose", "verbose"), ("--sort", "sort"),
)  # fmt: skip
_SWEEP_FLAGS: Final = (
    ("--concurrency", "concurrency"), ("--slo-ttft", "slo_ttft"), ("--slo-tpot", "slo_tpot"),
    ("--requests-per-level", "requests_per_level"),
)  # fmt: skip


def _capacity_flags(checker: Checker, args: argparse.Namespace) -> CapacityFlags | None:
    """``--capacity`` and its flags, checked (None without it: then its flags are problems)."""
    if not args.capacity:
        for flag, dest in _SWEEP_FLAGS:
            if getattr(args, dest) is not None:
                checker.add(f"flag {flag}", "needs --capacity (it changes the load sweep)")
        return None
    for flag, dest in _NOT_WITH_CAPACITY:
        if getattr(args, dest) not in (None, False):
            checker.add(
                f"flag {flag}",
                "not with --capacity: a load sweep measures TTFT and TPOT at every level, one "
                "model at a time; run it without --capacity",
            )
    for flag, dest in _SWEEP_FLAGS if args.history else ():
        if getattr(args, dest) is not None:
            checker.add(f"flag {flag}", "not with --history: it shows the stored sweeps, runs none")
    levels = None
    if args.concurrency is not None:
        items: list[object] = [_int_or_text(t) for t in args.concurrency.split(",") if t.strip()]
        levels = parse_levels(checker, items, "flag --concurrency")
    slo = [
        checker.duration(text, f"flag {flag}") if text is not None else None
        for flag, text in (("--slo-ttft", args.slo_ttft), ("--slo-tpot", args.slo_tpot))
    ]
    requests = args.requests_per_level
    if requests is not None:
        requests = checker.integer_text(requests, "flag --requests-per-level",
                                        REQUESTS_PER_LEVEL_RANGE)  # fmt: skip
    return CapacityFlags(levels, slo[0], slo[1], requests)


def _check_outputs(checker: Checker, json_path: str | None, csv_path: str | None) -> None:
    if json_path == "-" and csv_path == "-":
        checker.add("flags --json, --csv", "both write to stdout; allowed: a PATH for one of them")
    for flag, path in (("--json", json_path), ("--csv", csv_path)):
        if path not in (None, "-"):
            parent = Path(path).expanduser().parent
            if not parent.is_dir():
                checker.add(
                    f"flag {flag}",
                    f"the directory {show_path(str(parent))} of {show_path(path)} does not "
                    "exist; allowed: a file in an existing directory, or no PATH for stdout",
                )


def _env_int(checker: Checker, env: Mapping[str, str], name: str, bounds: IntRange) -> int | None:
    text = env.get(name) or ""
    return checker.integer_text(text, f"env {name}", bounds) if text.strip() else None


def _env_cloud_target(
    checker: Checker, env: Mapping[str, str], settings: Settings
) -> tuple[TargetSettings, ...]:
    """OMeter's cloud target: only when ``OLLAMA_CLOUD_API_KEY`` holds a key."""
    raw_key = env.get("OLLAMA_CLOUD_API_KEY") or ""
    if not raw_key.strip():
        return ()
    variable = "env OLLAMA_CLOUD_API_KEY"
    key = checked_key(checker, variable, raw_key, "environment variable 'OLLAMA_CLOUD_API_KEY'")
    raw_url = (env.get("OLLAMA_CLOUD_BASE_URL") or "").strip() or DEFAULT_CLOUD_URL
    checked = checker.url(raw_url, "env OLLAMA_CLOUD_BASE_URL")
    if key is None or checked is None:
        return ()
    return (
        TargetSettings(
            name=CLOUD_TARGET,
            url=checked[0],
            cloud=True,
            api_key=key,
            api_key_source=variable,
            select="all",
            benchmark=settings.benchmark,
        ),
    )


def no_target_message(opts: Options, *, cloud_only: bool) -> str:
    if cloud_only and opts.settings.config_file is None:
        return "no cloud target: set OLLAMA_CLOUD_API_KEY (or name a cloud target in --config.file)"
    kind = "cloud" if cloud_only else "local"
    return f"{opts.settings.config_file} has no {kind} target"


def for_oneshot(target: TargetSettings, opts: Options) -> TargetSettings:
    """bench selects like OMeter: every model (``select: all``), or the ``--model`` ones."""
    bench = target.benchmark
    bench = replace(
        bench,
        runs=opts.runs if opts.runs is not None else bench.runs,
        prompts=opts.prompts if opts.prompts is not None else bench.prompts,
        num_predict=opts.num_predict if opts.num_predict is not None else bench.num_predict,
        prompt_tokens=opts.prompt_tokens if opts.prompt_tokens is not None else bench.prompt_tokens,
    )
    if opts.capacity is not None:
        bench = replace(bench, capacity=opts.capacity.applied(bench.capacity, opts.num_predict))
    if opts.models:  # named models win over the file's include/exclude
        return replace(target, select="all", include=opts.models, exclude=(), benchmark=bench)
    return replace(target, select="all", benchmark=bench)


def read_prompts(value: str) -> tuple[str, ...]:
    """``--prompts``: a file with one prompt per line (blank lines skipped), else the text."""
    checker = Checker()
    prompts = _prompts(checker, value)
    if prompts is None:
        raise UsageError(checker.problems)
    return prompts


def _prompts(checker: Checker, value: str) -> tuple[str, ...] | None:
    path = Path(value).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            checker.add("flag --prompts", f"cannot read {show_path(value)} ({exc}); allowed: a "
                                          "readable UTF-8 file, one prompt per line")  # fmt: skip
            return None
    else:
        text = value
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        checker.add(
            "flag --prompts",
            f"no prompt in {show_path(value)} (blank lines are skipped); allowed: a prompt, "
            "or a file of prompts",
        )
        return None
    return prompts
