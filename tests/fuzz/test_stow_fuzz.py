"""Fuzzing STOW-RS over real HTTP: every damaged part or body gets a 4xx or a DICOM failure status, never a 5xx.

The platform (rules installed, as ``oncopacs serve`` runs it) is served by a real HTTP server on
loopback and driven with ``requests``. Most requests carry one mutant part; some carry several,
and some have their multipart framing damaged instead. Every instance the server says it stored
is fetched back with WADO-RS (byte-identical, ``transfer-syntax=*``), transcoded, as metadata,
as a frame and rendered: each answer is a 2xx or a 4xx with a JSON reason. The server still
answers QIDO-RS at the end.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
import requests

from oncopacs.auth.roles import Role
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.fuzz.mutation import Mutator, with_fresh_uids
from tests.fuzz.oracle import FUZZ_SEED, Tally
from tests.fuzz.seeds import seed_files
from tests.web.conftest import TEST_PASSWORD, basic_auth, serve_app

CASES = int(os.environ.get("ONCOPACS_FUZZ_STOW_CASES", "200"))
REQUEST_TIMEOUT_S = 30  # the bound on each case: a hang guard, not a performance assertion
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
STOW_STATUSES = {200, 202, 409}  # all, some or none of the parts stored (PS3.18 10.5.3)
FRAMING_STATUSES = {400, 413, 415}
REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE, RETRIEVE_URL = "00081199", "00081198", "00081190"
#: What is asked of every stored instance: (path suffix, Accept header).
RETRIEVALS = (
    ("", f"{DICOM_MULTIPART}; transfer-syntax=*"),
    ("", DICOM_MULTIPART),  # transcoded to explicit VR little endian
    ("/metadata", "application/dicom+json"),
    ("/frames/1", 'multipart/related; type="application/octet-stream"'),
    ("/rendered", "image/png"),
)


@pytest.fixture(scope="module")
def stow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The platform's web app on a real loopback HTTP server, and the headers of a physicist."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("stow-fuzz") / "data", dicom_port=0, secret_key="fuzz")
    with open_platform(settings) as platform:
        app = create_app(platform)
        platform.users.add_user("fuzzer", Role.PHYSICIST, TEST_PASSWORD)
        with serve_app(app) as url:
            yield f"{url}/dicom-web", basic_auth("fuzzer")


def multipart(parts: list[bytes], boundary: str = "fuzz-boundary-18") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
                    for part in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'{DICOM_MULTIPART}; boundary="{boundary}"'


def damage_framing(rng: random.Random, body: bytes, content_type: str) -> tuple[str, bytes, str]:
    """The multipart body or its Content-Type broken in one way a client gets it wrong."""
    choice = rng.choice(["cut", "no close", "boundary", "type", "no boundary", "header", "garbage"])
    if choice == "cut":
        return choice, body[: rng.randrange(1, len(body))], content_type
    if choice == "no close":
        return choice, body.rsplit(b"--fuzz-boundary-18--", 1)[0], content_type
    if choice == "boundary":
        return choice, body, content_type.replace("fuzz-boundary-18", "other-boundary")
    if choice == "type":
        return choice, body, content_type.replace("application/dicom", rng.choice(["text/plain", "", "dicom"]))
    if choice == "no boundary":
        return choice, body, DICOM_MULTIPART
    if choice == "header":
        return choice, body.replace(b"Content-Type: application/dicom", b"Content-Type: application/json", 1), \
            content_type
    return choice, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))), content_type


def stored_urls(document: dict) -> list[str]:
    items = document.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
    return [item[RETRIEVE_URL]["Value"][0] for item in items]


def test_stow_answers_every_damaged_request_without_a_server_error(stow_server) -> None:
    base, auth = stow_server
    seeds = seed_files()
    rng = random.Random(FUZZ_SEED + 1)
    mutator = Mutator(rng)
    tally = Tally(f"STOW-RS fuzz (seed {FUZZ_SEED + 1}, {len(seeds)} seed files)")
    with requests.Session() as http:
        for case in range(CASES):
            parts, description = [], []
            for index in range(1 if rng.random() < 0.85 else rng.randint(2, 3)):
                seed_name, seed = seeds[rng.randrange(len(seeds))]
                mutant = mutator.mutate(with_fresh_uids(seed, case * 4 + index))
                parts.append(mutant.data)
                description.append(f"{seed_name}: {mutant.description}")
                tally.kinds[mutant.kind] += 1
            tally.cases += 1
            body, content_type = multipart(parts)
            expected = STOW_STATUSES
            if rng.random() < 0.1:
                framing, body, content_type = damage_framing(rng, body, content_type)
                description.append(f"framing: {framing}")
                tally.kinds[f"framing {framing}"] += 1
                expected = STOW_STATUSES | FRAMING_STATUSES
            reply = http.post(f"{base}/studies", data=body, headers={**auth, "Content-Type": content_type},
                              timeout=REQUEST_TIMEOUT_S)
            tally.statuses[str(reply.status_code)] += 1
            tally.outcomes[f"STOW {reply.status_code}"] += 1
            where = "; ".join(description)
            if reply.status_code not in expected or not reply.headers.get("Content-Type", "").startswith(
                    ("application/dicom+json", "application/json")):
                tally.fail(case, "", where, f"STOW answered {reply.status_code} {reply.text[:200]}")
                continue
            if reply.status_code in STOW_STATUSES:
                for url in stored_urls(reply.json()):
                    check_retrievals(http, auth, url, parts, tally, case, where)
    assert http.get(f"{base}/studies", headers=auth, timeout=REQUEST_TIMEOUT_S).status_code == 200, "server down"
    print(tally.report())  # the outcome table, shown with -s or -rP
    assert not tally.failures, tally.report()
    assert tally.outcomes["STOW 200"] and tally.outcomes["STOW 409"], "a fuzzer that only stores or only refuses"


def check_retrievals(http: requests.Session, auth: dict, url: str, parts: list[bytes], tally: Tally, case: int,
                     where: str) -> None:
    """Every WADO-RS form of a stored instance answers 2xx, or 4xx with a JSON reason; the stored bytes are a part."""
    path = url.split("/dicom-web", 1)[1]
    base = url.split("/dicom-web", 1)[0] + "/dicom-web"
    for suffix, accept in RETRIEVALS:
        reply = http.get(base + path + suffix, headers={**auth, "Accept": accept}, timeout=REQUEST_TIMEOUT_S)
        tally.outcomes[f"WADO{suffix or ' instance'}{' (transcoded)' if accept == DICOM_MULTIPART else ''} "
                       f"{reply.status_code}"] += 1
        if reply.status_code >= 500 or (reply.status_code >= 400 and not reply.headers.get(
                "Content-Type", "").startswith("application/json")):
            tally.fail(case, "", where, f"GET {suffix or 'instance'} ({accept}) answered {reply.status_code}")
        elif suffix == "" and accept.endswith("=*") and not any(part in reply.content for part in parts):
            tally.fail(case, "", where, "the retrieved instance is not the stored bytes")
