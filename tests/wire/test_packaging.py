"""The Dockerfile, .dockerignore and systemd unit, checked without Docker or a running systemd.

An image build or a unit start cannot happen here, so these tests check what those would rely on: the
files the Dockerfile copies exist and reach the build context, the command and healthcheck the image runs
work against the real CLI and a real daemon, the image's environment means what it claims to the config
loader, and the unit carries every hardening directive (and passes `systemd-analyze` where it exists).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from voicebridge.config.load import ConfigError, load_settings
from voicebridge.config.schema import ServerConfig
from voicebridge.sim.daemon import free_port, start_daemon

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
UNIT = REPO / "systemd" / "voicebridge.service"

Instruction = tuple[str, str]


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile as one list of (INSTRUCTION, arguments) per stage, continuations joined."""
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        # Docker drops comment lines even in the middle of a continued instruction.
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {keyword}"
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def instructions(name: str, stage: int | None = None) -> list[str]:
    """Arguments of every `name` instruction, in the given stage or in all of them."""
    stages = dockerfile_stages()
    chosen = stages if stage is None else [stages[stage]]
    return [arguments for lines in chosen for keyword, arguments in lines if keyword == name]


def exec_form(arguments: str) -> list[str]:
    """An exec-form (JSON array) command: shell form puts /bin/sh in front, which does not pass SIGTERM on."""
    assert arguments.startswith("["), f"not exec form: {arguments}"
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


def image_env() -> dict[str, str]:
    """The ENV of the runtime (last) stage."""
    env: dict[str, str] = {}
    for arguments in instructions("ENV", stage=-1):
        for pair in shlex.split(arguments):
            key, sep, value = pair.partition("=")
            assert sep, f"use ENV KEY=value, not the legacy form: {arguments}"
            env[key] = value
    return env


def healthcheck_command() -> list[str]:
    (healthcheck,) = instructions("HEALTHCHECK", stage=-1)
    _options, sep, command = healthcheck.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {healthcheck}"
    return exec_form(command.strip())


def copy_sources() -> list[str]:
    """Sources of every COPY/ADD that reads the build context (COPY --from reads another stage)."""
    sources: list[str] = []
    for keyword in ("COPY", "ADD"):
        for arguments in instructions(keyword):
            words = shlex.split(arguments)
            if any(word.startswith("--from=") for word in words):
                continue
            paths = [word for word in words if not word.startswith("--")]
            if paths and paths[0].startswith("["):
                paths = json.loads(" ".join(paths))
            sources.extend(paths[:-1])
    return sources


def test_every_copy_source_exists_in_the_repo() -> None:
    sources = copy_sources()
    assert sources, "the Dockerfile copies nothing from the build context"
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing, f"COPY sources not in the repo: {missing}"


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: `*` and `?` stay within one path segment, `**` crosses any number of them."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def dockerignored(path: str) -> bool:
    """Whether Docker leaves `path` out of the context: the last pattern matching it or a parent wins."""
    segments = path.split("/")
    prefixes = ["/".join(segments[: count + 1]) for count in range(len(segments))]
    ignored = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_everything_the_build_copies() -> None:
    # Every file under each COPY source, as the build would see it (bytecode excepted: pip rebuilds it).
    needed: list[str] = []
    for source in copy_sources():
        root = REPO / source
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        needed += [
            str(p.relative_to(REPO))
            for p in files
            if "__pycache__" not in p.parts and p.suffix != ".pyc" and ".egg-info" not in str(p)
        ]
    assert "voicebridge/cli/app.py" in needed
    # Package data (the doctor's sample) must reach `pip install .` too.
    assert any(path.startswith("voicebridge/data/") for path in needed)
    dropped = [path for path in needed if dockerignored(path)]
    assert not dropped, f".dockerignore drops files the image build needs: {dropped}"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "voicebridge.toml",
        "secrets.env",
        "voicebridge.egg-info/PKG-INFO",
        "tests/unit/test_config.py",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "bench/results/run.json",
        "voicebridge/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_secrets_venvs_and_caches_out_of_the_context(path: str) -> None:
    assert dockerignored(path), f"{path} would be sent to the Docker daemon"


