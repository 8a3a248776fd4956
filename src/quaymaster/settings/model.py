"""The config.yaml model: Quay's key names, their defaults, and one-line errors naming the key."""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quaymaster.settings.units import parse_duration, parse_size


class ConfigError(Exception):
    """A config problem, phrased as one line that names the offending key."""


@dataclass(frozen=True)
class StorageLocation:
    """One entry of DISTRIBUTED_STORAGE_CONFIG: a named location and its driver."""

    name: str
    driver: str
    params: dict[str, Any]


class RedisConfig(BaseModel):
    """BUILDLOGS_REDIS / USER_EVENTS_REDIS: where a Redis server answers (extra keys kept)."""

    model_config = ConfigDict(extra="allow")

    host: str
    port: int = Field(default=6379, ge=1, le=65535)
    password: str | None = None
    ssl: bool = False
    db: int = Field(default=0, ge=0)


SUPPORTED_STORAGE_DRIVERS = {"LocalStorage", "S3Storage", "RadosGWStorage"}
_STORAGE_REQUIRED = {
    "LocalStorage": ("storage_path",),
    "S3Storage": ("s3_bucket",),
    "RadosGWStorage": ("hostname", "bucket_name", "access_key", "secret_key"),
}
_SIGNATURE_VERSIONS = {"s3v4", "v4", "s3v2", "v2", "s3"}
_STORAGE_NUMBERS = {"minimum_chunk_size_mb": 5, "maximum_chunk_size_gb": 0, "maximum_chunk_size_mb": 0, "port": 1}


def _storage_params_problem(driver: str, params: dict[str, Any]) -> str | None:
    """What is wrong with one location's parameters, phrased after its key; None if nothing."""
    missing = [k for k in _STORAGE_REQUIRED.get(driver, ()) if not params.get(k)]
    if missing:
        return f"{driver} needs {', '.join(missing)}"
    if driver == "LocalStorage":
        return None
    for key, low in _STORAGE_NUMBERS.items():
        value = params.get(key)
        if value is None:
            continue
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            return f"{key}: must be a number"
        if number < low or number <= 0:
            return f"{key}: must be at least {low}" if low else f"{key}: must be positive"
    sig = params.get("signature_version")
    if sig is not None and str(sig).lower() not in _SIGNATURE_VERSIONS:
        return f"signature_version: unsupported {sig!r} (use s3v4)"
    if driver == "S3Storage" and bool(params.get("s3_access_key")) != bool(params.get("s3_secret_key")):
        return "s3_access_key and s3_secret_key go together"
    bundle = params.get("ca_bundle")
    if bundle is not None and not isinstance(bundle, str):
        return "ca_bundle: must be a file path"
    return None
SUPPORTED_DB_SCHEMES = ("sqlite", "postgresql", "postgres")


