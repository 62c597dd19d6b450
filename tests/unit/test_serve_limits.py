"""`make serve` refuses what it cannot take: a request without its key, a body over the limit, and every bad request.

The app is built as `make serve` builds it, around a real small model, and runs under uvicorn
on a free port of 127.0.0.1 in a thread of the test.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from src.service.serve import (
    DEFAULT_MAX_BODY_MB,
    MEGABYTE,
    NO_KEY,
    WRONG_KEY,
    ServingKey,
    build_app,
    chosen_key,
    max_body_bytes,
    new_key,
    port_is_free,
    start_line,
    uvicorn_options,
)
from tests.conftest import PROJECT_ROOT
from tests.unit.test_scoring import saved_model

LIMIT = MEGABYTE  # small, so that going past it costs nothing

JSON = {"Content-Type": "application/json"}

ROW = {"dataframe_split": {"columns": ["length", "width"], "data": [[1.0, 5.0]]}}

TOKEN = "the-tests-own-key-0123456789abcdefghij"

WRONG_TOKEN = "a-key-of-another-server-0123456789abc"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    """A classifier of wide and long rows."""
    from sklearn.linear_model import LogisticRegression

    return saved_model(
        tmp_path_factory.mktemp("model") / "model", ["wide", "wide", "long", "long"], LogisticRegression()
    )


@pytest.fixture(scope="module")
def port(model) -> Iterator[int]:
    """The port of the scoring app of `model`, with `id` as its id column and TOKEN as its key."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(model, ["id"], LIMIT, TOKEN), **uvicorn_options(free)))
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
    token: str | None = TOKEN,
) -> tuple[int, str, bytes]:
    """Send one request, with `token` as its key (none if None); its status, Content-Type and body."""
    key = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={**key, **(headers or {})})
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


