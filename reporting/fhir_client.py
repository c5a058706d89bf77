"""POSTing a FHIR transaction Bundle to the EHR's FHIR base URL and classifying the answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from oncopacs.errors import RemoteNodeError

FHIR_JSON = "application/fhir+json"
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class FhirAnswer:
    """The server's HTTP status and what it said (OperationOutcome diagnostics, or the body's start)."""

    status: int
    detail: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_HTTP


def _detail(body: bytes) -> str:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(document, dict) and document.get("resourceType") == "OperationOutcome":
        issues = document.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues if isinstance(i, dict))[:500]
    return ""


def post_bundle(base_url: str, bundle: dict[str, Any], *, timeout_s: float = 30.0) -> FhirAnswer:
    """POST ``bundle`` to ``base_url``; RemoteNodeError when the server cannot be reached or times out."""
    request = urllib.request.Request(base_url.rstrip("/") + "/", data=json.dumps(bundle).encode("utf-8"), method="POST",
                                     headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return FhirAnswer(response.status, _detail(response.read()))
    except urllib.error.HTTPError as exc:
        return FhirAnswer(exc.code, _detail(exc.read()) or str(exc.reason))
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteNodeError(f"cannot reach the FHIR server {base_url}: {reason}") from None
