"""``ometer-exporter bench``: one benchmark cycle in the terminal, with OMeter's flags.

It reuses the exporter end to end, so a number means the same here as on ``/metrics``:
configuration (``config.load_settings``), discovery (``TargetWorker.discover``), selection
(``scheduler.wanted``, OMeter's exact-or-family match), measurement (``measure_model``), the
store (an in-memory snapshot, persisted to the same SQLite file as ``serve`` so the next run can
show trends), and the export rows, sorting and encodings (``export``). Only the orchestration
of one cycle lives here: targets concurrently, ``--parallel`` models at once per target.

Environment as OMeter (``ENVIRONMENT_HELP``): ``OLLAMA_LOCAL_BASE_URL`` (else ``OLLAMA_HOST``),
``OLLAMA_CLOUD_BASE_URL``, ``OLLAMA_CLOUD_API_KEY`` (a cloud target exists only with a key, or
when the config file names one), ``OMETER_RUNS``, ``OMETER_PARALLEL``, ``NO_COLOR``; also read
from ``./.env``, ``~/.env`` and ``~/.config/ometer/.env``, the real environment winning.

Exit codes: 0 ok, 1 nothing matched or no target could be reached, 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, TextIO
from urllib.parse import urlsplit

from ometer_exporter import export, table
from ometer_exporter.config import (
    ConfigError,
    Overrides,
    Settings,
    StorageSettings,
    TargetSettings,
    load_settings,
)
from ometer_exporter.measure import DiscardReason, LoopLagProbe
from ometer_exporter.ollama import OllamaError, match_model
from ometer_exporter.scheduler import TargetWorker, target_state, wanted
from ometer_exporter.store import ModelEntry, Snapshot, Store, Stored

EXIT_OK: Final = 0
EXIT_NOTHING: Final = 1  # nothing matched, or no target could be reached
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

DEFAULT_CLOUD_URL: Final = "https://ollama.com"
CLOUD_TARGET: Final = "cloud"
DOTENV_FILES: Final = (".env", "~/.env", "~/.config/ometer/.env")
RUNS_RANGE: Final = (1, 3)
PARALLEL_RANGE: Final = (1, 10)
NUM_PREDICT_RANGE: Final = (8, 100_000)  # as benchmark.num_predict in the config file

ENVIRONMENT_HELP: Final = """\
environment (also read from ./.env, ~/.env, ~/.config/ometer/.env; the real one wins):
  OLLAMA_LOCAL_BASE_URL  the local server (else OLLAMA_HOST, else http://localhost:11434)
  OLLAMA_CLOUD_BASE_URL  the cloud server (default https://ollama.com)
  OLLAMA_CLOUD_API_KEY   a cloud target exists only with a key (or when --config.file names one)
  OMETER_RUNS            runs per model, 1-3
  OMETER_PARALLEL        models at once per target, 1-10
  NO_COLOR               no colours

exit codes: 0 ok, 1 nothing matched or no target reachable, 2 usage or configuration error"""

Key = tuple[str, str]  # (target, model)
log = logging.getLogger(__name__)


class UsageError(Exception):
    """A bad flag, environment value or combination: exit 2 with this message."""


# -- command line ----------------------------------------------------------------------------


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}-{high})")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ometer-exporter bench",
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
    what.add_argument("--runs", type=_int_in(*RUNS_RANGE), metavar="N",
                      help="runs per model, 1-3 (env OMETER_RUNS; default 3)")  # fmt: skip
    what.add_argument("--prompts", metavar="TEXT|FILE",
                      help="a prompt, or a file with one prompt per line")  # fmt: skip
    what.add_argument("--parallel", type=_int_in(*PARALLEL_RANGE), metavar="N",
                      help="models at once per target, 1-10 (default 1)")  # fmt: skip
    what.add_argument("--num-predict", type=_int_in(*NUM_PREDICT_RANGE), metavar="N",
                      help="output tokens per run (default 128)")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--sort", choices=tuple(export.SORT_KEYS),
                     help="sort best first: name A-Z, size/ctx largest, modified newest, "
                     "ttft lowest, tps highest")  # fmt: skip
    out.add_argument("--reverse", action="store_true", help="reverse --sort")
    out.add_argument("--json", nargs="?", const="-", metavar="PATH",
                     help="write JSON (to stdout without PATH)")  # fmt: skip
    out.add_argument("--csv", nargs="?", const="-", metavar="PATH",
                     help="write CSV (to stdout without PATH)")  # fmt: skip
    out.add_argument("--history", action="store_true",
                     help="show stored results instead of measuring")  # fmt: skip
    conf = parser.add_argument_group("configuration (as serve)")
    conf.add_argument("--config.file", dest="config_file", metavar="PATH",
                      help="YAML configuration: its targets replace the environment's")  # fmt: skip
    conf.add_argument("--storage.path", dest="storage_path", metavar="DIR",
                      help="where results are stored (default ./ometer-data)")  # fmt: skip
    return parser


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
    sort: str | None
    reverse: bool
    json_path: str | None
    csv_path: str | None
    history: bool
    color: bool
    settings: Settings
    local_targets: tuple[TargetSettings, ...]
    cloud_targets: tuple[TargetSettings, ...]

    @property
    def to_stdout(self) -> bool:
        return "-" in (self.json_path, self.csv_path)


def main(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.reverse and args.sort is None:
            parser.error("--reverse needs --sort (one of " + ", ".join(export.SORT_KEYS) + ")")
    except SystemExit as exc:  # argparse has printed the problem (or the help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    environ = with_dotenv(env)
    try:
        opts = _options(args, environ, stdout)
    except (UsageError, ConfigError) as exc:
        print(f"ometer-exporter bench: {exc}", file=stderr)
        return EXIT_USAGE

    if opts.history:
        names = None
        if opts.local != opts.cloud:  # one kind asked for: its target names
            chosen = opts.local_targets if opts.local else opts.cloud_targets
            names = frozenset(t.name for t in chosen) or frozenset({CLOUD_TARGET})
        return asyncio.run(_history(opts, names, stdout, stderr))

    local, cloud = opts.local, opts.cloud
    if not local and not cloud:
        if not opts.models and _isatty(stdin):
            picked = _menu(stdin, stderr, has_cloud=bool(opts.cloud_targets))
            if picked is None:
                print("Cancelled.", file=stderr)
                return EXIT_OK
            local, cloud = picked
        else:
            local = cloud = True
    targets = (opts.local_targets if local else ()) + (opts.cloud_targets if cloud else ())
    if not targets:
        print(f"ometer-exporter bench: {_no_target_message(opts, cloud_only=not local)}",
              file=stderr)  # fmt: skip
        return EXIT_USAGE
    if opts.measure and opts.parallel > 1:
        print(f"warning: --parallel {opts.parallel} runs several models at once on each "
              "Ollama: the numbers then include queueing for its slots, not just the model",
              file=stderr)  # fmt: skip
    targets = tuple(_for_bench(t, opts) for t in targets)
    return asyncio.run(_bench(opts, targets, stdout, stderr))


def _options(args: argparse.Namespace, env: Mapping[str, str], stdout: TextIO) -> Options:
    if args.json == "-" and args.csv == "-":
        raise UsageError("--json and --csv cannot both write to stdout; give one a PATH")
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path not in (None, "-"):
            parent = Path(path).expanduser().parent
            if not parent.is_dir():
                raise UsageError(f"{flag} {path!r}: directory {str(parent)!r} does not exist")
    settings = load_settings(
        Overrides(config_file=args.config_file, storage_path=args.storage_path), env
    )
    runs = args.runs if args.runs is not None else _env_int(env, "OMETER_RUNS", RUNS_RANGE)
    parallel = args.parallel
    if parallel is None:
        parallel = _env_int(env, "OMETER_PARALLEL", PARALLEL_RANGE) or 1
    local = tuple(t for t in settings.targets if not t.cloud)
    cloud = tuple(t for t in settings.targets if t.cloud)
    if settings.config_file is None:
        cloud += _env_cloud_target(env, settings)
    no_color = bool(env.get("NO_COLOR"))
    return Options(
        local=args.local,
        cloud=args.cloud,
        models=tuple(m for m in args.model if m.strip()),
        measure=args.ttft or args.tps,
        ttft=args.ttft,
        tps=args.tps,
        verbose=args.verbose,
        runs=runs,
        prompts=read_prompts(args.prompts) if args.prompts is not None else None,
        parallel=parallel,
        num_predict=args.num_predict,
        sort=args.sort,
        reverse=args.reverse,
        json_path=args.json,
        csv_path=args.csv,
        history=args.history,
        color=_isatty(stdout) and not no_color,
        settings=settings,
        local_targets=local,
        cloud_targets=cloud,
    )


def _env_int(env: Mapping[str, str], name: str, bounds: tuple[int, int]) -> int | None:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    low, high = bounds
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"env {name}: {text[:20]!r} is not allowed; allowed: an integer "
                         f"from {low} to {high}")  # fmt: skip
    return int(text)


def _env_cloud_target(env: Mapping[str, str], settings: Settings) -> tuple[TargetSettings, ...]:
    """OMeter's cloud target: only when ``OLLAMA_CLOUD_API_KEY`` holds a key."""
    key = (env.get("OLLAMA_CLOUD_API_KEY") or "").strip()
    if not key:
        return ()
    if not re.fullmatch(r"[\x21-\x7e]+", key):  # the key itself is never echoed
        raise UsageError("env OLLAMA_CLOUD_API_KEY contains spaces or non-ASCII characters "
                         "(value not shown); allowed: one line of printable ASCII")  # fmt: skip
    raw = (env.get("OLLAMA_CLOUD_BASE_URL") or "").strip() or DEFAULT_CLOUD_URL
    parts = urlsplit(raw)
    plain_url = not ("@" in parts.netloc or parts.query or parts.fragment)
    if parts.scheme not in ("http", "https") or not parts.hostname or not plain_url:
        raise UsageError(
            f"env OLLAMA_CLOUD_BASE_URL: {raw[:60]!r} is not allowed; allowed: an http(s) "
            "URL without credentials or query, e.g. https://ollama.com"
        )
    return (
        TargetSettings(
            name=CLOUD_TARGET,
            url=raw.rstrip("/"),
            cloud=True,
            api_key=key,
            api_key_source="env OLLAMA_CLOUD_API_KEY",
            select="all",
            benchmark=settings.benchmark,
        ),
    )


def _no_target_message(opts: Options, *, cloud_only: bool) -> str:
    if cloud_only and opts.settings.config_file is None:
        return "no cloud target: set OLLAMA_CLOUD_API_KEY (or name a cloud target in --config.file)"
    kind = "cloud" if cloud_only else "local"
    return f"{opts.settings.config_file} has no {kind} target"


def _for_bench(target: TargetSettings, opts: Options) -> TargetSettings:
    """bench selects like OMeter: every model (``select: all``), or the ``--model`` ones."""
    bench = target.benchmark
    bench = replace(
        bench,
        runs=opts.runs if opts.runs is not None else bench.runs,
        prompts=opts.prompts if opts.prompts is not None else bench.prompts,
        num_predict=opts.num_predict if opts.num_predict is not None else bench.num_predict,
    )
    if opts.models:  # named models win over the file's include/exclude
        return replace(target, select="all", include=opts.models, exclude=(), benchmark=bench)
    return replace(target, select="all", benchmark=bench)


def read_prompts(value: str) -> tuple[str, ...]:
    """``--prompts``: a file with one prompt per line (blank lines skipped), else the text."""
    path = Path(value).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--prompts {value!r}: cannot read it ({exc})") from None
    else:
        text = value
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise UsageError(f"--prompts {value!r}: no prompt in it (blank lines are skipped)")
    return prompts


# -- .env ------------------------------------------------------------------------------------

_DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments; values optionally in single or double quotes."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.fullmatch(line)
        if match is None:
            continue
        key, value = match[1], match[2].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        out[key] = value
    return out


def with_dotenv(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` over ``./.env`` over ``~/.env`` over ``~/.config/ometer/.env``."""
    home = env.get("HOME") or str(Path.home())
    merged: dict[str, str] = {}
    for name in reversed(DOTENV_FILES):
        path = Path(home, name[2:]) if name.startswith("~/") else Path.cwd() / name
        with contextlib.suppress(OSError, UnicodeDecodeError):
            merged.update(parse_dotenv(path.read_text(encoding="utf-8")))
    merged.update(env)
    return merged


# -- the interactive menu --------------------------------------------------------------------


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


MENU: Final = (
    ("Both local and cloud", (True, True)),
    ("Local", (True, False)),
    ("Cloud", (False, True)),
    ("Cancel", None),
)


def _menu(stdin: TextIO, stderr: TextIO, *, has_cloud: bool) -> tuple[bool, bool] | None:
    """Ask which targets to use; (local, cloud), or None for Cancel (or end of input)."""
    print("Benchmark which models?", file=stderr)
    for number, (label, choice) in enumerate(MENU, 1):
        note = "" if has_cloud or choice is None or choice[0] else "  (no cloud target configured)"
        print(f"  {number}) {label}{note}", file=stderr)
    while True:
        print("Choice [1]: ", end="", file=stderr, flush=True)
        answer = stdin.readline()
        if not answer:  # end of input
            print(file=stderr)
            return None
        text = answer.strip().lower() or "1"
        for number, (label, choice) in enumerate(MENU, 1):
            if text in (str(number), label.lower(), label.split()[0].lower()):
                return choice
        print(f"Please answer 1-{len(MENU)}.", file=stderr)


# -- output ----------------------------------------------------------------------------------

_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Screen:
    """Redraws a block of text in place on a terminal (cursor up, clear to the end).

    When the block no longer fits the terminal it cannot be redrawn in place: a one-line
    progress note stands in for it until the final draw.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines = 0

    def _height(self, text: str) -> int:
        columns = max(1, shutil.get_terminal_size().columns)
        return sum(
            max(1, math.ceil(len(_ANSI_SEQUENCE.sub("", line)) / columns))
            for line in text.split("\n")
        )

    def draw(self, text: str, *, fallback: str = "", final: bool = False) -> None:
        if not final and self._height(text) >= shutil.get_terminal_size().lines:
            text = fallback
        if self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._lines = 0 if final else self._height(text)


class _Progress:
    """Export mode: progress on stderr (one line redrawn on a terminal, else a line each)."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.tty = _isatty(stream)

    def update(self, running: Sequence[Key], finished: Key | None) -> None:
        if finished is not None:
            self.done += 1
        if self.tty:
            now = ", ".join(table.plain(m) for _, m in running[:3]) or "done"
            self.stream.write(f"\r\x1b[K[{self.done}/{self.total}] {now}")
        elif finished is not None:
            target, model = finished
            self.stream.write(f"[{self.done}/{self.total}] {table.plain(model)} ({target})\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.total:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class _Collect(logging.Handler):
    """Holds the exporter's warnings during a run: printed mid-table they would tear it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(table.plain(record.getMessage()))


@contextlib.contextmanager
def _collected_warnings(stderr: TextIO) -> Iterator[None]:
    logger = logging.getLogger("ometer_exporter")
    handler = _Collect()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for message in handler.messages:
            print(f"warning: {message}", file=stderr)


def _write_exports(opts: Options, rows: Sequence[export.Row], stdout: TextIO,
                   stderr: TextIO) -> int:  # fmt: skip
    for path, encode in ((opts.json_path, export.to_json), (opts.csv_path, export.to_csv)):
        if path is None:
            continue
        text = encode(rows)
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


def _layout(opts: Options, *, targets: int, runs: int, history: bool = False) -> table.Layout:
    """Columns of the table; ``history`` adds when each stored result was taken."""
    measured = opts.measure or history
    both = not (opts.ttft or opts.tps)
    return table.Layout(
        ttft=measured and (opts.ttft or both),
        tps=measured and (opts.tps or both),
        runs=runs if opts.verbose and measured else 0,
        target=targets > 1,
        inventory=True,
        benchmarked_at=history,
    )


# -- one cycle -------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the run knows while it goes: what is selected, queued, running."""

    opts: Options
    store: Store
    targets: tuple[TargetSettings, ...]
    selected: list[Key] = field(default_factory=list)
    queued: set[Key] = field(default_factory=set)
    running: list[Key] = field(default_factory=list)
    previous: dict[Key, export.Row] = field(default_factory=dict)

    def rows(self) -> list[export.Row]:
        query = export.Query(
            targets=tuple(t.name for t in self.targets),
            sort=self.opts.sort,
            reverse=self.opts.reverse,
            verbose=self.opts.verbose,
        )
        chosen = set(self.selected)
        return [r for r in export.rows(self.store.snapshot, query)
                if (r["target"], r["model"]) in chosen]  # fmt: skip

    def text(self, layout: table.Layout) -> str:
        return table.render(
            self.rows(),
            layout,
            color=self.opts.color,
            queued=frozenset(self.queued),
            running=frozenset(self.running),
            previous=self.previous,
        )


async def _bench(
    opts: Options, targets: tuple[TargetSettings, ...], stdout: TextIO, stderr: TextIO
) -> int:
    storage = opts.settings.storage
    store = Store(storage.path if opts.measure else None, retention=storage.retention)
    store.set_targets(target_state(t) for t in targets)
    run = _Run(opts, store, targets)
    workers = [TargetWorker(t, store) for t in targets]
    try:
        with _collected_warnings(stderr):
            code = await _cycle(run, workers, storage, stdout, stderr)
    finally:
        for worker in workers:
            await worker.client.aclose()
        await store.close()
    return code


async def _cycle(
    run: _Run, workers: Sequence[TargetWorker], storage: StorageSettings, stdout: TextIO,
    stderr: TextIO,
) -> int:  # fmt: skip
    opts = run.opts
    found = await asyncio.gather(*(_discover(w) for w in workers))
    reached = 0
    for worker, tags in zip(workers, found, strict=True):
        if isinstance(tags, OllamaError):
            t = worker.target
            print(f"ometer-exporter bench: cannot reach {t.name} ({t.url}): {tags}", file=stderr)
            continue
        reached += 1
        run.selected += [(worker.target.name, name) for name in tags
                         if wanted(worker.target, name)]  # fmt: skip
    if not reached:
        return EXIT_NOTHING
    listed = [name for tags in found if not isinstance(tags, OllamaError) for name in tags]
    unmatched = [q for q in opts.models if not any(match_model(q, name) for name in listed)]
    if opts.models and not run.selected:
        where = ", ".join(w.target.name for w in workers)
        print(f"ometer-exporter bench: no model matches {', '.join(map(repr, unmatched))} "
              f"on {where}; `ometer-exporter bench` lists the models", file=stderr)  # fmt: skip
        return EXIT_NOTHING
    for query in unmatched:
        print(f"warning: no model matches {query!r}", file=stderr)

    show_table = not opts.to_stdout
    runs = max(t.benchmark.runs for t in run.targets)
    layout = _layout(opts, targets=len(run.targets), runs=runs)
    if opts.measure:
        run.previous = await _previous(run.targets, storage, run.selected)
        run.queued = set(run.selected)
        live = _Screen(stdout) if show_table and _isatty(stdout) else None
        progress = None if show_table else _Progress(stderr, len(run.selected))

        def changed(finished: Key | None) -> None:
            if live is not None:
                done = len(run.selected) - len(run.queued) - len(run.running)
                note = f"benchmarking… {done}/{len(run.selected)} done"
                # A table taller than the terminal cannot be redrawn: don't even render it.
                tall = len(run.selected) + 4 >= shutil.get_terminal_size().lines
                live.draw(note if tall else run.text(layout), fallback=note)
            if progress is not None:
                progress.update(run.running, finished)

        changed(None)
        probe = LoopLagProbe()
        probe_task = asyncio.create_task(probe.run())
        for worker in workers:
            worker.lag_probe = probe
        try:
            busy = {t for t, _ in run.selected}
            await asyncio.gather(
                *(_measure_target(run, w, changed) for w in workers if w.target.name in busy)
            )
        finally:
            probe_task.cancel()
            if progress is not None:
                progress.close()
        if live is not None:
            live.draw(run.text(layout), final=True)
            show_table = False
    if show_table:
        stdout.write(run.text(layout) + "\n")
        stdout.flush()
    return _write_exports(opts, run.rows(), stdout, stderr)


async def _discover(worker: TargetWorker) -> list[str] | OllamaError:
    try:
        return [tag.name for tag in await worker.discover()]
    except OllamaError as exc:
        return exc


async def _measure_target(
    run: _Run, worker: TargetWorker, changed: Callable[[Key | None], None]
) -> None:
    target = worker.target
    slots = asyncio.Semaphore(run.opts.parallel)
    limited: list[str] = []  # the cloud's usage window is spent: stop asking

    async def one(key: Key) -> None:
        async with slots:
            run.queued.discard(key)
            if limited:
                return
            run.running.append(key)
            changed(None)
            try:
                result = await worker.benchmark(key[1], allow_load=True)
                if result is not None:
                    if result.usage_limited is not None:
                        limited.append(result.usage_limited.error or "usage limit")
                    if not result.success and result.first_error is None:
                        _explain_discarded(target.name, key[1], result.discarded)
            finally:
                run.running.remove(key)
            changed(key)

    await asyncio.gather(*(one(key) for key in run.selected if key[0] == target.name))
    if limited:
        log.warning("%s: usage limit reached (%s); the models after it were not measured",
                    target.name, limited[0])  # fmt: skip


_DISCARDED_WHY: Final = {
    "loop_lag": "the machine was too busy to time it (event loop stalled)",
    "reloaded": "the model was reloaded during the run",
    "short": "fewer than 8 output tokens",
}


def _explain_discarded(target: str, model: str, discarded: Mapping[DiscardReason, int]) -> None:
    """A model without a value and without an error: say why its runs were left out."""
    why = "; ".join(f"{n} run{'' if n == 1 else 's'}: {_DISCARDED_WHY.get(reason, reason)}"
                    for reason, n in discarded.items())  # fmt: skip
    log.warning("%s (%s): no run was counted (%s)", table.plain(model), target, why or "none")


async def _previous(
    targets: Sequence[TargetSettings], storage: StorageSettings, keys: Sequence[Key]
) -> dict[Key, export.Row]:
    """The latest stored result of each model before this run: what the arrows compare with."""
    store = Store(storage.path, retention=storage.retention)
    try:
        store.set_targets(target_state(t) for t in targets)
        await store.restore()
        wanted_keys = set(keys)
        return {
            key: export.row(entry)
            for key, entry in store.snapshot.models.items()
            if key in wanted_keys and entry.benchmark is not None
        }
    finally:
        await store.close()


# -- --history -------------------------------------------------------------------------------


async def _history(
    opts: Options, names: frozenset[str] | None, stdout: TextIO, stderr: TextIO
) -> int:
    storage = opts.settings.storage
    stored: list[Stored] = []
    if await asyncio.to_thread(Path(storage.path).is_dir):  # reading must not create a store
        store = Store(storage.path, retention=storage.retention)
        try:
            stored = await store.history()  # oldest first
        finally:
            await store.close()
    picked = [
        (target, model, bench, inventory)
        for target, model, bench, inventory in stored
        if (names is None or target in names)
        and (not opts.models or any(match_model(q, model) for q in opts.models))
    ]
    if not picked:
        what = f" matching {', '.join(map(repr, opts.models))}" if opts.models else ""
        print(f"no stored results{what} in {storage.path}", file=stderr)
        return EXIT_NOTHING if opts.models else EXIT_OK
    latest: dict[Key, ModelEntry] = {}
    previous: dict[Key, export.Row] = {}
    for target, model, bench, inventory in picked:
        if (target, model) in latest:
            previous[(target, model)] = export.row(latest[(target, model)])
        latest[(target, model)] = ModelEntry(target, model, inventory=inventory, benchmark=bench)
    if opts.verbose:  # every stored result, oldest first within each model
        rows = export.sort_rows(
            [export.row(ModelEntry(t, m, inventory=i, benchmark=b), verbose=True)
             for t, m, b, i in picked],
            opts.sort,
            reverse=opts.reverse,
        )  # fmt: skip
    else:
        snapshot = Snapshot(0, MappingProxyType({}), MappingProxyType(latest))
        rows = export.rows(snapshot, export.Query(sort=opts.sort, reverse=opts.reverse))
    if not opts.to_stdout:
        runs = max(len(b.run_ttft) for _, _, b, _ in picked)
        layout = _layout(opts, targets=len({t for t, _ in latest}), runs=runs, history=True)
        text = table.render(rows, layout, color=opts.color,
                            previous=None if opts.verbose else previous)  # fmt: skip
        stdout.write(text + "\n")
        stdout.flush()
    return _write_exports(opts, rows, stdout, stderr)
