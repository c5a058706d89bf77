"""Instance files in an S3-compatible object store (``storage_url = "s3://BUCKET[/PREFIX]?endpoint=..."``), via boto3.

The durability rule is the file storage's: a received file is staged durably on local disk first
(:class:`~oncopacs.archive.storage.StagingArea`, sealed as it arrives when a storage key is configured), then
:meth:`ObjectStorage.place` uploads it and returns only once the store has confirmed the object *and its content*:
the SHA-256 the store computed over what it received (``x-amz-checksum-sha256``, asked for with every upload) must
equal the SHA-256 of the staged file, computed independently from the file on disk; a store that does not return
checksums must return an ETag equal to the content's MD5 (a plain single-part upload). Anything else raises
:class:`~oncopacs.errors.StorageError`, which a C-STORE answers with 0xA700 (out of resources), so nothing is
acknowledged that the store has not confirmed. Placing without ``replace`` is a conditional write
(``If-None-Match: *``): an existing object is never overwritten, as with a hard link on disk.

Reads return the plaintext and are checked against the index's SHA-256 like files; ``verify`` and crash recovery
list the bucket (``list_objects_v2``). ``sse=AES256`` or ``sse=aws:kms`` (with ``kms_key_id``) asks the store to
encrypt each object at rest (server-side encryption) in addition to, or instead of, the storage key's sealing.

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
instance roles); the region from ``region=`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import logging
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from oncopacs.archive.encryption import HEADER_BYTES, StorageKeys, key_id_of
from oncopacs.archive.storage import Damage, DamagedFileError, StagingArea
from oncopacs.errors import StorageError

log = logging.getLogger(__name__)

# A store that stops answering must fail a C-STORE (0xA700) before the sender's own DIMSE timeout (often 30 s)
# gives up on the association: at most ATTEMPTS x (CONNECT or READ timeout) plus back-off, about 30 s. The read
# timeout bounds each wait for bytes, not a whole transfer, so large objects are not cut short.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
ATTEMPTS = 3  # boto3's "standard" retry mode: three tries with jittered back-off on throttling, 5xx and resets
PROBE_TIMEOUT_S = 2  # /health's one try
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_CONDITION_FAILED = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_PIECE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket, a key prefix ("" or ending in "/") and how to reach and encrypt it, from an ``s3://`` URL."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    sse: str | None = None  # "AES256" or "aws:kms"
    kms_key_id: str | None = None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse a URL already checked by the settings (:func:`oncopacs.settings._parse_storage_url`)."""
        parts = urllib.parse.urlsplit(url)
        options = {name: values[0] for name, values in urllib.parse.parse_qs(parts.query).items()}
        prefix = parts.path.strip("/")
        return cls(parts.netloc, prefix + "/" if prefix else "", options.get("endpoint"), options.get("region"),
                   options.get("sse"), options.get("kms_key_id"))

    def describe(self) -> str:
        """The location without credentials, for messages: ``s3://bucket/prefix at endpoint``."""
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


