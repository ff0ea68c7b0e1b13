"""Reading the configuration: the file lookup, the TOML source under the environment, one-line errors,
explicit overrides, the redacted view `config show` prints and the starter file `config init` writes.

Precedence, lowest first: built-in defaults < the TOML file < environment < explicit overrides (CLI flags).
The file is `--config PATH`, else `$VOICEBRIDGE_CONFIG`, else `./voicebridge.toml`, else
`/etc/voicebridge/config.toml`, else none (defaults run everything locally).

Keys an older release read and this one does not are RETIRED, not unknown: sections forbid unknown keys,
so without this table a config written by an older `config init` would stop the daemon from starting.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import tomli_w
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from voicebridge.config.schema import ENV_PREFIX, Settings

ENV_CONFIG_PATH = "VOICEBRIDGE_CONFIG"
SYSTEM_CONFIG_PATH = Path("/etc/voicebridge/config.toml")
LOCAL_CONFIG_NAME = "voicebridge.toml"

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    """A configuration problem, phrased as one line for the operator."""


class RetiredKey(NamedTuple):
    """A key an older release read and this one does not: accepted from the file and the environment,
    dropped before validation, and reported (`warning`, and doctor's config row)."""

    section: str
    key: str
    why: str

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def warning(self) -> str:
        """One line naming the key and why it went; never its value (most retired keys were secrets)."""
        return f"{self.name} is no longer used ({self.why}); remove it"


# exotel.account_sid/api_key/api_token/subdomain were retired once and are live again: outbound calls
# use them (issue 17).
RETIRED_KEYS: tuple[RetiredKey, ...] = (
    RetiredKey("stt", "model_per_call", "the benchmark that compares it builds its own per-call engine"),
)


class LoadedConfig(NamedTuple):
    """The effective settings, and the retired keys the file or the environment still sets (table order)."""

    settings: Settings
    retired: tuple[RetiredKey, ...]


def _without_retired(data: dict[str, Any], found: set[RetiredKey]) -> dict[str, Any]:
    """`data` without the retired keys, each of which is added to `found`; `data` is left as it was."""
    kept = dict(data)
    for retired in RETIRED_KEYS:
        section = kept.get(retired.section)
        if isinstance(section, dict) and retired.key in section:
            kept[retired.section] = {key: value for key, value in section.items() if key != retired.key}
            found.add(retired)
    return kept


class _WithoutRetired(PydanticBaseSettingsSource):
    """Another source's values with the retired keys taken out (and noted in `found`)."""

    def __init__(self, inner: PydanticBaseSettingsSource, found: set[RetiredKey]) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner
        self._found = found

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return _without_retired(self._inner(), self._found)


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
    secret = location and (
        location[-1].endswith(("_key", "_token", "_password", "_secret", "token"))
        or location[-1] == "redis_url"  # redis://:password@host
    )
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif (
        "input" in error
        and error["type"] != "missing"
        and not isinstance(error["input"], dict | list)  # a section of the wrong shape may hold secrets
        and not secret  # a mistyped secret is still a secret
    ):
        message = f"{message} (got {error['input']!r})"
    return f"config error: {origin}: {key + ': ' if key else ''}{message}"


def load_config(explicit: Path | None = None, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Load the effective settings and note the retired keys set; raise ConfigError with a one-line message
    when anything is wrong. Reports nothing itself (`load_settings` logs the retired keys)."""
    path = resolve_config_path(explicit)
    file_data = _read_toml(path) if path else {}
    found: set[RetiredKey] = set()

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
            file_settings = _DictSource(settings_cls, file_data)
            return (
                init_settings,
                _WithoutRetired(env_settings, found),
                _WithoutRetired(file_settings, found),
            )

    try:
        loaded = SettingsFromFile(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], path)) from None
    # Hand back the plain model so callers never see the per-load subclass.
    settings = Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})
    return LoadedConfig(settings, tuple(retired for retired in RETIRED_KEYS if retired in found))


def warn_retired(retired: tuple[RetiredKey, ...]) -> None:
    """One warning line per retired key still set, naming the key (never its value)."""
    for key in retired:
        logger.warning("%s", key.warning())


def load_settings(explicit: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load the effective settings (`load_config`), logging a warning for each retired key still set."""
    loaded = load_config(explicit, overrides)
    warn_retired(loaded.retired)
    return loaded.settings


def redacted_document(settings: Settings) -> dict[str, Any]:
    """The effective config as a TOML-ready dict with every secret masked."""
    # Unset per-number keys are None, which TOML cannot say: left out, as unset.
    document = settings.model_dump(mode="json", exclude_none=True)
    for section_name, section in settings:
        if not isinstance(section, BaseModel):  # [numbers]: tables of numbers, no secrets in them
            continue
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
