"""External inference endpoints: an AI service reached by URL, run as a plug-in like any other.

Each ``[[inference]]`` table of the configuration names one endpoint. To run it on a series, OncoPACS POSTs either the
series' Part 10 files (``send = "multipart"``: ``multipart/related; type="application/dicom"``) or a JSON document
naming the series and where to fetch it by DICOMweb (``send = "references"``). The endpoint answers 200 with
``multipart/related; type="application/dicom"`` (DICOM objects of the modalities it ``produces``: SEG, RTSTRUCT,
SR, ...) or with ``application/json`` (a JSON object of metrics). Anything else (another status, another media type,
an object of another modality, bytes that are not DICOM, a reply over the size cap, no answer within
``timeout_seconds``, no connection) raises :class:`InferenceError` naming the endpoint and the problem, never the
reply's content, so the job records a sentence. Every object it returns is given a Contributing Equipment item
naming the endpoint unless one already does, so each stored product names its producer.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence

from oncopacs.archive.part10 import encode_dataset
from oncopacs.dicomweb.multipart import (
    BodyPart,
    MediaTypeError,
    MultipartError,
    build_multipart_content_type,
    new_boundary,
    parse_media_type,
    read_multipart,
    write_multipart,
)
from oncopacs.errors import ConfigError, OncopacsError
from oncopacs.orchestration.plugins import PluginEntry, PluginOutput
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles

log = logging.getLogger(__name__)

SEND_MULTIPART, SEND_REFERENCES = "multipart", "references"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_VERSION = "external"
DEFAULT_MAX_REPLY_MB = 1024
DICOM = "application/dicom"
JSON = "application/json"
ACCEPT = f'multipart/related; type="{DICOM}", {JSON}'
KEYS = frozenset({"name", "url", "accepts", "produces", "timeout_seconds", "version", "send", "dicomweb_url",
                  "max_reply_mb"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
#: CID 7005 Contributing Equipment Purposes: (109102, DCM, "Processing Equipment").
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")


class InferenceError(OncopacsError):
    """An inference endpoint could not be reached, timed out, or answered something other than the protocol says."""


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One ``[[inference]]`` table, checked. ``dicomweb_url``: this server's DICOMweb root as the endpoint reaches
    it (used with ``send = "references"``)."""

    name: str
    url: str
    accepts: tuple[str, ...]
    produces: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    version: str = DEFAULT_VERSION
    send: str = SEND_MULTIPART
    dicomweb_url: str = ""
    max_reply_bytes: int = DEFAULT_MAX_REPLY_MB * 1024 * 1024

    @property
    def shown_url(self) -> str:
        """The URL without credentials, query or fragment (for listings and messages)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def parse_endpoints(tables: Iterable[Mapping[str, Any]], *, dicomweb_url: str = "") -> tuple[EndpointConfig, ...]:
    """The ``[[inference]]`` tables, checked (ConfigError naming the endpoint and the problem); ``dicomweb_url`` is
    the default of endpoints that are sent references."""
    endpoints: list[EndpointConfig] = []
    for position, table in enumerate(tables, start=1):
        endpoint = parse_endpoint(table, position, dicomweb_url=dicomweb_url)
        if any(e.name == endpoint.name for e in endpoints):
            raise ConfigError(f"inference endpoint {endpoint.name!r} is configured twice")
        endpoints.append(endpoint)
    return tuple(endpoints)


def parse_endpoint(table: Mapping[str, Any], position: int = 1, *, dicomweb_url: str = "") -> EndpointConfig:
    """One ``[[inference]]`` table, checked (ConfigError naming the endpoint, or its position, and the problem)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"inference endpoint #{position} is not a table")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"inference endpoint #{position}: give a name of letters, digits, '.', '_' and '-' "
                          "(at most 64)")

    def problem(text: str) -> ConfigError:
        return ConfigError(f"inference endpoint {name!r}: {text}")

    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise problem(f"unknown keys {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    url = _http_url(table.get("url"))
    if not url:
        raise problem(f"url {table.get('url')!r} is not an http:// or https:// URL")
    accepts, produces = _modalities(table.get("accepts")), _modalities(table.get("produces"))
    if not accepts:
        raise problem('accepts must be a list of modalities, e.g. ["CT"]')
    if not produces:
        raise problem('produces must be a list of modalities, e.g. ["SEG"]')
    timeout = table.get("timeout_seconds", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 86400:
        raise problem(f"timeout_seconds {timeout!r} is not a number of seconds between 0 and 86400")
    version = table.get("version", DEFAULT_VERSION)
    if not isinstance(version, str) or not version.strip():
        raise problem("version must be a non-empty string")
    send = table.get("send", SEND_MULTIPART)
    if send not in (SEND_MULTIPART, SEND_REFERENCES):
        raise problem(f"send {send!r} is neither {SEND_MULTIPART!r} nor {SEND_REFERENCES!r}")
    base = table.get("dicomweb_url", dicomweb_url)
    if send == SEND_REFERENCES and not _http_url(base):
        raise problem(f"dicomweb_url {base!r} (this server's DICOMweb root as the endpoint reaches it) is not an "
                      "http:// or https:// URL")
    max_mb = table.get("max_reply_mb", DEFAULT_MAX_REPLY_MB)
    if isinstance(max_mb, bool) or not isinstance(max_mb, int) or max_mb < 1:
        raise problem(f"max_reply_mb {max_mb!r} is not a positive whole number of MiB")
    return EndpointConfig(name, url, accepts, produces, float(timeout), version.strip(), send,
                          str(base or "").rstrip("/"), max_mb * 1024 * 1024)


def _http_url(value: object) -> str:
    """``value`` when it is an http(s) URL with a host, else ''."""
    if not isinstance(value, str):
        return ""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return ""
    return value.strip() if parts.scheme in ("http", "https") and parts.hostname else ""


def _modalities(value: object) -> tuple[str, ...]:
    """A non-empty list of modality strings, upper-cased; () when ``value`` is not one."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return ()
    found = tuple(dict.fromkeys(v.strip().upper() for v in value))
    return found if all(_MODALITY.fullmatch(m) for m in found) else ()


class InferenceEndpoint:
    """An :class:`~oncopacs.orchestration.plugins.AnalysisPlugin` (and MetricsPlugin) that asks a remote service."""

    accepts_sop_classes: tuple[str, ...] = ()

    def __init__(self, config: EndpointConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.name = config.name
        self.version = config.version
        self.accepts_modalities = config.accepts
        self.produces = config.produces
        self.ssl_context = ssl_context

    def run(self, datasets: Sequence[Dataset]) -> list[Dataset]:
        """The DICOM objects the endpoint returns for the series ``datasets`` (its metrics are dropped here)."""
        return list(self.run_with_metrics(datasets).products)

    def run_with_metrics(self, datasets: Sequence[Dataset]) -> PluginOutput:
        """Send the series ``datasets`` and read the reply: DICOM objects, or a JSON object of metrics."""
        if not datasets:
            raise InferenceError(f"endpoint {self.name}: no instances to send")
        request = self._build_request(datasets)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s, context=self.ssl_context) as reply:
                output = self._read_reply(reply, datasets[0])
        except urllib.error.HTTPError as exc:
            exc.close()
            raise InferenceError(f"endpoint {self.name} answered HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise self._transport_error(exc.reason) from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._transport_error(exc) from None
        log.info("endpoint %s answered %d object(s)%s for series %s", self.name, len(output.products),
                 " and metrics" if output.metrics is not None else "", datasets[0].get("SeriesInstanceUID", ""))
        return output

    def _build_request(self, datasets: Sequence[Dataset]) -> urllib.request.Request:
        if self.config.send == SEND_REFERENCES:
            body = json.dumps(self.build_references(datasets)).encode("utf-8")
            content_type = JSON
        else:
            boundary = new_boundary()
            body = b"".join(write_multipart((BodyPart(DICOM, encode_dataset(ds)) for ds in datasets), boundary))
            content_type = build_multipart_content_type(DICOM, boundary)
        return urllib.request.Request(self.config.url, data=body, method="POST",
                                      headers={"Content-Type": content_type, "Accept": ACCEPT})

    def build_references(self, datasets: Sequence[Dataset]) -> dict[str, Any]:
        """The JSON body of ``send = "references"``: the series' UIDs and its DICOMweb URLs on this server."""
        first = datasets[0]
        study, series = str(first.get("StudyInstanceUID", "")), str(first.get("SeriesInstanceUID", ""))
        study_url = f"{self.config.dicomweb_url}/studies/{study}"
        return {"study_instance_uid": study, "series_instance_uid": series,
                "sop_instance_uids": [str(ds.get("SOPInstanceUID", "")) for ds in datasets],
                "modality": str(first.get("Modality", "")), "dicomweb_url": self.config.dicomweb_url,
                "study_url": study_url, "series_url": f"{study_url}/series/{series}"}

    def _read_reply(self, reply: http.client.HTTPResponse, source: Dataset) -> PluginOutput:
        if reply.status != 200:
            raise InferenceError(f"endpoint {self.name} answered HTTP {reply.status}, expected 200")
        declared = reply.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.config.max_reply_bytes:
            raise self._too_large()
        content_type = reply.headers.get("Content-Type") or ""
        try:
            essence = parse_media_type(content_type).essence
        except MediaTypeError:
            essence = ""
        body = _CappedReader(reply, self.config.max_reply_bytes, self._too_large)
        if essence == JSON:
            return PluginOutput((), self._read_metrics(body.read()))
        if essence == "multipart/related":
            return PluginOutput(tuple(self._read_objects(body, content_type, source)))
        raise InferenceError(f"endpoint {self.name} answered {essence or 'no Content-Type'}, expected "
                             f'multipart/related; type="{DICOM}" or {JSON}')

    def _read_metrics(self, data: bytes) -> dict[str, Any]:
        try:
            metrics = json.loads(data, parse_constant=_refuse_constant)
        except ValueError:
            raise InferenceError(f"endpoint {self.name} answered {JSON} that is not valid JSON") from None
        if not isinstance(metrics, dict):
            raise InferenceError(f"endpoint {self.name} answered JSON that is not an object of metrics")
        return metrics

    def _read_objects(self, body: _CappedReader, content_type: str, source: Dataset) -> list[Dataset]:
        """The DICOM parts of the reply, each of a produced modality and of the patient and study of ``source``."""
        try:
            received = read_multipart(body, content_type, root_type=DICOM)
        except (MultipartError, MediaTypeError) as exc:
            raise InferenceError(f"endpoint {self.name} answered an unreadable multipart body: {exc}") from None
        products = []
        with received:
            for number, part in enumerate(received.parts, start=1):
                try:
                    product = dcmread(io.BytesIO(part.read_bytes()))
                    modality = str(product.get("Modality", "") or "")
                except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError):
                    raise InferenceError(f"endpoint {self.name} returned a part ({number}) that is not DICOM") from None
                if modality not in self.produces:
                    raise InferenceError(f"endpoint {self.name} returned Modality {modality or '(none)'}, expected "
                                         f"{' or '.join(self.produces)}")
                if any(str(product.get(k, "")) != str(source.get(k, "")) for k in ("PatientID", "StudyInstanceUID")):
                    raise InferenceError(f"endpoint {self.name} returned an object of another patient or study")
                products.append(self._name_producer(product))
        return products

    def _name_producer(self, product: Dataset) -> Dataset:
        """``product`` with a Contributing Equipment item naming this endpoint, unless one already does."""
        equipment = list(product.get("ContributingEquipmentSequence", None) or [])
        if any(str(item.get("ManufacturerModelName", "")) == self.name[:64] for item in equipment):
            return product
        purpose = Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = PROCESSING_EQUIPMENT
        item = Dataset()
        item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
        item.Manufacturer = "External inference endpoint"
        item.ManufacturerModelName = self.name[:64]
        item.SoftwareVersions = self.version[:64]
        item.ContributionDescription = f"produced by inference endpoint {self.name}"[:64]
        product.ContributingEquipmentSequence = DicomSequence([*equipment, item])
        return product

    def _too_large(self) -> InferenceError:
        return InferenceError(f"endpoint {self.name} answered more than {self.config.max_reply_bytes // 2**20} MiB")

    def _transport_error(self, reason: object) -> InferenceError:
        if isinstance(reason, TimeoutError):
            return InferenceError(f"endpoint {self.name} timed out after {self.config.timeout_s:g} s")
        if isinstance(reason, ssl.SSLError):
            return InferenceError(f"endpoint {self.name} at {self.config.shown_url}: TLS failed ({reason.reason})")
        if isinstance(reason, http.client.HTTPException):
            return InferenceError(f"endpoint {self.name} broke off its answer ({type(reason).__name__})")
        if isinstance(reason, OSError) and reason.strerror:
            text = reason.strerror
        else:
            text = reason if isinstance(reason, str) else type(reason).__name__
        return InferenceError(f"endpoint {self.name} at {self.config.shown_url} could not be reached ({text})")


class _CappedReader:
    """Reads a reply, raising the error ``too_large`` gives once more than ``cap`` bytes came."""

    def __init__(self, stream: http.client.HTTPResponse, cap: int, too_large: Callable[[], InferenceError]) -> None:
        self.stream, self.cap, self.too_large, self.count = stream, cap, too_large, 0

    def read(self, size: int = -1, /) -> bytes:
        chunk = self.stream.read(self.cap + 1 - self.count if size < 0 else min(size, self.cap + 1 - self.count))
        self.count += len(chunk)
        if self.count > self.cap:
            raise self.too_large()
        return chunk


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def default_dicomweb_url(settings: Settings) -> str:
    """This server's DICOMweb root from its HTTP settings ('' when it listens on every address: no name to give)."""
    if settings.http_host in ("0.0.0.0", "::", ""):
        return ""
    host = f"[{settings.http_host}]" if ":" in settings.http_host else settings.http_host
    return f"{'https' if settings.tls_enabled else 'http'}://{host}:{settings.http_port}/dicom-web"


def endpoint_entries(settings: Settings) -> dict[str, PluginEntry]:
    """The configured endpoints as plug-in entries by name (source ``endpoint:<url>``); ConfigError when one is
    malformed. A name shared with an installed plug-in is the caller's to refuse (:func:`merge_plugins`)."""
    endpoints = parse_endpoints(settings.inference, dicomweb_url=default_dicomweb_url(settings))
    context = TlsFiles.from_settings(settings).client_context() if any(
        e.url.startswith("https") for e in endpoints) else None
    return {e.name: PluginEntry(e.name, f"endpoint:{e.shown_url}", InferenceEndpoint(e, ssl_context=context))
            for e in endpoints}


def merge_plugins(installed: Mapping[str, PluginEntry], endpoints: Mapping[str, PluginEntry]) -> dict[str, PluginEntry]:
    """The installed plug-ins and the endpoints by name; ConfigError when an endpoint has an installed one's name."""
    clash = sorted(set(installed) & set(endpoints))
    if clash:
        raise ConfigError(f"inference endpoint {clash[0]!r} has the name of an installed plug-in; rename it")
    return {**installed, **endpoints}


__all__ = ["SEND_MULTIPART", "SEND_REFERENCES", "EndpointConfig", "InferenceEndpoint", "InferenceError",
           "default_dicomweb_url", "endpoint_entries", "merge_plugins", "parse_endpoint", "parse_endpoints"]
