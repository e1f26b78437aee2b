"""Settings: validated once at construction, read from the environment by `Settings.from_env()`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

ConsentCheck = Callable[[Any], bool]

DEFAULT_API_BASE = "https://api.pinterest.com/v5"
DEFAULT_OUTBOX = "sqlite:///tracklayer-outbox.sqlite3"
ENV_PREFIX = "TRACKLAYER_"

_HOST_RE = re.compile(
    r"^\.?(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_COOKIE_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_COOKIE_VALUE_RE = re.compile(r"^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _split_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item and item.strip())


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}: expected one of 1/0/true/false/yes/no, got {raw!r}")


def _normalize_host(setting: str, host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if not _HOST_RE.match(host):
        raise ValueError(f"{setting}: {host!r} is not a host name (e.g. 'pay.example' or '.example')")
    return host


def host_matches(host: str, pattern: str) -> bool:
    """`pattern` is a host or a `.suffix`; a suffix matches itself and every subdomain."""
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything tracklayer_mw can be told; see CONTRACT.md §2 for the environment variables."""

    secret_key: str | Sequence[str]
    pinterest_ad_account_id: str | None = None
    pinterest_access_token: str | None = field(default=None, repr=False)
    pinterest_api_base: str = DEFAULT_API_BASE
    pinterest_test_mode: bool = False
    pinterest_tag_id: str | None = None
    cookie_domain: str | None = None
    linked_domains: str | Sequence[str] = ()
    outbox: str = DEFAULT_OUTBOX
    path_prefix: str = "/_tl"
    trusted_proxy_hops: int = 0
    consent: ConsentCheck | str | None = None
    on_no_consent: Literal["drop", "opt_out"] = "drop"
    default_phone_country: str | None = None
    # Additions beyond the contract's table (documented in the README).
    inject_snippet: bool = True
    page_visit: bool = True
    respect_gpc: bool = True
    ingest_rate_per_minute: int = 600
    diagnostics_token: str | None = field(default=None, repr=False)
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        keys = _split_list(self.secret_key)
        if not keys:
            raise ValueError(
                "secret_key: required (TRACKLAYER_SECRET_KEY); a comma-separated list rotates keys"
            )
        if any(len(key) < 16 for key in keys):
            raise ValueError("secret_key: every key must be at least 16 characters long")
        object.__setattr__(self, "secret_key", keys)
        self._check_pinterest()
        self._check_cookies_and_paths()
        self._check_consent_and_limits()

    def _check_pinterest(self) -> None:
        account = (self.pinterest_ad_account_id or "").strip() or None
        if account is not None and not (account.isascii() and account.isdigit() and len(account) <= 18):
            raise ValueError(
                "pinterest_ad_account_id: must be the digits of the ad account id (at most 18), "
                "as shown in Ads Manager; got a value with other characters"
            )
        object.__setattr__(self, "pinterest_ad_account_id", account)
        token = (self.pinterest_access_token or "").strip() or None
        if token is not None and (any(ch.isspace() for ch in token) or not token.isascii()):
            raise ValueError("pinterest_access_token: contains spaces or non-ASCII characters (copy error?)")
        object.__setattr__(self, "pinterest_access_token", token)

        base = self.pinterest_api_base.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", base):
            raise ValueError(
                "pinterest_api_base: must be an http(s) URL such as https://api.pinterest.com/v5"
            )
        object.__setattr__(self, "pinterest_api_base", base)

        tag = (self.pinterest_tag_id or "").strip() or None
        if tag is not None and not (tag.isascii() and tag.isdigit()):
            raise ValueError("pinterest_tag_id: must be the digits of the Pinterest tag id")
        object.__setattr__(self, "pinterest_tag_id", tag)

    def _check_cookies_and_paths(self) -> None:
        domain = (self.cookie_domain or "").strip() or None
        if domain is not None:
            domain = _normalize_host("cookie_domain", domain if domain.startswith(".") else "." + domain)
        object.__setattr__(self, "cookie_domain", domain)
        linked = tuple(_normalize_host("linked_domains", host) for host in _split_list(self.linked_domains))
        object.__setattr__(self, "linked_domains", linked)

        if (
            not (self.outbox.startswith("sqlite:///") and len(self.outbox) > 10)
            and self.outbox != "memory://"
        ):
            raise ValueError("outbox: use 'sqlite:///PATH' (durable) or 'memory://' (tests only)")

        prefix = "/" + self.path_prefix.strip().strip("/")
        if prefix == "/" or not re.match(r"^/[A-Za-z0-9._~/-]+$", prefix):
            raise ValueError("path_prefix: must be a non-root path such as '/_tl'")
        object.__setattr__(self, "path_prefix", prefix)

        if not isinstance(self.trusted_proxy_hops, int) or not 0 <= self.trusted_proxy_hops <= 10:
            raise ValueError("trusted_proxy_hops: must be a whole number from 0 to 10")

    def _check_consent_and_limits(self) -> None:
        if isinstance(self.consent, str):
            name, sep, value = self.consent.partition("=")
            if not sep or not _COOKIE_TOKEN_RE.match(name) or not value or not _COOKIE_VALUE_RE.match(value):
                raise ValueError("consent: a cookie is given as 'name=value', e.g. 'tl_consent=granted'")
        elif self.consent is not None and not callable(self.consent):
            raise ValueError("consent: a callable taking the request, or a 'name=value' cookie string")
        if self.on_no_consent not in ("drop", "opt_out"):
            raise ValueError("on_no_consent: 'drop' or 'opt_out'")

        if self.default_phone_country is not None:
            from tracklayer_mw.hashing import calling_code

            try:
                calling_code(self.default_phone_country)
            except ValueError:
                raise ValueError(
                    "default_phone_country: an ISO country code (e.g. 'US') or a calling code (e.g. '44')"
                ) from None
        if self.ingest_rate_per_minute < 1:
            raise ValueError("ingest_rate_per_minute: must be at least 1")
        if not 0.1 <= self.request_timeout <= 60:
            raise ValueError("request_timeout: seconds, from 0.1 to 60")

    # --- derived values -------------------------------------------------------------------------

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """Oldest first, as itsdangerous expects: the last one signs, all of them verify."""
        keys = self.secret_key
        assert isinstance(keys, tuple)
        return keys

    @property
    def linked_hosts(self) -> tuple[str, ...]:
        hosts = self.linked_domains
        assert isinstance(hosts, tuple)
        return hosts

    @property
    def has_credentials(self) -> bool:
        return self.pinterest_ad_account_id is not None and self.pinterest_access_token is not None

    @property
    def consent_cookie(self) -> tuple[str, str] | None:
        if isinstance(self.consent, str):
            name, _, value = self.consent.partition("=")
            return name, value
        return None

    @property
    def outbox_path(self) -> str | None:
        """The SQLite file, or None for the memory outbox."""
        return self.outbox.removeprefix("sqlite:///") if self.outbox.startswith("sqlite:///") else None

    def is_linked_host(self, host: str) -> bool:
        return any(host_matches(host, pattern) for pattern in self.linked_hosts)

    def is_cookie_domain_host(self, host: str) -> bool:
        return self.cookie_domain is not None and host_matches(host, self.cookie_domain)

    def __repr__(self) -> str:
        shown = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in ("pinterest_access_token", "diagnostics_token", "secret_key"):
                value = "***" if value else None
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    # --- environment -----------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `TRACKLAYER_*` variables; keyword arguments win over the environment."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}

        def text(name: str) -> str | None:
            raw = env.get(ENV_PREFIX + name)
            return raw.strip() if raw is not None and raw.strip() else None

        plain = {
            "secret_key": "SECRET_KEY",
            "pinterest_ad_account_id": "PINTEREST_AD_ACCOUNT_ID",
            "pinterest_access_token": "PINTEREST_ACCESS_TOKEN",
            "pinterest_api_base": "PINTEREST_API_BASE",
            "pinterest_tag_id": "PINTEREST_TAG_ID",
            "cookie_domain": "COOKIE_DOMAIN",
            "linked_domains": "LINKED_DOMAINS",
            "outbox": "OUTBOX",
            "path_prefix": "PATH_PREFIX",
            "consent": "CONSENT_COOKIE",
            "on_no_consent": "ON_NO_CONSENT",
            "default_phone_country": "DEFAULT_PHONE_COUNTRY",
            "diagnostics_token": "DIAGNOSTICS_TOKEN",
        }
        for arg, name in plain.items():
            value = text(name)
            if value is not None:
                kwargs[arg] = value
        for arg, name in (
            ("pinterest_test_mode", "PINTEREST_TEST_MODE"),
            ("inject_snippet", "INJECT_SNIPPET"),
            ("page_visit", "PAGE_VISIT"),
            ("respect_gpc", "RESPECT_GPC"),
        ):
            value = text(name)
            if value is not None:
                kwargs[arg] = _parse_bool(ENV_PREFIX + name, value)
        for arg, name, kind in (
            ("trusted_proxy_hops", "TRUSTED_PROXY_HOPS", int),
            ("ingest_rate_per_minute", "INGEST_RATE_PER_MINUTE", int),
            ("request_timeout", "REQUEST_TIMEOUT", float),
        ):
            value = text(name)
            if value is not None:
                try:
                    kwargs[arg] = kind(value)
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX}{name}: expected a number, got {value!r}") from None
        kwargs.update(overrides)
        if "secret_key" not in kwargs:
            raise ValueError(f"{ENV_PREFIX}SECRET_KEY is required (it signs cookies and linker tokens)")
        return cls(**kwargs)
