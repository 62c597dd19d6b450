"""`make serve` refuses what it cannot take: the body limit, and a short JSON answer to every bad request.

The app is built as `make serve` builds it, around a real small model, and runs under uvicorn
on a free port of 127.0.0.1 in a thread of the test.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from src.service.serve import DEFAULT_MAX_BODY_MB, MEGABYTE, build_app, max_body_bytes, uvicorn_options
from tests.conftest import PROJECT_ROOT
from tests.unit.test_scoring import saved_model

LIMIT = MEGABYTE  # small, so that going past it costs nothing

JSON = {"Content-Type": "application/json"}

ROW = {"dataframe_split": {"columns": ["length", "width"], "data": [[1.0, 5.0]]}}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of the scoring app of a classifier of wide and long rows, with `id` as its id column."""
    import uvicorn
    from sklearn.linear_model import LogisticRegression

    model = saved_model(
        tmp_path_factory.mktemp("model") / "model", ["wide", "wide", "long", "long"], LogisticRegression()
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(model, ["id"], LIMIT), **uvicorn_options(free)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield free
    server.should_exit = True
    thread.join(timeout=10)


def ask(
    port: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/invocations",
) -> tuple[int, str, bytes]:
    """Send one request; its status, Content-Type and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def assert_short_error(answer: bytes) -> dict[str, str]:
    """The answer is `{"error_code", "message"}` with a message of one short line, and no trace."""
    error = json.loads(answer)
    assert set(error) == {"error_code", "message"}
    assert "\n" not in error["message"] and 0 < len(error["message"]) <= 300
    assert b"Traceback" not in answer
    return error


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes as they are, without finishing the request, and return what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_row_is_scored_and_its_id_comes_back(port):
    assert ask(port, json.dumps(ROW).encode(), JSON)[::2] == (200, b'{"predictions": ["wide"]}')
    records = {"dataframe_records": [{"id": "007", "length": 6.0, "width": 1.0}]}
    status, _, answer = ask(port, json.dumps(records).encode(), JSON)
    assert (status, json.loads(answer)) == (200, {"predictions": [{"id": "007", "prediction": "long"}]})


def split(data: object, columns: object = ("length", "width")) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


CSV = {"Content-Type": "text/csv"}

BAD_REQUESTS = [
    pytest.param(
        json.dumps(ROW).encode(), {}, 415, "the request has no Content-Type; send one of text/csv", id="no type"
    ),
    pytest.param(json.dumps(ROW).encode(), {"Content-Type": "text/plain"}, 415, "Got 'text/plain'", id="wrong type"),
    pytest.param(
        json.dumps(ROW).encode(), {"Content-Type": "application/json; charset=latin-1"}, 415, "UTF-8", id="charset"
    ),
    pytest.param(b"[" * 100_000, JSON, 400, "the body nests deeper than the server reads", id="nested lists"),
    pytest.param(b'{"a": ' * 100_000, JSON, 400, "the body nests deeper than the server reads", id="nested objects"),
    pytest.param(b"not json", JSON, 400, "JSONDecodeError('Expecting value", id="not json"),
    pytest.param(b"", JSON, 400, "JSONDecodeError('Expecting value", id="empty body"),
    pytest.param(b'{"dataframe_split": "\xff\xfe"}', JSON, 400, "UnicodeDecodeError('utf-8'", id="not utf-8"),
    pytest.param(b'{"dataframe_split": "' + b"a" * 2000 + b"\xff" + b'"}', JSON, 400, "UnicodeDecodeError", id="long"),
    pytest.param(b"[1, 2]", JSON, 400, "Received a list", id="a list"),
    pytest.param(b'{"rows": [[1, 5]]}', JSON, 400, "exactly one of the input fields", id="no payload key"),
    pytest.param(b'{"inputs": [], "instances": []}', JSON, 400, "exactly one of the input fields", id="two keys"),
    pytest.param(b'{"dataframe_split": 3}', JSON, 400, "split format must be a dictionary", id="split of a number"),
    pytest.param(b'{"dataframe_records": "x"}', JSON, 400, "must be a list of records", id="records of text"),
    pytest.param(
        split([[1.0], [1.0, 2.0, 3.0]]),
        JSON,
        400,
        "2 columns passed, passed data had 3",
        id="ragged rows",
        marks=pytest.mark.filterwarnings("ignore:Constructing a DataFrame from a list of sequences"),
    ),
    pytest.param(
        split([[1.0, 5.0]], ["a", "b"]), JSON, 400, "Model is missing inputs ['length', 'width']", id="columns"
    ),
    pytest.param(
        split([[1.0, "wide"]]), JSON, 400, "column 'width': could not convert string to float: 'wide'", id="text"
    ),
    pytest.param(split([]), JSON, 400, "Found array with 0 sample(s)", id="no rows"),
    pytest.param(b'{"inputs": {"length": [1' + b"0" * 5000 + b"]}}", JSON, 400, "4300 digits", id="5001 digits"),
    pytest.param(b'"unclosed\n1,2', CSV, 400, "EOF inside string", id="bad csv"),
    pytest.param(b"length,width\n\xff,2\n", CSV, 400, "UnicodeDecodeError", id="csv not utf-8"),
    pytest.param(b"PAR1 nope", {"Content-Type": "application/vnd.apache.parquet"}, 400, "Parquet magic", id="parquet"),
]


@pytest.mark.parametrize(("body", "headers", "status", "words"), BAD_REQUESTS)
def test_a_bad_request_gets_a_4xx_and_one_json_line_that_says_why(port, body, headers, status, words):
    answer_status, content_type, answer = ask(port, body, headers)
    assert (answer_status, content_type) == (status, "application/json")
    assert words in assert_short_error(answer)["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/invocations", 405, "Method Not Allowed: GET /invocations (it takes POST)"),
        ("POST", "/ping", 405, "Method Not Allowed: POST /ping (it takes GET)"),
        ("GET", "/nowhere", 404, "Not Found: GET /nowhere"),
    ],
)
def test_a_wrong_method_or_path_is_named(port, method, path, status, message):
    answer_status, content_type, answer = ask(port, method=method, path=path)
    assert (answer_status, content_type) == (status, "application/json")
    assert assert_short_error(answer)["message"] == message


def padded(size: int) -> bytes:
    """A good request of exactly `size` bytes (JSON padded with spaces)."""
    body = json.dumps(ROW).encode()
    return body + b" " * (size - len(body))


def test_a_body_at_the_limit_is_taken_and_a_byte_more_is_refused(port):
    assert ask(port, padded(LIMIT), JSON)[0] == 200
    status, content_type, answer = ask(port, padded(LIMIT + 1), JSON)
    assert (status, content_type) == (413, "application/json")
    assert assert_short_error(answer) == {
        "error_code": "BAD_REQUEST",
        "message": "the body is larger than the server takes (1 MB); send fewer rows per request, or score a file "
        "with `make predict` (make serve MAX_BODY_MB=... moves the limit)",
    }
    chunked = ask(port, iter([padded(LIMIT // 2), b" " * (LIMIT // 2 + 1)]), JSON)  # no length: http.client chunks it
    assert chunked[0] == 413


HEAD = b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def test_a_body_declared_too_large_is_refused_before_a_byte_of_it_is_sent(port):
    answer = raw_exchange(port, HEAD + b"Content-Length: 10000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert "larger than the server takes" in assert_short_error(answer.split(b"\r\n\r\n", 1)[1])["message"]


def test_a_chunked_body_is_refused_as_it_passes_the_limit_not_at_its_end(port):
    chunk = b"%x\r\n%s\r\n" % (LIMIT + 1, b" " * (LIMIT + 1))
    answer = raw_exchange(port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk)  # and the body never ends
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_caller_that_hangs_up_mid_body_is_no_error_of_the_server(port, caplog):
    caplog.set_level(logging.INFO, logger="src.service.serve")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b"[" * 10)
    deadline = time.monotonic() + 10
    while not (records := [record for record in caplog.records if record.name == "src.service.serve"]):
        assert time.monotonic() < deadline, "the server did not notice"
        time.sleep(0.01)
    assert [(record.levelname, record.getMessage()) for record in records] == [
        ("INFO", "POST /invocations: the caller hung up before its request ended")
    ]


def test_columns_the_model_does_not_take_are_left_out_however_many(port):
    columns = [f"extra_{number}" for number in range(20_000)]
    status, _, answer = ask(port, split([[0] * 20_000 + [6.0, 1.0]], [*columns, "length", "width"]), JSON)
    assert (status, json.loads(answer)) == (200, {"predictions": ["long"]})


def test_a_fault_of_the_server_is_a_json_500_its_traceback_only_in_the_log(port, monkeypatch, caplog):
    def broken(*arguments: object) -> None:
        raise RuntimeError("the disk is full\nsecond line")

    monkeypatch.setattr("mlflow.pyfunc.scoring_server.predictions_to_json", broken)
    status, content_type, answer = ask(port, json.dumps(ROW).encode(), JSON)
    assert (status, content_type) == (500, "application/json")
    assert assert_short_error(answer) == {
        "error_code": "INTERNAL_ERROR",
        "message": "the server failed: RuntimeError: the disk is full",
    }
    [record] = [record for record in caplog.records if record.name == "src.service.serve"]
    assert record.getMessage() == "the scoring server failed on POST /invocations" and record.exc_info


def test_what_is_not_http_is_refused_by_uvicorn_in_one_plain_line(port):
    # Before any app runs: the one answer that is not JSON, and it says no more than this.
    answer = raw_exchange(port, b"NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b"\r\n\r\nInvalid HTTP request received.")


@pytest.mark.parametrize(
    ("megabytes", "limit"), [("", DEFAULT_MAX_BODY_MB * MEGABYTE), ("0.5", MEGABYTE // 2), ("200", 200 * MEGABYTE)]
)
def test_max_body_mb_is_megabytes(megabytes, limit):
    assert max_body_bytes(megabytes) == limit


@pytest.mark.parametrize("megabytes", ["abc", "0", "-1", "nan", "inf", "16MB"])
def test_a_bad_max_body_mb_is_refused(megabytes):
    with pytest.raises(ValueError, match=r"^MAX_BODY_MB must be a positive number of megabytes \(default 16\), got "):
        max_body_bytes(megabytes)


def test_a_bad_max_body_mb_stops_serve_in_one_line_with_exit_code_2_before_any_model_loads():
    result = subprocess.run(
        [sys.executable, "-m", "src.service.serve", "--max-body-mb", "lots", "--model", "models:/none@champion"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (
        2,
        "error: MAX_BODY_MB must be a positive number of megabytes (default 16), got 'lots'\n",
    )
