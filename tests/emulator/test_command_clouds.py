"""``imdsfs emulate --provider azure|openstack``: the URL line, the options, the exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

META = {"Metadata": "true"}


def run_cli(*args: str) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    return subprocess.Popen(
        [sys.executable, "-m", "imdsfs.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def serve() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started here are stopped with SIGTERM and must exit 0, printing one line."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
        assert process.returncode == 0
        assert stdout == ""  # the URL was the only line


def url_of(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:")
    return url


def test_azure_serves_its_document_and_the_scenarios(
    serve: list[subprocess.Popen[str]],
) -> None:
    process = run_cli("--provider", "azure", "--no-user-data", "--event-after", "0")
    serve.append(process)
    url = url_of(process)
    location = f"{url}/metadata/instance/compute/location?api-version=2021-02-01&format=text"
    assert httpx.get(location, headers=META, trust_env=False).content == b"westeurope"
    user_data = f"{url}/metadata/instance/compute/userData?api-version=2021-02-01&format=text"
    assert httpx.get(user_data, headers=META, trust_env=False).content == b""
    events = f"{url}/metadata/scheduledevents?api-version=2020-07-01"
    document = httpx.get(events, headers=META, trust_env=False).json()
    assert [event["EventType"] for event in document["Events"]] == ["Reboot"]


def test_openstack_serves_novas_trees(serve: list[subprocess.Popen[str]]) -> None:
    process = run_cli("--provider", "openstack", "--no-user-data")
    serve.append(process)
    url = url_of(process)
    assert httpx.get(url + "/latest", trust_env=False).content == b"meta-data/"
    listing = httpx.get(url + "/openstack/latest", trust_env=False).text.split("\n")
    assert "meta_data.json" in listing
    assert "user_data" not in listing


@pytest.mark.parametrize(
    ("provider", "option"),
    [
        ("openstack", "--tokens=optional"),
        ("openstack", "--disabled"),
        ("openstack", "--spot-after=5"),
        ("azure", "--rebalance-after=5"),
        ("azure", "--preempt-after=5"),
        ("gce", "--no-user-data"),
    ],
)
def test_an_option_the_cloud_has_no_use_for_is_refused(provider: str, option: str) -> None:
    process = run_cli("--provider", provider, option)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert stdout == ""
    name = option.split("=")[0]
    assert stderr == f"imdsfs emulate: {name} is not an option of --provider {provider}\n"


@pytest.mark.parametrize(
    ("provider", "content", "message"),
    [
        ("azure", '{"compute": {}}', "/network: expected an object"),
        ("azure", "[1]", "document root: expected an object"),
        ("openstack", '{"meta_data": {"uuid": "u"}}', 'missing "ec2"'),
        ("openstack", '{"ec2": {"meta-data": {"": "x"}}, "meta_data": {"uuid": "u"}}', "empty key"),
    ],
)
def test_a_bad_document_prints_one_line_and_exits_2(
    tmp_path: Path, provider: str, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    process = run_cli("--provider", provider, "--instance", str(path))
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert stdout == ""
    assert stderr.count("\n") == 1
    assert stderr.startswith(str(path))
    assert message in stderr


def test_a_document_file_is_served(tmp_path: Path, serve: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "vm.json"
    path.write_text('{"compute": {"location": "uksouth"}, "network": {"interface": []}}')
    process = run_cli("--provider", "azure", "--instance", str(path))
    serve.append(process)
    url = url_of(process)
    location = f"{url}/metadata/instance/compute/location?api-version=2021-02-01&format=text"
    assert httpx.get(location, headers=META, trust_env=False).content == b"uksouth"
