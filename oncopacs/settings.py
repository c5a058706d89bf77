"""The one settings object: defaults < optional TOML file < ``ONCOPACS_*`` environment variables."""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from oncopacs.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RemoteAE:
    """A DICOM peer that may be a C-MOVE destination or a forwarding target."""

    ae_title: str
    host: str
    port: int
    tls: bool = False  # associations to this peer use TLS (DICOM PS3.15 B.1, TLS port usually 2762)

    @classmethod
    def parse(cls, text: str) -> RemoteAE:
        """Parse ``AET@host:port``, or ``AET@host:port+tls`` for a peer reached over TLS."""
        body = text.strip()
        tls = body.lower().endswith("+tls")
        if tls:
            body = body[: -len("+tls")]
        try:
            ae_title, address = body.split("@", 1)
            host, port = address.rsplit(":", 1)
            remote = cls(ae_title.strip(), host.strip().strip("[]"), int(port), tls)
        except ValueError:
            raise ConfigError(f"remote AE {text!r} is not of the form AET@host:port or AET@host:port+tls") from None
        if not remote.ae_title or len(remote.ae_title) > 16 or not 0 < remote.port < 65536:
            raise ConfigError(f"remote AE {text!r}: AE title must be 1-16 characters, port 1-65535")
        return remote


def _parse_remote_aes(text: str) -> tuple[RemoteAE, ...]:
    return tuple(RemoteAE.parse(part) for part in text.split(",") if part.strip())


