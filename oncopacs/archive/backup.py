"""An online backup of a data directory: the index snapshotted first, then the files that snapshot references.

The backup folder is itself a data directory (``oncopacs --data-dir DIR verify`` and ``serve`` work on it):

* the index: SQLite through its online backup API into ``index.sqlite`` (one step, so one consistent
  snapshot while the server keeps storing); PostgreSQL through ``pg_dump`` (custom format, ``index.pgdump``)
  run on a snapshot exported from the transaction that lists the instances, so the list and the dump agree;
* ``storage/``: every file the snapshot lists, hard-linked when on the same file system, else copied, and
  its SHA-256 checked against the index. Files stored after the snapshot are not in it and are not copied.
  Into an existing backup, files already there with the right SHA-256 are skipped and files the new
  snapshot no longer lists are removed (the folder must match its index for ``verify``);
* ``secret_key``, ``audit-spool`` and ``demo-credentials.txt`` when present. Not ``viewer/`` (re-installable).
* ``audit-checkpoints`` (copied before the snapshot, so every record a checkpoint names is in it) and the audit key
  when it lives in the data directory; a key kept elsewhere is named in the report, not copied.

With a storage key (``storage_key_file``) the stored files are linked or copied sealed, as they are, and the index
snapshot is sealed too: ``index.sqlite.enc`` (snapshotted in memory, never on disk in the clear), unsealed in place
when the folder is opened as a data directory with the key; ``index.pgdump.enc``, unsealed for ``pg_restore`` by
``oncopacs storage unseal``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from oncopacs.archive.encryption import Sealer, StorageKeys, seal, storage_keys_of, unseal_file
from oncopacs.archive.storage import Storage
from oncopacs.archive.stores import open_storage
from oncopacs.audit.checkpoints import CHECKPOINT_FILE as AUDIT_CHECKPOINT_FILE
from oncopacs.audit.sealing import KEY_FILE as AUDIT_KEY_FILE
from oncopacs.audit.spool import SPOOL_FILE
from oncopacs.errors import ConfigError, StorageError
from oncopacs.index.models import Instance
from oncopacs.settings import Settings

if TYPE_CHECKING:
    from oncopacs.archive.stores import InstanceStore

SQLITE_INDEX = "index.sqlite"
PG_DUMP_FILE = "index.pgdump"
SEALED_SUFFIX = ".enc"  # a snapshot sealed with the storage key (oncopacs.archive.encryption)
SECRET_KEY_FILE = "secret_key"  # oncopacs.web.auth.SECRET_KEY_FILE (a higher layer); a test keeps them equal
DEMO_CREDENTIALS_FILE = "demo-credentials.txt"  # oncopacs.cli.demo.DEMO_CREDENTIALS_FILE, likewise

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What one backup run did. Paths are relative to the storage directory; ``seconds`` is wall time."""

    out: str
    index: str  # the index file in the backup folder
    instances: int  # instances the snapshot lists
    new: int  # files linked or copied this run
    skipped: int  # already in the backup with the right SHA-256
    removed: int  # in the backup from an earlier run, no longer in the index
    linked: bool  # hard links (same file system) rather than copies
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    included: list[str] = field(default_factory=list)
    not_included: list[str] = field(default_factory=list)
    restore: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered)

    def to_dict(self) -> dict:
        return {"out": self.out, "index": self.index, "instances": self.instances, "new": self.new,
                "skipped": self.skipped, "removed": self.removed, "damaged": len(self.missing) + len(self.altered),
                "linked": self.linked, "missing": self.missing, "altered": self.altered, "included": self.included,
                "not_included": self.not_included, "restore": self.restore, "seconds": round(self.seconds, 3),
                "ok": self.ok}


