"""Settings from ``CAREOPS_*`` environment variables and an optional ``careops.toml``.

Environment variables win over the file. ``check_production`` refuses configurations that are
unsafe in production and says which setting to change.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from careops.errors import ConfigurationError
from careops.governance.duties import DEFAULT_RULES, DutyRule

DEFAULT_SECRET = "insecure-development-secret"  # noqa: S105 - the value production refuses


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREOPS_", toml_file="careops.toml", extra="ignore")

    mode: Literal["local", "production"] = Field("local", description="`production` enables safety checks.")
    database_url: str = Field("sqlite:///careops.db", description="SQLAlchemy URL of the system of record.")
    dbos_database_url: str | None = Field(
        None,
        description="DBOS system database; default: the same PostgreSQL database or a sibling SQLite file",
    )
    secret_key: str = Field(DEFAULT_SECRET, description="Secret for signing; must be changed in production.")
    encryption_key_file: str | None = Field(
        None,
        description="File holding the 32-byte master key (base64) that wraps the data keys of encrypted "
        "columns; without it the master key is derived from secret_key.",
    )
    workers: int = Field(1, ge=1, description="HTTP worker processes started by `careops serve`.")
    executor_id: str = Field("local", description="DBOS executor id of this worker process.")
    max_body_bytes: int = Field(1024 * 1024, description="Largest accepted request body (413 above it).")
    quarantine_max_bytes: int = Field(16 * 1024 * 1024, description="Largest rejected body kept whole.")
    duplicate_window_hours: float = Field(
        72.0, description="Same patient+service+referrer within it = duplicate."
    )
    credential_warning_days: int = Field(
        30, ge=1, le=365, description="Warn this many days before a staff credential expires."
    )
    triage_timeout_seconds: float = Field(4 * 3600.0, description="Wait for triage before 'triage overdue'.")
    automation_interval_seconds: float = Field(
        0.2, gt=0, description="How often the worker's rule engine reads new events and sweeps due timers."
    )
    automation_max_depth: int = Field(
        5, ge=1, le=50, description="Rule runs caused by rule runs stop at this depth (loop protection)."
    )
    automation_clock_offset_seconds: float = Field(
        0.0,
        description="Moves the rule engine's clock (drills, tests of timers and schedules); 0 in production.",
    )
    dispatch_interval_seconds: float = Field(0.1, description="Outbox poll interval of the dispatcher.")
    dispatch_batch_size: int = Field(200, description="Outbox rows claimed per dispatcher batch.")
    connectors_file: Path | None = Field(
        None,
        description="YAML of what each outbound connector receives (docs/integrations.md); none: none.",
    )
    delivery_interval_seconds: float = Field(
        1.0, gt=0, description="How often the worker plans and sends deliveries when it has nothing due."
    )
    delivery_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a claimed delivery is a worker's before another may send it (a crash).",
    )
    delivery_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a delivery waits for its target's answer before it counts as failed.",
    )
    audit_seal_interval_seconds: float = Field(
        0.5, description="How often the worker seals new events into the audit chain."
    )
    audit_checkpoint_seconds: float = Field(
        10.0, description="How often the worker signs a checkpoint of the audit chain's head."
    )
    reference_cache_seconds: float = Field(
        5.0, description="How long intake reuses its reference-data snapshot."
    )
    token_cache_seconds: float = Field(
        5.0, description="How long a verified token is trusted without a query."
    )
    api_requests_per_minute_per_token: int = Field(
        120_000, ge=0, description="API requests per token per minute (per process); 429 above; 0: no limit."
    )
    api_requests_per_minute_per_address: int = Field(
        240_000,
        ge=0,
        description="API requests per client address per minute (per process); 429 above; 0: no limit.",
    )
    webhook_tolerance_seconds: float = Field(
        300, gt=0, description="How old a webhook signature may be; older ones are refused (replay window)."
    )
    oidc_issuer: str | None = Field(
        None, description="OpenID Connect provider (its issuer URL); unset: local login only."
    )
    oidc_client_id: str | None = Field(
        None, description="careops's client id at the OpenID Connect provider."
    )
    oidc_client_secret: str | None = Field(None, description="careops's client secret at the provider.")
    oidc_username_claim: str = Field(
        "preferred_username", description="ID token claim that names the careops user (e.g. email)."
    )
    separation_of_duties: list[DutyRule] = Field(
        default_factory=lambda: list(DEFAULT_RULES),
        description="Who may not act on a record they are party to, e.g. "
        '[{"action": "exceptions:resolve", "not_by": "requester", "why": "..."}].',
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed console logins in a row before the account is locked."
    )
    login_lockout_minutes: float = Field(15, gt=0, description="How long a locked account stays locked.")
    login_attempts_per_minute: int = Field(
        10, ge=1, description="Console login attempts per client address per minute (per process); 429 above."
    )
    session_hours: float = Field(8, gt=0, description="Console sessions end this long after login.")
    password_min_length: int = Field(12, ge=8, description="Shortest password a user may set.")
    default_phone_region: str = Field("GB", description="Region for phone numbers without a country code.")
    facility_locations: dict[str, str] = Field(
        default_factory=dict,
        description='HL7 facility (PV1-3.4 or MSH-6) to location slug, e.g. {"GHHRFacility": "north"}.',
    )
    default_location: str | None = Field(
        None,
        description="Location for HL7/FHIR/email intake from an unmapped facility (else: exception queue).",
    )
    otlp_traces_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); unset: no tracing.",
    )
    mllp_host: str = Field("127.0.0.1", description="Interface the MLLP listener binds to.")
    mllp_port: int | None = Field(
        None, description="Start the HL7 MLLP listener on this port (worker process)."
    )
    mllp_max_bytes: int = Field(
        1024 * 1024, description="Largest MLLP frame; larger ones are quarantined and NAKed."
    )
    mllp_allowed_peers: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) that may connect to the MLLP listener; empty: any.",
    )
    mllp_tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) of the MLLP listener: MLLP over TLS when set."
    )
    mllp_tls_key: Path | None = Field(None, description="PEM private key of mllp_tls_cert.")
    mllp_tls_client_ca: Path | None = Field(
        None, description="PEM CA(s) whose client certificates the MLLP listener requires (mutual TLS)."
    )
    smtp_host: str = Field("127.0.0.1", description="Interface the SMTP listener binds to.")
    smtp_port: int | None = Field(
        None, description="Start the SMTP listener for referral emails on this port."
    )
    smtp_max_bytes: int = Field(
        25 * 1024 * 1024, description="Largest email the SMTP listener accepts (552 above)."
    )
    email_allowed_senders: list[str] = Field(
        default_factory=list,
        description="Addresses or @domains whose emails are taken; empty: every sender.",
    )
    form_submissions_per_minute: int = Field(
        10, description="Partner form submissions per client address per minute (per process); 429 above."
    )
    form_token_max_age_seconds: float = Field(
        2 * 3600.0, description="How long a partner form page stays valid."
    )
    form_max_upload_bytes: int = Field(
        10 * 1024 * 1024, description="Largest file attached to a partner form."
    )
    date_order: Literal["DMY", "MDY"] = Field("DMY", description="How to read 01/02/1980-style dates.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def resolved_dbos_url(self) -> str:
        if self.dbos_database_url:
            return self.dbos_database_url
        if self.is_sqlite:
            path = self.database_url.removeprefix("sqlite:///")
            return f"sqlite:///{Path(path).with_suffix('')}.dbos.db"
        return self.database_url.replace("postgresql+psycopg://", "postgresql://")

    def check_production(self, processes: int) -> None:
        """Raise ConfigurationError when production mode meets an unsafe setting."""
        if self.mode != "production":
            return
        if self.secret_key == DEFAULT_SECRET or len(self.secret_key) < 32:
            raise ConfigurationError(
                "production mode needs a secret: set CAREOPS_SECRET_KEY to at least 32 random characters"
            )
        if self.is_sqlite and processes > 1:
            raise ConfigurationError(
                "SQLite serves one process only: use --workers 1 or set CAREOPS_DATABASE_URL to "
                "postgresql+psycopg://..."
            )
        authenticated = self.mllp_allowed_peers or self.mllp_tls_client_ca
        if self.mllp_port is not None and not _loopback(self.mllp_host) and not authenticated:
            raise ConfigurationError(
                f"MLLP has no authentication of its own and listens on {self.mllp_host}: set "
                "CAREOPS_MLLP_ALLOWED_PEERS to the interface engines' addresses, e.g. '[\"10.1.2.3\"]', "
                "or require their certificates with CAREOPS_MLLP_TLS_CLIENT_CA"
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
