"""``--provider auto``: the firmware first (a fake DMI directory), then probes, which run in a
network namespace of the test's own with the emulator on 169.254.169.254 (never the
machine's own network)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imdsfs import ClientConfig
from imdsfs.emulator import AzureEmulator, Emulator, ManualClock, OpenStackEmulator
from imdsfs.providers import PROVIDERS, create
from imdsfs.providers._detect import AZURE_ASSET_TAG, DMI_DIR_ENV, PROBE_MAX_BODY, detect

CLOSED = "http://127.0.0.1:9"  # nothing listens: a probe that got this far would fail


def dmi(tmp_path: Path, **fields: str) -> dict[str, str]:
    for name, value in fields.items():
        (tmp_path / name).write_text(value + "\n")
    return {DMI_DIR_ENV: str(tmp_path)}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"product_name": "Google Compute Engine"}, "gce"),
        ({"product_name": "Google"}, "gce"),
        ({"product_serial": "GoogleCloud-1234ABCD"}, "gce"),
        ({"product_uuid": "ec2e1916-9099-7caf-fd21-012345abcdef"}, "ec2"),
        ({"product_uuid": "EC2E1916-9099-7CAF-FD21-012345ABCDEF"}, "ec2"),
        ({"sys_vendor": "Amazon EC2", "product_uuid": ""}, "ec2"),
        ({"chassis_asset_tag": AZURE_ASSET_TAG, "sys_vendor": "Microsoft Corporation"}, "azure"),
        ({"product_name": "OpenStack Nova"}, "openstack"),
        ({"product_name": "OpenStack Compute"}, "openstack"),
        ({"chassis_asset_tag": "HUAWEICLOUD"}, "openstack"),
        ({"chassis_asset_tag": "OpenTelekomCloud"}, "openstack"),
        ({"chassis_asset_tag": "SAP CCloud VM"}, "openstack"),
        ({"chassis_asset_tag": "Samsung Cloud Platform"}, "openstack"),
        # Nova's KVM guests carry a random UUID; one starting "ec2" must not make them AWS.
        ({"product_name": "OpenStack Nova", "product_uuid": "ec2a1b2c-0000"}, "openstack"),
    ],
)
def test_the_firmware_names_the_cloud_without_a_probe(
    tmp_path: Path, fields: dict[str, str], expected: str
) -> None:
    name, why = detect(ClientConfig(endpoint=CLOSED), dmi(tmp_path, **fields), PROVIDERS)
    assert name == expected
    assert "firmware" in why


def test_with_silent_firmware_an_ec2_style_service_that_answers_is_ec2(
    tmp_path: Path, emulator: Emulator
) -> None:
    name, why = detect(ClientConfig(endpoint=emulator.url), dmi(tmp_path), PROVIDERS)
    assert (name, "answered" in why) == ("ec2", True)


def test_with_silent_firmware_azures_version_list_is_azure(tmp_path: Path) -> None:
    with AzureEmulator() as azure:
        name, why = detect(ClientConfig(endpoint=azure.url), dmi(tmp_path), PROVIDERS)
        assert (name, "answered" in why) == ("azure", True)
        assert azure.counters.count(path="/metadata/versions", status=200) == 1


def test_a_throttled_azure_is_still_azure(tmp_path: Path) -> None:
    """At boot, the agent and cloud-init may have used up the 5 requests of the second."""
    with AzureEmulator(clock=ManualClock()) as azure:
        for _ in range(5):
            httpx.get(azure.url + "/metadata/versions", headers={"Metadata": "true"})
        name, _why = detect(ClientConfig(endpoint=azure.url), dmi(tmp_path), PROVIDERS)
        assert name == "azure"
        assert azure.counters.count(path="/metadata/versions", status=429) == 1


def test_with_silent_firmware_an_ec2_style_service_that_has_openstack_is_openstack(
    tmp_path: Path,
) -> None:
    with OpenStackEmulator() as nova:
        name, why = detect(ClientConfig(endpoint=nova.url), dmi(tmp_path), PROVIDERS)
        assert (name, "answered" in why) == ("openstack", True)
        assert nova.counters.count(method="PUT", path="/latest/api/token") == 1  # EC2's probe


def test_with_silent_firmware_and_nothing_answering_it_is_ec2_as_before(tmp_path: Path) -> None:
    name, why = detect(ClientConfig(endpoint=CLOSED), dmi(tmp_path), PROVIDERS)
    assert name == "ec2"
    assert "no metadata service answered" in why


def test_create_with_auto_records_why(tmp_path: Path) -> None:
    environ = dmi(tmp_path, product_name="Google Compute Engine")
    provider = create(ClientConfig(provider="auto", endpoint=CLOSED), environ)
    assert provider.name == "gce"
    assert provider.detected is not None


def _in_namespace(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run *script* (Python) in a new network namespace whose loopback also holds
    169.254.169.254: the well-known address without the machine's network."""
    setup = 'ip link set lo up && ip addr add 169.254.169.254/32 dev lo && exec "$0" -c "$1"'
    return subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", setup, sys.executable, textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


