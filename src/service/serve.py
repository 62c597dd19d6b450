"""`make serve`: the model over REST with MLflow's own scoring server, on 127.0.0.1 only.

The app is MLflow's scoring server (`mlflow.pyfunc.scoring_server`, what
`mlflow models serve` runs), in this one process under uvicorn, so Ctrl-C stops
everything it started. The model takes raw rows, as data_load writes them (text,
numbers, booleans, ISO dates, empty values): its featurize step and encoder run
inside it, and a category it never saw is scored. Two things are added: a request
that sends `data_load.id_columns` gets them back beside each prediction, and an
error answer carries a short message (what was wrong with the request, naming the
column) and never a stack trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Any

from src.cli import fail, parse_config
from src.tracking.registry import RegistryError, load_model, model_uri_for

logger = logging.getLogger(__name__)

MESSAGE_CHARACTERS = 300


CONVERSION = re.compile(
    r"Failed to convert column (?P<column>.+?) to type '[^']*'\. Error: '\w+\((?P<quote>[\"'])(?P<why>.*)(?P=quote)\)'"
)
"""MLflow's answer to a value its signature cannot take: the column, and the reason inside the error's repr."""


def short_message(body: bytes) -> str:
    """The useful part of a scoring server's error body, in one line, no trace.

    A value the signature cannot take becomes `column 'age': could not convert string to float: 'abc'`;
    anything else is the last `Error:` clause.
    """
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode("utf-8", errors="replace")
    conversion = CONVERSION.search(message)
    if conversion:
        message = f"column {conversion['column']!r}: {conversion['why']}"
    else:
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

    take_gaps_in_whole_numbers(model)
    answer_with_ids(model, config.data_load.id_columns)
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
