"""`make serve`: the model over REST with MLflow's own scoring server, on 127.0.0.1 only.

The app is MLflow's scoring server (`mlflow.pyfunc.scoring_server`, what
`mlflow models serve` runs), in this one process under uvicorn, so Ctrl-C stops
everything it started. The model takes raw rows, as data_load writes them (text,
numbers, booleans, ISO dates, empty values): its featurize step and encoder run
inside it, and a category it never saw is scored. Three things are added: a request
that sends `data_load.id_columns` gets them back beside each prediction, every
error answer is JSON with a short message (what was wrong with the request, naming
the column) and never a stack trace, and a body over `MAX_BODY_MB` is refused
before it is read whole. Every request but the liveness checks (`/ping`, `/health`)
must carry the server's key, `Authorization: Bearer <key>` (SERVE_TOKEN, or one made
at start in `.serve/token-<port>`, this account's alone): another account of the
machine gets 401 and nothing else.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import re
import secrets
import shlex
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.cli import EXIT_BAD_CONFIG, fail, one_line, parse_config
from src.io import private_folder, write_private
from src.paths import PROJECT_ROOT
from src.tracking.registry import RegistryError, load_model, model_uri_for

logger = logging.getLogger(__name__)

MESSAGE_CHARACTERS = 300

MEGABYTE = 1024 * 1024

INVOCATIONS = "/invocations"
"""The path MLflow's scoring server scores on."""

DEFAULT_MAX_BODY_MB = 16
"""The largest request body `make serve` takes unless MAX_BODY_MB says otherwise (see docs/service.md for why)."""

OPEN_PATHS = frozenset({"/ping", "/health"})
"""What answers without the key: MLflow's liveness checks, whose answer is an empty line."""

KEY_FOLDER = PROJECT_ROOT / ".serve"
"""Where `make serve` writes the key it makes, one file per port (mode 600, in a folder of mode 700 git ignores)."""

MIN_KEY_CHARACTERS = 16

KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")
"""Visible ASCII: what a header carries as it is."""

NO_KEY = "the request carries no key; send `Authorization: Bearer <key>` with the key make serve named as it started"
WRONG_KEY = "the key is wrong; send `Authorization: Bearer <key>` with the key make serve named as it started"


Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]


CONVERSION = re.compile(
    r"Failed to convert column (?P<column>.+?) to type '[^']*'\. Error: '\w+\((?P<quote>[\"'])(?P<why>.*)(?P=quote)\)'"
)
"""MLflow's answer to a value its signature cannot take: the column, and the reason inside the error's repr."""


def short_message(body: bytes) -> str:
    """The useful part of a scoring server's error body, in one line, no trace.

    A value the signature cannot take becomes `column 'age': could not convert string to float: 'abc'`;
    anything else is the last `Error:` clause, or a framework's `detail`.
    """
    try:
        answer = json.loads(body)
        message = str(answer.get("message") or answer.get("detail") or "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", errors="replace")
    # MLflow repeats a body that is not JSON after its message: never search the caller's own text.
    message = message.split("\nInput: ", 1)[0]
    conversion = CONVERSION.search(message)
    if conversion:
        message = f"column {conversion['column']!r}: {conversion['why']}"
    else:
        message = message.rsplit("Error:", 1)[-1].strip()
    first_line = message.splitlines()[0] if message else "bad request"
    return first_line[:MESSAGE_CHARACTERS]


def framework_message(status: int, message: str, scope: Message, allowed: str) -> str:
    """Say which request a 404 or 405 answers (FastAPI's own says only `Not Found`); other messages as they are."""
    if status not in (404, 405):
        return message
    return f"{message}: {scope['method']} {scope['path']}" + (f" (it takes {allowed})" if allowed else "")