def backup(settings: Settings, out: Path, *, config_file: Path | None = None,
           on_total: Progress | None = None, progress: Progress | None = None) -> BackupReport:
    """Back up ``settings``' data directory into ``out`` (created, or updated when it holds an earlier backup).

    ``on_total`` hears how many files the snapshot lists, ``progress`` one call per file handled.
    Raises :class:`ConfigError` (no ``pg_dump``, ``out`` is the data directory) or :class:`StorageError`.
    """
    started = time.monotonic()
    data_dir, out = Path(settings.data_dir).resolve(), Path(out).resolve()
    if out == data_dir or data_dir in out.parents or out in data_dir.parents:
        raise ConfigError(f"the backup folder {out} must not be the data directory, inside it or above it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the backup folder {out}: {exc.strerror or exc}") from None
    url = settings.effective_database_url
    keys = storage_keys_of(settings)  # ConfigError: a bad key file
    included = _copy_audit_anchors(settings, out)  # before the snapshot: every record they name is in it
    with _spool_held(data_dir / SPOOL_FILE) as spool:  # the spool and the index agree on what was replayed
        if spool is not None:
            _copy_open_file(spool, out / SPOOL_FILE)
            included.append(SPOOL_FILE)
        if url.startswith("sqlite"):
            index_name, restore = SQLITE_INDEX, f"oncopacs --data-dir {out} serve (or copy the folder back)"
            if keys is None:
                rows = _snapshot_sqlite(url, out / SQLITE_INDEX)
                _remove_stale(out / (SQLITE_INDEX + SEALED_SUFFIX))
            else:
                index_name = SQLITE_INDEX + SEALED_SUFFIX
                restore += " with the same storage key file (the index is unsealed in place)"
                rows = _snapshot_sqlite_sealed(url, out / index_name, keys)
                _remove_stale(out / SQLITE_INDEX)
        elif url.startswith("postgresql"):
            index_name = PG_DUMP_FILE
            restore = (f"pg_restore --clean --if-exists --no-owner -d <database URL> {out / PG_DUMP_FILE}, then "
                       f"oncopacs --data-dir {out} serve with database_url naming that database")
            if keys is None:
                rows = _snapshot_postgres(url, out / PG_DUMP_FILE)
                _remove_stale(out / (PG_DUMP_FILE + SEALED_SUFFIX))
            else:
                index_name = PG_DUMP_FILE + SEALED_SUFFIX
                rows = _snapshot_postgres(url, out / index_name, keys)
                _remove_stale(out / PG_DUMP_FILE)
                restore = (f"oncopacs storage unseal {out / index_name} DUMP (with the storage key file), then "
                           + restore.replace(str(out / PG_DUMP_FILE), "DUMP") + " and the same storage key file")
        else:
            raise ConfigError(f"cannot back up an index of this kind: {make_url(url).drivername}")
    included.insert(0, index_name)
    files = _copy_files(open_storage(settings, keys), Storage(out / "storage", keys), rows, on_total, progress)
    for name in (SECRET_KEY_FILE, DEMO_CREDENTIALS_FILE):
        if (data_dir / name).is_file():
            shutil.copy2(data_dir / name, out / name)
            included.append(name)
    return BackupReport(out=str(out), index=index_name, instances=len(rows), new=files.new, skipped=files.skipped,
                        removed=files.removed, linked=files.linked, missing=sorted(files.missing),
                        altered=sorted(files.altered), included=included,
                        not_included=_not_included(settings, config_file), restore=restore,
                        seconds=time.monotonic() - started)


# -- the index ---------------------------------------------------------------------------------


def restore_sealed_index(settings: Settings, keys: StorageKeys | None) -> bool:
    """Unseal a backup's ``index.sqlite.enc`` into ``index.sqlite`` when the data directory has no ``index.sqlite``
    (and the index is SQLite in it); True if it did. :class:`ConfigError` without a key to unseal it with."""
    sealed, index = settings.data_dir / (SQLITE_INDEX + SEALED_SUFFIX), settings.data_dir / SQLITE_INDEX
    if settings.database_url or index.exists() or not sealed.is_file():
        return False
    if keys is None:
        raise ConfigError(f"the index in {settings.data_dir} is sealed ({sealed.name}): set storage_key_file "
                          "(ONCOPACS_STORAGE_KEY_FILE) to the key file it was sealed with")
    unseal_file(sealed, index, keys)  # SealedDataError: another key, or damaged
    return True


