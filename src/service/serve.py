"""`make serve`: the model over REST with MLflow's own scoring server, on 127.0.0.1 only.

The app is MLflow's scoring server (`mlflow.pyfunc.scoring_server`, what
`mlflow models serve` runs), in this one process under uvicorn, so Ctrl-C stops
everything it started. The model takes raw rows, as data_load writes them (text,
numbers, booleans, ISO dates, empty values): its featurize step and encoder run
inside it, and a category it never saw is scored. Three things are added: a request
that sends `data_load.id_columns` gets them back beside each prediction, every
error answer is JSON with a short message (what was wrong with the request, naming
the column) and never a stack trace, and a body over `MAX_BODY_MB` is refused
before it is read whole.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from src.cli import EXIT_BAD_CONFIG, fail, one_line, parse_config
from src.tracking.registry import RegistryError, load_model, model_uri_for

logger = logging.getLogger(__name__)

MESSAGE_CHARACTERS = 300

MEGABYTE = 1024 * 1024

INVOCATIONS = "/invocations"
"""The path MLflow's scoring server scores on."""

DEFAULT_MAX_BODY_MB = 16
"""The largest request body `make serve` takes unless MAX_BODY_MB says otherwise (see docs/service.md for why)."""


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


def example_request(model: Any, port: int) -> str:
    """A curl command that scores the model's input example (one row)."""
    example = model.input_example
    if example is None:
        columns = [column.name for column in model.metadata.get_input_schema().inputs]
        payload: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": [[0.0] * len(columns)]}}
    else:
        payload = {
            "dataframe_split": json.loads(example.head(1).to_json(orient="split", index=False, date_format="iso"))
        }
    return f"curl -s http://127.0.0.1:{port}/invocations -H 'Content-Type: application/json' -d '{json.dumps(payload)}'"


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


def build_app(model: Any, id_columns: list[str], body_limit: int) -> Any:
    """MLflow's scoring app for `model`, as `make serve` runs it: ids beside predictions, short errors, a body limit.

    Args:
        model: The loaded pyfunc model (changed in place: see `take_gaps_in_whole_numbers` and `answer_with_ids`).
        id_columns: `data_load.id_columns`.
        body_limit: The largest request body taken, in bytes.
    """
    from mlflow.pyfunc import scoring_server

    take_gaps_in_whole_numbers(model)
    answer_with_ids(model, id_columns)
    app = scoring_server.init(model)
    app.add_middleware(ShortErrors, max_body_bytes=body_limit)
    return app


def uvicorn_options(port: int) -> dict[str, Any]:
    """How `make serve` runs uvicorn: on 127.0.0.1 only, quiet unless something is wrong."""
    return {"host": "127.0.0.1", "port": port, "log_level": "warning"}


def main(argv: list[str] | None = None) -> None:
    """`make serve [MODEL=models:/<name>@champion] [PORT=5001] [MAX_BODY_MB=16]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.serve", description=__doc__)
    parser.add_argument("--model", default="", help="a model URI (default: models:/<registry.model_name>@champion)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--max-body-mb", default="", help=f"the largest request body taken, in MB (default: {DEFAULT_MAX_BODY_MB})"
    )
    arguments, config = parse_config(parser, argv)
    try:
        body_limit = max_body_bytes(arguments.max_body_mb)
    except ValueError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    try:
        model, version = load_model(model_uri_for(arguments.model, config))
    except RegistryError as error:
        fail(str(error))
    import uvicorn

    app = build_app(model, config.data_load.id_columns, body_limit)
    sys.stdout.write(
        f"Serving {version} on http://127.0.0.1:{arguments.port}/invocations (Ctrl-C stops it). Try:\n"
        f"  {example_request(model, arguments.port)}\n"
    )
    sys.stdout.flush()
    uvicorn.run(app, workers=1, **uvicorn_options(arguments.port))


if __name__ == "__main__":
    main()
