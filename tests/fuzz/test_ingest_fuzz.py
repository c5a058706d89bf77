"""Fuzzing the one ingest path in-process: every mutant is stored or refused with a reason, never a crash.

Each case takes a seed file (given SOP Instance, Study and Series UIDs of its own, so cases do not
collide), damages it once (:class:`~tests.fuzz.mutation.Mutator`) and sends it through
:meth:`Archive.ingest`. Expected: a result (no exception, whatever the bytes), refusals with the
documented statuses and a reason naming the element, never the reader's safety net ("unexpected"),
and every accepted instance read back byte-identical from the archive.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from oncopacs.archive.ingest import Archive, IngestOutcome, Status
from oncopacs.archive.part10 import dataset_offset
from oncopacs.index.models import Instance
from oncopacs.platform import open_archive
from oncopacs.settings import Settings
from tests.factories import part10_bytes, small_ct_series
from tests.fuzz.mutation import Mutator, with_fresh_uids
from tests.fuzz.oracle import FUZZ_SEED, CaseTimeout, Tally, reason_class, time_limit
from tests.fuzz.seeds import seed_files

CASES = int(os.environ.get("ONCOPACS_FUZZ_CASES", "2000"))
REFUSAL_STATUSES = {Status.CANNOT_UNDERSTAND, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS}
CONFLICT_STATUSES = {Status.DUPLICATE_SOP_INSTANCE, Status.CONFLICTING_PATIENT, Status.MOVED_INSTANCE}


@pytest.fixture(scope="module")
def fuzz_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """The bare archive (no analysis rules: the jobs they would start on stored mutants are not what is tested)."""
    archive = open_archive(Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "data"))
    yield archive
    archive.close()


def stored_bytes(archive: Archive, sop_instance_uid: str) -> bytes:
    with archive.index.reading() as session:
        row = session.execute(select(Instance.file_path, Instance.sha256)
                              .where(Instance.sop_instance_uid == sop_instance_uid)).one()
    return archive.storage.read(row.file_path, row.sha256)


def is_kept_intact(stored: bytes, sent: bytes, outcome: IngestOutcome) -> bool:
    """A Part 10 file is stored exactly as sent (a resend: its dataset); a bare dataset gets a File Meta in front."""
    if dataset_offset(sent) and outcome is IngestOutcome.STORED:
        return stored == sent
    return stored[dataset_offset(stored):] == sent[dataset_offset(sent):]


def test_every_mutant_is_stored_intact_or_refused_with_a_reason(fuzz_archive: Archive) -> None:
    seeds = seed_files()
    rng = random.Random(FUZZ_SEED)
    mutator = Mutator(rng)
    tally = Tally(f"ingest fuzz (seed {FUZZ_SEED}, {len(seeds)} seed files)")
    for case in range(CASES):
        seed_name, seed = seeds[rng.randrange(len(seeds))]
        mutant = mutator.mutate(with_fresh_uids(seed, case))
        tally.cases += 1
        tally.kinds[mutant.kind] += 1
        try:
            with time_limit():
                result = fuzz_archive.ingest(mutant.data, source="fuzz")
        except CaseTimeout as exc:
            tally.fail(case, seed_name, mutant.description, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - the very thing this test looks for
            tally.fail(case, seed_name, mutant.description, f"ingest raised {type(exc).__name__}")
            continue
        tally.statuses[f"{int(result.status):#06x}"] += 1
        if result.outcome in (IngestOutcome.STORED, IngestOutcome.DUPLICATE):
            tally.outcomes[f"accepted: {result.outcome.value}"] += 1
            stored = stored_bytes(fuzz_archive, str(result.sop_instance_uid))
            if not is_kept_intact(stored, mutant.data, result.outcome):
                tally.fail(case, seed_name, mutant.description, "the stored file differs from the bytes sent")
        elif result.outcome is IngestOutcome.REJECTED and result.status in REFUSAL_STATUSES:
            kind = reason_class(result.reason)
            tally.outcomes[f"refused: {kind}"] += 1
            if kind == "UNEXPECTED":
                tally.fail(case, seed_name, mutant.description, result.reason)
        elif result.outcome is IngestOutcome.CONFLICT and result.status in CONFLICT_STATUSES:
            tally.outcomes["refused: conflict"] += 1
        else:
            tally.fail(case, seed_name, mutant.description, f"{result.outcome.value} {int(result.status):#06x}: "
                       f"{result.reason}")
    after = part10_bytes(small_ct_series(1, prefix="AFTERFUZZ")[0])
    assert fuzz_archive.ingest(after, source="fuzz").outcome is IngestOutcome.STORED, "the archive is still up"
    print(tally.report())  # the outcome table, shown with -s or -rP
    assert not tally.failures, tally.report()
    assert tally.cases == sum(tally.outcomes.values()) == CASES
    accepted = sum(count for outcome, count in tally.outcomes.items() if outcome.startswith("accepted"))
    assert 0 < accepted < CASES, "a fuzzer that only stores or only refuses is not exploring"