def _snapshot_sqlite_sealed(url: str, target: Path, keys: StorageKeys) -> list[tuple[str, str]]:
    """Snapshot the SQLite index into memory in one backup step and write it sealed to ``target``."""
    source = make_url(url).database
    if not source or source == ":memory:" or not Path(source).is_file():
        raise ConfigError(f"no SQLite index file to back up at {source or '(in memory)'}")
    try:
        with contextlib.closing(sqlite3.connect(source, timeout=60)) as src, \
                contextlib.closing(sqlite3.connect(":memory:")) as copy:
            src.backup(copy)  # every page in one step, under one read transaction
            query = f"SELECT file_path, sha256 FROM {Instance.__tablename__}"
            rows = [(str(p), str(h)) for p, h in copy.execute(query)]
            image = copy.serialize()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot back up the SQLite index: {exc}") from None
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as file:
        file.write(seal(image, keys))
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, target)
    return rows


def _remove_stale(path: Path) -> None:
    """An earlier backup's index of the other kind (sealed or not), and its SQLite side files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _snapshot_sqlite(url: str, target: Path) -> list[tuple[str, str]]:
    """Copy the SQLite index to ``target`` in one backup step; the instances the copy lists."""
    source = make_url(url).database
    if not source or source == ":memory:" or not Path(source).is_file():
        raise ConfigError(f"no SQLite index file to back up at {source or '(in memory)'}")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(source, timeout=60)) as src, \
                contextlib.closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)  # pages=-1: every page in one step, under one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        for stale in ("-wal", "-shm", "-journal"):  # an earlier backup's, opened since: never meant for this copy
            target.with_name(target.name + stale).unlink(missing_ok=True)
        os.replace(partial, target)
        with contextlib.closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as copy:
            query = f"SELECT file_path, sha256 FROM {Instance.__tablename__}"
            return [(str(p), str(h)) for p, h in copy.execute(query)]
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StorageError(f"cannot back up the SQLite index: {exc}") from None


def _snapshot_postgres(url: str, target: Path, keys: StorageKeys | None = None) -> list[tuple[str, str]]:
    """``pg_dump`` (custom format) on a snapshot exported by the transaction that lists the instances; with
    ``keys``, its output is sealed as it comes (never on disk in the clear)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise ConfigError("pg_dump is not on PATH: install the PostgreSQL client (e.g. apt-get install "
                          "postgresql-client) to back up a PostgreSQL index")
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k in _LIBPQ_PARAMS}
    libpq = parsed.set(drivername="postgresql", password=None, query=query).render_as_string(hide_password=False)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)  # not on the command line, where ps shows it
    command = [pg_dump, "--format=custom", "--no-owner", *([f"--file={target}.partial"] if keys is None else [])]
    command += [f"--schema={schema}" for schema in _search_path(parsed.query.get("options"))]
    engine = create_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection, \
                connection.begin():
            snapshot = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            rows = [(str(p), str(h)) for p, h in connection.execute(select(Instance.file_path, Instance.sha256))]
            if keys is None:
                done = subprocess.run([*command, f"--snapshot={snapshot}", libpq], env=env, capture_output=True,
                                      text=True, check=False)
            else:
                done = _dump_sealed([*command, f"--snapshot={snapshot}", libpq], env, Path(f"{target}.partial"),
                                    keys)
    finally:
        engine.dispose()
    if done.returncode != 0:
        Path(f"{target}.partial").unlink(missing_ok=True)
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        raise StorageError(f"pg_dump failed: {reason}")
    os.replace(f"{target}.partial", target)
    return rows


def _dump_sealed(command: list[str], env: dict[str, str], partial: Path,
                 keys: StorageKeys) -> subprocess.CompletedProcess:
    """Run ``pg_dump`` writing to standard output, sealing what it writes into ``partial`` (fsynced)."""
    sealer = Sealer(keys)
    with tempfile.TemporaryFile() as errors, partial.open("wb") as out, \
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read(1024**2):
            out.write(sealer.update(chunk))
        returncode = process.wait()
        out.write(sealer.finish())
        out.flush()
        os.fsync(out.fileno())
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(command, returncode, "", stderr)


_LIBPQ_PARAMS = {"options", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name"}


def _search_path(options: str | tuple[str, ...] | None) -> list[str]:
    """The schemas a ``-csearch_path=...`` libpq option names (the index lives in the first), for ``--schema``."""
    text_ = options if isinstance(options, str) else " ".join(options or ())
    for part in text_.split():
        key, _, value = part.removeprefix("-c").partition("=")
        if key == "search_path" and value:
            return [s.strip().strip('"') for s in value.split(",")[:1] if s.strip()]
    return []


# -- the files ---------------------------------------------------------------------------------


@dataclass
class _Files:
    new: int = 0
    skipped: int = 0
    removed: int = 0
    linked: bool = True
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)


