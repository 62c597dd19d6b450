"""Where the data comes from: a bundled dataset, a synthetic table, a user's CSV, Parquet or folder of PNGs.

Each source becomes one labelled table, checked: a bad file or column is one line
naming it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from src.ml.images import pixel_names
from src.ml.tables import DataSchemaError
from src.paths import PROJECT_ROOT

IMAGE_SUFFIX = ".png"

IMAGE_MODES = ("L", "RGB")  # 8-bit grayscale and RGB


def snake_case(name: str) -> str:
    """Turn a column name such as `sepal length (cm)` into `sepal_length_cm`."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def load_bundled(name: str, target: str) -> pd.DataFrame:
    """Return a scikit-learn bundled dataset as one table.

    Args:
        name: `iris`, `wine`, `breast_cancer`, `digits` or `diabetes` (scikit-learn's `load_<name>`).
        target: The name to give the label column.

    Returns:
        One row per sample: the features with snake_case names, then the label
        column `target`: class names for a classification set, the numbers of a regression one.
    """
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    features = bunch.data.rename(columns=snake_case)
    if target in features.columns:
        raise DataSchemaError(f"data_load.target is {target!r}, which is also a feature of {name}; choose another name")
    if "target_names" not in bunch:  # a regression set: the target is a number
        return features.assign(**{target: bunch.target.to_numpy(dtype="float64")})
    class_names = pd.Categorical.from_codes(bunch.target.to_numpy(), categories=list(map(str, bunch.target_names)))
    return features.assign(**{target: class_names.astype(str)})


def make_synthetic(rows: int, features: int, target: str, random_state: int) -> pd.DataFrame:
    """Generate a deterministic classification table: `rows` x `features` numbers and three classes.

    Args:
        rows: Number of rows.
        features: Number of numeric feature columns, `f00`, `f01`...
        target: The name of the label column.
        random_state: The seed; the same seed gives the same table.
    """
    from sklearn.datasets import make_classification

    values, labels = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=max(2, features // 2),
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=random_state,
    )
    table = pd.DataFrame(values.astype("float32"), columns=[f"f{index:02d}" for index in range(features)])
    return table.assign(**{target: pd.Categorical.from_codes(labels, ["class_a", "class_b", "class_c"]).astype(str)})


READ_CHUNK = 1 << 20


def parse_table(source: bytes | Path, name: str) -> pd.DataFrame:
    """Parse a CSV or Parquet file, given as its bytes or its path, chosen by the suffix of `name`.

    A CSV must be UTF-8 text (a byte-order mark is allowed); in either kind every
    column needs a name of its own. A file is read as a stream: its checks hold
    no copy of it.

    Raises:
        DataSchemaError: One line naming the file: empty, not UTF-8 (and how to
            convert it), not a readable table, or a column name used twice.
    """
    kind = PurePosixPath(name).suffix.lower()
    with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as handle:
        if _blank(handle):
            raise DataSchemaError(f"{name}: the file is empty; it needs a header row and data rows")
        if kind == ".parquet":
            names = _parquet_column_names(handle, name)
            reader, options = pd.read_parquet, {}
        else:
            _check_utf8(handle, name)
            handle.seek(0)
            text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
            names = next(csv.reader(text), [])
            text.detach()
            reader, options = pd.read_csv, {"encoding": "utf-8-sig"}
        repeated = sorted({column for column in names if names.count(column) > 1})
        if repeated:
            positions = [str(position + 1) for position, column in enumerate(names) if column == repeated[0]]
            raise DataSchemaError(
                f"{name}: column {repeated[0]!r} appears {len(positions)} times (columns {', '.join(positions)}); "
                "give every column a name of its own"
            )
        handle.seek(0)
        try:
            return reader(handle, **options)
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataSchemaError(f"{name}: not a readable {kind[1:]} table ({reason})") from None


def _blank(handle: io.BufferedIOBase) -> bool:
    """Whether a file holds nothing but white space; it is read from the start, and left there."""
    handle.seek(0)
    blank = all(not chunk.strip() for chunk in iter(lambda: handle.read(READ_CHUNK), b""))
    handle.seek(0)
    return blank


def _check_utf8(handle: io.BufferedIOBase, name: str) -> None:
    """Check that a file is UTF-8 text, chunk by chunk.

    Raises:
        DataSchemaError: Naming the first byte that is not, and how to convert the file.
    """
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    handle.seek(0)
    offset = 0
    for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
        pending = len(decoder.getstate()[0])  # the start of a character the previous chunk ended inside
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            position = offset - pending + error.start
            handle.seek(position)
            raise _not_utf8(name, handle.read(1)[0], position) from None
        offset += len(chunk)
    unfinished = decoder.getstate()[0]  # the file ends inside a character
    if unfinished:
        raise _not_utf8(name, unfinished[0], offset - len(unfinished))


def _not_utf8(name: str, byte: int, position: int) -> DataSchemaError:
    return DataSchemaError(
        f"{name}: not UTF-8 text (byte 0x{byte:02x} at position {position}); "
        f"save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {name} > converted.csv`"
    )


def _parquet_column_names(handle: io.BufferedIOBase, name: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(handle).names)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataSchemaError(f"{name}: not a readable parquet table ({reason})") from None


