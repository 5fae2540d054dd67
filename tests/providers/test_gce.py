"""The GCE provider: its URL layout, endpoint, secrets, and what its change feed reports."""

from __future__ import annotations

import pytest

from imdsfs import ClientConfig
from imdsfs.providers.gce import FALLBACK_ENDPOINT, GceProvider, changed_paths

GCE = GceProvider(ClientConfig(provider="gce", endpoint="http://gce.test"), environ={})


def test_the_mount_root_is_compute_metadata_v1() -> None:
    assert GCE.url("") == "http://gce.test/computeMetadata/v1/"
    assert GCE.url("instance/zone") == "http://gce.test/computeMetadata/v1/instance/zone"


def test_gce_metadata_host_is_the_default_endpoint() -> None:
    config = ClientConfig(provider="gce")
    assert GceProvider.resolve_endpoint(config, {"GCE_METADATA_HOST": "10.0.0.5:8080"}) == (
        "http://10.0.0.5:8080"
    )


def test_without_dns_for_the_name_the_address_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> object:
        raise OSError("no DNS here")

    monkeypatch.setattr("socket.getaddrinfo", no_dns)
    assert GceProvider.resolve_endpoint(ClientConfig(provider="gce"), {}) == FALLBACK_ENDPOINT


@pytest.mark.parametrize(
    "path",
    [
        "instance/service-accounts/default/token",
        "instance/service-accounts/default/identity",
        "instance/attributes/ssh-keys",
        "instance/attributes/startup-script",
        "project/attributes/ssh-keys",
    ],
)
def test_tokens_and_attributes_are_secret(path: str) -> None:
    assert GCE.secrets.is_secret(path)


@pytest.mark.parametrize(
    "path", ["instance/zone", "instance/service-accounts/default/email", "project/project-id"]
)
def test_other_paths_are_not(path: str) -> None:
    assert not GCE.secrets.is_secret(path)


def test_changed_paths_names_changed_leaves_in_mount_spelling() -> None:
    old = {
        "instance": {
            "maintenanceEvent": "NONE",
            "preempted": "FALSE",
            "zone": "projects/1/zones/us-central1-a",
            "attributes": {"ssh-keys": "a", "startupScript": "x"},
            "networkInterfaces": [{"ip": "10.0.0.2", "accessConfigs": [{"externalIp": "1.2.3.4"}]}],
            "serviceAccounts": {"default": {"scopes": ["a", "b"]}},
        }
    }
    new = {
        "instance": {
            "maintenanceEvent": "MIGRATE_ON_HOST_MAINTENANCE",
            "preempted": "FALSE",
            "zone": "projects/1/zones/us-central1-a",
            "attributes": {"ssh-keys": "b", "startupScript": "x", "new-key": "v"},
            "networkInterfaces": [{"ip": "10.0.0.2", "accessConfigs": [{"externalIp": "5.6.7.8"}]}],
            "serviceAccounts": {"default": {"scopes": ["a"]}},
        }
    }
    assert changed_paths(old, new) == {
        "instance/maintenance-event",
        "instance/attributes/",  # a name was added
        "instance/attributes/ssh-keys",  # attribute names are kept as they are
        "instance/attributes/new-key",
        "instance/network-interfaces/0/access-configs/0/external-ip",
        "instance/service-accounts/default/scopes",
    }


def test_nothing_changed_is_nothing_reported() -> None:
    tree = {"instance": {"zone": "z", "tags": ["a"]}}
    assert changed_paths(tree, tree) == set()
