"""Real GCE metadata clients, unchanged, against the emulator: google-auth (the library every
Google Cloud Python client authenticates through) and cloud-init's GCE datasource. If they
work here, the wire format is what they expect from a VM."""

from __future__ import annotations

import datetime
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import requests
from google.auth import compute_engine, exceptions
from google.auth.compute_engine import _metadata
from google.auth.transport.requests import Request

from imdsfs.emulator import GceEmulator

from ..conftest import ImportCloudInit, MakeEmulator

SA = "imdsfs-demo-sa@imdsfs-demo-project.iam.gserviceaccount.com"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def metadata(gce_emulator: GceEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """google-auth's ``_metadata`` pointed at the emulator the way a user does it: the
    ``GCE_METADATA_HOST`` variable (read when the module loads, hence the reload) and
    ``GCE_METADATA_IP`` for the ping. Nothing may reach metadata.google.internal."""
    host = gce_emulator.url.removeprefix("http://")
    monkeypatch.setenv("GCE_METADATA_HOST", host)
    monkeypatch.setenv("GCE_METADATA_IP", host)
    for name in ("NO_GCE_CHECK", "GCE_METADATA_MTLS_MODE", "GOOGLE_API_USE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    yield importlib.reload(_metadata)
    monkeypatch.undo()
    importlib.reload(_metadata)


@pytest.fixture
def request_() -> Iterator[Request]:
    session = requests.Session()
    yield Request(session)
    session.close()


# -- google-auth ----------------------------------------------------------------------------


def test_google_auth_reads_values_as_text_and_json(
    metadata: Any, request_: Request, gce_emulator: GceEmulator
) -> None:
    assert metadata.get(request_, "instance/zone") == "projects/824706217453/zones/us-central1-a"
    assert metadata.get_project_id(request_) == "imdsfs-demo-project"
    # application/json is parsed, application/text is not: the Content-Type must be right.
    assert metadata.get(request_, "instance/tags") == ["http-server", "https-server"]
    info = metadata.get_service_account_info(request_)
    assert info == {
        "aliases": ["default"],
        "email": SA,
        "scopes": gce_emulator.get_bytes("instance/service-accounts/default/scopes")
        .decode()
        .splitlines(),
    }
    assert gce_emulator.counters.count(status=404) == 0
    assert gce_emulator.counters.count(status=301) == 0  # it asks with the slash


def test_google_auth_pings_by_the_flavor_header(
    metadata: Any, request_: Request, monkeypatch: pytest.MonkeyPatch, make_emulator: MakeEmulator
) -> None:
    assert metadata.ping(request_) is True
    # An EC2 IMDS (IMDSv1 allowed) answers the same GET with 200 but no Metadata-Flavor.
    ec2 = make_emulator(tokens="optional")
    monkeypatch.setenv("GCE_METADATA_IP", ec2.url.removeprefix("http://"))
    assert metadata.ping(request_, retry_count=1) is False


def test_google_auth_credentials_refresh_to_the_emulators_token(
    metadata: Any, request_: Request, gce_emulator: GceEmulator
) -> None:
    credentials = compute_engine.Credentials()
    credentials.refresh(request_)
    token = gce_emulator.get_bytes("instance/service-accounts/default/token")
    assert credentials.token.encode() in token
    assert credentials.service_account_email == SA
    assert "https://www.googleapis.com/auth/cloud-platform" in credentials.scopes
    expiry = credentials.expiry.replace(tzinfo=datetime.UTC)
    left = (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()
    assert 3000 < left <= 3600  # google-auth keeps a margin of its own
    assert credentials.universe_domain == "googleapis.com"
    gce_emulator.rotate_tokens()
    credentials.refresh(request_)
    assert credentials.token.encode() in gce_emulator.get_bytes(
        "instance/service-accounts/default/token"
    )
    assert credentials.token.encode() not in token


def test_google_auth_falls_back_when_there_is_no_universe(
    metadata: Any, request_: Request, gce_emulator: GceEmulator
) -> None:
    gce_emulator.delete("universe")
    assert metadata.get_universe_domain(request_) == "googleapis.com"
    assert gce_emulator.counters.count(status=404) == 1


def test_google_auth_retries_through_a_503(
    metadata: Any, request_: Request, gce_emulator: GceEmulator
) -> None:
    gce_emulator.faults.fail_next(1, status=503, path="/computeMetadata/v1/instance/zone")
    assert metadata.get(request_, "instance/zone").endswith("us-central1-a")
    assert gce_emulator.counters.count(status=503) == 1


def test_google_auth_reports_a_missing_account(metadata: Any, request_: Request) -> None:
    credentials = compute_engine.Credentials(service_account_email="nobody@example.com")
    with pytest.raises(exceptions.RefreshError):
        credentials.refresh(request_)


def test_google_auth_id_token_from_the_identity_endpoint(metadata: Any, request_: Request) -> None:
    credentials = compute_engine.IDTokenCredentials(
        request_, "https://service.example", use_metadata_identity_endpoint=True
    )
    credentials.refresh(request_)
    assert credentials.token.count(".") == 2
    # google-auth decodes the JWT (unverified) for its expiry: an hour ahead.
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # google-auth's naive UTC
    left = (credentials.expiry - now).total_seconds()
    assert 3500 < left <= 3600


# -- cloud-init -------------------------------------------------------------------------------


@pytest.fixture
def cloudinit_gce(import_cloud_init: ImportCloudInit) -> ModuleType:
    return import_cloud_init("cloudinit.sources.DataSourceGCE")


def test_cloud_init_reads_the_instance(
    cloudinit_gce: ModuleType, gce_emulator: GceEmulator
) -> None:
    sources = importlib.import_module("cloudinit.sources")
    params = sources.URLParams(
        max_wait_seconds=5, timeout_seconds=5, num_retries=0, sec_between_retries=0
    )
    result = cloudinit_gce.read_md(
        address=gce_emulator.url + "/computeMetadata/v1/", url_params=params, platform_check=False
    )
    assert result["success"], result["reason"]
    metadata = result["meta-data"]
    assert metadata["instance-id"] == "4520031799277581759"
    assert metadata["availability-zone"] == "us-central1-a"
    assert metadata["local-hostname"] == gce_emulator.get_bytes("instance/hostname").decode()
    # Instance and project ssh-keys both count, as block-project-ssh-keys is not set.
    users = [line.split(":", 1)[0] for line in metadata["public-keys-data"]]
    assert users == ["alice", "bob", "carol"]
    assert result["user-data"] == gce_emulator.get_bytes("instance/attributes/user-data")
    # It asks for the attributes with recursive=True (capital T).
    assert gce_emulator.counters.count(path="/computeMetadata/v1/instance/attributes/") == 1


def test_cloud_init_reports_a_missing_required_key(
    cloudinit_gce: ModuleType, gce_emulator: GceEmulator
) -> None:
    gce_emulator.delete("instance/hostname")
    sources = importlib.import_module("cloudinit.sources")
    params = sources.URLParams(5, 5, 0, 0)
    result = cloudinit_gce.read_md(
        address=gce_emulator.url + "/computeMetadata/v1/", url_params=params, platform_check=False
    )
    assert not result["success"]
    assert result["reason"] == "required key local-hostname returned nothing. not GCE"


def test_the_fixture_leaves_google_auth_as_it_found_it() -> None:
    """GCE_METADATA_HOST pointed at an emulator does not outlive its test."""
    expected = os.environ.get("GCE_METADATA_HOST") or os.environ.get(
        "GCE_METADATA_ROOT", "metadata.google.internal"
    )
    assert expected == _metadata._GCE_METADATA_HOST
