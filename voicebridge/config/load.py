"""Reading the configuration: the file lookup, the TOML source under the environment, one-line errors,
explicit overrides, the redacted view `config show` prints and the starter file `config init` writes.

Precedence, lowest first: built-in defaults < the TOML file < environment < explicit overrides (CLI flags).
The file is `--config PATH`, else `$VOICEBRIDGE_CONFIG`, else `./voicebridge.toml`, else
`/etc/voicebridge/config.toml`, else none (defaults run everything locally).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from voicebridge.config.schema import ENV_PREFIX, Settings

ENV_CONFIG_PATH = "VOICEBRIDGE_CONFIG"
SYSTEM_CONFIG_PATH = Path("/etc/voicebridge/config.toml")
LOCAL_CONFIG_NAME = "voicebridge.toml"


class ConfigError(Exception):
    """A configuration problem, phrased as one line for the operator."""


class _DictSource(PydanticBaseSettingsSource):
    """A settings source that hands pydantic an already-parsed TOML document."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def resolve_config_path(explicit: Path | None) -> Path | None:
    """Pick the config file by precedence; None means built-in defaults."""
    if explicit is not None:
        return explicit
    if env_path := os.environ.get(ENV_CONFIG_PATH):
        return Path(env_path)
    for candidate in (Path.cwd() / LOCAL_CONFIG_NAME, SYSTEM_CONFIG_PATH):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config error: {path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config error: {path}: is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config error: {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path}: invalid TOML: {exc}") from None


def _describe(error: dict[str, Any], path: Path | None) -> str:
    """One line naming where the bad value came from, the key, and what is wrong with it."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(location)
    env_name = ENV_PREFIX + "__".join(part.upper() for part in location)
    if env_name in os.environ:
        origin = f"environment {env_name}"
    elif len(location) > 2 and ENV_PREFIX + "__".join(p.upper() for p in location[:2]) in os.environ:
        origin = f"environment {ENV_PREFIX}{'__'.join(p.upper() for p in location[:2])}"
    else:
        origin = str(path) if path else "built-in defaults"
    message = str(error["msg"]).removeprefix("Value error, ")
    secret = location and location[-1].endswith(("_key", "_token", "_password", "_secret", "token"))
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif (
        "input" in error
        and error["type"] != "missing"
        and not isinstance(error["input"], dict)
        and not secret  # a mistyped secret is still a secret
    ):
        message = f"{message} (got {error['input']!r})"
    return f"config error: {origin}: {key + ': ' if key else ''}{message}"


def load_settings(explicit: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load the effective settings; raise ConfigError with a one-line message when anything is wrong."""
    path = resolve_config_path(explicit)
    file_data = _read_toml(path) if path else {}

    class SettingsFromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, file_data))

    try:
        loaded = SettingsFromFile(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], path)) from None
    # Hand back the plain model so callers never see the per-load subclass.
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})


def apply_overrides(settings: Settings, section: str, **values: Any) -> Settings:
    """Return a copy with some keys of one section replaced (None values are ignored)."""
    present = {key: value for key, value in values.items() if value is not None}
    if not present:
        return settings
    updated = getattr(settings, section).model_copy(update=present)
    return settings.model_copy(update={section: updated})


def redacted_document(settings: Settings) -> dict[str, Any]:
    """The effective config as a TOML-ready dict with every secret masked."""
    document = settings.model_dump(mode="json")
    for section_name, section in settings:
        for key, value in section:
            if isinstance(value, SecretStr):
                document[section_name][key] = "********" if value.get_secret_value() else ""
    return document


def render_toml(settings: Settings) -> str:
    """Effective config as TOML text, secrets redacted."""
    return tomli_w.dumps(redacted_document(settings))


def write_starter(path: Path, force: bool = False) -> None:
    """Write a starter config of the defaults; refuse to overwrite an existing file without force."""
    if path.exists() and not force:
        raise ConfigError(f"config error: {path} already exists (use --force to overwrite)")
    document = Settings.model_construct().model_dump(mode="json")
    for section in document.values():
        for key, value in section.items():
            if value == "**********":
                section[key] = ""
    header = "# voicebridge configuration — see config.example.toml for what every key means.\n\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + tomli_w.dumps(document))
    except OSError as exc:
        raise ConfigError(f"config error: cannot write {path}: {exc.strerror}") from None
