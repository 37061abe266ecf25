"""Agent settings: a TOML file plus `RUSTYFLAG_...` environment overrides.

Settings are built by `load_settings()`, never at import time, so a reload
rebuilds them from scratch. Environment variables use `__` between section
and key, e.g. `RUSTYFLAG_QUEUE__FAIL_CLOSED=true`, `RUSTYFLAG_MODE=dry-run`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.errors import ConfigError, Problem
from agent.intel.allowlist import DEFAULT_NEVER_BLOCK
from agent.intel.model import Action, Confidence, EvidenceKind

DEFAULT_CONFIG_PATH = Path("/etc/rustyflag-agent/agent.toml")
EMBEDDED_INTEL = "embedded"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedSettings(_Section):
    """One `[[intel.feeds]]` entry: an HTTPS document or a TAXII 2.1 collection.

    Credentials never live in the file: `RUSTYFLAG_FEED_<NAME>_TOKEN` (bearer)
    or `..._USER` + `..._PASSWORD` (basic), NAME upper-cased with `-` -> `_`.
    """

    # Also the cache file's stem under `state_dir/feeds/`, hence the strict pattern.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    # https: the document; taxii: the API root (unless `api_root` is given).
    url: str = Field(pattern=r"^https?://[^\s]+$")
    kind: Literal["https", "taxii"] = "https"
    interval: float = Field(default=300.0, ge=5.0)
    timeout: float = Field(default=20.0, gt=0, le=600.0)
    max_bytes: int = Field(default=32 << 20, ge=1024)
    # https only: the document must hash to this (lower-case hex).
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # https only: forced format (else detected from content); taxii is always stix.
    format: Literal["vuldb", "stix", "plain"] | None = None
    # taxii only: collection id (joined to api_root) or a full collection URL.
    collection: str | None = None
    api_root: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    page_size: int = Field(default=500, ge=1, le=100000)
    verify_tls: bool = True
    ca_file: str | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> FeedSettings:
        if self.kind == "taxii":
            if not self.collection:
                raise ValueError(f"feed {self.name!r}: kind 'taxii' needs `collection`")
            if self.sha256 is not None or self.format not in (None, "stix"):
                raise ValueError(f"feed {self.name!r}: `sha256`/`format` are for https feeds")
        elif self.collection is not None or self.api_root is not None:
            raise ValueError(f"feed {self.name!r}: `collection`/`api_root` are for taxii feeds")
        return self


class IntelSettings(_Section):
    # Files or directories of intel pages; "embedded" is the default campaign shipped with the agent.
    sources: list[str] = Field(default_factory=lambda: [EMBEDDED_INTEL])
    # Per-source format override: path -> "vuldb" | "stix" | "plain".
    formats: dict[str, Literal["vuldb", "stix", "plain"]] = Field(default_factory=dict)
    # Remote sources; their last good copies live under `state_dir/feeds/`.
    feeds: list[FeedSettings] = Field(default_factory=list)
    state_dir: str = "/var/lib/rustyflag-agent"
    # Addresses intel can never make the gateway drop (an IOC overlapping one is left
    # out with a warning): local and special ranges by default; add your own LAN,
    # upstream resolvers, shared cloud/CDN ranges you depend on.
    never_block: list[str] = Field(default_factory=lambda: list(DEFAULT_NEVER_BLOCK))
    # Hostname IOCs never matched (suffix match); localhost/.local/.arpa always are.
    allow_hostnames: list[str] = Field(default_factory=list)

    @field_validator("never_block")
    @classmethod
    def _valid_networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return networks

    @field_validator("feeds")
    @classmethod
    def _unique_feed_names(cls, feeds: list[FeedSettings]) -> list[FeedSettings]:
        names = [f.name.lower() for f in feeds]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feed names must be unique (case-insensitive): {duplicates}")
        return feeds


class HttpSettings(_Section):
    ports: list[int] = Field(default_factory=lambda: [80, 8000, 8080, 6862, 6870])
    # Bytes of each client->server stream that are inspected (and queued to userspace).
    inspect_depth: int = Field(default=16384, ge=512, le=1 << 20)
    max_flows: int = Field(default=65536, ge=16)
    idle_timeout: float = Field(default=120.0, gt=0)

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, ports: list[int]) -> list[int]:
        bad = [p for p in ports if not 0 < p < 65536]
        if bad:
            raise ValueError(f"not a TCP port: {bad}")
        return ports


class QueueSettings(_Section):
    nums: list[int] = Field(default_factory=lambda: [0, 1])
    backend: Literal["auto", "nft", "xt"] = "auto"
    # false: `bypass` (traffic flows when no agent is bound); true: it stops.
    fail_closed: bool = False
    # When the queue is full: accept (fail-open, counted) instead of dropping.
    fail_open_on_overload: bool = True
    max_len: int = Field(default=4096, ge=16)
    socket_buffer: int = Field(default=8 << 20, ge=1 << 16)
    workers: int = Field(default=0, ge=0)  # 0: one per queue number


class NftSettings(_Section):
    table: str = Field(default="rustyflag", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,30}$")
    hooks: tuple[Literal["forward", "input", "output"], ...] = ("forward", "input", "output")
    log_group: int = Field(default=7, ge=1, le=65535)
    log_rate_per_second: int = Field(default=200, ge=1)
    keep_rules_on_stop: bool = False
    # Reset both ends of a flow the inspector blocked (else drop silently).
    reset_blocked: bool = True
    # Single mark bits: a flow the inspector blocked; (xt backend) a packet nft wants queued.
    block_mark: int = Field(default=0x10000000, ge=1, le=0xFFFFFFFF)
    queue_mark: int = Field(default=0x20000000, ge=1, le=0xFFFFFFFF)
    # Past the inspection depth, packets that start a new HTTP request (and tiny
    # segments) are still queued, with this mark: keep-alive padding cannot hide
    # a later request.
    queue_past_depth: bool = True
    past_depth_mark: int = Field(default=0x40000000, ge=1, le=0xFFFFFFFF)


class ActionSettings(_Section):
    """Default action per evidence kind; a campaign's enrichment may override them."""

    ioc_address: Action = Action.DROP
    ioc_hostname: Action = Action.FLAG
    file: Action = Action.FLAG
    library: Action = Action.FLAG
    sqli: Action = Action.FLAG
    xss: Action = Action.FLAG
    type_violation: Action = Action.FLAG
    input_value: Action = Action.FLAG
    pattern: Action = Action.FLAG
    network_port: Action = Action.FLAG
    http_anomaly: Action = Action.FLAG
    # A drop for an indicator below this confidence is downgraded to a flag.
    drop_min_confidence: Confidence = Confidence.LOW

    def for_kind(self, kind: EvidenceKind) -> Action:
        action: Action = getattr(self, kind.value)
        return action


