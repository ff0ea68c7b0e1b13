"""Configuration: precedence, the one-line errors, redaction, the starter file and the documented example."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from pydantic import SecretStr, ValidationError

from voicebridge.cli.serve import daemon_settings
from voicebridge.config.load import (
    RETIRED_KEYS,
    ConfigError,
    load_config,
    load_settings,
    render_toml,
    write_starter,
)
from voicebridge.config.schema import Settings
from voicebridge.doctor.config import check_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("VOICEBRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_run_everything_locally() -> None:
    settings = load_settings(None)
    assert settings.stt.engine == "whisper"
    assert settings.tts.engine == "piper"
    assert settings.backend.kind == "echo"
    assert settings.server.host == "127.0.0.1"


def test_precedence_defaults_then_file_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "vb.toml"
    path.write_text("[stt]\nbeam_size = 3\nthreads = 2\n[server]\nport = 9001\n")
    from_file = load_settings(path)
    assert (from_file.stt.beam_size, from_file.stt.threads, from_file.server.port) == (3, 2, 9001)
    assert from_file.stt.workers == Settings().stt.workers  # untouched keys keep defaults

    monkeypatch.setenv("VOICEBRIDGE_STT__THREADS", "4")
    with_env = load_settings(path)
    assert (with_env.stt.beam_size, with_env.stt.threads) == (3, 4)


def test_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "voicebridge.toml").write_text("[server]\nport = 7001\n")
    assert load_settings(None).server.port == 7001
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 7002\n")
    monkeypatch.setenv("VOICEBRIDGE_CONFIG", str(other))
    assert load_settings(None).server.port == 7002
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[server]\nport = 7003\n")
    assert load_settings(explicit).server.port == 7003


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[stt]\nbeam_size = 'wide'\n", "stt.beam_size"),
        ("[stt]\nbeam_sise = 2\n", "stt.beam_sise: unknown key"),
        ("[tts]\nengine = 'espeak'\n", "tts.engine"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server\nport = 1\n", "invalid TOML"),
    ],
)
def test_bad_value_names_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEBRIDGE_TURN__END_OF_TURN_SILENCE_MS", "soon")
    with pytest.raises(ConfigError, match="VOICEBRIDGE_TURN__END_OF_TURN_SILENCE_MS"):
        load_settings(None)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_secret_and_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[tts]\nazure_key = "MARKER-AZURE-1"\n[backend]\napi_key = "MARKER-BACKEND-2"\n')
    monkeypatch.setenv("VOICEBRIDGE_TWILIO__AUTH_TOKEN", "MARKER-TWILIO-3")
    settings = load_settings(path)
    assert isinstance(settings.tts.azure_key, SecretStr)
    assert settings.twilio.auth_token.get_secret_value() == "MARKER-TWILIO-3"
    shown = render_toml(settings)
    assert "MARKER" not in shown
    assert "MARKER" not in repr(settings)
    assert tomllib.loads(shown)["tts"]["azure_key"] == "********"


def test_starter_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "starter.toml"
    write_starter(path)
    assert load_settings(path) == load_settings(None)
    with pytest.raises(ConfigError, match="--force"):
        write_starter(path)
    write_starter(path, force=True)


def test_example_documents_every_key_and_loads() -> None:
    example = REPO / "config.example.toml"
    assert load_settings(example) == Settings()
    document = tomllib.loads(example.read_text())
    for section_name, section in Settings():
        if section_name == "numbers":  # a table per number, none by default: shown commented out
            assert '[numbers."+' in example.read_text()
            continue
        assert set(document[section_name]) == set(type(section).model_fields), section_name
    # Every key line sits in a block (no blank line between) that carries at least one comment.
    block: list[str] = []
    for line in [*example.read_text().splitlines(), ""]:
        if line.strip() and not line.startswith("["):
            block.append(line)
            continue
        keys = [entry.split("=")[0].strip() for entry in block if not entry.startswith("#")]
        assert not keys or any(entry.startswith("#") for entry in block), f"undocumented: {keys}"
        block = []


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicebridge", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_config_init_show_and_bad_config(tmp_path: Path) -> None:
    created = run_cli("config", "init", "vb.toml", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    again = run_cli("config", "init", "vb.toml", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr

    shown = run_cli(
        "config", "show", "--config", "vb.toml", cwd=tmp_path, env={"VOICEBRIDGE_TTS__AZURE_KEY": "K-123"}
    )
    assert shown.returncode == 0, shown.stderr
    assert "K-123" not in shown.stdout and 'azure_key = "********"' in shown.stdout

    (tmp_path / "bad.toml").write_text("[stt]\nworkers = -1\n")
    bad = run_cli("stt", "whatever.wav", "--config", "bad.toml", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "bad.toml" in bad.stderr and "stt.workers" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_version() -> None:
    result = run_cli("--version", cwd=REPO)
    assert result.returncode == 0 and result.stdout.startswith("voicebridge ")


def test_listening_beyond_loopback_needs_webhook_auth_or_insecure(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"exotel\.webhook_auth and twilio\.webhook_auth are 'none'"):
        load_settings(config)
    config.write_text('[server]\nhost = "0.0.0.0"\ninsecure = true\n')
    assert load_settings(config).open_mode
    config.write_text(
        '[server]\nhost = "0.0.0.0"\n[exotel]\nwebhook_auth = "ip"\nallowed_cidrs = ["203.0.113.0/24"]\n'
        "[twilio]\nenabled = false\n"
    )
    assert not load_settings(config).open_mode


def test_auth_modes_need_their_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    for text, message in (
        ('[exotel]\nwebhook_auth = "token"\nwebhook_token = "short"\n', "at least 16 characters"),
        ('[exotel]\nwebhook_auth = "basic"\n', "webhook_username and webhook_password"),
        ('[exotel]\nwebhook_auth = "ip"\nallowed_cidrs = ["not-a-network"]\n', "is not an IP network"),
        ('[twilio]\nwebhook_auth = "signature"\n', "needs auth_token"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_settings(config)


def test_insecure_waives_the_start_up_check_but_never_switches_configured_auth_off() -> None:
    # #14 review: server.insecure made open_mode true, so Exotel's configured `basic` went unchecked as soon
    # as another provider's `none` needed the waiver.
    exposed = {"host": "0.0.0.0", "insecure": True}
    basic = {"webhook_auth": "basic", "webhook_username": "u", "webhook_password": "p"}
    assert not Settings(server=exposed, exotel=basic).open_mode
    assert not Settings(server={"insecure": True}, exotel=basic).open_mode
    assert Settings(server=exposed).open_mode  # nothing configured anywhere: open, as asked


@pytest.mark.parametrize(
    "limits",
    [
        {"request_head_timeout_s": 1e-300},
        {"inbound_idle_s": 1e-9},
        {"start_timeout_s": 0.01},
        {"ws_heartbeat_s": 1e-9},
        {"mark_echo_timeout_s": 1e-6},
        {"ws_heartbeat_s": 8, "inbound_idle_s": 10},
    ],
)
def test_watchdog_limits_that_could_never_work_are_refused(limits: dict[str, float]) -> None:
    # Final review: tiny values refused every connection, dropped every stream or pinged in a tight loop.
    with pytest.raises(ValidationError):
        Settings(limits=limits)


def test_limits_that_turn_a_watchdog_off_are_fine() -> None:
    limits = Settings(limits={"ws_heartbeat_s": 0, "mark_echo_timeout_s": 0}).limits
    assert limits.ws_heartbeat_s == 0 and limits.mark_echo_timeout_s == 0


def test_an_infinite_cost_rate_is_refused() -> None:
    # Final review: `inf` passed ge=0 and made every cost record invalid JSON for the backend.
    with pytest.raises(ValidationError):
        Settings(costs={"ai_per_request": float("inf")})


# --- retired keys: an older release's config still starts the daemon -------------------------------------

RETIRED_ENV = {"VOICEBRIDGE_STT__MODEL_PER_CALL": "true"}


def old_style_config(tmp_path: Path) -> Path:
    """A config as the old `config init` wrote it (every default) plus the key it had that is gone."""
    document = Settings().model_dump(mode="json")
    for section in document.values():
        for key, value in section.items():
            if value == "**********":
                section[key] = ""
    document["stt"]["model_per_call"] = False  # before the benchmark built its own per-call engine
    path = tmp_path / "old.toml"
    path.write_text(tomli_w.dumps(document))
    return path


def test_a_config_with_retired_keys_loads_and_names_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Review: dropping dead keys made every older config an "unknown key": `serve` exited 2 under
    # systemd's restart loop.
    path = old_style_config(tmp_path)
    defaults = Settings()
    for name, value in RETIRED_ENV.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="voicebridge.config"):
        settings = load_settings(path)
    assert settings == defaults
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert [line.split(" ")[0] for line in warnings] == ["stt.model_per_call"]
    assert all(line.endswith("; remove it") and "no longer used" in line for line in warnings)
    assert "model_per_call" not in render_toml(settings)


def test_a_retired_key_from_the_environment_alone_loads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VOICEBRIDGE_STT__MODEL_PER_CALL", "true")
    loaded = load_config(None)
    assert [key.name for key in loaded.retired] == ["stt.model_per_call"]
    with caplog.at_level(logging.WARNING):
        load_settings(None)
    assert "stt.model_per_call is no longer used" in caplog.text


def test_the_exotel_rest_keys_are_live_again_and_their_secret_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 17: outbound calls use them; an older config that still has them keeps its values.
    path = tmp_path / "c.toml"
    path.write_text('[exotel]\naccount_sid = "acme1"\napi_key = "key1"\nsubdomain = "api.in.exotel.com"\n')
    monkeypatch.setenv("VOICEBRIDGE_EXOTEL__API_TOKEN", "MARKER-EXOTEL-TOKEN")
    with caplog.at_level(logging.WARNING):
        loaded = load_config(path)
    exotel = loaded.settings.exotel
    assert not loaded.retired and "no longer used" not in caplog.text
    assert (exotel.account_sid, exotel.api_key, exotel.rest_base) == (
        "acme1",
        "key1",
        "https://api.in.exotel.com",
    )
    assert exotel.api_token.get_secret_value() == "MARKER-EXOTEL-TOKEN"
    shown = render_toml(loaded.settings)
    assert "MARKER" not in shown and tomllib.loads(shown)["exotel"]["api_token"] == "********"


def test_retired_keys_stay_out_of_the_schema_and_unknown_keys_stay_errors(tmp_path: Path) -> None:
    # Each retired key is checked against its own section: one that is live again would be dropped silently.
    for retired in RETIRED_KEYS:
        assert retired.section in Settings.model_fields, retired
        section = Settings.model_fields[retired.section].annotation
        assert isinstance(section, type) and retired.key not in section.model_fields, retired
    path = tmp_path / "typo.toml"
    path.write_text('[exotel]\napi_tokn = "x"\n')
    with pytest.raises(ConfigError, match=r"exotel\.api_tokn: unknown key"):
        load_settings(path)


def test_cli_config_show_with_retired_keys(tmp_path: Path) -> None:
    path = old_style_config(tmp_path)
    shown = run_cli("config", "show", "--config", str(path), cwd=tmp_path, env=RETIRED_ENV)
    assert shown.returncode == 0, shown.stderr
    assert "model_per_call" not in shown.stdout
    assert "stt.model_per_call is no longer used" in shown.stderr


def test_serve_logs_one_line_per_retired_key_in_its_log_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = old_style_config(tmp_path)
    defaults = Settings()
    root = logging.getLogger()
    # serve configures the root logger: give it copies to replace, restored afterwards.
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    assert daemon_settings(path, port=9123) == defaults.model_copy(
        update={"server": defaults.server.model_copy(update={"port": 9123})}
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "no longer used" in line]
    assert len(lines) == 1 and all(" WARNING voicebridge.config.load " in line for line in lines), lines


def test_doctor_warns_of_retired_keys_without_their_values(tmp_path: Path) -> None:
    check, settings = check_config(old_style_config(tmp_path))
    assert settings is not None and check.status == "warn", check
    assert "stt.model_per_call" in check.detail and "stt.model_per_call" in check.fix
    clean = tmp_path / "clean.toml"
    clean.write_text("[server]\nport = 9000\n")
    assert check_config(clean)[0].status == "pass"


def test_serve_options_are_validated_like_the_file(tmp_path: Path) -> None:
    # Review: `serve --host 0.0.0.0` replaced the host after validation, so a daemon with every webhook on
    # `none` listened on the network, where `host = "0.0.0.0"` in the file is refused.
    with pytest.raises(ConfigError, match="webhook_auth"):
        daemon_settings(None, host="0.0.0.0")
    with pytest.raises(ConfigError, match=r"server\.port"):
        daemon_settings(None, port=99999)
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9100\n[prompts]\ngreeting = "Hi."\n')
    settings = daemon_settings(path, host="127.0.0.2")
    server = settings.server
    assert (server.host, server.port, settings.prompts.greeting) == ("127.0.0.2", 9100, "Hi.")


def test_a_section_of_the_wrong_shape_is_refused_without_its_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[exotel]]\nwebhook_password = "MARKER-RETIRED-SHAPE"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert "exotel" in str(refused.value)
    assert "MARKER" not in str(refused.value)


@pytest.mark.parametrize("speculative_ms", [0, 500, 800])
def test_adaptive_end_of_turn_without_a_guess_before_the_fixed_silence_is_refused(
    speculative_ms: int,
) -> None:
    with pytest.raises(ValidationError, match="adaptive"):
        Settings(
            turn={"end_of_turn": "adaptive", "speculative_ms": speculative_ms, "end_of_turn_silence_ms": 500}
        )
    assert Settings(turn={"end_of_turn": "adaptive", "speculative_ms": 200}).turn.end_of_turn == "adaptive"


@pytest.mark.parametrize(
    ("turn", "end_of_turn"),
    [({}, "adaptive"), ({"speculative_ms": 0}, "fixed"), ({"end_of_turn_silence_ms": 100}, "fixed")],
)
def test_the_default_end_of_turn_is_adaptive_unless_the_config_leaves_it_no_guess(
    turn: dict[str, int], end_of_turn: str
) -> None:
    """A config written before adaptive was the default, with speculation off, still loads."""
    assert Settings(turn=turn).turn.end_of_turn == end_of_turn