def refused(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    """Send a request with `headers` (and a good row); its status, WWW-Authenticate and short JSON error."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=json.dumps(ROW).encode(), headers={**JSON, **headers})
        response = connection.getresponse()
        return response.status, response.getheader("WWW-Authenticate", ""), assert_short_error(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/invocations"), ("GET", "/version"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/nowhere")],
)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, NO_KEY, id="no key"),
        pytest.param({"Authorization": f"Bearer {WRONG_TOKEN}"}, WRONG_KEY, id="wrong key"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, WRONG_KEY, id="key cut short"),
        pytest.param({"Authorization": "Bearer"}, WRONG_KEY, id="empty key"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, NO_KEY, id="another scheme"),
        pytest.param({"Authorization": "Bearer \u00e9t\u00e9".encode().decode("latin-1")}, WRONG_KEY, id="not ascii"),
    ],
)
def test_a_request_without_the_key_gets_401_and_nothing_of_the_model(port, method, path, headers, message):
    assert refused(port, method, path, headers) == (
        401,
        "Bearer",
        {"error_code": "UNAUTHENTICATED", "message": message},
    )


def test_the_key_is_taken_whatever_the_case_of_bearer_and_version_answers_with_it(port):
    for scheme in ("Bearer", "bearer", "BEARER"):
        answer = ask(port, json.dumps(ROW).encode(), {**JSON, "Authorization": f"{scheme} {TOKEN}"}, token=None)
        assert answer[::2] == (200, b'{"predictions": ["wide"]}')
    assert ask(port, method="GET", path="/version")[0] == 200


@pytest.mark.parametrize("path", ["/ping", "/health"])
def test_the_liveness_checks_answer_without_the_key_and_say_nothing_more(port, path):
    assert ask(port, method="GET", path=path, token=None)[::2] == (200, b"\n")


def test_a_request_without_the_key_is_refused_before_its_body_is_read(port):
    # The length alone would take 10 GB and the chunked body never ends: the answer comes at once all the same.
    for head in (b"Content-Length: 10000000000\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n10\r\n" + b" " * 16):
        answer = raw_exchange(port, HEAD_WITHOUT_KEY + head)
        assert answer.startswith(b"HTTP/1.1 401 ") and b"\r\nwww-authenticate: Bearer\r\n" in answer
        assert assert_short_error(answer.split(b"\r\n\r\n", 1)[1])["message"] == NO_KEY


class EveryLine(logging.Handler):
    """Keeps every log line, its traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


def test_the_key_never_reaches_the_log_even_at_debug_level(port, monkeypatch):
    every_line = EveryLine()
    loggers = {logging.getLogger(name): logging.getLogger(name).level for name in ("", "uvicorn", "uvicorn.access")}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(every_line)
    try:
        ask(port, json.dumps(ROW).encode(), JSON)
        ask(port, json.dumps(ROW).encode(), JSON, token=WRONG_TOKEN)
        ask(port, b"not json", JSON)
        monkeypatch.setattr("mlflow.pyfunc.scoring_server.predictions_to_json", lambda *_: 1 / 0)
        assert ask(port, json.dumps(ROW).encode(), JSON)[0] == 500  # a traceback in the log
    finally:
        for logger, level in loggers.items():
            logger.removeHandler(every_line)
            logger.setLevel(level)
    assert any("ZeroDivisionError" in line for line in every_line.lines)
    assert not [line for line in every_line.lines if TOKEN in line or WRONG_TOKEN in line]


def test_serve_takes_serve_token_from_the_environment_and_says_so_without_showing_it(model):
    key = chosen_key({"SERVE_TOKEN": TOKEN})
    assert key == ServingKey(TOKEN) and TOKEN not in repr(key)
    said = start_line("models:/m/1", 5001, model, key)
    assert "every request but /ping and /health needs the key SERVE_TOKEN holds. Try:" in said
    assert '-H @<(echo "Authorization: Bearer $SERVE_TOKEN")' in said and TOKEN not in said
    assert chosen_key({}) is None and chosen_key({"SERVE_TOKEN": ""}) is None  # then a key is made


@pytest.mark.parametrize("token", ["too-short-0123", "a key with spaces in it", "caf\u00e9-0123456789abcdef"])
def test_a_serve_token_that_is_short_or_no_header_can_carry_is_refused_without_repeating_it(token):
    with pytest.raises(ValueError, match=r"^SERVE_TOKEN must be at least 16 characters of visible ASCII") as refusal:
        chosen_key({"SERVE_TOKEN": token})
    assert token not in str(refusal.value)


def test_a_new_key_is_written_for_this_account_alone_where_git_never_sees_it(tmp_path, model, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    old_umask = os.umask(0)  # a umask that lets everyone read: the key is private all the same
    try:
        first, second = new_key(tmp_path / ".serve" / "token-5001"), new_key(tmp_path / ".serve" / "token-5001")
    finally:
        os.umask(old_umask)
    key_file = tmp_path / ".serve" / "token-5001"
    assert key_file.read_text() == f"{second.token}\n" and first.token != second.token
    assert len(second.token) == 43  # secrets.token_urlsafe(32)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    # Neither git nor what copies the project (`make new`, the tests' copies) lists it.
    untracked = ["git", "ls-files", "--others", "--exclude-standard"]
    assert subprocess.run(untracked, capture_output=True, text=True, check=True).stdout == ""
    said = start_line("models:/m/1", 5001, model, second)
    assert "needs the key in .serve/token-5001 (this account's alone). Try:" in said
    assert '-H @<(echo "Authorization: Bearer $(cat .serve/token-5001)")' in said and second.token not in said


def test_a_port_taken_is_seen_before_a_key_file_of_it_is_replaced(port):
    assert not port_is_free(port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert port_is_free(free)


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


HEAD_WITHOUT_KEY = b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"

HEAD = HEAD_WITHOUT_KEY + f"Authorization: Bearer {TOKEN}\r\n".encode()


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