class LogSettings(_Section):
    output: str = "stdout"  # "stdout" or a file path (reopened on SIGUSR1)
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    max_value_length: int = Field(default=256, ge=16, le=65536)
    # Log volume under attack (agent/service/decision_log.py). Folded decisions are
    # counted and reported in periodic `suppressed` events, never silently lost.
    # Fold a decision identical to one already logged for the same flow (same action,
    # request target, indicators and evidence): a repeat, not a distinct decision.
    dedupe_flow: bool = True
    # Decision events per second per (indicator, action); 0 = unlimited (the default).
    rate_per_indicator: float = Field(default=0.0, ge=0.0)
    burst_per_indicator: int = Field(default=20, ge=1)
    suppressed_interval: float = Field(default=10.0, gt=0, le=3600.0)


class MetricsSettings(_Section):
    """Prometheus endpoint of the main process; loopback only unless changed."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1:9816", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):\d{1,5}$")

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RUSTYFLAG_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )
    toml_path: ClassVar[Path | None] = None

    mode: Literal["enforce", "dry-run"] = "enforce"
    intel: IntelSettings = Field(default_factory=IntelSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    nft: NftSettings = Field(default_factory=NftSettings)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry-run"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)


def _line_of(text: str, loc: tuple[int | str, ...]) -> int:
    """Best-effort line of the key at `loc` in a TOML text (1-based; 0 if unknown)."""
    section_line = 0
    lines = text.splitlines()
    if len(loc) > 1 and isinstance(loc[0], str):
        header = re.compile(rf"^\s*\[\s*{re.escape(loc[0])}\s*\]")
        for number, line in enumerate(lines, 1):
            if header.match(line):
                section_line = number
                break
    keys = [k for k in loc if isinstance(k, str)]
    if not keys:
        return section_line
    key = re.compile(rf"^\s*\"?{re.escape(keys[-1])}\"?\s*=")
    for number, line in enumerate(lines[section_line:], section_line + 1):
        if key.match(line):
            return number
    return section_line


def _env_names(loc: tuple[int | str, ...]) -> str:
    return "RUSTYFLAG_" + "__".join(str(k).upper() for k in loc)


def load_settings(path: Path | None = None, *, required: bool = False) -> Settings:
    """Build settings from `path` (default /etc/rustyflag-agent/agent.toml, if present).

    Raises ConfigError listing every problem as `file:line: message`.
    """
    chosen = path if path is not None else DEFAULT_CONFIG_PATH
    text = ""
    toml_path: Path | None = None
    if chosen.exists():
        try:
            text = chosen.read_text(encoding="utf-8")
            tomllib.loads(text)
        except OSError as exc:
            raise ConfigError([Problem(str(chosen), 0, f"cannot read: {exc.strerror}")]) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError([Problem(str(chosen), 0, f"not UTF-8: {exc.reason}")]) from exc
        except tomllib.TOMLDecodeError as exc:
            line = int(m.group(1)) if (m := re.search(r"line (\d+)", str(exc))) else 0
            raise ConfigError([Problem(str(chosen), line, f"invalid TOML: {exc}")]) from exc
        toml_path = chosen
    elif path is not None or required:
        raise ConfigError([Problem(str(chosen), 0, "config file does not exist")])

    settings_cls = type("BoundSettings", (Settings,), {"toml_path": toml_path})
    try:
        settings: Settings = settings_cls()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            dotted = ".".join(str(k) for k in loc)
            env_name = _env_names(loc)
            if env_name in os.environ or f"RUSTYFLAG_{str(loc[0]).upper()}" in os.environ:
                problems.append(Problem(f"environment {env_name}", 0, f"{dotted}: {error['msg']}"))
            else:
                where = str(toml_path) if toml_path else "defaults"
                problems.append(Problem(where, _line_of(text, loc), f"{dotted}: {error['msg']}"))
        raise ConfigError(problems) from exc
    return settings


def settings_summary(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")
