"""`make serve`'s own process under bodies of 200 MB: each is refused with 413 (401 without the key), memory stays low.

Before the body limit, four such bodies at once took the server to 3.1 GB. The server runs as
`make serve` runs it (`python -m src.service.serve`, the default limit, the key from SERVE_TOKEN)
around a small real model.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from src.service.serve import DEFAULT_MAX_BODY_MB
from tests.conftest import PROJECT_ROOT
from tests.unit.test_scoring import saved_model

pytestmark = pytest.mark.slow

BODY_MB = 200

ROW = json.dumps({"dataframe_split": {"columns": ["length", "width"], "data": [[1.0, 5.0]]}}).encode()

TOKEN = "the-memory-tests-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, psutil.Process, Path]]:
    """The port, the process and the stderr file of a scoring server started as `make serve` starts it.

    Its key comes from SERVE_TOKEN, so nothing is written into the project.
    """
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("serve")
    saved_model(folder / "model", ["wide", "wide", "long", "long"], LogisticRegression())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = folder / "stderr.log"
    command = [sys.executable, "-m", "src.service.serve", "--model", str(folder / "model"), "--port", str(port)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--config", str(PROJECT_ROOT / "params.yaml")],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "SERVE_TOKEN": TOKEN},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        said = process.stdout.readline()
        assert said.startswith(f"Serving {folder / 'model'} on http://127.0.0.1:{port}/")
        said += process.stdout.readline()  # the curl to try
        assert '-H @<(echo "Authorization: Bearer $SERVE_TOKEN")' in said and TOKEN not in said
        deadline = time.monotonic() + 60
        while True:
            try:
                assert post(port, ROW)[0] == 200  # also loads what scoring loads on first use
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.1)
        yield port, psutil.Process(process.pid), log
    finally:
        process.kill()  # nothing of it to keep
        process.wait(timeout=30)


def post(port: int, body: bytes | Iterator[bytes], token: str | None = TOKEN) -> tuple[int, bytes]:
    """POST a body (a stream is sent chunked, without a length) with the key; return the status and the answer."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stream(megabytes: int) -> Iterator[bytes]:
    """A JSON body of `megabytes`, made as it is sent: the client holds 1 MB of it."""
    block = b" " * (1024 * 1024)
    yield ROW
    for _ in range(megabytes):
        yield block


def peak_growth(process: psutil.Process, send: list[threading.Thread]) -> float:
    """Run the senders and return how far the server's resident memory rose above where it was, in MB."""
    start = peak = process.memory_info().rss
    for sender in send:
        sender.start()
    while any(sender.is_alive() for sender in send):
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.002)
    return (peak - start) / 2**20


def test_a_200_mb_body_streamed_without_a_length_is_refused_and_the_memory_stays_low(server):
    port, process, _ = server
    answers: list[tuple[int, bytes]] = []
    growth = peak_growth(process, [threading.Thread(target=lambda: answers.append(post(port, stream(BODY_MB))))])
    [(status, answer)] = answers
    assert status == 413
    assert json.loads(answer)["message"].startswith(
        f"the body is larger than the server takes ({DEFAULT_MAX_BODY_MB} MB)"
    )
    assert growth < 100, f"the server grew by {growth:.0f} MB"


def test_four_200_mb_bodies_at_once_are_refused_and_the_memory_stays_low(server):
    port, process, log = server
    answers: list[tuple[int, bytes]] = []
    senders = [threading.Thread(target=lambda: answers.append(post(port, stream(BODY_MB)))) for _ in range(4)]
    growth = peak_growth(process, senders)
    assert [status for status, _ in answers] == [413] * 4
    # Each holds at most the limit (16 MB) of its body before it is refused.
    assert growth < 150, f"the server grew by {growth:.0f} MB"
    assert post(port, ROW) == (200, b'{"predictions": ["wide"]}')
    assert "Traceback" not in log.read_text()


def test_a_200_mb_body_without_the_key_is_refused_with_401_and_costs_nothing(server):
    port, process, log = server
    answers: list[tuple[int, bytes]] = []
    growth = peak_growth(process, [threading.Thread(target=lambda: answers.append(post(port, stream(BODY_MB), None)))])
    [(status, answer)] = answers
    assert (status, json.loads(answer)["error_code"]) == (401, "UNAUTHENTICATED")
    assert growth < 20, f"the server grew by {growth:.0f} MB"
    assert post(port, ROW, "a-wrong-key-0123456789abcdef")[0] == 401
    assert post(port, ROW) == (200, b'{"predictions": ["wide"]}')
    assert TOKEN not in log.read_text()
