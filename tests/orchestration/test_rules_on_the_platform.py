"""The hospital's rules on a real platform: forwards become outbox rows, analyses and exports become jobs."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread

from oncopacs.errors import ConfigError
from oncopacs.orchestration.rule_actions import PLUGIN_JOB
from oncopacs.phantom.ct4d import CT4D_FAMILY, build_ct4d_phantom
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from tests.factories import small_ct_series

RULES = [
    {"name": "forward-ct", "on": "instance", "match": {"Modality": "CT"}, "forward": ["DEST"]},
    {"name": "autocontour", "on": "series", "match": {"Modality": "CT", "CallingAE": "SCANNER*"},
     "analyse": ["body-contour"]},
]


def _settings(settings: Settings, rules, **more) -> Settings:
    remote = Settings.load(env={"ONCOPACS_REMOTE_AES": "DEST@127.0.0.1:11199"}).remote_aes
    return settings.with_overrides(rules=tuple(rules), remote_aes=remote, stable_seconds=0, **more)


def test_an_instance_rule_queues_a_forward_per_matching_instance(settings: Settings):
    with open_platform(_settings(settings, RULES[:1])) as platform:
        for ds in small_ct_series(3):
            assert platform.archive.ingest_dataset(ds, source="dimse:CT1").acknowledged
        items = platform.outbox.list_items()
        rows = items if isinstance(items, list) else items.items
        assert len(rows) == 3 and {r.destination for r in rows} == {"DEST"} and {r.rule for r in rows} == {"forward-ct"}


@pytest.mark.slow  # contours a thorax CT
def test_a_series_rule_runs_its_plugin_once_the_series_is_stable(settings: Settings):
    spec = replace(CT4D_FAMILY["issue_case"], phases=1, gtv_phase=0, supersampling=1)
    ct = list(build_ct4d_phantom(spec).phases[0])
    with open_platform(_settings(settings, RULES[1:])) as platform:
        for ds in ct:
            assert platform.archive.ingest_dataset(ds, source="dimse:SCANNER_A").acknowledged
        assert not platform.jobs.queue.list(kind=PLUGIN_JOB).jobs  # nothing until the series is stable
        assert [f.rule.name for f in platform.rules.engine.fire_stable()] == ["autocontour"]
        assert platform.jobs.new_worker().run_pending() >= 1
        (job,) = platform.jobs.queue.list(kind=PLUGIN_JOB).jobs
        assert job.status.value == "succeeded", job.message
        stored = job.result["stored"]
        modalities = {str(platform.archive.read_instance(uid).Modality) for uid in stored}
        assert modalities == {"RTSTRUCT", "SEG"}


def test_a_series_from_another_sender_does_not_fire(settings: Settings):
    with open_platform(_settings(settings, RULES[1:])) as platform:
        for ds in small_ct_series(2):
            assert platform.archive.ingest_dataset(ds, source="dimse:TPS").acknowledged
        assert platform.rules.engine.fire_stable() == [] and platform.rules.engine.pending() == 0


@pytest.mark.parametrize(("rule", "says"), [
    ({"name": "to-nowhere", "on": "instance", "forward": ["NOWHERE"]}, "rule 'to-nowhere': destination 'NOWHERE'"),
    ({"name": "ghost", "on": "series", "analyse": ["ghost-model"]}, "rule 'ghost': no plug-in named 'ghost-model'"),
    ({"name": "rel", "on": "study", "export": ["research"]}, "give an absolute folder path"),
])
def test_a_rule_the_platform_cannot_carry_out_stops_it_opening(settings: Settings, rule, says):
    with pytest.raises(ConfigError, match=says):
        open_platform(_settings(settings, [rule]))


def test_a_study_rule_exports_the_study_de_identified(settings: Settings, tmp_path: Path):
    out = tmp_path / "research"
    rule = {"name": "research", "on": "study", "match": {"Modality": "CT"}, "export": [str(out)]}
    with open_platform(_settings(settings, [rule])) as platform:
        series = small_ct_series(2)
        for ds in series:
            assert platform.archive.ingest_dataset(ds, source="import").acknowledged
        assert [f.rule.name for f in platform.rules.engine.fire_stable()] == ["research"]
        assert platform.jobs.new_worker().run_pending() >= 1
        files = sorted(out.rglob("*.dcm"))
        assert len(files) == 2
        exported = dcmread(files[0])
        assert exported.PatientIdentityRemoved == "YES" and exported.PatientID != series[0].PatientID


def _outbox_rows(platform) -> list:
    items = platform.outbox.list_items()
    return items if isinstance(items, list) else items.items


def test_a_waiting_series_rule_survives_a_restart_and_forwards_the_whole_series(settings: Settings):
    rules = [{"name": "forward-series", "on": "series", "match": {"Modality": "CT"}, "forward": ["DEST"]}]
    series = small_ct_series(3)
    with open_platform(_settings(settings, rules).with_overrides(stable_seconds=1)) as platform:
        for ds in series:
            assert platform.archive.ingest_dataset(ds, source="stow").acknowledged
        assert platform.rules.engine.pending() == 1 and platform.rules.engine.fire_stable() == []
    with open_platform(_settings(settings, rules).with_overrides(stable_seconds=1)) as restarted:
        assert restarted.rules.engine.pending() == 1  # kept in the index, not in the process that stored it
        deadline = time.monotonic() + 10
        while not (fired := restarted.rules.engine.fire_stable()):
            assert time.monotonic() < deadline, "the series rule never fired after the restart"
            time.sleep(0.1)
        assert [f.rule.name for f in fired] == ["forward-series"] and restarted.rules.engine.pending() == 0
        assert sorted(r.sop_instance_uid for r in _outbox_rows(restarted)) == sorted(
            str(ds.SOPInstanceUID) for ds in series)


def test_a_built_in_rule_and_a_configured_rule_cannot_share_a_name(settings: Settings):
    rules = [{"name": "rt-analysis", "on": "instance", "forward": ["DEST"]}]
    with pytest.raises(ConfigError, match=r"rt-analysis.*built-in"):
        open_platform(_settings(settings, rules))


def test_the_rule_loop_fires_stable_series_and_wakes_whoever_runs_the_work(settings: Settings):
    import threading

    from oncopacs.orchestration.rule_actions import RuleLoop

    rules = [{"name": "forward-series", "on": "series", "match": {"Modality": "CT"}, "forward": ["DEST"]}]
    with open_platform(_settings(settings, rules)) as platform:
        # both instances stored before the loop runs: on a loaded machine the series could otherwise turn stable
        # between them and fire with one
        for ds in small_ct_series(2):
            assert platform.archive.ingest_dataset(ds, source="stow").acknowledged
        woken = threading.Event()
        loop = RuleLoop(platform.rules, poll_s=0.05, on_fired=woken.set)
        loop.start()
        try:
            assert woken.wait(10), "the rule loop never fired the stable series"
        finally:
            loop.stop()
        assert len(_outbox_rows(platform)) == 2
