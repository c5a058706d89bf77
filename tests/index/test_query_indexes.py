"""The common QIDO-RS / C-FIND queries can be served by indexes on PostgreSQL (migration 0012).

A generated index of ~20,000 instances (``benchmarks/index_scale.py``'s generator) is far too small for the
planner to prefer an index on its own, so each plan is taken as for large tables (no sequential scans,
hash or merge joins where another path exists): a scan of a query table without an index condition is
then left only where no index can serve the access. No timings here; the benchmark measures those.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from oncopacs.index.db import IndexDatabase, open_index
from tests.conftest import empty_database

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "index_scale.py"
QUERY_TABLES = {"patients", "studies", "series", "instances"}

#: (query kind, QIDO-RS study search parameters); PatientIDs are P00000001 onwards.
QUERIES = [
    ("patient_id", [("PatientID", "P00000007")]),
    ("name_prefix", [("PatientName", "SMITH^J*")]),
    ("name_short_prefix", [("PatientName", "HOFF*")]),
    ("name_infix", [("PatientName", "*SON*")]),
    ("date_modality", [("StudyDate", "20200101-20200630"), ("ModalitiesInStudy", "PT")]),
    ("study_computed", [("includefield", "all"), ("limit", "100"), ("offset", "10")]),
]


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("index_scale", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("index_scale", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory,
              postgres_ok: bool) -> Iterator[tuple[ModuleType, IndexDatabase]]:
    bench = _benchmark()
    with empty_database("postgresql", tmp_path_factory.mktemp("index-scale"), postgres_ok) as url:
        index = open_index(url)
        try:
            bench.load(index, 20_000, seed=3)
            yield bench, index
        finally:
            index.dispose()


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", ()):
        yield from _scans(child)


def _full_scans(index: IndexDatabase, bench: ModuleType, params: list[tuple[str, str]]) -> list[str]:
    """The scans of the query tables without an index condition (that read the whole table), but the listing's
    walk of studies in primary-key order, which a page's LIMIT stops."""
    found = []
    for text in bench.explain(index, params, as_if_large=True, fmt="JSON"):
        for scan in _scans(json.loads(text)[0]["Plan"]):
            if scan["Relation Name"] not in QUERY_TABLES or "Index Cond" in scan or "Recheck Cond" in scan:
                continue
            if scan.get("Index Name") == "studies_pkey" and "Filter" not in scan:
                continue
            found.append(f"{scan['Node Type']} on {scan['Relation Name']} ({scan.get('Filter', 'no filter')})")
    return found


def test_the_generator_loads_the_requested_number_of_instances(generated: tuple[ModuleType, IndexDatabase]) -> None:
    bench, index = generated
    sizes = {table: rows for table, rows, _heap, _indexes in bench.table_sizes(index)}
    assert sizes["instances"] == 20_000
    assert 0 < sizes["patients"] < sizes["studies"] < sizes["series"] < sizes["instances"]


@pytest.mark.parametrize(("kind", "params"), QUERIES, ids=[kind for kind, _ in QUERIES])
def test_each_common_query_is_served_by_indexes(generated: tuple[ModuleType, IndexDatabase], kind: str,
                                                params: list[tuple[str, str]]) -> None:
    bench, index = generated
    assert _full_scans(index, bench, params) == []
