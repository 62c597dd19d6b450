"""Scoring with a registered model: which model, its input schema, and `make predict` on a file in batches.

`make predict INPUT=new.parquet OUTPUT=scored.parquet [MODEL=...]` checks the
file's columns against the model's signature before anything is written (one
line naming the file and the column on a mismatch), casts integer columns to
the float the model expects (exact up to 2**53), then streams the file in
batches: the input is never held whole, and the output (one `prediction` per
row, and the `model` that made it) appears only when complete.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.config import Config
from src.service.registry import CHAMPION
from src.utils.cli import fail, parse_config
from src.utils.io import atomic_path
from src.utils.mlflow_run import describe_tracking_error, import_mlflow, one_line

logger = logging.getLogger(__name__)

BATCH_ROWS = 100_000
EXACT_FLOAT_INTEGERS = 2**53  # the largest integer range a float64 holds exactly
FLOAT_TYPES = ("double", "float")
INTEGER_TYPES = ("long", "integer")


class ScoringInputError(ValueError):
    """An input file does not fit the model; the message names the file and the column."""


def model_uri_for(uri: str, config: Config) -> str:
    """`uri`, or the champion of `registry.model_name` when empty."""
    return uri or f"models:/{config.registry.model_name}@{CHAMPION}"


def describe_version(uri: str) -> str:
    """Name the exact model behind `uri`: an alias becomes `models:/<name>/<version>`."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    name, alias = uri.removeprefix("models:/").split("@", 1)
    version = import_mlflow().MlflowClient().get_model_version_by_alias(name, alias)
    return f"models:/{name}/{version.version}"


def load_model(uri: str) -> tuple[Any, str]:
    """Load a pyfunc model, or stop with one line saying which model could not be found."""
    mlflow = import_mlflow()
    try:
        version = describe_version(uri)
        return mlflow.pyfunc.load_model(version), version
    except Exception as error:
        hint = " (no champion yet? run `make promote`)" if f"@{CHAMPION}" in uri else ""
        fail(f"cannot load model {uri}{hint}: {describe_tracking_error(error)}")


def input_columns(model: Any) -> dict[str, str]:
    """The model's input columns and their MLflow types (`double`, `long`, `string`...), from its signature."""
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ScoringInputError("the model has no signature; log it with one (the train stage does)")
    return {column.name: column.type.name for column in schema.inputs}


def check_columns(columns: dict[str, str], expected: dict[str, str], source: str) -> list[str]:
    """Check a file's columns (name -> pandas/arrow dtype) against the model's; return the columns to cast to float.

    Raises:
        ScoringInputError: A column is missing, or holds values the model cannot take.
    """
    missing = [name for name in expected if name not in columns]
    if missing:
        raise ScoringInputError(
            f"{source}: column {missing[0]!r} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; the model needs {', '.join(expected)}"
        )
    casts = []
    for name, model_type in expected.items():
        dtype = str(columns[name]).lower()
        numeric = dtype.startswith(("int", "uint", "float", "double"))
        if model_type in FLOAT_TYPES and dtype.startswith(("int", "uint")):
            casts.append(name)
        elif model_type in (*FLOAT_TYPES, *INTEGER_TYPES) and not numeric:
            raise ScoringInputError(
                f"{source}: column {name!r} holds {dtype} values; the model needs numbers ({model_type})"
            )
    return casts


def batches(path: Path, columns: list[str], rows: int = BATCH_ROWS) -> Iterator[Any]:
    """Read the file's `columns` in DataFrames of up to `rows` rows (CSV or Parquet)."""
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns):
            yield batch.to_pandas()
    else:
        yield from pd.read_csv(path, usecols=columns, chunksize=rows)


def file_columns(path: Path) -> dict[str, str]:
    """The columns of a CSV or Parquet file and their types, read from its schema or first rows."""
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        return {name: str(schema.field(name).type) for name in schema.names}
    return {name: str(dtype) for name, dtype in pd.read_csv(path, nrows=1000).dtypes.items()}


def predict_file(model: Any, version: str, source: Path, output: Path) -> int:
    """Score `source` into `output` batch by batch; return the number of rows.

    Raises:
        ScoringInputError: Before anything is written, if the columns do not fit;
            or, with nothing written, if a later batch holds values that do not.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if source.suffix.lower() not in (".csv", ".parquet") or output.suffix.lower() not in (".csv", ".parquet"):
        raise ScoringInputError(f"{source} -> {output}: INPUT and OUTPUT must be .csv or .parquet files")
    if not source.is_file():
        raise ScoringInputError(f"{source}: no such file")
    expected = input_columns(model)
    casts = check_columns(file_columns(source), expected, str(source))
    total = 0
    with atomic_path(output) as temporary:
        writer: Any = None
        try:
            for frame in batches(source, list(expected), BATCH_ROWS):
                problems = check_columns(dict(frame.dtypes.astype(str)), expected, str(source))
                for name in {*casts, *problems}:
                    if frame[name].abs().max() > EXACT_FLOAT_INTEGERS:
                        raise ScoringInputError(
                            f"{source}: column {name!r} holds integers beyond 2**53, which a float cannot hold exactly"
                        )
                    frame[name] = frame[name].astype("float64")
                try:
                    predictions = model.predict(frame[list(expected)])
                except Exception as error:
                    raise ScoringInputError(
                        f"{source}: the model refused rows {total + 1}-{total + len(frame)}: {one_line(error)}"
                    ) from None
                model_column = pa.array([version] * len(frame))
                if output.suffix.lower() == ".parquet":
                    model_column = model_column.dictionary_encode()
                table = pa.table({"prediction": predictions, "model": model_column})
                if writer is None:
                    writer = (
                        pq.ParquetWriter(temporary, table.schema)
                        if output.suffix.lower() == ".parquet"
                        else pa_csv.CSVWriter(temporary, table.schema)
                    )
                writer.write_table(table)
                total += len(frame)
        finally:
            if writer is not None:
                writer.close()
    return total


def main(argv: list[str] | None = None) -> None:
    """`make predict INPUT=... OUTPUT=... [MODEL=...]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.scoring", description=__doc__)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--model", default="", help="a model URI (default: the champion)")
    arguments, config = parse_config(parser, argv)
    model, version = load_model(model_uri_for(arguments.model, config))
    started = time.perf_counter()
    try:
        rows = predict_file(model, version, arguments.input, arguments.output)
    except ScoringInputError as error:
        fail(str(error))
    seconds = time.perf_counter() - started
    sys.stdout.write(
        f"wrote {rows} predictions of {version} to {arguments.output} ({rows / max(seconds, 1e-9):,.0f} rows/s)\n"
    )


if __name__ == "__main__":
    main()