def decode_png(content: bytes, name: str) -> np.ndarray:
    """Decode the bytes of a PNG file into its pixels: (height, width) for grayscale, (height, width, 3) for RGB.

    Raises:
        DataSchemaError: One line naming the file: not a readable PNG, or a mode other than L or RGB.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content), formats=["PNG"]) as image:
            image.load()
            mode, pixels = image.mode, np.asarray(image)
    except UnidentifiedImageError:
        raise DataSchemaError(f"{name}: not a readable PNG image (its bytes are not a PNG)") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataSchemaError(f"{name}: not a readable PNG image ({reason})") from None
    if mode not in IMAGE_MODES:
        raise DataSchemaError(f"{name}: image mode {mode}; save the images as 8-bit grayscale (L) or RGB")
    return pixels


def dvc_directory_md5(file_md5s: dict[str, str]) -> str:
    """Return the hash DVC records for a directory (`<md5>.dir` in its .dvc file).

    Args:
        file_md5s: The MD5 of every file in the directory, by path relative to it (with `/`).
    """
    listing = [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(file_md5s.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def image_files_by_class(folder: Path, name: str) -> dict[str, list[Path]]:
    """List the PNG files of an image folder by class: `<folder>/<class>/<file>.png`.

    Hidden files and folders (`.DS_Store`, say) are passed over.

    Args:
        folder: The image folder.
        name: The folder as the user names it, for the error messages.

    Raises:
        DataSchemaError: One line naming the file or folder: a file outside a class
            folder, a file that is not a .png, a class folder with no image, fewer
            than two classes.
    """
    by_class: dict[str, list[Path]] = {
        entry.name: [] for entry in sorted(folder.iterdir()) if entry.is_dir() and not entry.name.startswith(".")
    }
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        shown = f"{name}/{relative.as_posix()}"
        if len(relative.parts) != 2:
            raise DataSchemaError(f"{shown}: not directly in a class folder; the layout is {name}/<class>/<file>.png")
        if relative.suffix.lower() != IMAGE_SUFFIX:
            raise DataSchemaError(f"{shown}: not a .png file; a class folder holds only PNG images")
        by_class[relative.parts[0]].append(file)
    for label, files in by_class.items():
        if not files:
            raise DataSchemaError(f"{name}/{label}: class folder with no .png image; add images or remove the folder")
    if len(by_class) < 2:
        raise DataSchemaError(
            f"{name}: {len(by_class)} class folder(s); a classifier needs at least two: {name}/<class>/<file>.png"
        )
    return by_class


def load_image_folder(name: str, target: str, root: Path = PROJECT_ROOT) -> tuple[pd.DataFrame, str]:
    """Read a folder of PNG images, one folder per class, into one labelled table.

    Args:
        name: The folder, relative to `root` (`data_load.source`).
        target: The name of the label column, which holds the class folders' names.
        root: The project root.

    Returns:
        One row per image (the pixel columns of `pixel_names`, 0-255, then the
        label), and the folder's hash as DVC computes it, which `dvc add` records
        in the folder's .dvc file.

    Raises:
        FileNotFoundError: If the folder does not exist.
        DataSchemaError: One line naming the file: see `image_files_by_class` and
            `decode_png`, or an image whose size or mode differs from the first image's.
    """
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name} not found; put one folder of PNG images per class there and track it with `dvc add {name}`"
        )
    by_class = image_files_by_class(folder, name)
    file_md5s = {
        file.relative_to(folder).as_posix(): hashlib.md5(file.read_bytes()).hexdigest()
        for file in folder.rglob("*")
        if file.is_file() and any(part.startswith(".") for part in file.relative_to(folder).parts)
    }
    images: list[np.ndarray] = []
    labels: list[str] = []
    first: tuple[str, tuple[int, ...]] | None = None
    for label, files in by_class.items():
        for file in files:
            relative = file.relative_to(folder).as_posix()
            content = file.read_bytes()
            file_md5s[relative] = hashlib.md5(content).hexdigest()
            pixels = decode_png(content, f"{name}/{relative}")
            if first is None:
                first = (f"{name}/{relative}", pixels.shape)
            elif pixels.shape != first[1]:
                raise DataSchemaError(
                    f"{name}/{relative}: {describe_image(pixels.shape)}, unlike {first[0]}: "
                    f"{describe_image(first[1])}; every image must have the same size and mode"
                )
            images.append(pixels)
            labels.append(label)
    height, width = first[1][:2]
    channels = first[1][2] if len(first[1]) == 3 else 1
    values = np.stack(images).reshape(len(images), -1)
    table = pd.DataFrame(values, columns=pixel_names(height, width, channels))
    return table.assign(**{target: labels}), dvc_directory_md5(file_md5s)


def describe_image(shape: tuple[int, ...]) -> str:
    """Describe a decoded image's shape as a user sees it: `8x8 pixels, grayscale (L)`."""
    return f"{shape[1]}x{shape[0]} pixels, " + ("RGB" if len(shape) == 3 else "grayscale (L)")


def read_any(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, read as data_load reads a user's file.

    Raises:
        FileNotFoundError: The file is not there.
        ValueError: It is not a readable table (one line naming the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return parse_table(path, str(path))
