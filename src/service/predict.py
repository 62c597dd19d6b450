"""Scoring with a registered model: which model, its input schema, and `make predict` on a file in batches.

`make predict INPUT=new.parquet OUTPUT=scored.parquet [MODEL=...] [KEEP=name,...]`
checks the file's columns against the model's signature (the raw columns data_load
writes) before anything is written, one line naming the file and the column on a
mismatch (a column missing, text where the model takes numbers), and casts integer
columns to the float the model expects (exact up to 2**53). Text, empty values and
categories the model never saw are scored as they come. It then streams the file in
batches: the input is never held whole, and the output appears only when complete.
The output keeps the input's columns (or those KEEP names, and always the
`data_load.id_columns` the file has) beside `prediction`, one `probability_<class>`
per class when the model has probabilities, and the `model` that made them. OUTPUT
may not be the INPUT file or a file the project tracks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from src.cli import Progress, fail, one_line, parse_config
from src.io import atomic_path
from src.ml.schema import EXACT_FLOAT_INTEGERS, NUMBER_TYPES, ScoringInputError, check_columns
from src.tracking.registry import RegistryError, input_columns, load_model, model_uri_for
from src.versions.workspace import OverwriteError, check_output_path

BATCH_ROWS = 100_000

TABLE_SUFFIXES = (".csv", ".parquet")


def file_columns(path: Path) -> dict[str, str]:
    """The columns of a CSV or Parquet file and their Arrow types, read from its schema or first block."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        schema = pq.read_schema(path)
    else:
        with pa_csv.open_csv(path) as reader:
            schema = reader.schema
    return {name: str(schema.field(name).type) for name in schema.names}


def batches(path: Path, columns: list[str], text_columns: list[str], rows: int = BATCH_ROWS) -> Iterator[Any]:
    """Read `columns` of a CSV or Parquet file as Arrow record batches of about `rows` rows.

    `text_columns` of a CSV are read as text, so identifiers such as `007` and
    categories such as `3` stay as they are, and dates are parsed as they are scored.
    """
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns)
        return
    import pyarrow as pa

    options = pa_csv.ConvertOptions(
        include_columns=columns, column_types=dict.fromkeys(text_columns, pa.string()), strings_can_be_null=True
    )
    # Blocks of about 64 bytes a row, so a batch holds about `rows` rows.
    reading = pa_csv.ReadOptions(block_size=max(rows * 64, 1 << 16))
    with pa_csv.open_csv(path, reading, convert_options=options) as reader:
        yield from reader


def output_columns(classes: list[str]) -> list[str]:
    """The columns `make predict` adds beside the kept ones: the prediction, a probability per class, the model."""
    return ["prediction", *(f"probability_{label}" for label in classes), "model"]


