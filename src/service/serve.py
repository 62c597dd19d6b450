"""`make serve`: the model over REST with MLflow's own scoring server, on 127.0.0.1 only.

The app is MLflow's scoring server (`mlflow.pyfunc.scoring_server`, what
`mlflow models serve` runs), in this one process under uvicorn, so Ctrl-C stops
everything it started. The model takes raw rows, as data_load writes them: its
featurize step runs inside it. One layer is added: an error answer carries a
short message (what was wrong with the request, naming the column) and never a
stack trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from src.cli import fail, parse_config
from src.tracking.registry import RegistryError, load_model, model_uri_for

logger = logging.getLogger(__name__)

MESSAGE_CHARACTERS = 300


def short_message(body: bytes) -> str:
    """The useful part of a scoring server's error body, in one line: the last `Error:` clause, no trace."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode("utf-8", errors="replace")
    message = message.rsplit("Error:", 1)[-1].strip()
    first_line = message.splitlines()[0] if message else "bad request"
    return first_line[:MESSAGE_CHARACTERS]


def add_short_errors(app: Any) -> None:
    """Make every error answer of `app` `{"error_code", "message"}` with a short message."""
    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def short_errors(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        if response.status_code < 400:
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        try:
            error_code = str(json.loads(body).get("error_code", "BAD_REQUEST"))
        except (ValueError, AttributeError):
            error_code = "BAD_REQUEST"
        return JSONResponse({"error_code": error_code, "message": short_message(body)}, response.status_code)


def bad_rows_as_bad_requests(model: Any) -> None:
    """Answer a row the model refuses (a null, a word in a number column) with a 400 that says why.

    The model's featurize step checks every row and raises a one-line ValueError
    naming the column; MLflow's server would turn it into "an unexpected error"
    with a stack trace. Raised as an MlflowException with BAD_REQUEST instead, its
    own line reaches the caller.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    predict = model.predict

    def checked_predict(data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            return predict(data, params=params)
        except ValueError as error:
            raise MlflowException(str(error).splitlines()[0], error_code=BAD_REQUEST) from None

    model.predict = checked_predict


def example_request(model: Any, port: int) -> str:
    """A curl command that scores the model's input example (one row)."""
    example = model.input_example
    if example is None:
        columns = [column.name for column in model.metadata.get_input_schema().inputs]
        payload: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": [[0.0] * len(columns)]}}
    else:
        payload = {"dataframe_split": json.loads(example.head(1).to_json(orient="split", index=False))}
    return f"curl -s http://127.0.0.1:{port}/invocations -H 'Content-Type: application/json' -d '{json.dumps(payload)}'"


def main(argv: list[str] | None = None) -> None:
    """`make serve [MODEL=models:/<name>@champion] [PORT=5001]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.serve", description=__doc__)
    parser.add_argument("--model", default="", help="a model URI (default: models:/<registry.model_name>@champion)")
    parser.add_argument("--port", type=int, default=5001)
    arguments, config = parse_config(parser, argv)
    try:
        model, version = load_model(model_uri_for(arguments.model, config))
    except RegistryError as error:
        fail(str(error))
    import uvicorn
    from mlflow.pyfunc import scoring_server

    bad_rows_as_bad_requests(model)
    app = scoring_server.init(model)
    add_short_errors(app)
    sys.stdout.write(
        f"Serving {version} on http://127.0.0.1:{arguments.port}/invocations (Ctrl-C stops it). Try:\n"
        f"  {example_request(model, arguments.port)}\n"
    )
    sys.stdout.flush()
    uvicorn.run(app, host="127.0.0.1", port=arguments.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
