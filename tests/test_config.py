"""Configuration loading: defaults, files, environment, flags, and one file per failure mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from ometer_exporter.config.checks import ConfigError, parse_duration
from ometer_exporter.config.describe import describe
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import (
    DEFAULT_PROMPTS,
    BenchmarkSettings,
    DisplaySettings,
    Overrides,
    Settings,
    StorageSettings,
    TargetSettings,
    Timeouts,
)
from ometer_exporter.config.urls import normalize_ollama_host

CONFFILES = Path(__file__).parent / "conffiles"
EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"
SECRET = "sk-OMETER-TEST-SECRET-7f3a9c2e"


def load(path: Path | str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(Overrides(config_file=str(path)), env or {})


def problems(path: Path | str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(path, env)
    return caught.value


def local_target(url: str) -> TargetSettings:
    return TargetSettings(name="local", url=url, cloud=False, benchmark=BenchmarkSettings())


# --- no file --------------------------------------------------------------------------------


def test_no_file_gives_one_local_target_with_defaults() -> None:
    settings = load_settings(Overrides(), {})
    assert settings == Settings(
        storage=StorageSettings(),
        benchmark=BenchmarkSettings(),
        targets=(local_target("http://localhost:11434"),),
    )
    assert settings.targets[0].select == "loaded"
    assert settings.listen_address == ":9877"
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert settings.storage == StorageSettings("./ometer-data", 7 * 24 * 3600.0)


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"OLLAMA_HOST": "0.0.0.0"}, "http://127.0.0.1:11434"),
        ({"OLLAMA_HOST": "gpu-box:8080"}, "http://gpu-box:8080"),
        ({"OLLAMA_HOST": "https://ollama.internal/"}, "https://ollama.internal"),
        ({"OLLAMA_HOST": "  "}, "http://localhost:11434"),  # empty counts as unset
        ({"OLLAMA_LOCAL_BASE_URL": "http://a:1", "OLLAMA_HOST": "b:2"}, "http://a:1"),
        ({"OLLAMA_LOCAL_BASE_URL": "", "OLLAMA_HOST": "b:2"}, "http://b:2"),
    ],
)
def test_no_file_local_url_from_environment(env: dict[str, str], url: str) -> None:
    assert load_settings(Overrides(), env).targets == (local_target(url),)


def test_file_without_targets_gets_the_default_local_target() -> None:
    settings = load(CONFFILES / "no_targets.yaml", {"OLLAMA_HOST": ":11500"})
    assert [(t.name, t.url, t.select) for t in settings.targets] == [
        ("local", "http://127.0.0.1:11500", "loaded")
    ]
    assert settings.targets[0].benchmark.runs == 5  # the file's defaults apply to it


def test_empty_file_means_all_defaults() -> None:
    assert load(CONFFILES / "empty.yaml") == Settings(
        storage=StorageSettings(),
        benchmark=BenchmarkSettings(),
        targets=(local_target("http://localhost:11434"),),
        config_file=str(CONFFILES / "empty.yaml"),
    )


def test_bad_ollama_host_is_a_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(Overrides(), {"OLLAMA_HOST": "ftp://gpu-box"})
    assert caught.value.problems == [
        "env OLLAMA_HOST: 'ftp://gpu-box' has scheme 'ftp'; allowed: http or https"
    ]


def test_keys_in_the_environment_never_add_a_cloud_target() -> None:
    env = {"OLLAMA_API_KEY": SECRET, "OLLAMA_CLOUD_API_KEY": SECRET}
    settings = load_settings(Overrides(), env)
    assert [(t.name, t.cloud, t.api_key) for t in settings.targets] == [("local", False, None)]


@pytest.mark.parametrize(
    "overrides",
    [Overrides(config_file="/nonexistent/ometer.yaml"), Overrides()],
)
def test_a_named_file_that_does_not_exist_is_an_error(overrides: Overrides) -> None:
    env = {"OMETER_CONFIG_FILE": "/nonexistent/ometer.yaml"}
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides, env)
    [problem] = caught.value.problems
    assert "'/nonexistent/ometer.yaml'" in problem
    assert "No such file or directory" in problem
    origin = "flag --config.file" if overrides.config_file else "env OMETER_CONFIG_FILE"
    assert problem.startswith(origin)


# --- the documented example -----------------------------------------------------------------


def test_example_file_equals_the_defaults() -> None:
    settings = load(EXAMPLE)
    assert settings == Settings(
        storage=StorageSettings(),
        benchmark=BenchmarkSettings(),
        targets=(local_target("http://localhost:11434"),),
        config_file=str(EXAMPLE),
    )
    assert settings.benchmark.prompts == DEFAULT_PROMPTS


def test_example_cloud_target_is_valid_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    head, block = text.split("  # - name: cloud", 1)
    uncommented = "  - name: cloud" + block.replace("\n  # ", "\n  ")
    config = tmp_path / "config.yaml"
    config.write_text(head + uncommented)
    cloud = load(config, {"OLLAMA_API_KEY": SECRET}).targets[1]
    assert (cloud.url, cloud.cloud, cloud.select, cloud.include) == (
        "https://ollama.com",
        True,
        "all",
        ("gpt-oss:120b",),
    )
    assert (cloud.api_key, cloud.api_key_source) == (SECRET, "env OLLAMA_API_KEY")
    assert cloud.benchmark.interval == 3600.0
    assert cloud.benchmark.timeouts == Timeouts(total=900.0)


def test_example_openai_target_is_valid_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    head, rest = text.split("  # - name: llamacpp", 1)
    block, _tail = rest.split("\n\n", 1)
    config = tmp_path / "config.yaml"
    config.write_text(head + "  - name: llamacpp" + block.replace("\n  # ", "\n  ") + "\n")
    target = load(config).targets[1]
    assert (target.url, target.api, target.select) == ("http://localhost:8080/v1", "openai", "all")


# --- one file per failure mode --------------------------------------------------------------

# file -> [(substrings of one problem)]: the key path, the offending value, what is allowed.
FAILURES: dict[str, list[tuple[str, ...]]] = {
    "unknown_top_key.yaml": [
        ("benchmarks: unknown key", "did you mean 'benchmark'?", "storage, benchmark, targets")
    ],
    "unknown_target_key.yaml": [("targets[0].intervall: unknown key", "'interval'", "api_key_env")],
    "unknown_timeout_key.yaml": [
        ("benchmark.timeouts.read: unknown key", "connect, first_byte, idle, total")
    ],
    "api_key_in_file.yaml": [("targets[0].api_key: unknown key", "api_key_env or api_key_file")],
    "bad_url_scheme.yaml": [
        ("targets[0].url:", "'ftp://localhost:11434'", "scheme 'ftp'", "http or https")
    ],
    "url_no_scheme.yaml": [("targets[0].url:", "'gpu-box:11434'", "no scheme", "http://")],
    "url_with_credentials.yaml": [
        ("targets[0].url:", "'https://***@ollama.example.com'", "credentials", "api_key_env")
    ],
    "url_no_host.yaml": [("targets[0].url:", "'http://'", "no host", "http(s)://host")],
    "url_with_query.yaml": [
        ("targets[0].url:", "'http://localhost:11434/?***'", "query", "http(s)://host")
    ],
    "bad_duration.yaml": [("benchmark.interval:", "'10 minutes'", "ms, s, m, h", "1h30m")],
    "zero_duration.yaml": [("storage.retention:", "'0s'", "> 0")],
    "bad_jitter.yaml": [("benchmark.jitter:", "'60%'", "0% to 50%", "0 to 0.5")],
    "runs_zero.yaml": [("benchmark.runs:", "0 is out of range", "from 1 to 100")],
    "max_models_zero.yaml": [
        ("targets[0].max_models:", "0 is out of range", "from 1 to 100000", "left out")
    ],
    "num_predict_short.yaml": [("benchmark.num_predict:", "4 is", "from 8 to 100000", "tokens/s")],
    "bad_temperature.yaml": [("benchmark.temperature:", "3 is out of range", "from 0 to 2")],
    "bad_seed.yaml": [("benchmark.seed:", "4.5", "a 64-bit integer")],
    "bad_think.yaml": [("benchmark.think:", "'maybe'", "auto | true | false")],
    "bad_select.yaml": [("targets[0].select:", "'some'", "loaded | all")],
    "cloud_select_loaded.yaml": [("targets[0].select:", "'loaded' (the default)", "cloud", "all")],
    "openai_bad.yaml": [
        ("targets[0].url:", "'http://localhost:8080'", "does not end in /v1", "/v1"),
        ("targets[1].select:", "only 'all'", "api: openai", "no /api/ps"),
        ("targets[2].api:", "'openapi'", "did you mean 'openai'?", "ollama | openai"),
    ],
    "bad_name.yaml": [("targets[0].name:", "'my target'", "letters, digits, _ . -")],
    "missing_url.yaml": [("targets[0]:", "missing required key 'url'")],
    "target_not_mapping.yaml": [("targets[0]:", "'local'", "a mapping with keys name, url")],
    "duplicate_target.yaml": [("targets[1].name:", "'local'", "targets[0]", "used once")],
    "empty_targets.yaml": [("targets:", "empty", "at least one target")],
    "empty_prompts.yaml": [("benchmark.prompts:", "empty", "non-empty list of prompts")],
    "bad_types.yaml": [
        ("benchmark.runs:", "a string '3'", "an integer from 1 to 100"),
        ("benchmark.unload_after:", "a string 'yes'", "true or false"),
        ("targets[0].select:", "a boolean True", "YAML reads unquoted", "loaded | all"),
        ("targets[0].include:", "a string 'gpt-oss:20b'", "a list of model names"),
    ],
    "api_key_env_unset.yaml": [
        ("targets[0].api_key_env:", "'OMETER_TEST_API_KEY'", "not set", "non-empty variable")
    ],
    "api_key_env_not_a_name.yaml": [
        ("targets[0].api_key_env:", "not an environment variable name", "OLLAMA_API_KEY")
    ],
    "api_key_file_missing.yaml": [
        ("targets[0].api_key_file:", "missing-ollama-key.txt", "No such file", "readable file")
    ],
    "both_key_sources.yaml": [("targets[0]:", "api_key_env and api_key_file", "at most one")],
    "timeouts_order.yaml": [
        ("benchmark.timeouts.first_byte:", "900s", "total 600s", "each ≤ total")
    ],
    "target_timeouts_order.yaml": [
        ("targets[0].timeouts.total:", "100s", "first_byte 300s", "from benchmark.timeouts")
    ],
    "syntax_error.yaml": [("line 3, column 12:", "YAML syntax error", "mapping values")],
    "not_a_mapping.yaml": [("top level:", "a list ['storage', 'targets']", "a mapping with keys")],
    "duplicate_key.yaml": [("line 3, column 3:", "duplicate key 'runs'", "each key once")],
}


@pytest.mark.parametrize(("name", "expected"), FAILURES.items(), ids=list(FAILURES))
def test_failure_mode(name: str, expected: list[tuple[str, ...]]) -> None:
    error = problems(CONFFILES / name)
    assert len(error.problems) == len(expected), error.problems
    for parts, problem in zip(expected, error.problems, strict=True):
        for part in parts:
            assert part in problem, (part, problem)


def test_every_conffile_is_covered() -> None:
    valid = {
        "minimal.yaml", "no_targets.yaml", "empty.yaml", "overrides.yaml", "cloud.yaml",
        "openai.yaml",
    }  # fmt: skip
    invalid = {"several_problems.yaml", *FAILURES}
    assert {path.name for path in CONFFILES.glob("*.yaml")} == valid | invalid


def test_several_problems_are_reported_at_once() -> None:
    path = CONFFILES / "several_problems.yaml"
    error = problems(path)
    paths = [problem.split(":", 1)[0] for problem in error.problems]
    assert paths == [
        "storage.retention",
        "benchmark.jitter",
        "benchmark.runs",
        "targets[0].url",
        "targets[1].name",
    ]
    assert str(error).startswith(f"5 problems in {path}:\n  - storage.retention: 'forever'")
    assert str(error).count("\n  - ") == 5


def test_one_problem_is_singular() -> None:
    assert str(problems(CONFFILES / "runs_zero.yaml")).startswith("1 problem in ")


def test_api_key_env_empty_is_a_problem() -> None:
    error = problems(CONFFILES / "api_key_env_unset.yaml", {"OMETER_TEST_API_KEY": " \n"})
    assert error.problems == [
        "targets[0].api_key_env: environment variable 'OMETER_TEST_API_KEY' is empty; "
        "allowed: a non-empty API key"
    ]


def test_api_key_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ollama").write_text(SECRET + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "targets:\n"
        "  - {name: cloud, url: https://ollama.com, select: all, api_key_file: secrets/ollama}\n"
    )
    target = load(config).targets[0]
    assert target.api_key == SECRET
    assert target.api_key_source == f"file {tmp_path / 'secrets' / 'ollama'}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"two words\n", "contains spaces, line breaks or non-ASCII"),
        (b"\xff\xfe" + SECRET.encode(), "is not UTF-8 text"),
        (b"x" * 70_000, "is larger than 64 KiB"),
    ],
    ids=["empty", "two-words", "not-utf8", "too-large"],
)
def test_unusable_api_key_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "key").write_bytes(content)
    config = tmp_path / "config.yaml"
    config.write_text(f"targets:\n  - {{name: c, url: http://h, api_key_file: {tmp_path}/key}}\n")
    [problem] = problems(config).problems
    assert problem.startswith("targets[0].api_key_file: ")
    assert message in problem
    assert str(tmp_path / "key") in problem
    assert "two words" not in problem
    assert "xxxx" not in problem


# --- merging and precedence -----------------------------------------------------------------


def test_per_target_overrides_merge_with_the_defaults() -> None:
    settings = load(CONFFILES / "overrides.yaml")
    fast, plain = settings.targets
    assert settings.benchmark == BenchmarkSettings(
        interval=300.0, runs=2, timeouts=Timeouts(connect=5.0, total=900.0)
    )
    assert fast.url == "http://gpu-box:11434"
    assert fast.benchmark == BenchmarkSettings(
        interval=0.25,
        runs=2,
        think="false",
        timeouts=Timeouts(connect=5.0, first_byte=300.0, idle=30.0, total=900.0),
    )
    assert plain.benchmark == settings.benchmark


def test_precedence_flags_over_environment_over_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'from-file'}\n")
    web_env, web_flag = tmp_path / "web-env.yml", tmp_path / "web-flag.yml"
    web_env.write_text("{}\n")
    web_flag.write_text("{}\n")
    env = {
        "OMETER_CONFIG_FILE": "/nonexistent/ignored-because-of-the-flag.yaml",
        "OMETER_STORAGE_PATH": str(tmp_path / "from-env"),
        "OMETER_LISTEN_ADDRESS": "127.0.0.1:9000",
        "OMETER_LOG_LEVEL": "DEBUG",
        "OMETER_LOG_FORMAT": "json",
        "OMETER_WEB_CONFIG_FILE": str(web_env),
    }
    flags = Overrides(
        config_file=str(config),
        listen_address="[::1]:9100",
        storage_path=str(tmp_path / "from-flag"),
        log_level="warning",
        log_format="text",
        web_config_file=str(web_flag),
    )
    settings = load_settings(flags, env)
    assert settings.config_file == str(config)
    assert settings.storage.path == str(tmp_path / "from-flag")
    assert settings.listen_address == "[::1]:9100"
    assert (settings.log_level, settings.log_format) == ("warning", "text")
    assert settings.web_config_file == str(web_flag)

    settings = load_settings(Overrides(config_file=str(config)), env)
    assert settings.storage.path == str(tmp_path / "from-env")
    assert settings.listen_address == "127.0.0.1:9000"
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert settings.web_config_file == str(web_env)

    settings = load_settings(Overrides(), {**env, "OMETER_CONFIG_FILE": str(config)})
    assert settings.config_file == str(config)

    settings = load_settings(Overrides(config_file=str(config)), {})
    assert settings.storage.path == str(tmp_path / "from-file")
    assert settings.listen_address == ":9877"


def test_bad_environment_and_flag_values_are_all_reported(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "data"
    not_a_directory.write_text("")
    env = {
        "OMETER_LOG_LEVEL": "verbose",
        "OMETER_LOG_FORMAT": "xml",
        "OMETER_STORAGE_PATH": str(not_a_directory),
        "OMETER_WEB_CONFIG_FILE": str(tmp_path / "missing-web.yml"),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(Overrides(listen_address="9877", log_level="warn"), env)
    found = caught.value.problems
    assert found[0].startswith("env OMETER_STORAGE_PATH: ")
    assert "exists and is not a directory" in found[0]
    assert found[1].startswith("flag --web.listen-address: '9877' is not an address; allowed: ")
    assert found[2] == (
        "flag --log.level: 'warn' is not allowed; did you mean 'warning'?; "
        "allowed: debug | info | warning | error"
    )
    assert found[3] == "env OMETER_LOG_FORMAT: 'xml' is not allowed; allowed: text | json"
    assert found[4].startswith("env OMETER_WEB_CONFIG_FILE: ")
    assert "missing-web.yml" in found[4]
    assert len(found) == 5


@pytest.mark.parametrize("address", [":9877", "0.0.0.0:9877", "localhost:1", "[::1]:65535"])
def test_valid_listen_addresses(address: str) -> None:
    assert load_settings(Overrides(listen_address=address), {}).listen_address == address


@pytest.mark.parametrize(
    "address", ["9877", ":0", ":65536", "::1:9877", "[::g]:9877", "host:port", "a b:1", ""]
)
def test_invalid_listen_addresses(address: str) -> None:
    with pytest.raises(ConfigError, match=r"flag --web\.listen-address: "):
        load_settings(Overrides(listen_address=address), {})


# --- durations and hosts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2m30s500ms", 150.5),
        ("1.5s", 1.5),
        ("7d", 604800.0),
        ("168h", 604800.0),
        ("10", 10.0),
        (" 10s ", 10.0),
        ("0s", 0.0),
        (10, 10.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "s", "10 minutes", "10x", "10M", "1s1h", "1m1m", "-1s", "1h 30m", True, -5, float("inf")],
)
def test_parse_duration_rejects(text: str | int | float) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:11434", "http://127.0.0.1:11434"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        (":11434", "http://127.0.0.1:11434"),
        ("::", "http://[::1]:11434"),
        ("[::]:11434", "http://[::1]:11434"),
        ("[fe80::1]:8080", "http://[fe80::1]:8080"),
        ("http://gpu-box:1234", "http://gpu-box:1234"),
        ("https://gpu-box", "https://gpu-box"),
        ("http://gpu-box", "http://gpu-box"),
        ("HTTPS://Gpu-Box/ollama/", "https://gpu-box/ollama"),
        (' "0.0.0.0" ', "http://127.0.0.1:11434"),
    ],
)
def test_normalize_ollama_host(value: str, url: str) -> None:
    assert normalize_ollama_host(value) == url


@pytest.mark.parametrize(
    ("value", "message"),
    [("ftp://gpu-box", "scheme 'ftp'"), ("gpu-box:99999", "port '99999'"), ("h:x", "port 'x'")],
)
def test_normalize_ollama_host_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_ollama_host(value)


def test_openai_targets_measure_every_listed_model_and_watch_nothing_loaded() -> None:
    llamacpp, ollama_v1 = load(CONFFILES / "openai.yaml").targets
    for target in (llamacpp, ollama_v1):
        assert (target.api, target.select, target.cloud) == ("openai", "all", False)
        assert not target.watches_loaded
    assert (llamacpp.url, ollama_v1.url) == (
        "http://localhost:8080/v1",
        "http://localhost:11434/v1",
    )
    local = load(CONFFILES / "minimal.yaml").targets[0]
    assert (local.api, local.watches_loaded) == ("ollama", True)


def test_ollama_com_defaults_to_cloud() -> None:
    cloud, proxy = load(CONFFILES / "cloud.yaml").targets
    assert (cloud.cloud, cloud.api_key, cloud.api_key_source) == (True, None, None)
    assert (proxy.url, proxy.cloud) == ("https://api.ollama.com/prefix", False)
    assert not load(CONFFILES / "minimal.yaml").targets[0].cloud


# --- the secret -----------------------------------------------------------------------------


def keyed_config(
    tmp_path: Path, source: str, extra: str = "select: all"
) -> tuple[Path, dict[str, str]]:
    (tmp_path / "key").write_text(SECRET + "\n")
    key = {"env": "api_key_env: OLLAMA_API_KEY", "file": f"api_key_file: {tmp_path / 'key'}"}
    config = tmp_path / "config.yaml"
    config.write_text(
        f"targets:\n  - {{name: cloud, url: https://ollama.com, {key[source]}, {extra}}}\n"
    )
    return config, {"OLLAMA_API_KEY": SECRET}


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_api_key_is_never_shown(tmp_path: Path, source: str) -> None:
    config, env = keyed_config(tmp_path, source)
    settings = load(config, env)
    target = settings.targets[0]
    assert target.api_key == SECRET
    shown = "\n".join([repr(settings), str(settings), repr(target), describe(settings)])
    assert SECRET not in shown
    expected = "env OLLAMA_API_KEY" if source == "env" else f"file {tmp_path / 'key'}"
    assert f"api key: from {expected}" in describe(settings)


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_api_key_is_not_in_errors_about_its_target(tmp_path: Path, source: str) -> None:
    config, env = keyed_config(tmp_path, source, "runs: 0, select: some, interval: x")
    error = problems(config, env)
    assert len(error.problems) == 3
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def test_secrets_in_urls_are_masked_in_errors() -> None:
    error = problems(CONFFILES / "url_with_credentials.yaml")
    assert "s3cret" not in str(error)
    assert "abc123" not in str(problems(CONFFILES / "url_with_query.yaml"))
    assert "pasted-key-value" not in str(problems(CONFFILES / "api_key_env_not_a_name.yaml"))
    assert "never-echoed" not in str(problems(CONFFILES / "api_key_in_file.yaml"))


def test_describe_summarises_targets() -> None:
    text = describe(load(CONFFILES / "overrides.yaml"))
    assert "  fast  http://gpu-box:11434\n    api key: none\n" in text
    assert "select: loaded; include: any; exclude: none" in text
    assert "interval 250ms, jitter 10%, idle_before 10s, runs 2" in text
    assert "timeouts: connect 5s, first_byte 5m, idle 30s, total 15m" in text


@pytest.mark.parametrize(("value", "seconds"), [("0s", 0.0), ("250ms", 0.25), ("30s", 30.0)])
def test_idle_before_allows_zero(tmp_path: Path, value: str, seconds: float) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"benchmark: {{idle_before: {value}}}\ntargets: [{{name: a, url: http://a:1,"
                    f" idle_before: 1s}}]\n")  # fmt: skip
    settings = load(path)
    assert settings.benchmark.idle_before == seconds
    assert settings.targets[0].benchmark.idle_before == 1.0  # per-target override


@pytest.mark.parametrize("value", ["soon", "-1s", "true"])
def test_idle_before_rejects(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"benchmark: {{idle_before: {value}}}\n")
    assert "benchmark.idle_before:" in str(problems(path))


# --- display: the colours' thresholds ---------------------------------------------------------


def test_display_defaults_and_a_configured_section(tmp_path: Path) -> None:
    assert load(EXAMPLE).display == DisplaySettings("absolute", (0.5, 2.0), (50.0, 20.0))
    config = tmp_path / "config.yaml"
    config.write_text(
        "display: {grading: Relative, thresholds: {ttft: [250ms, 1.5], "
        "tokens_per_second: [120, 40.5]}}\n"
    )
    assert load(config).display == DisplaySettings("relative", (0.25, 1.5), (120.0, 40.5))
    config.write_text("display: {thresholds: {ttft: [1s, 3s]}}\n")
    assert load(config).display == DisplaySettings(ttft=(1.0, 3.0))  # the rest: defaults


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{grading: thirds}", "display.grading: 'thirds' is not allowed; allowed: absolute | "
                              "relative"),
        ("{colours: x}", "display.colours: unknown key; allowed keys: grading, thresholds"),
        ("{thresholds: {tps: [1, 2]}}", "display.thresholds.tps: unknown key (the key is "
                                        "tokens_per_second)"),
        ("{thresholds: {ttft: 2s}}", "display.thresholds.ttft: expected two durations, good "
                                     "below the first, poor from the second, e.g. [500ms, 2s]"),
        ("{thresholds: {ttft: [2s, 500ms]}}", "display.thresholds.ttft: 2s is not below 500ms"),
        ("{thresholds: {ttft: [0s, 1s]}}", "display.thresholds.ttft[0]: \'0s\' is zero"),
        ("{thresholds: {ttft: [soon, 1s]}}", "display.thresholds.ttft[0]: 'soon' is not a "
                                             "duration"),
        ("{thresholds: {tokens_per_second: [20, 50]}}",
         "display.thresholds.tokens_per_second: 20 is not above 50; allowed: two numbers"),
        ("{thresholds: {tokens_per_second: [50, -1]}}",
         "display.thresholds.tokens_per_second[1]: -1 is out of range; allowed: a number above 0"),
        ("{thresholds: {tokens_per_second: [fast, 20]}}",
         "display.thresholds.tokens_per_second[0]: expected a number of tokens/s above 0, got a "
         "string 'fast'"),
        ("{thresholds: {tokens_per_second: [true, 20]}}",
         "display.thresholds.tokens_per_second[0]: expected a number of tokens/s above 0, got a "
         "boolean True"),
    ],
)  # fmt: skip
def test_display_problems_are_named(tmp_path: Path, section: str, message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"display: {section}\n")
    assert message in str(problems(config))


def test_describe_says_how_colours_are_graded() -> None:
    assert "colours: absolute: TTFT good below 500ms, poor from 2s; tokens/s good from 50, " \
           "poor below 20" in describe(load(EXAMPLE))  # fmt: skip


def test_capacity_merges_per_target_and_is_checked() -> None:
    import yaml

    from ometer_exporter.config.capacity import apply_capacity, parse_capacity
    from ometer_exporter.config.checks import Checker
    from ometer_exporter.config.settings import CapacitySettings

    checker = Checker()
    base_patch = parse_capacity(checker, yaml.safe_load(
        "{enabled: true, concurrency: [4, 1, 2], slo: {ttft: 500ms, attainment: 0.9}}"), "c")
    base = apply_capacity(base_patch, CapacitySettings())
    merged = apply_capacity(
        parse_capacity(checker, {"requests_per_level": 32, "slo": {"tpot": "25ms"}}, "t"), base
    )
    assert checker.problems == []
    assert base.enabled and base.concurrency == (1, 2, 4) and base.requests_per_level == 16
    assert (base.slo.ttft, base.slo.tpot, base.slo.attainment) == (0.5, 0.1, 0.9)
    assert merged.enabled and merged.requests_per_level == 32
    assert (merged.slo.ttft, merged.slo.tpot, merged.slo.attainment) == (0.5, 0.025, 0.9)
    parse_capacity(checker, yaml.safe_load("""{enabled: yes please, concurrency: [1, 1, 0],
        window: "25:00-26:00", slo: {ttft: soon, attainment: 2}, speed: 1}"""), "c")
    text = str(checker.problems)
    for key in ("enabled", "concurrency[2]", "window", "slo.ttft", "slo.attainment", "speed"):
        assert f"c.{key}" in text, key


def test_capacity_from_the_file_with_a_target_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "benchmark:\n"
        "  capacity: {enabled: true, window: '01:00-05:00', concurrency: [1, 2, 4],\n"
        "             slo: {ttft: 500ms, tpot: 25ms}}\n"
        "targets:\n"
        "  - {name: a, url: 'http://a:11434'}\n"
        "  - {name: b, url: 'http://b:11434', capacity: {enabled: false, slo: {attainment: 0.9}}}\n"
    )
    a, b = load(path).targets
    assert a.benchmark.capacity.enabled and not b.benchmark.capacity.enabled
    assert a.benchmark.capacity.concurrency == b.benchmark.capacity.concurrency == (1, 2, 4)
    assert (b.benchmark.capacity.slo.ttft, b.benchmark.capacity.slo.attainment) == (0.5, 0.9)
    assert a.benchmark.capacity.interval == 86400.0  # the default
    shown = describe(load(path))
    assert "sweeps: every 24h starting within 01:00-05:00, concurrency [1, 2, 4]," in shown
    assert "SLO TTFT 500ms, TPOT 25ms, attainment 95%" in shown
    assert "capacity sweeps: off" in shown  # target b


def test_every_bad_capacity_key_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "benchmark: {capacity: {enabled: maybe, interval: soon, requests_per_level: 0}}\n"
        "targets: [{name: a, url: 'http://a:11434', capacity: {concurrency: [], slo: 1}}]\n"
    )
    text = str(problems(path))
    for key in ("benchmark.capacity.enabled", "benchmark.capacity.interval",
                "benchmark.capacity.requests_per_level", "targets[0].capacity.concurrency",
                "targets[0].capacity.slo"):  # fmt: skip
        assert key in text, (key, text)


@pytest.mark.parametrize(
    ("window", "minutes", "inside"),
    [("01:00-05:00", 60, True), ("01:00-05:00", 300, False), ("22:00-02:00", 23 * 60, True),
     ("22:00-02:00", 90, True), ("22:00-02:00", 12 * 60, False), ("", 0, True)],
)  # fmt: skip
def test_capacity_window(window: str, minutes: int, inside: bool) -> None:
    from ometer_exporter.config.capacity import in_window

    assert in_window(window, minutes) is inside