def error_code_of(status: int, body: bytes) -> str:
    """The `error_code` of an error answer: MLflow's own when the body has one, else MLflow's name for the status."""
    from mlflow.exceptions import HTTP_STATUS_TO_ERROR_CODE

    try:
        return str(json.loads(body)["error_code"])
    except (ValueError, TypeError, KeyError):
        return HTTP_STATUS_TO_ERROR_CODE.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")


@dataclass(frozen=True)
class ServingKey:
    """The bearer token `make serve` asks every request for, and where its caller finds it.

    Args:
        token: The token (never in a repr, a log or a message).
        file: The file that holds it, or None when it came from SERVE_TOKEN.
    """

    token: str = field(repr=False)
    file: Path | None = None

    def where(self) -> str:
        """Where the key is, for the start-up line."""
        if self.file is None:
            return "the key SERVE_TOKEN holds"
        return f"the key in {shown_path(self.file)} (this account's alone)"

    def shell(self) -> str:
        """The shell words that give the key, for a curl command: the token itself never shows."""
        if self.file is None:
            return "$SERVE_TOKEN"
        return f"$(cat {shlex.quote(shown_path(self.file))})"


def shown_path(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it (a make target runs at the project root)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def chosen_key(environ: Mapping[str, str]) -> ServingKey | None:
    """The key a team chose, SERVE_TOKEN, when it is set and not empty.

    Raises:
        ValueError: If it is shorter than 16 characters or holds one a header cannot carry as it is (the message
            never repeats it).
    """
    chosen = environ.get("SERVE_TOKEN", "")
    if not chosen:
        return None
    if len(chosen) < MIN_KEY_CHARACTERS or not KEY_CHARACTERS.fullmatch(chosen):
        raise ValueError(
            f"SERVE_TOKEN must be at least {MIN_KEY_CHARACTERS} characters of visible ASCII, no spaces; make one"
            " with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return ServingKey(chosen)


def new_key(key_file: Path) -> ServingKey:
    """A new token (`secrets.token_urlsafe(32)`), written to `key_file` for this account alone.

    The file is created mode 600 (`write_private`) in a folder made mode 700 that holds
    a `.gitignore` of its own, so git never sees it.

    Raises:
        OSError: If the file cannot be written.
    """
    token = secrets.token_urlsafe(32)
    folder = private_folder(key_file.parent)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# make serve's keys: never in git\n*\n", encoding="utf-8")
    write_private(key_file, f"{token}\n".encode())
    return ServingKey(token, key_file)


class RequireKey:
    """ASGI middleware of the scoring app: a request without the key gets 401, and the app never sees it.

    Every request but the liveness checks (`OPEN_PATHS`) must carry
    `Authorization: Bearer <token>`; without it, with another scheme or another
    token, the answer is 401 `{"error_code": "UNAUTHENTICATED", "message"}` with
    `WWW-Authenticate: Bearer`, sent before a byte of the body is read. The token
    is compared in constant time and never logged.

    Args:
        app: The app it guards (the scoring app with `ShortErrors`).
        token: The key.
    """

    def __init__(self, app: App, token: str) -> None:
        self.app = app
        self.token = token.encode("ascii")

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        """Pass a request that carries the key (or a liveness check, or the lifespan) on; refuse any other."""
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await answer_error(scope, send, 401, refusal, headers=[(b"www-authenticate", b"Bearer")])
        else:  # a websocket: closing it before it is accepted refuses it
            await send({"type": "websocket.close", "code": 1008})

    def refusal(self, scope: Message) -> str | None:
        """Why the request may not in, or None when it carries the key (its first Authorization header)."""
        given = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if given is None:
            return NO_KEY
        scheme, _, credentials = given.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return NO_KEY
        return None if hmac.compare_digest(credentials.strip(), self.token) else WRONG_KEY


class BodyTooLargeError(Exception):
    """A request's body grew past the limit as it was read."""


class ShortErrors:
    """ASGI middleware of the scoring app: refuse a body over the limit, answer every error as short JSON.

    A body is refused with 413 before it is read whole: by its Content-Length
    when it has one, else (a chunked body) as soon as the bytes read pass the
    limit, so a request never holds more than `max_body_bytes` of it. A POST
    without a Content-Type is refused with 415 (MLflow's server fails on it).
    Every answer of 400 and above becomes `{"error_code", "message"}` with a
    one-line message. An exception that escapes the app while it reads the
    request (JSON nested deeper than Python's recursion limit, a number of more
    than 4300 digits: a RecursionError or a ValueError; MLflow's server already
    answers the model's own errors with 400) is the request's fault: 400. A
    caller that hangs up mid-body gets nothing, and the log no traceback. Any
    other error is the server's: 500, its traceback in the server's log only.

    Args:
        app: The scoring app.
        max_body_bytes: The largest body taken, in bytes.
    """

    def __init__(self, app: App, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        """Serve one request (or pass anything else, the lifespan, through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi.datastructures import Headers

        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await answer_error(scope, send, 413, self.too_large())
            return
        if (scope["method"], scope["path"]) == ("POST", INVOCATIONS) and "content-type" not in headers:
            await answer_error(scope, send, 415, f"the request has no Content-Type; send one of {accepted_types()}")
            return
        read, hung_up = 0, False

        async def receive_within_limit() -> Message:
            nonlocal read, hung_up
            message = await receive()
            hung_up = message["type"] == "http.disconnect"
            read += len(message.get("body", b""))
            if read > self.max_body_bytes:
                raise BodyTooLargeError
            return message

        answer = ShortAnswer(scope, send)
        try:
            await self.app(scope, receive_within_limit, answer.send)
        except Exception as error:
            # The app may get the refusal wrapped (MLflow's middleware reads the body in a task group).
            if read > self.max_body_bytes:
                await answer.error(413, self.too_large())
            elif hung_up:
                logger.info("%s %s: the caller hung up before its request ended", scope["method"], scope["path"])
            elif isinstance(error, RecursionError | ValueError):
                await answer.error(400, request_fault(error))
            else:
                logger.exception("the scoring server failed on %s %s", scope["method"], scope["path"])
                await answer.error(500, f"the server failed: {one_line(error)}")
            # The frames the error left hold what was read of the body, in reference cycles
            # that the cyclic garbage collector may not visit for a long while: free it now.
            traceback.clear_frames(error.__traceback__)

    def too_large(self) -> str:
        """The message of a 413."""
        return (
            f"the body is larger than the server takes ({self.max_body_bytes / MEGABYTE:g} MB); send fewer rows"
            " per request, or score a file with `make predict` (make serve MAX_BODY_MB=... moves the limit)"
        )


class ShortAnswer:
    """The `send` of one request: an answer of 400 and above is held whole and sent as short JSON instead."""

    def __init__(self, scope: Message, send: Send) -> None:
        self.scope = scope
        self.down = send
        self.started = False  # the answer's first message went down
        self.error_start: Message | None = None
        self.error_body = bytearray()

    async def send(self, message: Message) -> None:
        """Pass a message on, or hold it if it belongs to an error answer."""
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.error_start = message
            return
        if message["type"] == "http.response.body" and self.error_start is not None:
            self.error_body += message.get("body", b"")
            if not message.get("more_body", False):
                await self.send_short(self.error_start, bytes(self.error_body))
            return
        self.started = True
        await self.down(message)

    async def send_short(self, start: Message, body: bytes) -> None:
        """Send the error answer `start` and `body` make as `{"error_code", "message"}`, keeping its Allow header."""
        from fastapi.datastructures import Headers

        status, allowed = start["status"], Headers(raw=start.get("headers", [])).get("allow", "")
        message = framework_message(status, short_message(body), self.scope, allowed)
        headers = [(b"allow", allowed.encode())] if allowed else []
        self.started = True
        await answer_error(self.scope, self.down, status, message, error_code_of(status, body), headers)

    async def error(self, status: int, message: str) -> None:
        """Answer with an error, unless an answer has begun (then the connection just ends)."""
        if self.started:
            logger.warning("%s %s: %s after the answer began", self.scope["method"], self.scope["path"], message)
            return
        await answer_error(self.scope, self.down, status, message)


async def answer_error(
    scope: Message,
    send: Send,
    status: int,
    message: str,
    error_code: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send `{"error_code", "message"}` with `status`; the error code is MLflow's name for the status unless given."""
    from fastapi.responses import JSONResponse

    response = JSONResponse({"error_code": error_code or error_code_of(status, b""), "message": message}, status)
    response.raw_headers += headers or []
    await response(scope, receive_nothing, send)


async def receive_nothing() -> Message:
    """The `receive` of an answer that reads nothing of the request."""
    return {"type": "http.disconnect"}


def accepted_types() -> str:
    """The content types MLflow's scoring server reads, for a message."""
    from mlflow.pyfunc.scoring_server import CONTENT_TYPES

    return ", ".join(CONTENT_TYPES)


def request_fault(error: BaseException) -> str:
    """The message of a 400 for an error that escaped the app while it read the request."""
    if isinstance(error, RecursionError):
        return "the body nests deeper than the server reads; send rows as dataframe_split or dataframe_records"
    return one_line(error)[:MESSAGE_CHARACTERS]


def answer_with_ids(model: Any, id_columns: list[str]) -> None:
    """Give each prediction the ids its row was sent with, and answer a row the model refuses with a 400 that says why.

    A request whose rows carry any of `id_columns` is answered with records,
    `{"predictions": [{"passenger_id": 7, "prediction": "1"}, ...]}`; one without
    them, with the predictions alone, as MLflow answers. The model's featurize step
    checks every row and raises a one-line ValueError naming the column (a word in a
    number column, a date that does not parse); MLflow's server would turn it into
    "an unexpected error" with a stack trace. Raised as an MlflowException with
    BAD_REQUEST instead, its own line reaches the caller.
    """
    import numpy as np
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    predict = model.predict

    def predict_with_ids(data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            predictions = predict(data, params=params)
        except ValueError as error:
            raise MlflowException(str(error).splitlines()[0], error_code=BAD_REQUEST) from None
        sent = [name for name in id_columns if isinstance(data, pd.DataFrame) and name in data.columns]
        if not sent:
            return predictions
        return data[sent].reset_index(drop=True).assign(prediction=np.asarray(predictions))

    model.predict = predict_with_ids


def take_gaps_in_whole_numbers(model: Any) -> None:
    """Let a column the model learnt as whole numbers take an empty value (or a fraction) too, as a double.

    The signature says what training held: a column with no gap and no fraction is
    `long`, and MLflow's own enforcement refuses a null there. The model's featurize
    step takes any number and an empty value alike, so what `make serve` answers
    follows the model, not the training rows' accidents. `mlflow models serve` and
    `mlflow.pyfunc.load_model` keep MLflow's stricter reading.
    """
    from mlflow.types import DataType
    from mlflow.types.schema import ColSpec, Schema

    signature = model.metadata.signature
    if signature is None:
        return
    whole = (DataType.long, DataType.integer)
    signature.inputs = Schema(
        [
            ColSpec(DataType.double if column.type in whole else column.type, column.name, required=column.required)
            for column in signature.inputs.inputs
        ]
    )


def example_request(model: Any, port: int, key: ServingKey) -> str:
    """A curl command (bash or zsh) that scores the model's input example (one row), with the key.

    The header reaches curl from a file (`-H @<(echo ...)`, echo being the shell's own):
    `-H "Authorization: Bearer $(cat ...)"` would put the key among curl's arguments,
    which `ps` shows to every account while curl runs.
    """
    example = model.input_example
    if example is None:
        columns = [column.name for column in model.metadata.get_input_schema().inputs]
        payload: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": [[0.0] * len(columns)]}}
    else:
        payload = {
            "dataframe_split": json.loads(example.head(1).to_json(orient="split", index=False, date_format="iso"))
        }
    return (
        f'curl -s http://127.0.0.1:{port}/invocations -H @<(echo "Authorization: Bearer {key.shell()}")'
        f" -H 'Content-Type: application/json' -d '{json.dumps(payload)}'"
    )


def max_body_bytes(megabytes: str) -> int:
    """The body limit MAX_BODY_MB names, in bytes; DEFAULT_MAX_BODY_MB when empty.

    Raises:
        ValueError: If it is not a positive number of megabytes.
    """
    try:
        limit = float(megabytes or DEFAULT_MAX_BODY_MB)
    except ValueError:
        limit = math.nan
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(
            f"MAX_BODY_MB must be a positive number of megabytes (default {DEFAULT_MAX_BODY_MB}), got {megabytes!r}"
        )
    return max(1, round(limit * MEGABYTE))


def build_app(model: Any, id_columns: list[str], body_limit: int, token: str) -> Any:
    """MLflow's scoring app for `model`, as `make serve` runs it: a key, ids beside predictions, short errors, a limit.

    Args:
        model: The loaded pyfunc model (changed in place: see `take_gaps_in_whole_numbers` and `answer_with_ids`).
        id_columns: `data_load.id_columns`.
        body_limit: The largest request body taken, in bytes.
        token: The key every request but a liveness check must carry.
    """
    from mlflow.pyfunc import scoring_server

    take_gaps_in_whole_numbers(model)
    answer_with_ids(model, id_columns)
    app = scoring_server.init(model)
    app.add_middleware(ShortErrors, max_body_bytes=body_limit)
    app.add_middleware(RequireKey, token=token)  # added last, so it runs first: before the body is read
    return app


def uvicorn_options(port: int) -> dict[str, Any]:
    """How `make serve` runs uvicorn: on 127.0.0.1 only, quiet unless something is wrong."""
    return {"host": "127.0.0.1", "port": port, "log_level": "warning"}


def port_is_free(port: int) -> bool:
    """Whether no server listens on `port` of 127.0.0.1 (checked before the port's key file is replaced)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_line(version: str, port: int, model: Any, key: ServingKey) -> str:
    """What `make serve` says as it starts: what it serves where, where the key is, and a request to try."""
    return (
        f"Serving {version} on http://127.0.0.1:{port}/invocations (Ctrl-C stops it); every request but /ping and"
        f" /health needs {key.where()}. Try:\n  {example_request(model, port, key)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    """`make serve [MODEL=models:/<name>@champion] [PORT=5001] [MAX_BODY_MB=16]`, the key from SERVE_TOKEN or made."""
    parser = argparse.ArgumentParser(prog="python -m src.service.serve", description=__doc__)
    parser.add_argument("--model", default="", help="a model URI (default: models:/<registry.model_name>@champion)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--max-body-mb", default="", help=f"the largest request body taken, in MB (default: {DEFAULT_MAX_BODY_MB})"
    )
    arguments, config = parse_config(parser, argv)
    try:
        body_limit = max_body_bytes(arguments.max_body_mb)
        chosen = chosen_key(os.environ)
    except ValueError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    try:
        model, version = load_model(model_uri_for(arguments.model, config))
    except RegistryError as error:
        fail(str(error))
    if not port_is_free(arguments.port):
        fail(f"port {arguments.port} of 127.0.0.1 is taken (another make serve?); PORT=... picks another")
    try:
        key = chosen or new_key(KEY_FOLDER / f"token-{arguments.port}")
    except OSError as error:
        fail(f"could not write make serve's key: {error}")
    import uvicorn

    app = build_app(model, config.data_load.id_columns, body_limit, key.token)
    sys.stdout.write(start_line(version, arguments.port, model, key))
    sys.stdout.flush()
    uvicorn.run(app, workers=1, **uvicorn_options(arguments.port))


if __name__ == "__main__":
    main()