class Settings(BaseModel):
    """Quay-compatible settings. Unknown keys are kept (extra='allow') and written back untouched."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    SERVER_HOSTNAME: str = "localhost:8080"
    PREFERRED_URL_SCHEME: Literal["http", "https"] = "http"
    REGISTRY_TITLE: str = "Quaymaster"
    REGISTRY_TITLE_SHORT: str = "Quaymaster"
    DB_URI: str = "sqlite:///quaymaster.db"
    DB_CONNECTION_ARGS: dict[str, Any] = Field(default_factory=dict)
    DISTRIBUTED_STORAGE_CONFIG: dict[str, list[Any]] = Field(
        default_factory=lambda: {"default": ["LocalStorage", {"storage_path": "storage"}]}
    )
    DISTRIBUTED_STORAGE_PREFERENCE: list[str] = Field(default_factory=lambda: ["default"])
    SECRET_KEY: str = ""
    DATABASE_SECRET_KEY: str = ""
    SUPER_USERS: list[str] = Field(default_factory=list)
    AUTHENTICATION_TYPE: Literal["Database", "LDAP"] = "Database"
    FEATURE_USER_CREATION: bool = True
    FEATURE_ANONYMOUS_ACCESS: bool = True
    FEATURE_REFERRERS_API: bool = True
    FEATURE_PUBLIC_CATALOG: bool = False
    FEATURE_USER_INITIALIZE: bool = False
    FEATURE_APP_SPECIFIC_TOKENS: bool = True
    FEATURE_SUPERUSERS_FULL_ACCESS: bool = False
    FEATURE_SUPER_USERS: bool = True
    FEATURE_CHANGE_TAG_EXPIRATION: bool = True
    SESSION_COOKIE_SECURE: bool = False
    FRESH_LOGIN_TIMEOUT: str = "10m"
    CREATE_PRIVATE_REPO_ON_PUSH: bool = True
    CREATE_NAMESPACE_ON_PUSH: bool = False
    MAXIMUM_LAYER_SIZE: str | int = "20G"
    MAXIMUM_MANIFEST_SIZE: str | int = "4M"
    V2_PAGINATION_SIZE: int = Field(default=50, ge=1)
    PUSH_TEMP_TAG_EXPIRATION_SEC: int = Field(default=3600, ge=0)
    DEFAULT_TAG_EXPIRATION: str = "2w"
    TAG_EXPIRATION_OPTIONS: list[str] = Field(default_factory=lambda: ["0s", "1d", "1w", "2w", "4w"])
    REGISTRY_JWT_AUTH_MAX_FRESH_S: int = Field(default=3660, ge=60)
    INSTANCE_SERVICE_KEY_SERVICE: str = "quay"
    INSTANCE_SERVICE_KEY_EXPIRATION: int = Field(default=120, ge=5)  # minutes
    INSTANCE_SERVICE_KEY_REFRESH: int = Field(default=55, ge=1)  # minutes
    ACTION_LOG_AUDIT_LOGINS: bool = True
    ACTION_LOG_AUDIT_LOGIN_FAILURES: bool = True
    SETUP_COMPLETE: bool = True
    # TLS, Redis, LDAP, security scanner and mirroring keys (read by the config editor and validators).
    EXTERNAL_TLS_TERMINATION: bool = False
    BUILDLOGS_REDIS: RedisConfig | None = None
    USER_EVENTS_REDIS: RedisConfig | None = None
    LDAP_URI: str | None = None
    LDAP_ADMIN_DN: str | None = None
    LDAP_ADMIN_PASSWD: str | None = None
    LDAP_BASE_DN: list[str] | None = None
    LDAP_USER_RDN: list[str] | None = None
    LDAP_UID_ATTR: str = "uid"
    LDAP_EMAIL_ATTR: str = "mail"
    LDAP_USER_FILTER: str | None = None
    LDAP_SUPERUSER_FILTER: str | None = None
    LDAP_SECONDARY_USER_RDNS: list[str] = Field(default_factory=list)
    LDAP_ALLOW_INSECURE_FALLBACK: bool = False
    LDAP_TIMEOUT: float = Field(default=10.0, gt=0)  # seconds for one LDAP operation
    LDAP_NETWORK_TIMEOUT: float = Field(default=10.0, gt=0)  # seconds to connect
    LDAP_FOLLOW_REFERRALS: bool = True
    FEATURE_SECURITY_SCANNER: bool = False
    SECURITY_SCANNER_V4_ENDPOINT: str | None = None
    SECURITY_SCANNER_V4_PSK: str | None = None
    SECURITY_SCANNER_INDEXING_INTERVAL: int = Field(default=30, ge=1)
    SECURITY_SCANNER_V4_INDEX_MAX_LAYER_SIZE: str | int | None = None  # e.g. 8G; None = no limit
    SECURITY_SCANNER_V4_REINDEX_THRESHOLD: int = Field(default=86400, ge=0)  # seconds
    SECURITY_SCANNER_V4_MANIFEST_CLEANUP: bool = True
    SECURITY_SCANNER_MAX_SCAN_RETRIES: int = Field(default=5, ge=1)
    SECURITY_SCANNER_V4_BATCH_SIZE: int = Field(default=10, ge=1)  # manifests per indexing pass
    SECURITY_SCANNER_V4_INDEXING: bool = True  # off: the API and pages still read the scanner
    FEATURE_REPO_MIRROR: bool = False
    REPO_MIRROR_TLS_VERIFY: bool = True
    REPO_MIRROR_INTERVAL: int = Field(default=30, ge=1)
    REPO_MIRROR_SERVER_HOSTNAME: str | None = None
    # Storage replication, garbage collection and quotas.
    FEATURE_STORAGE_REPLICATION: bool = False
    DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: list[str] = Field(default_factory=list)
    FEATURE_GARBAGE_COLLECTION: bool = True
    FEATURE_NAMESPACE_GARBAGE_COLLECTION: bool = True
    FEATURE_REPOSITORY_GARBAGE_COLLECTION: bool = True
    GARBAGE_COLLECTION_FREQUENCY: float = Field(default=30, gt=0)  # seconds between passes
    BLOBUPLOAD_DELETION_DATE_THRESHOLD: int = Field(default=2880, ge=1)  # minutes an upload may idle
    FEATURE_ENABLE_STALE_MPU_CLEANUP: bool = True
    FEATURE_QUOTA_MANAGEMENT: bool = False
    FEATURE_VERIFY_QUOTA: bool = True
    FEATURE_EDIT_QUOTA: bool = True
    DEFAULT_SYSTEM_REJECT_QUOTA_BYTES: int = Field(default=0, ge=0)

    @field_validator("SERVER_HOSTNAME")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not v or "/" in v or " " in v or "://" in v:
            raise ValueError("must be host[:port], without a scheme or path")
        return v

    @field_validator("DB_URI")
    @classmethod
    def _db_uri(cls, v: str) -> str:
        scheme = v.split(":", 1)[0].split("+", 1)[0]
        if scheme in ("mysql", "mariadb"):
            raise ValueError(f"unsupported database {scheme!r}: MySQL is not supported by this version; "
                             "use PostgreSQL (postgresql://) or SQLite (sqlite:///)")
        if scheme not in SUPPORTED_DB_SCHEMES:
            raise ValueError(f"unsupported database {scheme!r}; use sqlite:/// or postgresql://")
        return v

    @field_validator("MAXIMUM_LAYER_SIZE", "MAXIMUM_MANIFEST_SIZE", "SECURITY_SCANNER_V4_INDEX_MAX_LAYER_SIZE")
    @classmethod
    def _size(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_size(v)
        return v

    @field_validator("DEFAULT_TAG_EXPIRATION")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("TAG_EXPIRATION_OPTIONS")
    @classmethod
    def _durations(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_duration(item)
        return v

    @model_validator(mode="after")
    def _storage(self) -> "Settings":
        for name, entry in self.DISTRIBUTED_STORAGE_CONFIG.items():
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict)):
                raise ValueError(
                    f"DISTRIBUTED_STORAGE_CONFIG.{name}: expected [Driver, {{params}}]"
                )
            if entry[0] not in SUPPORTED_STORAGE_DRIVERS:
                raise ValueError(
                    f"DISTRIBUTED_STORAGE_CONFIG.{name}: unsupported driver {entry[0]!r}"
                    f" (supported: {', '.join(sorted(SUPPORTED_STORAGE_DRIVERS))})"
                )
            problem = _storage_params_problem(entry[0], entry[1])
            if problem:
                raise ValueError(f"DISTRIBUTED_STORAGE_CONFIG.{name}: {problem}")
        if not self.DISTRIBUTED_STORAGE_PREFERENCE:
            raise ValueError("DISTRIBUTED_STORAGE_PREFERENCE: must name at least one location")
        for key in ("DISTRIBUTED_STORAGE_PREFERENCE", "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS"):
            for name in getattr(self, key):
                if name not in self.DISTRIBUTED_STORAGE_CONFIG:
                    raise ValueError(f"{key}: {name!r} is not in DISTRIBUTED_STORAGE_CONFIG")
        return self

    # Derived values, parsed once here so the rest of the code never re-reads raw keys.
    @property
    def max_layer_bytes(self) -> int:
        return parse_size(self.MAXIMUM_LAYER_SIZE)

    @property
    def scanner_max_layer_bytes(self) -> int | None:
        value = self.SECURITY_SCANNER_V4_INDEX_MAX_LAYER_SIZE
        return None if value in (None, "", 0) else parse_size(value)

    @property
    def max_manifest_bytes(self) -> int:
        return parse_size(self.MAXIMUM_MANIFEST_SIZE)

    @property
    def page_size(self) -> int:
        """Quay floors the v2 page size at 100."""
        return max(self.V2_PAGINATION_SIZE, 100)

    @property
    def storage_locations(self) -> list[StorageLocation]:
        return [StorageLocation(n, e[0], dict(e[1])) for n, e in self.DISTRIBUTED_STORAGE_CONFIG.items()]

    @property
    def base_url(self) -> str:
        return f"{self.PREFERRED_URL_SCHEME}://{self.SERVER_HOSTNAME}"

    def is_superuser(self, username: str) -> bool:
        return username in self.SUPER_USERS


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Validate a parsed config.yaml, turning the first problem into a ConfigError naming its key."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"] and ":" in msg:  # model-level errors already start with the key
            raise ConfigError(msg) from None
        raise ConfigError(f"{key}: {msg}") from None