_ORIGIN = re.compile(r"(https?)://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _parse_origin(text: str) -> str:
    """A web origin as a browser writes it in ``Origin`` (RFC 6454): ``scheme://host[:port]``, lowercase.

    http or https, a host name or IP address, an optional port (a default one is dropped); a trailing ``/`` is
    dropped; no user, path, query or fragment; never ``*``.
    """
    origin = text.strip().rstrip("/")
    if origin == "*":
        raise ConfigError("setting cors_origins (ONCOPACS_CORS_ORIGINS): '*' is refused: credentialed requests are "
                          "allowed, so each origin must be named (e.g. https://viewer.example.org)")
    match = _ORIGIN.fullmatch(origin.lower())
    port = int(match.group(3)) if match and match.group(3) else None
    if match is None or port == 0 or (port or 0) > 65535:
        raise ConfigError(f"setting cors_origins (ONCOPACS_CORS_ORIGINS): {text.strip()!r} is not an origin "
                          "(http:// or https://, a host, an optional :port; no path, query or fragment)")
    scheme, host = match.group(1), match.group(2)
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")


ROLES = ("all", "web", "dimse")  # what `oncopacs serve` runs: everything, HTTP only, DIMSE (and HL7) only
QUEUE_SCHEMES = ("amqp", "amqps", "redis", "rediss")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def _parse_queue_url(text: str) -> str:
    """A RabbitMQ (``amqp://``, ``amqps://``) or Redis (``redis://``, ``rediss://``) URL, or "" (no queue engine).

    The error never quotes the URL: it may carry a password.
    """
    url = text.strip()
    scheme, separator, rest = url.partition("://")
    if url and (not separator or scheme.lower() not in QUEUE_SCHEMES or not rest.strip("/")):
        raise ConfigError("setting queue_url (ONCOPACS_QUEUE_URL) must be an amqp:// (RabbitMQ) or redis:// URL such "
                          "as amqp://guest:guest@127.0.0.1:5672// or redis://127.0.0.1:6379/0")
    return url


STORAGE_SCHEMES = ("file", "s3")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_OPTIONS = frozenset({"endpoint", "region", "sse", "kms_key_id"})


def _parse_storage_url(text: str) -> str:
    """``file:///absolute/path``, ``s3://bucket[/prefix]?endpoint=...`` or "" (data_dir/storage), checked."""
    url = text.strip()
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    problem = None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            problem = "a file:// URL needs an absolute path (file:///srv/oncopacs/storage)"
    elif parts.scheme == "s3":
        options = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        if not _BUCKET.fullmatch(parts.netloc):
            problem = "an s3:// URL needs a bucket name (3-63 lower-case letters, digits, '.' and '-')"
        elif set(options) - _S3_OPTIONS:
            problem = f"unknown s3:// options {sorted(set(options) - _S3_OPTIONS)}; known: {sorted(_S3_OPTIONS)}"
        elif "endpoint" in options and not options["endpoint"][0].startswith(("http://", "https://")):
            problem = "endpoint= must be an http:// or https:// URL"
        elif options.get("sse", ["AES256"])[0] not in ("AES256", "aws:kms"):
            problem = "sse= must be AES256 or aws:kms"
        elif "kms_key_id" in options and options.get("sse", [""])[0] != "aws:kms":
            problem = "kms_key_id= needs sse=aws:kms"
    else:
        problem = f"the scheme must be one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
    if problem:
        raise ConfigError(f"setting storage_url (ONCOPACS_STORAGE_URL): {problem}")
    return url


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{text!r} is not a boolean (use true/false)")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything OncoPACS reads from its environment, read once at start-up."""

    data_dir: Path = Path("oncopacs-data")
    database_url: str = ""  # empty: SQLite file ``index.sqlite`` in ``data_dir``
    # Where ``oncopacs viewer install`` puts OHIF's prebuilt viewer (served at /viewer); empty: data_dir/viewer
    viewer_dir: Path | None = None
    # Encryption at rest (oncopacs.archive.encryption): the key file, outside data_dir, mode 0600, one key of 64 hex
    # digits a line, the first current. Set: new instance files and backup index snapshots are sealed (AES-256-GCM);
    # empty: files are stored as received, and files sealed earlier cannot be read.
    storage_key_file: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8042
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    ae_title: str = "ONCOPACS"
    remote_aes: tuple[RemoteAE, ...] = ()
    # Calling-AE allow-list; empty: any calling AE may associate. Entries: "AET" (that title from any
    # host), "AET@host" (that title from that host) or "@host" (any title from that host); host is an
    # IP address or a name resolved when the DIMSE listener starts. Others get A-ASSOCIATE-RJ.
    allowed_aes: tuple[str, ...] = ()
    allow_overwrite: bool = False  # same SOP Instance UID, new bytes: replace instead of refuse
    # Store objects whose Patient ID (0010,0020) is present but empty (hospitals receive such files), each one
    # recorded in the audit trail; off: they are refused with a reason. An absent Patient ID is always refused.
    accept_empty_patient_id: bool = False
    max_associations: int = 16
    max_pdu_bytes: int = 4 * 1024 * 1024  # advertised to SCUs; large PDUs save per-PDU CPU
    # A connection that has not completed association negotiation (or a release) within this many
    # seconds is closed (the DICOM ARTIM timer); a slot is freed at once when the peer closes.
    dicom_artim_seconds: int = 10
    dicom_idle_seconds: int = 60  # an established association with no PDU for this long is aborted
    dicom_max_per_host: int = 8  # concurrent associations from one address; the rest get A-ASSOCIATE-RJ
    dicom_tls_port: int = 2762  # the DICOM-TLS listener (PS3.15 B.1), started when tls_cert and tls_key are set
    # The most matches one query answers, C-FIND (oncopacs.dimse.handlers) and QIDO-RS (whose page of 1000 it caps):
    # a broader C-FIND gets the first find_limit matches, then Refused: Out of Resources (A700); 0: no limit.
    # 10000 is above any single study's instances and a busy day's studies, far below a whole archive.
    find_limit: int = 10_000
    # TLS for every listener and outgoing link: PEM files. With tls_cert and tls_key, HTTP is HTTPS only
    # and DIMSE-TLS listens beside plain DIMSE; with tls_ca as well, clients must present a certificate
    # signed by that CA, and outgoing TLS links verify their peer against it.
    tls_cert: str = ""
    tls_key: str = field(default="", repr=False)
    tls_ca: str = ""
    log_phi: bool = False  # debugging only: log element values (patient data) in refusal messages
    storage_low_bytes: int = 1024**3  # /health reports storage "low" below this many free bytes
    # Disk reserved (data_dir/audit-spool) for audit records while the disk is full, so reads keep working; 0: none
    audit_spool_bytes: int = 16 * 1024**2
    hl7_endpoint: str = ""
    fhir_base_url: str = ""
    secret_key: str = field(default="", repr=False)  # empty: a random key kept in the data directory
    session_timeout_minutes: int = 15  # idle browser sessions end after this (HIPAA automatic logoff)
    # Failed sign-ins from one source address within login_lockout_minutes before that address is
    # throttled for login_lockout_minutes (``oncopacs users unlock`` lifts it); accounts never lock.
    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    # "udp://host:port", "tcp://host:port" or "tls://host:port" (RFC 5425): also send audit messages (RFC 5424)
    audit_syslog: str = ""
    # The key sealing the audit trail (HMAC-SHA256), outside the database; empty: data_dir/audit-key, created on
    # first start. Keep it where whoever can write the database cannot read it, and back it up apart.
    audit_key_file: Path | None = None
    # Checkpoints of the audit chain head, sealed with that key, appended here (and sent to audit_syslog);
    # empty: data_dir/audit-checkpoints. Make it append-only (chattr +a) or put it on another file system.
    audit_checkpoint_file: Path | None = None
    # The hospital's rules: the [[rules]] tables of the TOML file as written (oncopacs.orchestration.rules checks
    # them when the platform opens); a series or study rule fires once nothing new arrived for stable_seconds.
    rules: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    stable_seconds: int = 30
    # External inference endpoints: the [[inference]] tables as written (oncopacs.orchestration.inference checks
    # them when the platform opens); each is a plug-in, by its name, that rules may run.
    inference: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    # Credentials of outgoing DICOMweb requests (STOW-RS forwarding, export to a URL): the [[dicomweb_auth]] tables as
    # written, a URL prefix and the file holding its secret (oncopacs.orchestration.dicomweb_auth checks them and
    # reads the files at first use); the secrets themselves are never settings.
    dicomweb_auth: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    # The EHR's side (oncopacs.ehr): an HL7 v2 listener over MLLP (0: off), the sending applications it accepts
    # ("APP" or "APP^FACILITY"; empty: any), and the largest message it reads (bytes).
    hl7_listen_host: str = "0.0.0.0"
    hl7_listen_port: int = 0
    hl7_allowed_senders: tuple[str, ...] = ()
    hl7_max_message_bytes: int = 1024 * 1024
    # Web origins ("https://viewer.example.org", "http://127.0.0.1:8111") whose pages may call /dicom-web and /api
    # with credentials (CORS, oncopacs.web.cors), e.g. a separately served OHIF viewer; empty: none. Never "*".
    cors_origins: tuple[str, ...] = ()
    # Retrieved instances carry the index's current demographics (after ADT updates and merges) unless this is
    # set: then they leave as stored, byte for byte.
    keep_original_on_retrieve: bool = False
    # Prefetch before an appointment (SIU^S12): C-MOVE the patient's relevant priors from this AE title of
    # remote_aes (empty: no prefetch); [[prefetch]] tables say which priors are relevant.
    prefetch_from: str = ""
    prefetch: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    # The queue engine (oncopacs.jobs.dispatch): "amqp://user:password@host:5672//" (RabbitMQ) or
    # "redis://host:6379/0"; jobs are then run by `oncopacs worker` processes. Empty: the worker thread of `serve`.
    queue_url: str = field(default="", repr=False)
    # The broker queue of this archive's jobs: archives sharing one broker (or vhost, or Redis database) need their own.
    queue_name: str = "oncopacs-jobs"
    # What `oncopacs serve` runs (oncopacs.cli.serve): "all" (HTTP, DIMSE, HL7 and the delivery loops), "web" (HTTP and
    # the delivery loops) or "dimse" (the DIMSE and HL7 listeners only); nodes of any role may share one index,
    # queue engine and storage area (deploy/ puts HAProxy in front of them).
    role: str = "all"
    # Proxies in front of the HTTP listener that append X-Forwarded-For (HAProxy: 1); the client's address (audit
    # records, the sign-in throttle) is then taken from that header, so only set it when every request comes through
    # them. 0: the socket's peer address.
    proxy_hops: int = 0
    # This node's name among several sharing one data directory (letters, digits, - and _): its crash marker and
    # the staging area of files on their way into storage are its own, so one node's crash recovery never touches
    # another's transfers. Empty: a single node ("serve.running", "storage/.incoming").
    node_name: str = ""
    # Where instance files live: "file:///path" (a directory; empty: data_dir/storage) or
    # "s3://BUCKET[/PREFIX]?endpoint=http://host:port[&region=R][&sse=AES256|aws:kms[&kms_key_id=ID]]" (an
    # S3-compatible object store through boto3, credentials from the standard AWS environment variables).
    storage_url: str = ""

    @property
    def tls_enabled(self) -> bool:
        """Whether a server certificate and key are configured (HTTPS, DIMSE-TLS)."""
        return bool(self.tls_cert and self.tls_key)

    @property
    def effective_viewer_dir(self) -> Path:
        """Where the OHIF viewer is installed: ``viewer_dir``, or ``viewer`` in the data directory."""
        return Path(self.viewer_dir) if self.viewer_dir else self.data_dir / "viewer"  # Path(): set in code as text

    @property
    def effective_audit_key_file(self) -> Path:
        """The audit key file: ``audit_key_file``, or ``audit-key`` in the data directory."""
        return Path(self.audit_key_file) if self.audit_key_file else self.data_dir / "audit-key"

    @property
    def effective_audit_checkpoint_file(self) -> Path:
        """The audit checkpoint file: ``audit_checkpoint_file``, or ``audit-checkpoints`` in the data directory."""
        return Path(self.audit_checkpoint_file) if self.audit_checkpoint_file else self.data_dir / "audit-checkpoints"

    @property
    def storage_dir(self) -> Path:
        """Where instance files live (content-addressed by UIDs) when they are files: the ``file://`` path of
        ``storage_url``, else ``storage`` in the data directory."""
        if self.storage_url.startswith("file://"):
            return Path(urllib.parse.unquote(urllib.parse.urlsplit(self.storage_url).path))
        return self.data_dir / "storage"

    @property
    def staging_dir(self) -> Path:
        """This node's staging area for files on their way into storage: ``.incoming`` beside the files (so a
        rename places them), or in the data directory for an object store; one subfolder a node when named."""
        base = self.data_dir / "staging" if self.storage_url.startswith("s3://") else self.storage_dir / ".incoming"
        return base / self.node_name if self.node_name else base

    @property
    def running_marker(self) -> Path:
        """The file ``oncopacs serve`` keeps while it runs, so a start after a crash knows to recover."""
        return self.data_dir / (f"serve-{self.node_name}.running" if self.node_name else "serve.running")

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL of the index; SQLite in the data directory unless configured."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        """The configured peer with this AE title, if any."""
        return next((r for r in self.remote_aes if r.ae_title == ae_title.strip()), None)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some values changed (CLI flags, tests)."""
        return replace(self, **changes)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, config_file: Path | None = None) -> Settings:
        """Build settings from defaults, then the TOML file, then ``ONCOPACS_*`` variables.

        The TOML file is ``config_file``, else ``$ONCOPACS_CONFIG`` when set. Its keys are the
        field names (``http_port = 8042``, ``remote_aes = ["PACS@10.0.0.5:104"]``).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file or (Path(env["ONCOPACS_CONFIG"]) if env.get("ONCOPACS_CONFIG") else None)
        if path is not None:
            values.update(_read_toml(path))
        known = {f.name for f in fields(cls)}
        for name in known:
            raw = env.get(f"ONCOPACS_{name.upper()}")
            if raw is not None:
                values[name] = raw
        return cls(**{name: _coerce(name, value) for name, value in values.items()})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"configuration file {path}: unknown keys {', '.join(unknown)}")
    return data


def _read_rules_file(path: Path, key: str = "rules") -> list[Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{key} file {path} cannot be read as TOML: {exc}") from None
    tables = data.get(key, [])
    if not isinstance(tables, list):
        raise ConfigError(f"{key} file {path}: {key} must be [[{key}]] tables")
    return tables


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, naming the setting on error."""
    try:
        if name in {"data_dir", "viewer_dir"}:
            return Path(value)
        if name in {"storage_key_file", "audit_key_file", "audit_checkpoint_file"}:
            return Path(value) if str(value).strip() else None
        if name in {
            "http_port",
            "dicom_port",
            "max_associations",
            "max_pdu_bytes",
            "session_timeout_minutes",
            "login_max_failures",
            "login_lockout_minutes",
            "dicom_artim_seconds",
            "dicom_idle_seconds",
            "dicom_max_per_host",
            "dicom_tls_port",
            "find_limit",
            "storage_low_bytes",
            "audit_spool_bytes",
            "stable_seconds",
            "hl7_listen_port",
            "hl7_max_message_bytes",
            "proxy_hops",
        }:
            number = int(value)
            if number < 0:
                raise ValueError
            return number
        if name in {"allow_overwrite", "accept_empty_patient_id", "log_phi", "keep_original_on_retrieve"}:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        if name == "remote_aes":
            text = ",".join(value) if isinstance(value, list) else str(value)
            return _parse_remote_aes(text)
        if name == "allowed_aes":
            items = value if isinstance(value, list) else str(value).split(",")
            entries = tuple(str(item).strip() for item in items if str(item).strip())
            for entry in entries:
                title, _, host = entry.partition("@")
                host = host.strip().strip("[]").strip()  # "AE@[]" names no host: it must not mean "any host"
                if len(title.strip()) > 16 or not (title.strip() or host) or ("@" in entry and not host):
                    raise ValueError
            return entries
        if name == "hl7_allowed_senders":
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(str(item).strip() for item in items if str(item).strip())
        if name == "cors_origins":
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(dict.fromkeys(_parse_origin(str(item)) for item in items if str(item).strip()))
        if name in {"rules", "inference", "dicomweb_auth", "prefetch"}:
            if isinstance(value, str):  # ONCOPACS_RULES / _INFERENCE / _DICOMWEB_AUTH / _PREFETCH: a file of tables
                value = _read_rules_file(Path(value), name)
            if not isinstance(value, list):
                raise ValueError
            return tuple(dict(table) if isinstance(table, Mapping) else table for table in value)
        if name == "queue_url":
            return _parse_queue_url(str(value))
        if name == "queue_name":
            if not _QUEUE_NAME.fullmatch(str(value).strip()):
                raise ValueError  # letters, digits, - and _: Dramatiq gives "." suffixes a meaning
            return str(value).strip()
        if name == "node_name":
            if str(value).strip() and not _QUEUE_NAME.fullmatch(str(value).strip()):
                raise ValueError  # a file name: letters, digits, - and _
            return str(value).strip()
        if name == "storage_url":
            return _parse_storage_url(str(value))
        if name == "role":
            role = str(value).strip().lower()
            if role not in ROLES:
                raise ConfigError(f"setting role (ONCOPACS_ROLE) has an invalid value {value!r}: all, web or dimse")
            return role
        if name == "ae_title":
            title = str(value).strip()
            if not 0 < len(title) <= 16:
                raise ValueError
            return title
        return str(value)
    except (ValueError, TypeError):
        raise ConfigError(f"setting {name} (ONCOPACS_{name.upper()}) has an invalid value {value!r}") from None
