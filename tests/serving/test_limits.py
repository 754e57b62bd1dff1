"""Request size limits, tested against a real `python -m serving` process on a free loopback port."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from serving.config import ServingSettings
from serving.limits import protocol_for
from tests.serving.process import serving_process


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m serving` on an empty home (no publication needed to test the HTTP layer)."""
    with serving_process(tmp_path_factory.mktemp("home")) as (_, port):
        yield port


def raw_request(port: int, data: bytes) -> tuple[bytes, float]:
    """Send raw bytes, return the first bytes of the answer and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        answer = connection.recv(4096)
    return answer, time.monotonic() - started


def get_with_headers(headers: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"


def test_a_normal_request_is_answered(server):
    answer, _ = raw_request(server, get_with_headers(b"User-Agent: test\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_an_oversized_header_gets_431_quickly_and_others_are_still_answered(server):
    huge = get_with_headers(b"X-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n")
    answers = []
    attacker = threading.Thread(target=lambda: answers.append(raw_request(server, huge)))
    attacker.start()
    normal, _ = raw_request(server, get_with_headers(b""))
    attacker.join(timeout=20)
    answer, seconds = answers[0]
    assert answer.startswith(b"HTTP/1.1 431 ") and b"longer than 16384 bytes" in answer
    assert seconds < 3
    assert normal.startswith(b"HTTP/1.1 200 ")


def test_an_oversized_header_after_a_normal_request_on_the_same_connection_gets_431(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
        connection.sendall(get_with_headers(b""))
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):  # the whole answer (head and JSON body)
            first += connection.recv(4096)
        connection.sendall(get_with_headers(b"X-Big: " + b"a" * 100_000 + b"\r\n"))
        second = connection.recv(4096)
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 431 ")


def test_a_header_just_under_the_limit_is_accepted(server):
    answer, _ = raw_request(server, get_with_headers(b"X-Big: " + b"a" * 16000 + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_too_many_headers_get_431(server):
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
    answer, _ = raw_request(server, get_with_headers(headers))
    assert answer.startswith(b"HTTP/1.1 431 ") and b"more than 100 headers" in answer


def test_a_body_declared_longer_than_the_limit_gets_413_before_it_is_read(server):
    declared = b"POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000000\r\n\r\n" + b"a" * 1000
    answer, _ = raw_request(server, declared)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"longer than 1048576 bytes" in answer


def test_a_chunked_body_over_the_limit_ends_the_connection(server):
    """A chunked body names no length: once it passes the limit nothing more on the connection is parsed."""
    chunk = b"100000\r\n" + b"a" * 0x100000 + b"\r\n"
    head = b"POST /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = head + chunk * 2 + b"0\r\n\r\n"
    pipelined = get_with_headers(b"")
    received = b""
    with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
        connection.sendall(chunked + pipelined)
        while part := connection.recv(65536):
            received += part
    # Only one answer: the app's own (405 if it answered before the limit was reached, else 413).
    assert received.count(b"HTTP/1.1 ") == 1
    assert received.startswith((b"HTTP/1.1 405 ", b"HTTP/1.1 413 "))


def test_the_limits_come_from_the_settings():
    protocol = protocol_for(ServingSettings(max_header_bytes=4096, max_header_count=20, max_body_bytes=10))
    assert (protocol.max_header_bytes, protocol.max_header_count, protocol.max_body_bytes) == (4096, 20, 10)


def test_a_limit_out_of_range_stops_the_server_with_one_line(tmp_path):
    env = {**os.environ, "RECFORGE_HOME": str(tmp_path), "RECFORGE_MAX_HEADER_BYTES": "10"}
    result = subprocess.run([sys.executable, "-m", "serving"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "serve: error: invalid setting: RECFORGE_MAX_HEADER_BYTES='10': must be an integer in [1024, 1048576]"
    ]
