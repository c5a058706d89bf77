#!/usr/bin/env python
"""One index of millions: QIDO-RS (and C-FIND, the same matching) on PostgreSQL over a generated index.

Run from the repository root with the project's virtual environment active::

    python benchmarks/index_scale.py                         # 10,000,000 instances, 60 runs per query kind
    python benchmarks/index_scale.py --instances 1000000     # scaled down
    python benchmarks/index_scale.py --without-query-indexes # the schema before migration 0012 (the baseline)
    python benchmarks/index_scale.py --explain               # also print each query's EXPLAIN ANALYZE

A fresh schema (``--schema``, default ``index_scale``, dropped at the end unless ``--keep``) on the
PostgreSQL server (``--url``, default ``ONCOPACS_TEST_POSTGRES`` or the local ``test`` database) is
created by the project's own migrations, then filled with COPY: patients with several studies (common
surnames, dates over ten years), studies with several series (CT, MR, PT, RTSTRUCT, RTPLAN, RTDOSE),
image series of tens to hundreds of instances. Each query kind is then timed with varied parameters
through the index query that QIDO-RS and C-FIND share (:func:`oncopacs.index.query.find`, with QIDO's page:
"find") and through the whole QIDO-RS search, DICOM JSON included (:func:`oncopacs.dicomweb.qido.search`:
"QIDO"). Reported: load time, table sizes, and p50/p95 latency (ms) and median rows per query kind.
Nothing here asserts; ``tests/index/test_query_indexes.py`` checks the plans.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy
from alembic import command
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
)

from oncopacs.dicomweb.qido import DEFAULT_MAX_RESULTS, parse_qido, search
from oncopacs.index.db import IndexDatabase, _alembic_config, open_index
from oncopacs.index.query import QueryLevel, find

DEFAULT_URL = os.environ.get("ONCOPACS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
UID_ROOT = "1.2.826.0.1.3680043.10.1234"  # a private root for generated UIDs
FIRST_YEAR, YEARS = 2016, 10

SURNAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee",
    "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
    "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker",
    "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Mueller", "Schmidt", "Schneider", "Fischer",
    "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Dupont", "Bernard", "Dubois", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi",
    "Romano", "Colombo", "Ricci", "Marino", "Greco", "Jansen", "DeVries", "VanDijk", "Bakker", "Visser", "Smit",
    "Meijer", "DeBoer", "Mulder", "DeGroot", "Novak", "Horvat", "Kowalski", "Nowak", "Wisniewski", "Silva",
    "Santos", "Oliveira", "Souza", "Pereira",
)
GIVEN = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth", "David",
    "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Anna", "Peter",
    "Maria", "Hans", "Ursula", "Pierre", "Claire", "Marco", "Giulia", "Jan", "Eva", "Paul", "Ines",
)
#: Zipf-like: the commonest surname is ~50 times the rarest.
SURNAME_WEIGHTS = [1 / (rank + 1) ** 0.85 for rank in range(len(SURNAMES))]
MODALITY_CLASS = {
    "CT": CTImageStorage, "MR": MRImageStorage, "PT": PositronEmissionTomographyImageStorage,
    "RTSTRUCT": RTStructureSetStorage, "RTPLAN": RTPlanStorage, "RTDOSE": RTDoseStorage,
}
QUERY_MODALITIES = ("CT", "MR", "PT", "RTSTRUCT", "RTPLAN", "RTDOSE")


@dataclass(frozen=True, slots=True)
class Shape:
    """What was generated: counts per table and what queries draw their parameters from."""

    patients: int
    studies: int
    series: int
    instances: int
    patient_ids: tuple[str, ...]
    surnames: tuple[str, ...] = field(default=tuple(SURNAMES))


def _series_plan(rng: random.Random) -> list[tuple[str, int]]:
    """(modality, number of instances) of one study's series, by a drawn study kind."""
    kind = rng.choices(("rt", "ct", "mr", "petct", "replan"), weights=(35, 25, 20, 12, 8))[0]
    if kind == "rt":
        plan = [("CT", rng.randint(80, 250)), ("RTSTRUCT", 1), ("RTPLAN", 1), ("RTDOSE", 1)]
        if rng.random() < 0.4:
            plan += [("MR", rng.randint(30, 150)) for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.25:
            plan.append(("PT", rng.randint(150, 350)))
        return plan
    if kind == "ct":
        return [("CT", rng.randint(40, 300)) for _ in range(rng.randint(1, 3))]
    if kind == "mr":
        return [("MR", rng.randint(20, 200)) for _ in range(rng.randint(2, 5))]
    if kind == "petct":
        return [("CT", rng.randint(150, 300)), ("PT", rng.randint(150, 350))]
    return [("RTSTRUCT", 1), ("RTPLAN", 1), ("RTDOSE", rng.randint(1, 3))]


class _Tables:
    """TSV text of the four tables, written in blocks to COPY."""

    def __init__(self) -> None:
        self.patients, self.studies, self.series, self.instances = (io.StringIO() for _ in range(4))


def _rows(n_instances: int, seed: int, sink: Callable[[_Tables, bool], None]) -> Shape:
    """Generate exactly ``n_instances`` instances; ``sink`` receives each block (and a flag on the last)."""
    rng = random.Random(seed)
    tables = _Tables()
    now = "2026-01-01 00:00:00+00"
    patient = study = series = instance = 0
    patient_ids: list[str] = []
    while instance < n_instances:
        patient += 1
        patient_id = f"P{patient:08d}"
        patient_ids.append(patient_id)
        name = f"{rng.choices(SURNAMES, SURNAME_WEIGHTS)[0]}^{rng.choice(GIVEN)}"
        birth = f"{rng.randint(1930, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        tables.patients.write(f"{patient}\t{patient_id}\t\t{name}\t{birth}\t{rng.choice('MF')}\n")
        for _ in range(rng.choices((1, 2, 3, 4, 5, 6, 8), weights=(25, 25, 20, 12, 8, 6, 4))[0]):
            if instance >= n_instances:
                break
            study += 1
            date = f"{FIRST_YEAR + rng.randrange(YEARS)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            tables.studies.write(
                f"{study}\t{patient}\t{UID_ROOT}.1.{study}\t{date}\t{rng.randint(7, 18):02d}{rng.randrange(60):02d}00"
                f"\tA{study:09d}\t{study % 100000}\tRadiotherapy planning\tDoe^Jane\t{now}\n")
            frame = f"{UID_ROOT}.4.{study}"
            for number, (modality, count) in enumerate(_series_plan(rng), start=1):
                count = min(count, n_instances - instance)
                if count <= 0:
                    break
                series += 1
                tables.series.write(
                    f"{series}\t{study}\t{UID_ROOT}.2.{series}\t{modality}\t{number}\t{modality} series\t{date}"
                    f"\t120000\tPELVIS\t{frame}\t{count}\n")
                sop_class = MODALITY_CLASS[modality]
                write = tables.instances.write
                for position in range(1, count + 1):
                    instance += 1
                    write(f"{instance}\t{series}\t{UID_ROOT}.3.{instance}\t{sop_class}\t{position}\t{date}\t120000"
                          f"\t512\t512\t\\N\t{frame}\t{ExplicitVRLittleEndian}\t{study}/{series}/{instance}.dcm"
                          f"\t526000\t{instance:064x}\t{now}\t\n")
        if tables.instances.tell() > 32_000_000:
            sink(tables, False)
            tables = _Tables()
    sink(tables, True)
    return Shape(patient, study, series, instance, tuple(patient_ids))


