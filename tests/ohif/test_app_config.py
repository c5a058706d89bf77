"""The configuration OHIF gets, run as a browser would run it (in Node), and the protocol each link asks for."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from oncopacs.ohif.app_config import (
    COMPARE_PROTOCOL,
    RT_PLANNING_PROTOCOL,
    ViewerRoute,
    app_config_js,
    viewer_route,
)
from tests.conftest import require

_RUN_IN_NODE = """
const window = {location: {origin: 'https://pacs.example.org:8443'}};
eval(require('fs').readFileSync(0, 'utf8'));
const extension = window.config.extensions[0];
process.stdout.write(JSON.stringify({config: window.config, extension: extension.id,
                                     protocols: extension.getHangingProtocolModule()}));
"""


@pytest.fixture(scope="module")
def evaluated() -> dict:
    node = shutil.which("node")
    require(node is not None, "Node.js is not installed")
    assert node is not None
    done = subprocess.run([node, "-e", _RUN_IN_NODE], input=app_config_js("/viewer/"), capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_our_dicomweb_on_the_page_s_own_origin_is_the_only_data_source(evaluated: dict):
    config = evaluated["config"]
    assert config["routerBasename"] == "/viewer" and config["defaultDataSourceName"] == "oncopacs"
    [source] = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    setup = source["configuration"]
    root = "https://pacs.example.org:8443/dicom-web"
    assert setup["qidoRoot"] == setup["wadoRoot"] == setup["wadoUriRoot"] == root
    assert setup["imageRendering"] == "wadors" and setup["bulkDataURI"]["enabled"] is True
    assert setup["acceptHeader"] == ["multipart/related; type=application/octet-stream; transfer-syntax=*"]
    assert setup["qidoSupportsIncludeField"] is False and setup["supportsFuzzyMatching"] is False
    assert config["disableConfirmationPrompts"] is True  # RTSTRUCT and SEG drawn without a prompt


def test_the_planning_protocol_puts_the_structure_set_on_its_ct(evaluated: dict):
    [entry] = evaluated["protocols"]
    protocol = entry["protocol"]
    assert entry["name"] == protocol["id"] == RT_PLANNING_PROTOCOL
    [viewport] = protocol["stages"][0]["viewports"]
    assert [d["id"] for d in viewport["displaySets"]] == ["ctDisplaySetId", "rtDisplaySetId"]
    selectors = protocol["displaySetSelectors"]
    assert selectors["rtDisplaySetId"]["seriesMatchingRules"][0]["constraint"] == {"equals": "RTSTRUCT"}
    assert selectors["ctDisplaySetId"]["seriesMatchingRules"][0]["constraint"] == {"equals": "CT"}


@pytest.mark.parametrize(("uids", "modalities", "expected"), [
    (["1.2.3"], ["CT", "RTSTRUCT", "RTPLAN", "RTDOSE"], ViewerRoute("viewer", ("1.2.3",), RT_PLANNING_PROTOCOL)),
    (["1.2.3"], ["CT", "PT"], ViewerRoute("tmtv", ("1.2.3",))),
    (["1.2.3"], ["ct", "pt", "RTSTRUCT", "SR"], ViewerRoute("tmtv", ("1.2.3",))),  # a response study's lesions
    (["1.2.3", "1.2.4"], ["CT", "PT", "CT", "PT"], ViewerRoute("viewer", ("1.2.3", "1.2.4"), COMPARE_PROTOCOL)),
    (["1.2.3", "1.2.3"], ["MR"], ViewerRoute("viewer", ("1.2.3",))),
    (["1.2.3"], ["PT"], ViewerRoute("viewer", ("1.2.3",))),  # PET alone: nothing to fuse
    (["1.2.3"], [], ViewerRoute("viewer", ("1.2.3",))),
])
def test_each_link_gets_the_oncology_protocol_for_what_its_studies_hold(uids, modalities, expected):
    assert viewer_route(uids, modalities) == expected


def test_the_route_s_address():
    route = ViewerRoute("viewer", ("1.2.3", "1.2.4"), COMPARE_PROTOCOL)
    assert route.url("/viewer/") == "/viewer/viewer?StudyInstanceUIDs=1.2.3,1.2.4&hangingProtocolId=%40ohif%2FhpCompare"
    assert ViewerRoute("tmtv", ("1.2.3",)).url("/viewer/") == "/viewer/tmtv?StudyInstanceUIDs=1.2.3"