class ObjectStorage(StagingArea):
    """Instance files as objects ``PREFIX<study>/<series>/<sop>.dcm`` in one bucket, staged locally in ``incoming``."""

    def __init__(self, location: S3Location, incoming: Path, keys: StorageKeys | None = None,
                 client: Any | None = None):
        super().__init__(incoming, keys)
        self.location = location
        self._client = client or _client(location, CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ATTEMPTS, pool=32)
        # /health asks once, briefly: a load balancer's check must not queue behind the retries of a dead store
        self._probe = client or _client(location, PROBE_TIMEOUT_S, PROBE_TIMEOUT_S, 1, pool=2)

    def key_of(self, relative_path: str) -> str:
        return self.location.prefix + relative_path

    def check_reachable(self) -> None:
        """Raise StorageError unless the bucket answers (one HEAD bucket, within :data:`PROBE_TIMEOUT_S`)."""
        try:
            self._probe.head_bucket(Bucket=self.location.bucket)
        except ClientError as exc:
            code, why = _code(exc), _reason(exc)
            if code in _NOT_FOUND | {"NoSuchBucket"}:
                why = f"its bucket {self.location.bucket} does not exist (create it: OncoPACS never creates one)"
            elif code in {"403", "AccessDenied"}:
                why = "access is denied (check the AWS credentials and the bucket's policy)"
            raise StorageError(f"the object store {self.location.describe()} is unavailable: {why}") from None
        except BotoCoreError as exc:
            raise StorageError(f"the object store {self.location.describe()} is unavailable: {_reason(exc)}") from None

    def check_conditional_writes(self) -> None:
        """Raise StorageError unless the store refuses a second ``If-None-Match: *`` upload of one key (412).

        A store that ignores the condition would let a resent or conflicting instance overwrite the first copy, which
        the index still describes; OncoPACS refuses to start on such a store rather than lose that copy.
        """
        key = f"{self.location.prefix}.oncopacs-probe/{uuid.uuid4().hex}"
        try:
            for attempt in (1, 2):
                try:
                    self._client.put_object(Bucket=self.location.bucket, Key=key, Body=b"probe", IfNoneMatch="*")
                except ClientError as exc:
                    if attempt == 2 and _code(exc) in _CONDITION_FAILED:
                        return
                    raise
            raise StorageError(f"the object store {self.location.describe()} ignores If-None-Match (conditional "
                               "writes): it could overwrite a stored instance; use a store that supports them")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"the object store {self.location.describe()} is unavailable: {_reason(exc)}") from None
        finally:
            with contextlib.suppress(BotoCoreError, ClientError):
                self._client.delete_object(Bucket=self.location.bucket, Key=key)

    def exists(self, relative_path: str) -> bool:
        try:
            self._client.head_object(Bucket=self.location.bucket, Key=self.key_of(relative_path))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise StorageError(f"the object store cannot be asked about {relative_path}: {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"the object store cannot be asked about {relative_path}: {_reason(exc)}") from None
        return True

    def place(self, staged: Path, relative_path: str, *, replace: bool = False) -> bool:
        """Upload a staged file and delete it once the store has confirmed the object and its SHA-256; False (the
        staged copy discarded) if an object is already there and ``replace`` is not set. StorageError: the store
        is unreachable, refused the write or did not confirm the content; the staged file is deleted (it was never
        acknowledged)."""
        try:
            sha256, md5 = _digests(staged)
            with staged.open("rb") as body:
                extra: dict[str, str] = {} if replace else {"IfNoneMatch": "*"}
                if self.location.sse:
                    extra["ServerSideEncryption"] = self.location.sse
                    if self.location.kms_key_id:
                        extra["SSEKMSKeyId"] = self.location.kms_key_id
                answer = self._client.put_object(Bucket=self.location.bucket, Key=self.key_of(relative_path),
                                                 Body=body, ChecksumAlgorithm="SHA256",
                                                 ContentType="application/dicom", **extra)
        except ClientError as exc:
            staged.unlink(missing_ok=True)
            if _code(exc) in _CONDITION_FAILED and not replace:
                return False
            raise StorageError(f"the object store refused {relative_path}: {_reason(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            staged.unlink(missing_ok=True)
            raise StorageError(f"the object store is unavailable for {relative_path}: {_reason(exc)}") from None
        confirmed = answer.get("ChecksumSHA256")
        if confirmed is not None:
            good = confirmed == base64.b64encode(sha256).decode()
        else:
            etag = str(answer.get("ETag", "")).strip('"')
            good = etag == md5.hex()
        staged.unlink(missing_ok=True)
        if not good:
            with contextlib.suppress(BotoCoreError, ClientError):  # never leave unconfirmed content for recovery
                self._client.delete_object(Bucket=self.location.bucket, Key=self.key_of(relative_path))
            raise StorageError(f"the object store did not confirm the content of {relative_path} "
                               "(its checksum differs from the staged file's, or it returned none)")
        return True

    def read(self, relative_path: str, expected_sha256: str | None = None) -> bytes:
        """The stored (plaintext) object, unsealed if sealed; raises :class:`DamagedFileError` like files do."""
        try:
            body = self._get(relative_path)["Body"]
            with contextlib.closing(body):
                data = body.read()
        except (BotoCoreError, ClientError) as exc:
            raise self._damaged(relative_path, exc) from None
        return self.plaintext(relative_path, data, expected_sha256)

    def check(self, relative_path: str, expected_sha256: str) -> Damage | None:
        """What is wrong with a stored object, None when it is whole: streamed and hashed in pieces."""
        try:
            body = self._get(relative_path)["Body"]
            try:
                return self.damage_of(body, expected_sha256)
            finally:
                body.close()
        except (BotoCoreError, ClientError) as exc:
            return self._damaged(relative_path, exc).damage

    def key_id(self, relative_path: str) -> bytes | None:
        """The id of the key an object is sealed with; None if it is plaintext. OSError if it cannot be read."""
        try:
            head = self._get(relative_path, Range=f"bytes=0-{HEADER_BYTES - 1}")["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"cannot read {relative_path} from the object store: {_reason(exc)}") from None
        return key_id_of(head)

    def remove(self, relative_path: str) -> None:
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=self.key_of(relative_path))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot remove {relative_path} from the object store: {_reason(exc)}") from None

    def age_of(self, relative_path: str) -> float | None:
        """Seconds since an object was written, by the store's own clock (its reply's Date less the object's
        Last-Modified: no skew with this node's clock); None if gone or unreachable."""
        try:
            head = self._client.head_object(Bucket=self.location.bucket, Key=self.key_of(relative_path))
        except (BotoCoreError, ClientError):
            return None
        now = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            reference = email.utils.parsedate_to_datetime(now).timestamp() if now else time.time()
        except (TypeError, ValueError):
            reference = time.time()
        return max(0.0, reference - float(head["LastModified"].timestamp()))

    def iter_files(self) -> Iterator[str]:
        """Every stored instance object, as paths relative to the prefix."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket,
                                                                       Prefix=self.location.prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.location.prefix):]
                    if key.endswith(".dcm"):
                        yield key
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot list the object store {self.location.describe()}: {_reason(exc)}") from None

    def export_file(self, relative_path: str, destination: Path) -> None:
        """Download an object as it is (sealed when sealed) to ``destination``; FileNotFoundError when missing."""
        try:
            body = self._get(relative_path)["Body"]
            with destination.open("wb") as out:
                for piece in iter(lambda: body.read(_PIECE_BYTES), b""):
                    out.write(piece)
        except (BotoCoreError, ClientError) as exc:
            damaged = self._damaged(relative_path, exc)
            if damaged.damage is Damage.MISSING:
                raise FileNotFoundError(relative_path) from None
            raise StorageError(str(damaged)) from None

    def _get(self, relative_path: str, **extra: str) -> dict[str, Any]:
        return self._client.get_object(Bucket=self.location.bucket, Key=self.key_of(relative_path), **extra)

    def _damaged(self, relative_path: str, exc: BotoCoreError | ClientError) -> DamagedFileError:
        if isinstance(exc, ClientError) and _code(exc) in _NOT_FOUND:
            return DamagedFileError(relative_path, Damage.MISSING)
        log.warning("object store read failed: %s", _reason(exc))
        return DamagedFileError(relative_path, Damage.UNREADABLE)


def _client(location: S3Location, connect_s: float, read_s: float, attempts: int, *, pool: int) -> Any:
    return boto3.session.Session().client(
        "s3", endpoint_url=location.endpoint, region_name=location.region,
        config=Config(connect_timeout=connect_s, read_timeout=read_s, max_pool_connections=pool,
                      retries={"max_attempts": attempts, "mode": "standard"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_supported",
                      s3={"addressing_style": "path"}),
    )


def _digests(path: Path) -> tuple[bytes, bytes]:
    """SHA-256 and MD5 of a file, in one pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for piece in iter(lambda: file.read(_PIECE_BYTES), b""):
            sha256.update(piece)
            md5.update(piece)
    return sha256.digest(), md5.digest()


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _reason(exc: BaseException) -> str:
    """A short reason without credentials or the request's URL."""
    if isinstance(exc, ClientError):
        return f"{_code(exc)} ({exc.response.get('Error', {}).get('Message', 'no message')})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__