_COLUMNS = {
    "patients": "id, patient_id, issuer_of_patient_id, patient_name, patient_birth_date, patient_sex",
    "studies": "id, patient_pk, study_instance_uid, study_date, study_time, accession_number, study_id, "
               "study_description, referring_physician_name, created_at",
    "series": "id, study_pk, series_instance_uid, modality, series_number, series_description, series_date, "
              "series_time, body_part_examined, frame_of_reference_uid, number_of_instances",
    "instances": "id, series_pk, sop_instance_uid, sop_class_uid, instance_number, content_date, content_time, "
                 "rows, columns, number_of_frames, frame_of_reference_uid, transfer_syntax_uid, file_path, "
                 "file_size, sha256, received_at, source",
}


def load(index: IndexDatabase, n_instances: int, *, seed: int = 1, analyze: bool = True) -> Shape:
    """Fill the (empty, migrated) PostgreSQL index of ``index`` with ``n_instances`` generated instances by COPY."""
    with index.write_engine.begin() as connection:
        driver = connection.connection.driver_connection  # psycopg 3: COPY FROM STDIN
        if driver is None:
            raise RuntimeError("the index connection is closed")
        cursor = driver.cursor()
        cursor.execute("SET LOCAL synchronous_commit = off")

        def sink(tables: _Tables, _last: bool) -> None:
            for table in ("patients", "studies", "series", "instances"):
                with cursor.copy(f"COPY {table} ({_COLUMNS[table]}) FROM STDIN") as copy:
                    copy.write(getattr(tables, table).getvalue())

        shape = _rows(n_instances, seed, sink)
        for table in ("patients", "studies", "series", "instances"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    if analyze:
        with index.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("patients", "studies", "series", "instances"):
                connection.exec_driver_sql(f"VACUUM ANALYZE {table}")  # statistics, and the visibility map
    return shape


# -- the query kinds ------------------------------------------------------------------------


Params = list[tuple[str, str]]


def _patient_id(rng: random.Random, shape: Shape) -> Params:
    return [("PatientID", rng.choice(shape.patient_ids))]


def _name_wildcard(rng: random.Random, shape: Shape) -> Params:
    surname = rng.choice(shape.surnames).upper()
    pattern = rng.choice((f"{surname}^{rng.choice(GIVEN)[0]}*", f"{surname[:4]}*", f"{surname}*"))
    return [("PatientName", pattern)]


def _date_modality(rng: random.Random, _shape: Shape) -> Params:
    year, month = FIRST_YEAR + rng.randrange(YEARS), rng.randint(1, 12)
    return [("StudyDate", f"{year}{month:02d}01-{year}{month:02d}28"),
            ("ModalitiesInStudy", rng.choice(QUERY_MODALITIES))]


#: The study list pages over which the listing kinds are timed (OFFSET walks the rows it skips: deep pages cost
#: about 1 ms per 1,000 skipped studies, three times, once per statement).
LIST_PAGES = 20
PAGE = 101  # OHIF's study list asks limit=101


def _study_list(rng: random.Random, shape: Shape) -> Params:
    offset = PAGE * rng.randrange(min(LIST_PAGES, max(1, shape.studies // PAGE)))
    return [("includefield", "00081030,00080061"), ("limit", str(PAGE)), ("offset", str(offset))]


def _study_all_fields(rng: random.Random, shape: Shape) -> Params:
    return [("includefield", "all"), *_study_list(rng, shape)[1:]]


#: name -> (what it asks, its parameters drawn from the generated index). Every study search returns
#: ModalitiesInStudy, NumberOfStudyRelatedSeries and NumberOfStudyRelatedInstances (QIDO-RS's defaults).
QUERY_KINDS: dict[str, tuple[str, Callable[[random.Random, Shape], Params]]] = {
    "patient_id": ("PatientID=P00001234", _patient_id),
    "name_wildcard": ("PatientName=SMITH^J* | SMIT* | SMITH*", _name_wildcard),
    "date_modality": ("StudyDate=<one month>&ModalitiesInStudy=PT", _date_modality),
    "study_computed": ("includefield=StudyDescription,ModalitiesInStudy&limit=101&offset=<page 1-20>", _study_list),
    "study_all": ("includefield=all (+SOPClassesInStudy)&limit=101&offset=<page 1-20>", _study_all_fields),
}


def run_find(index: IndexDatabase, params: Params) -> int:
    """The index query of one QIDO-RS study search (:func:`oncopacs.index.query.find`, as ``search`` calls it,
    one page plus one row), without building its DICOM JSON; the number of matches."""
    query = parse_qido(QueryLevel.STUDY, params)
    page = DEFAULT_MAX_RESULTS if query.limit is None else min(query.limit, DEFAULT_MAX_RESULTS)
    with index.read_connection() as connection:
        return len(find(connection, query.level, query.keys, return_keys=query.return_keys, limit=page + 1,
                        offset=query.offset))


def run_query(index: IndexDatabase, params: Params) -> int:
    """One QIDO-RS study search as the web route runs it (index query and DICOM JSON); the number of results."""
    query = parse_qido(QueryLevel.STUDY, params)
    with index.read_connection() as connection:
        return len(search(connection, query, "http://localhost/dicom-web").results)


@contextmanager
def captured_statements(index: IndexDatabase) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and their parameters) the index engine runs inside the block."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany) -> None:
        statements.append((statement, parameters))

    sqlalchemy.event.listen(index.read_engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        sqlalchemy.event.remove(index.read_engine, "before_cursor_execute", capture)


def explain(index: IndexDatabase, params: Params, *, analyze: bool = False, as_if_large: bool = False,
            fmt: str = "TEXT") -> list[str]:
    """The plan of each statement one search runs (EXPLAIN, optionally ANALYZE, as TEXT or JSON).

    ``as_if_large`` plans as for tables too large to read whole: no sequential scans, hash or merge joins
    where another path exists, so a small generated index shows whether indexes can serve each access.
    """
    with captured_statements(index) as statements:
        run_query(index, params)
    plans = []
    with index.read_engine.connect() as connection:
        if as_if_large:
            for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
                connection.exec_driver_sql(f"SET LOCAL {setting} = off")
        for statement, parameters in statements:
            options = f"(ANALYZE, BUFFERS, FORMAT {fmt})" if analyze else f"(FORMAT {fmt})"
            rows = connection.exec_driver_sql(f"EXPLAIN {options} {statement}", parameters).all()
            plans.append("\n".join(row[0] if isinstance(row[0], str) else json.dumps(row[0]) for row in rows))
        connection.rollback()
    return plans


# -- the run --------------------------------------------------------------------------------


@contextmanager
def scratch_index(server_url: str, schema: str, *, keep: bool = False,
                  without_query_indexes: bool = False) -> Iterator[IndexDatabase]:
    """A fresh schema migrated by the project's migrations (to 0011 with ``without_query_indexes``)."""
    admin = sqlalchemy.create_engine(server_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = f"{server_url}?options=-csearch_path%3D{schema}"
    index = open_index(url, migrate=False)
    with index.write_engine.begin() as connection:
        config = _alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0011" if without_query_indexes else "head")
    try:
        yield index
    finally:
        index.dispose()
        if not keep:
            with admin.begin() as connection:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def table_sizes(index: IndexDatabase) -> list[tuple[str, int, str, str]]:
    """(table, rows, heap size, index size) of the four query tables."""
    with index.read_engine.connect() as connection:
        sizes = []
        for table in ("patients", "studies", "series", "instances"):
            rows, heap, indexes = connection.exec_driver_sql(
                f"SELECT (SELECT count(*) FROM {table}), pg_size_pretty(pg_table_size('{table}')), "
                f"pg_size_pretty(pg_indexes_size('{table}'))").one()
            sizes.append((table, int(rows), str(heap), str(indexes)))
        return sizes


def upgrade_to_head(index: IndexDatabase) -> float:
    """Migrate a schema left at 0011 to the newest revision (the query indexes); seconds it took."""
    started = time.perf_counter()
    index.migrate()
    with index.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("patients", "studies", "series", "instances"):
            connection.exec_driver_sql(f"ANALYZE {table}")
    return time.perf_counter() - started


def _percentiles(times_ms: list[float]) -> tuple[float, float]:
    return statistics.median(times_ms), statistics.quantiles(times_ms, n=20)[18]


def time_kinds(index: IndexDatabase, shape: Shape, rng: random.Random, runs: int, *, show_plans: bool) -> None:
    """Time each query kind ``runs`` times (after 3 warm-up runs), the index query alone and the whole QIDO-RS
    search, on the same parameters; print p50, p95 (ms) and median rows."""
    print(f"\n{'query':<15} {'find p50':>9} {'find p95':>9} {'QIDO p50':>9} {'QIDO p95':>9} {'rows':>5}  /studies?")
    for name, (asks, draw) in QUERY_KINDS.items():
        if show_plans:
            for plan in explain(index, draw(rng, shape), analyze=True):
                print(f"-- {name}\n{plan}", file=sys.stderr)
        for _ in range(3):
            run_query(index, draw(rng, shape))
        find_ms, search_ms, counts = [], [], []
        for _ in range(runs):
            params = draw(rng, shape)
            begin = time.perf_counter()
            run_find(index, params)
            middle = time.perf_counter()
            counts.append(run_query(index, params))
            search_ms.append((time.perf_counter() - middle) * 1000)
            find_ms.append((middle - begin) * 1000)
        (f50, f95), (s50, s95) = _percentiles(find_ms), _percentiles(search_ms)
        print(f"{name:<15} {f50:>9.1f} {f95:>9.1f} {s50:>9.1f} {s95:>9.1f} {statistics.median(counts):>5.0f}  {asks}",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=60, help="timed runs per query kind (after 3 warm-up runs)")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL server URL (a schema is created in it)")
    parser.add_argument("--schema", default="index_scale")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument("--without-query-indexes", action="store_true", help="stop at migration 0011 (baseline)")
    parser.add_argument("--compare", action="store_true",
                        help="time at 0011, add the query indexes (migration 0012), time again")
    parser.add_argument("--explain", action="store_true", help="print one EXPLAIN ANALYZE per query kind")
    args = parser.parse_args()

    baseline = args.without_query_indexes or args.compare
    with scratch_index(args.url, args.schema, keep=args.keep, without_query_indexes=baseline) as index:
        started = time.perf_counter()
        shape = load(index, args.instances, seed=args.seed)
        load_s = time.perf_counter() - started
        print(f"Generated {shape.instances:,} instances, {shape.series:,} series, {shape.studies:,} studies, "
              f"{shape.patients:,} patients; COPY + VACUUM ANALYZE {load_s:.0f} s", flush=True)
        if baseline:
            print("\nWithout the query indexes (schema at migration 0011):")
            time_kinds(index, shape, random.Random(args.seed + 1), args.runs, show_plans=args.explain)
        if args.compare:
            print(f"\nMigration 0012 (the query indexes) + ANALYZE: {upgrade_to_head(index):.0f} s\nWith them:")
        if not args.without_query_indexes:
            time_kinds(index, shape, random.Random(args.seed + 1), args.runs, show_plans=args.explain)
        print(f"\n{'table':<10} {'rows':>12} {'heap':>10} {'indexes':>10}")
        for table, rows, heap, indexes in table_sizes(index):
            print(f"{table:<10} {rows:>12,} {heap:>10} {indexes:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