def batch_count(path: Path, rows: int = BATCH_ROWS) -> int | None:
    """How many batches of `rows` rows a file holds: known from a Parquet file's footer, None for a CSV."""
    import pyarrow.parquet as pq

    if path.suffix.lower() != ".parquet":
        return None
    return -(-pq.ParquetFile(path).metadata.num_rows // rows)


def predict_file(
    model: Any,
    version: str,
    source: Path,
    output: Path,
    keep: list[str] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    id_columns: list[str] | None = None,
) -> int:
    """Score `source` into `output` batch by batch; return the number of rows.

    Args:
        model: The pyfunc model (its signature is checked; its scikit-learn model predicts).
        version: The exact model, written in the `model` column.
        source: The CSV or Parquet file to score.
        output: The CSV or Parquet file to write.
        keep: The input columns to keep beside the predictions; every column when None.
        on_batch: Called after each batch with the batches and the rows scored so far.
        id_columns: Columns that identify a row (`data_load.id_columns`): kept whenever the file has them.

    Raises:
        OverwriteError: If `output` is `source` or a file the project tracks.
        ScoringInputError: Before anything is written, if the columns do not fit;
            or, with nothing written, if a later batch holds values that do not.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if source.suffix.lower() not in TABLE_SUFFIXES or output.suffix.lower() not in TABLE_SUFFIXES:
        raise ScoringInputError(f"{source} -> {output}: INPUT and OUTPUT must be .csv or .parquet files")
    if not source.is_file():
        raise ScoringInputError(f"{source}: no such file")
    check_output_path(output, {"INPUT": source})
    expected = input_columns(model)
    columns = file_columns(source)
    casts = check_columns(columns, expected, str(source))
    unknown = [name for name in keep or [] if name not in columns]
    if unknown:
        raise ScoringInputError(f"{source}: KEEP names {', '.join(unknown)}, which is not a column of it")
    ids = [name for name in id_columns or [] if name in columns]
    kept = list(columns) if keep is None else list(dict.fromkeys([*ids, *keep]))
    estimator = model.get_raw_model()
    classes = [str(label) for label in estimator.classes_] if hasattr(estimator, "predict_proba") else []
    added = output_columns(classes)
    clashes = [name for name in added if name in kept]
    if clashes:
        raise ScoringInputError(
            f"{source}: it has a column {clashes[0]!r}, which the output adds; rename it or leave it out with KEEP="
        )
    wanted = list(dict.fromkeys([*kept, *expected]))
    text = [name for name in wanted if expected.get(name) not in NUMBER_TYPES]
    total = done = 0
    with atomic_path(output) as temporary:
        writer: Any = None
        try:
            for batch in batches(source, wanted, text, BATCH_ROWS):
                frame = batch.select(list(expected)).to_pandas()
                for name in casts:
                    if frame[name].abs().max() > EXACT_FLOAT_INTEGERS:
                        raise ScoringInputError(
                            f"{source}: column {name!r} holds integers beyond 2**53, which a float cannot hold exactly"
                        )
                    frame[name] = frame[name].astype("float64")
                try:
                    predictions = estimator.predict(frame)
                    probabilities = estimator.predict_proba(frame) if classes else None
                except ValueError as error:
                    raise ScoringInputError(f"{source}, rows {total + 1}-{total + len(frame)}: {error}") from None
                except Exception as error:
                    raise ScoringInputError(
                        f"{source}: the model refused rows {total + 1}-{total + len(frame)}: {one_line(error)}"
                    ) from None
                model_column = pa.array([version] * len(frame))
                if output.suffix.lower() == ".parquet":
                    model_column = model_column.dictionary_encode()
                scored = {name: batch.column(name) for name in kept}
                scored["prediction"] = pa.array(predictions)
                for position, label in enumerate(classes):
                    scored[f"probability_{label}"] = pa.array(probabilities[:, position])
                scored["model"] = model_column
                table = pa.table(scored)
                if writer is None:
                    writer = (
                        pq.ParquetWriter(temporary, table.schema)
                        if output.suffix.lower() == ".parquet"
                        else pa_csv.CSVWriter(temporary, table.schema)
                    )
                writer.write_table(table)
                total += len(frame)
                done += 1
                if on_batch is not None:
                    on_batch(done, total)
        except pa.ArrowInvalid as error:
            raise ScoringInputError(f"{source}: cannot read it past row {total}: {one_line(error)}") from None
        finally:
            if writer is not None:
                writer.close()
    return total


def main(argv: list[str] | None = None) -> None:
    """`make predict INPUT=... OUTPUT=... [MODEL=...] [KEEP=...]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.predict", description=__doc__)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--model", default="", help="a model URI (default: the champion)")
    parser.add_argument("--keep", default="", help="input columns to keep, comma-separated (default: every column)")
    arguments, config = parse_config(parser, argv)
    keep = [name.strip() for name in arguments.keep.split(",") if name.strip()] or None
    try:
        check_output_path(arguments.output, {"INPUT": arguments.input})
        model, version = load_model(model_uri_for(arguments.model, config))
        started = time.perf_counter()
        progress, batches_in_file = Progress(), {}

        def show(batch: int, rows: int) -> None:
            if not batches_in_file:  # the file is known to be readable once a batch is scored
                batches_in_file["total"] = batch_count(arguments.input)
            progress.step("predict", batch, batches_in_file["total"], {"rows": rows}, unit="batch")

        rows = predict_file(model, version, arguments.input, arguments.output, keep, show, config.data_load.id_columns)
        progress.close("predict")
    except (ScoringInputError, OverwriteError, RegistryError) as error:
        fail(str(error))
    seconds = time.perf_counter() - started
    sys.stdout.write(
        f"wrote {rows} predictions of {version} to {arguments.output} ({rows / max(seconds, 1e-9):,.0f} rows/s)\n"
    )


if __name__ == "__main__":
    main()