def _copy_files(source: InstanceStore, target: Storage, rows: list[tuple[str, str]], on_total: Progress | None,
                progress: Progress | None) -> _Files:
    files = _Files(linked=isinstance(source, Storage))  # objects are downloaded
    if on_total:
        on_total(len(rows))
    for relative_path, sha256 in rows:
        _copy_one(source, target, relative_path, sha256, files)
        if progress:
            progress(1)
    wanted = {relative_path for relative_path, _ in rows}
    for relative_path in list(target.iter_files()):
        if relative_path not in wanted:
            target.remove(relative_path)
            files.removed += 1
    return files


def _copy_one(source: InstanceStore, target: Storage, relative_path: str, sha256: str, files: _Files) -> None:
    dst = target.path_of(relative_path)
    if dst.is_file():
        if target.check(relative_path, sha256) is None:
            files.skipped += 1
            return
        dst.unlink()
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if files.linked and isinstance(source, Storage):
            try:
                os.link(source.path_of(relative_path), dst)  # files are never rewritten in place: a link is a snapshot
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                files.linked = False
        if not files.linked:  # a copy, or a download from an object store
            partial = dst.with_name(dst.name + ".partial")
            source.export_file(relative_path, partial)
            os.replace(partial, dst)
    except FileNotFoundError:
        files.missing.append(relative_path)
        return
    except OSError as exc:
        raise StorageError(f"cannot write {relative_path} to the backup: {exc.strerror or exc}") from None
    if target.check(relative_path, sha256) is not None:  # a copy is checked where it landed (plaintext SHA-256)
        dst.unlink()
        files.altered.append(relative_path)
        return
    files.new += 1


# -- beside the index ----------------------------------------------------------------------------


@contextlib.contextmanager
def _spool_held(path: Path) -> Iterator[int | None]:
    """The audit spool opened and share-locked (writers and replay wait) while the index is snapshotted."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _copy_open_file(fd: int, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        offset = 0
        while chunk := os.pread(fd, 1024**2, offset):
            out.write(chunk)
            offset += len(chunk)
    os.replace(partial, target)


def _copy_audit_anchors(settings: Settings, out: Path) -> list[str]:
    """The audit checkpoints, and the audit key when it lives in the data directory, copied to ``out`` under
    their default names (the backup opened as a data directory finds them); what was copied."""
    copied = []
    checkpoints, key = settings.effective_audit_checkpoint_file, settings.effective_audit_key_file
    if checkpoints.is_file():
        shutil.copyfile(checkpoints, out / AUDIT_CHECKPOINT_FILE)
        copied.append(AUDIT_CHECKPOINT_FILE)
    if key.is_file() and key.resolve().parent == Path(settings.data_dir).resolve():
        (out / AUDIT_KEY_FILE).unlink(missing_ok=True)
        shutil.copyfile(key, out / AUDIT_KEY_FILE)
        os.chmod(out / AUDIT_KEY_FILE, 0o600)
        copied.append(AUDIT_KEY_FILE)
    return copied


def _not_included(settings: Settings, config_file: Path | None) -> list[str]:
    """What a restore needs that lives outside the data directory: the operator backs it up."""
    kept = ["viewer/ (re-install with: oncopacs viewer install)"]
    config = config_file or (Path(os.environ["ONCOPACS_CONFIG"]) if os.environ.get("ONCOPACS_CONFIG") else None)
    if config:
        kept.append(f"settings file {config}")
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(settings, name):
            kept.append(f"{name} {getattr(settings, name)}")
    if settings.storage_key_file:
        kept.append(f"storage_key_file {settings.storage_key_file} (the sealed files and index need it: keep it "
                    "apart from the backups)")
    if settings.secret_key:
        kept.append("the secret_key setting (the session key is set outside the data directory)")
    key = settings.effective_audit_key_file
    if key.resolve().parent != Path(settings.data_dir).resolve():
        kept.append(f"audit key file {key} (audit verify needs it; keep it apart from the backup)")
    if settings.viewer_dir:
        kept[0] = f"viewer {settings.viewer_dir} (re-install with: oncopacs viewer install)"
    return kept