@pytest.mark.parametrize(
    ("emulator_class", "expected"), [("Emulator", "ec2"), ("OpenStackEmulator", "openstack")]
)
def test_default_endpoints_are_probed_in_a_namespace_of_our_own(
    tmp_path: Path, emulator_class: str, expected: str
) -> None:
    """No --endpoint: the probes go to the well-known addresses, here our emulator's. Both
    answer EC2's paths there; only Nova's /openstack/ tells OpenStack from AWS. Either way one
    token PUT (EC2's probe) at most."""
    result = _in_namespace(
        f"""
        import logging
        from imdsfs import ClientConfig
        from imdsfs.emulator import {emulator_class}
        from imdsfs.providers import PROVIDERS
        from imdsfs.providers._detect import detect
        with {emulator_class}(host="169.254.169.254", port=80) as emu:
            name, why = detect(ClientConfig(), {{"{DMI_DIR_ENV}": "{tmp_path}"}}, PROVIDERS)
            print(name, emu.counters.count(method="PUT", path="/latest/api/token"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [expected, "1"]


def test_azure_at_the_default_address_is_found_in_a_namespace_of_our_own(tmp_path: Path) -> None:
    result = _in_namespace(
        f"""
        from imdsfs import ClientConfig
        from imdsfs.emulator import AzureEmulator
        from imdsfs.providers import PROVIDERS
        from imdsfs.providers._detect import detect
        with AzureEmulator(host="169.254.169.254", port=80) as emu:
            name, why = detect(ClientConfig(), {{"{DMI_DIR_ENV}": "{tmp_path}"}}, PROVIDERS)
            print(name, emu.counters.count(path="/metadata/versions", status=200))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["azure", "1"]


# -- a service that answers without end: each probe is bounded in time and in bytes ----------

FLOOD = 64 << 20  # what the flooding server sends at most: far past any cap, yet bearable


class Hostile(http.server.ThreadingHTTPServer):
    """Answers every probe (any path, GET or PUT) in one hostile way: *drip-headers* sends a
    status line then a header byte every 0.2 s, *drip-body* a body byte every 0.2 s (of a
    length under the cap), *flood* a body without end (up to FLOOD bytes). Counts the bytes
    of body the sockets took."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.mode = mode
        self.sent = 0
        self.stop = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    server: Hostile

    def setup(self) -> None:
        """A small send buffer, so that what was sent is near what the probe took."""
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 10)
        super().setup()

    def answer(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\n")
        if self.server.mode == "drip-headers":
            self.wfile.write(b"X-Drip: ")
            self.drip()
            return
        length = b"" if self.server.mode == "flood" else b"Content-Length: 1000\r\n"
        self.wfile.write(length + b"Connection: close\r\n\r\n")
        if self.server.mode == "drip-body":
            self.drip()
            return
        chunk = b"latest\n" * 8192
        while self.server.sent < FLOOD and not self.server.stop.is_set():
            self.wfile.write(chunk)
            self.server.sent += len(chunk)

    def drip(self) -> None:
        while not self.server.stop.wait(0.2):
            self.wfile.write(b"a")
            self.wfile.flush()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:  # the probe hung up: what it should do
            self.close_connection = True

    do_GET = do_PUT = answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=["drip-headers", "drip-body", "flood"])
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    server = Hostile(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


# Giving up on a body mid-way leaves httpx's async generators unexhausted, and trio warns when
# they are collected (encode/httpx#3686), as in test_client's bounded-body test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_service_that_never_finishes_answering_is_given_up_on(
    tmp_path: Path, hostile: Hostile
) -> None:
    """Each probe has a deadline for its whole exchange, not for each read (a byte every
    0.2 s kept startup waiting forever), and reads a few KB at most (a body without end was
    read into memory: 9 GB). Such a service is none detection knows: EC2, as for silence."""
    outcome: list[tuple[str, str]] = []
    config = ClientConfig(endpoint=hostile.url)
    start = time.monotonic()
    worker = threading.Thread(
        target=lambda: outcome.append(detect(config, dmi(tmp_path), PROVIDERS)), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    took = time.monotonic() - start
    hostile.stop.set()  # unblock a probe still reading, should the test fail
    assert outcome, f"detect() still probing after {took:.1f} s"
    assert took < 5
    assert outcome[0][0] == "ec2"
    assert "no metadata service answered" in outcome[0][1]
    # Read, four probes, at most the cap each; sent, what the sockets' buffers held besides
    # (without the cap: all FLOOD bytes).
    assert hostile.sent < 4 * PROBE_MAX_BODY + (4 << 20)


class _NestedHandler(http.server.BaseHTTPRequestHandler):
    """400 with JSON nested past what json can walk, under the probes' 16 KiB cap."""

    def do_GET(self) -> None:
        body = b"[" * 15_000
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_answer_nested_past_what_json_walks_is_no_cloud(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NestedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        name, _why = detect(ClientConfig(endpoint=url), dmi(tmp_path), PROVIDERS)
    finally:
        server.shutdown()
        server.server_close()
    assert name == "ec2"