def test_image_runs_a_real_cli_command() -> None:
    (entrypoint,) = instructions("ENTRYPOINT", stage=-1)
    (cmd,) = instructions("CMD", stage=-1)
    command = exec_form(entrypoint) + exec_form(cmd)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts, f"{command[0]} is not a console script of the package"
    assert command[1:2] == ["serve"], "the image should run the daemon"
    # The entry point's module runs the same typer app; --help exits 0 only for a real subcommand.
    result = subprocess.run(
        [sys.executable, "-m", "voicebridge", *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_runtime_stage_runs_as_a_non_root_user() -> None:
    users = instructions("USER", stage=-1)
    assert users, "the runtime stage never sets USER, so the daemon would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")


def test_stop_signal_is_sigterm_so_docker_stop_drains() -> None:
    assert instructions("STOPSIGNAL", stage=-1) == ["SIGTERM"]


def test_image_exposes_the_default_port_and_keeps_state_in_a_volume() -> None:
    assert instructions("EXPOSE", stage=-1) == [str(ServerConfig().port)]
    env = image_env()
    state_dir = env["VOICEBRIDGE_SERVER__STATE_DIR"]
    assert any(state_dir in volume for volume in instructions("VOLUME", stage=-1))
    # Both directories must exist and belong to the runtime user before it starts.
    setup = " ".join(instructions("RUN", stage=-1))
    socket_dir = str(Path(env["VOICEBRIDGE_CONTROL__SOCKET_PATH"]).parent)
    assert state_dir in setup and socket_dir in setup


def test_image_environment_means_what_it_says_and_refuses_to_start_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = image_env()
    assert "VOICEBRIDGE_SERVER__INSECURE" not in env, "the image must not switch webhook auth off by default"
    for name in list(os.environ):
        if name.startswith("VOICEBRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("VOICEBRIDGE_"):
            monkeypatch.setenv(name, value)
    empty_config = tmp_path / "config.toml"
    empty_config.write_text("")
    # 0.0.0.0 with no webhook auth configured: the daemon must refuse rather than serve the internet.
    with pytest.raises(ConfigError, match="insecure"):
        load_settings(empty_config)
    # What the README tells operators behind a trusted proxy to do.
    monkeypatch.setenv("VOICEBRIDGE_SERVER__INSECURE", "true")
    settings = load_settings(empty_config)
    assert settings.server.host == "0.0.0.0"
    assert settings.state_path() == Path(env["VOICEBRIDGE_SERVER__STATE_DIR"])
    assert settings.control_socket_path() == Path(env["VOICEBRIDGE_CONTROL__SOCKET_PATH"])


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command as Docker would run it, with this interpreter and `port`."""
    command = healthcheck_command()
    assert command[0] == "python", "the healthcheck should need nothing beyond the image's Python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    env["VOICEBRIDGE_SERVER__PORT"] = str(port)
    # A dead proxy: the check must go straight to 127.0.0.1 even when the container has HTTP_PROXY set.
    env["http_proxy"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=30, env=env)


def test_healthcheck_probes_live_on_the_default_port() -> None:
    script = healthcheck_command()[-1]
    assert "/live" in script
    assert f"'{ServerConfig().port}'" in script, "the port's fallback should be the daemon's default port"


def test_healthcheck_fails_when_nothing_listens() -> None:
    result = run_healthcheck(free_port())
    assert result.returncode != 0


@pytest.mark.e2e
def test_healthcheck_passes_against_a_real_daemon(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path)
    try:
        result = run_healthcheck(daemon.port)
        assert result.returncode == 0, result.stderr
    finally:
        assert daemon.terminate() == 0, daemon.log()


# --- systemd unit -----------------------------------------------------------------------------------


def unit_directives() -> dict[str, list[str]]:
    """`[Section] Key=value` lines as {"Section.Key": [values]} (a key may repeat)."""
    directives: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        directives.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return directives


def seconds(span: str) -> float:
    """A systemd time span such as 60, 90s or 1min 30s, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == span.replace(" ", ""), span
    return sum(float(number) * units[unit] for number, unit in parts)


REQUIRED = {
    "Type": "notify",
    "KillSignal": "SIGTERM",
    "Restart": "on-failure",
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "RuntimeDirectory": "voicebridge",
    "StateDirectory": "voicebridge",
    "CapabilityBoundingSet": "",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectKernelLogs": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
    "SystemCallFilter": "@system-service",
}


@pytest.mark.parametrize(("key", "value"), sorted(REQUIRED.items()))
def test_unit_sets_required_directive(key: str, value: str) -> None:
    assert unit_directives().get(f"Service.{key}") == [value]


def test_unit_limits_and_timeouts() -> None:
    directives = unit_directives()
    assert int(directives["Service.LimitNOFILE"][0]) >= 65536
    assert seconds(directives["Service.WatchdogSec"][0]) > 0
    # systemd SIGKILLs after TimeoutStopSec: it must outlast the drain, or live calls are cut off.
    assert seconds(directives["Service.TimeoutStopSec"][0]) > ServerConfig().drain_timeout


def test_unit_runs_serve_and_leaves_jit_memory_allowed() -> None:
    directives = unit_directives()
    (exec_start,) = directives["Service.ExecStart"]
    assert shlex.split(exec_start)[1] == "serve"
    # CTranslate2 and onnxruntime generate code at run time: this would break model loading.
    assert directives.get("Service.MemoryDenyWriteExecute", ["no"]) == ["no"]


def unit_copy_with_real_exec_start(directory: Path) -> Path:
    """The unit with ExecStart on this interpreter, so verify checks the unit and not the install."""
    arguments = shlex.split(unit_directives()["Service.ExecStart"][0])[1:]
    exec_start = shlex.join([sys.executable, "-m", "voicebridge", *arguments])
    text = re.sub(r"(?m)^ExecStart=.*$", lambda _: f"ExecStart={exec_start}", UNIT.read_text())
    copy = directory / UNIT.name
    copy.write_text(text)
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    copy = unit_copy_with_real_exec_start(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Warnings about unrelated host units may appear; none may be about ours.
    assert UNIT.name not in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_exposure_stays_low(tmp_path: Path) -> None:
    copy = unit_copy_with_real_exec_start(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    if score is None:
        pytest.skip(f"systemd-analyze cannot score unit files offline (needs 250+): {result.stderr}")
    # 1.5 when written (systemd 252); losing a sandboxing line pushes it up (10: an unsandboxed root service).
    assert float(score.group(1)) <= 2.5, result.stdout
