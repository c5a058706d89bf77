"""Rules as the hospital writes them in the TOML configuration: parsed, checked, and matched like C-FIND."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oncopacs.errors import ConfigError
from oncopacs.orchestration.rules import Trigger, parse_rule, parse_rules
from oncopacs.settings import Settings

README_EXAMPLE = """
[[rules]]
name = "forward-ct"
on = "instance"
match = { Modality = "CT" }
forward = ["DEST"]

[[rules]]
name = "autocontour"
on = "series"
match = { Modality = "CT" }
analyse = ["body-contour"]
"""


def _rule(**match):
    return parse_rule({"name": "r", "on": "instance", "match": match, "forward": ["DEST"]})


def test_the_readme_carries_this_example_word_for_word():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert README_EXAMPLE.strip() in readme


def test_the_readme_example_loads_from_the_configuration_file(tmp_path: Path):
    config = tmp_path / "oncopacs.toml"
    config.write_text("stable_seconds = 45\n" + README_EXAMPLE, encoding="utf-8")  # top-level keys come first
    settings = Settings.load(env={}, config_file=config)
    forward, contour = parse_rules(settings.rules)
    assert settings.stable_seconds == 45 and Settings.load(env={}).stable_seconds == 30
    assert (forward.name, forward.on, forward.forward) == ("forward-ct", Trigger.INSTANCE, ("DEST",))
    assert forward.analyse == ()
    assert (contour.on, contour.analyse) == (Trigger.SERIES, ("body-contour",))
    assert forward.matches({"Modality": "CT"}) and not forward.matches({"Modality": "MR"})
    assert forward.to_dict()["match"] == {"Modality": ["CT"]}


def test_an_environment_variable_names_a_rules_file(tmp_path: Path):
    rules = tmp_path / "rules.toml"
    rules.write_text(README_EXAMPLE, encoding="utf-8")
    assert [r.name for r in parse_rules(Settings.load(env={"ONCOPACS_RULES": str(rules)}).rules)] == [
        "forward-ct", "autocontour"]


@pytest.mark.parametrize(("match", "values", "expected"), [
    ({"Modality": "CT"}, {"Modality": "CT"}, True),
    ({"Modality": "CT"}, {"Modality": "ct"}, False),  # CS values are case-sensitive
    ({"Modality": ["CT", "MR"]}, {"Modality": "MR"}, True),  # a list: any of them
    ({"Modality": "CT\\PT"}, {"Modality": "PT"}, True),  # DICOM's backslash list
    ({"Modality": "*"}, {"Modality": ""}, True),  # universal
    ({"Modality": ""}, {}, True),  # an empty value is universal too
    ({"SeriesDescription": "*lung*"}, {"SeriesDescription": "CT thorax lung 1mm"}, True),
    ({"SeriesDescription": "CT?"}, {"SeriesDescription": "CT1"}, True),
    ({"SeriesDescription": "CT?"}, {"SeriesDescription": "CT12"}, False),
    ({"SeriesDescription": "a.b"}, {"SeriesDescription": "axb"}, False),  # no regular expressions
    ({"PatientName": "phantom^*"}, {"PatientName": "PHANTOM^Proton"}, True),  # names without regard to case
    ({"StudyDate": "20240101-20240131"}, {"StudyDate": "20240115"}, True),
    ({"StudyDate": "20240101-20240131"}, {"StudyDate": "20240201"}, False),
    ({"StudyDate": "-20240131"}, {"StudyDate": ""}, False),  # an empty date is in no range
    ({"StudyTime": "-1030"}, {"StudyTime": "103059.5"}, True),  # an upper bound covers its last unit
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.2"}, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.2"}, True),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.*"}, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.2"}, False),
    ({"CallingAE": "TPS_*"}, {"CallingAE": "tps_eclipse "}, True),  # AE titles: trimmed, without regard to case
    ({"Modality": "CT", "CallingAE": "SCANNER"}, {"Modality": "CT", "CallingAE": "TPS"}, False),  # every condition
])
def test_matching_follows_the_c_find_rules(match, values, expected):
    assert _rule(**match).matches(values) is expected


@pytest.mark.parametrize(("table", "says"), [
    ({"on": "instance", "forward": ["D"]}, "needs a name"),
    ({"name": "a b", "on": "instance", "forward": ["D"]}, "needs a name"),
    ({"name": "r", "on": "arrival", "forward": ["D"]}, "on must be instance, series or study"),
    ({"name": "r", "on": "series"}, "does nothing"),
    ({"name": "r", "on": "series", "forward": "D", "route": ["D"]}, "unknown keys route"),
    ({"name": "r", "on": "series", "forward": [""]}, "forward must be a list of names"),
    ({"name": "r", "on": "series", "forward": [3]}, "forward must be a list of names"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"InstitutionName": "X"}}, "cannot use 'Institution"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"StudyDate": "2024-01-02"}}, "is not a date YYYYMMDD"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"StudyDate": "2024-abc"}}, "is not a date YYYYMMDD"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"StudyDate": "-"}}, "is not a date YYYYMMDD"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"StudyTime": "25h"}}, "is not a time HHMMSS"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"Modality": ["CT"] * 101}}, "at most 100 values"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"PatientName": "x" * 65}}, "at most 64 characters"),
    ({"name": "r", "on": "series", "forward": ["D"], "description": "d" * 501}, "at most 500 characters"),
    ({"name": "r", "on": "series", "forward": [f"D{i}" for i in range(51)]}, "forward names at most 50"),
    ({"name": "n" * 5000, "on": "series", "forward": ["D"]}, "needs a name"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": {"Modality": {"x": 1}}}, "must be a text"),
    ({"name": "r", "on": "series", "forward": ["D"], "match": "CT"}, "match must be a table"),
    ({"name": "r", "on": "series", "forward": ["D"], "enabled": "yes"}, "enabled must be true or false"),
    ("forward everything", "must be a table"),
])
def test_a_bad_rule_is_refused_with_a_sentence_naming_it(table, says):
    with pytest.raises(ConfigError, match=says):
        parse_rule(table)


def test_rule_names_are_unique():
    table = {"name": "same", "on": "study", "export": ["/research"]}
    with pytest.raises(ConfigError, match="two rules are named 'same'"):
        parse_rules([table, table])


def test_a_bad_rules_file_is_a_configuration_error(tmp_path: Path):
    broken = tmp_path / "rules.toml"
    broken.write_text("[[rules]\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be read as TOML"):
        Settings.load(env={"ONCOPACS_RULES": str(broken)})


_text = st.text(alphabet="ABCab?*^ 1", max_size=8)


@given(pattern=_text, value=_text)
def test_wildcards_mean_what_the_index_means(pattern, value):
    """The rule matcher agrees with the meaning of * and ? (any run, any one character) on every input."""
    import fnmatch

    rule = _rule(SeriesDescription=pattern)
    meaningful = pattern.strip()
    expected = (not meaningful or meaningful == "*" or
                fnmatch.fnmatchcase(value, meaningful.replace("[", "[[]")))
    assert rule.matches({"SeriesDescription": value}) is expected


def test_a_pattern_with_many_wildcards_matches_in_linear_time():
    """A regular expression backtracks for hours on this pair: the rule matcher, running in the ingest thread,
    answers at once (the test would hang otherwise)."""
    rule = _rule(PatientName="a*" * 20 + "z")
    assert rule.matches({"PatientName": "a" * 64}) is False
    assert rule.matches({"PatientName": "a" * 63 + "z"}) is True


def test_a_bad_name_is_quoted_short():
    with pytest.raises(ConfigError) as refused:
        parse_rule({"name": "n" * 5000, "on": "series", "forward": ["D"]})
    assert len(str(refused.value)) < 200
