"""The rule engine decides when the hospital's rules fire: instance rules at once, series and study rules once quiet."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian

from oncopacs.archive.extract import build_record
from oncopacs.orchestration.engine import BuiltinRule, Firing, MemoryPendingStore, RuleEngine
from oncopacs.orchestration.rules import Trigger, parse_rules
from tests.factories import small_ct_series

RULES = parse_rules([
    {"name": "forward-ct", "on": "instance", "match": {"Modality": "CT"}, "forward": ["DEST"]},
    {"name": "autocontour", "on": "series", "match": {"Modality": "CT"}, "analyse": ["body-contour"]},
    {"name": "research", "on": "study", "match": {"CallingAE": "SCANNER*"}, "export": ["/research"]},
    {"name": "mr-only", "on": "instance", "match": {"Modality": "MR"}, "forward": ["MRDEST"]},
    {"name": "off", "on": "instance", "forward": ["NOWHERE"], "enabled": False},
])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorded:
    def __init__(self) -> None:
        self.firings: list[Firing] = []

    def run(self, firing: Firing) -> None:
        self.firings.append(firing)


def _engine(stable_seconds: float = 30.0, write_slack_s: float = 0.0, **kwargs):
    clock, actions = Clock(), Recorded()
    engine = RuleEngine(RULES, actions, stable_seconds=stable_seconds, clock=clock, write_slack_s=write_slack_s,
                        **kwargs)
    return engine, clock, actions


def _records(n: int = 3, **kwargs):
    return [build_record(ds, ExplicitVRLittleEndian) for ds in small_ct_series(n, **kwargs)]


def test_instance_rules_fire_as_each_instance_arrives():
    engine, _clock, actions = _engine()
    records = _records(3)
    for record in records:
        engine.arrived(record, "dimse:SCANNER1")
    assert [(f.rule.name, f.uid) for f in actions.firings] == [("forward-ct", r.sop_instance_uid) for r in records]
    assert engine.pending() == 2  # the series (autocontour) and the study (research) wait to be quiet


def test_series_and_study_rules_fire_once_when_quiet_with_every_instance():
    engine, clock, actions = _engine()
    records = _records(3)
    for record in records:
        engine.arrived(record, "dimse:SCANNER1")
        clock.now += 10
    actions.firings.clear()
    clock.now += 19  # 29 s after the last instance
    assert engine.fire_stable() == []
    clock.now += 1
    fired = engine.fire_stable()
    assert sorted((f.rule.name, f.level) for f in fired) == [("autocontour", Trigger.SERIES),
                                                             ("research", Trigger.STUDY)]
    series = next(f for f in fired if f.level is Trigger.SERIES)
    assert series.uid == records[0].series_instance_uid and series.study_instance_uid == records[0].study_instance_uid
    assert series.sop_instance_uids == ()  # a series firing covers what the archive holds of it when it fires
    assert engine.fire_stable() == [] and engine.pending() == 0  # once


def test_a_late_instance_keeps_the_series_open_and_a_later_one_fires_again():
    engine, clock, _actions = _engine()
    first, second = _records(2)
    engine.arrived(first, "stow")
    clock.now += 25
    engine.arrived(second, "stow")
    clock.now += 25
    assert [f.rule.name for f in engine.fire_stable()] == []  # 25 s since the second instance
    clock.now += 5
    assert [f.rule.name for f in engine.fire_stable()] == ["autocontour"]  # research: the source is no scanner
    engine.arrived(first, "stow")  # sent again later
    clock.now += 30
    again = engine.fire_stable()
    assert [(f.rule.name, f.uid) for f in again] == [("autocontour", first.series_instance_uid)]


def test_rules_match_on_the_calling_ae_and_skip_what_they_do_not_match():
    engine, clock, actions = _engine()
    (record,) = _records(1)
    engine.arrived(record, "dimse:TPS")  # not a scanner: the study rule does not wait for it
    clock.now += 60
    assert {f.rule.name for f in engine.fire_stable()} == {"autocontour"}
    assert {f.rule.name for f in actions.firings} == {"forward-ct", "autocontour"}  # never mr-only, never "off"


def test_studies_are_kept_apart():
    engine, clock, _actions = _engine()
    records = _records(2, studies=2)
    assert records[0].study_instance_uid != records[1].study_instance_uid
    for record in records:
        engine.arrived(record, "dimse:SCANNER2")
    clock.now += 30
    fired = engine.fire_stable()
    assert sorted(f.uid for f in fired if f.level is Trigger.STUDY) == sorted(r.study_instance_uid for r in records)


def test_with_write_slack_a_series_never_fires_early_and_at_most_the_slack_late():
    engine, clock, _actions = _engine(write_slack_s=5.0)
    records = _records(12)
    for record in records:  # one instance a second: the store is written at most every 5 s
        engine.arrived(record, "stow")
        clock.now += 1
    last_arrival = clock.now - 1
    while not engine.fire_stable():
        assert clock.now - last_arrival < 30 + 5
        clock.now += 0.5
    assert clock.now - last_arrival >= 30


def test_a_series_rule_fires_from_another_engine_sharing_the_store():
    store = MemoryPendingStore()
    importer, clock, _ = _engine(store=store)
    server = RuleEngine(RULES, Recorded(), stable_seconds=30, clock=clock, store=store, write_slack_s=0.0)
    (record,) = _records(1)
    importer.arrived(record, "dimse:SCANNER1")
    clock.now += 30
    assert sorted(f.rule.name for f in server.fire_stable()) == ["autocontour", "research"]
    assert importer.fire_stable() == [] and store.count() == 0  # taken once


def test_a_removed_or_disabled_rule_lapses_while_it_waits():
    engine, clock, _actions = _engine()
    (record,) = _records(1)
    engine.arrived(record, "dimse:SCANNER1")
    engine.replace_rules([rule for rule in RULES if rule.name != "autocontour"])
    clock.now += 30
    assert [f.rule.name for f in engine.fire_stable()] == ["research"]


def test_built_in_rules_see_every_instance_and_one_failing_does_not_stop_the_others():
    seen: list[str] = []

    def broken(_record) -> None:
        raise RuntimeError("boom")

    builtins = [BuiltinRule("broken", "fails", broken),
                BuiltinRule("watch", "records", lambda r: seen.append(r.modality))]
    engine, _clock, actions = _engine(builtins=builtins)
    records = _records(2)
    for record in records:
        engine.arrived(record, "stow")
    assert seen == ["CT", "CT"]
    assert [f.rule.name for f in actions.firings] == ["forward-ct", "forward-ct"]  # the hospital's rules still ran
