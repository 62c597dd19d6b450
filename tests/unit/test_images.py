"""Images as data: a folder of PNGs read into a table, pixels scaled and pooled, samples chosen for the grid."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from src.config import load_config
from src.ml.features import featurize
from src.ml.images import as_images, image_shape, pixel_names
from src.ml.metrics import choose_samples
from src.ml.sources import DataSchemaError, load_bundled, load_image_folder
from tests.conftest import PROJECT_ROOT

TEMPLATE = load_config(PROJECT_ROOT / "params.yaml")
FOLDER = "data/external/images"


def save_png(path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels.astype("uint8"))
    (image.convert(mode) if mode else image).save(path)


@pytest.fixture
def folder(tmp_path):
    """Two classes of 4x3 grayscale images: three `dark`, two `light`."""
    for index in range(3):
        save_png(tmp_path / FOLDER / "dark" / f"{index}.png", np.full((3, 4), 10 + index))
    for index in range(2):
        save_png(tmp_path / FOLDER / "light" / f"{index}.png", np.full((3, 4), 250 - index))
    return tmp_path


def test_pixel_names_form_the_shape_they_were_made_for():
    assert pixel_names(2, 2) == ["pixel_0_0", "pixel_0_1", "pixel_1_0", "pixel_1_1"]
    assert pixel_names(1, 1, 3) == ["pixel_0_0_r", "pixel_0_0_g", "pixel_0_0_b"]
    assert image_shape([*pixel_names(3, 5, 3), "label"]) == (3, 5, 3)
    assert image_shape(["pixel_0_0", "pixel_1_1", "label"]) is None
    assert image_shape(["sepal_length", "label"]) is None


def test_digits_columns_are_8x8_images():
    digits = load_bundled("digits", "target")
    assert image_shape(digits.columns) == (8, 8, 1)
    images = as_images(digits.head(2), (8, 8, 1))
    assert images.shape == (2, 8, 8) and images[0, 0, 2] == digits.loc[0, "pixel_0_2"]


def test_an_image_folder_becomes_one_row_per_image_labelled_by_its_folder(folder):
    table, md5 = load_image_folder(FOLDER, "label", folder)
    assert list(table.columns) == [*pixel_names(3, 4), "label"]
    assert table["label"].tolist() == ["dark", "dark", "dark", "light", "light"]
    assert table["pixel_2_3"].tolist() == [10, 11, 12, 250, 249]
    assert md5.endswith(".dir") and len(md5) == 36


def test_hidden_files_are_passed_over_but_change_the_folder_hash_as_in_dvc(folder):
    _, before = load_image_folder(FOLDER, "label", folder)
    (folder / FOLDER / "dark" / ".DS_Store").write_bytes(b"finder")
    table, after = load_image_folder(FOLDER, "label", folder)
    assert len(table) == 5
    assert after != before


def test_rgb_images_have_a_column_per_channel(tmp_path):
    for label, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        save_png(tmp_path / FOLDER / label / "a.png", np.tile(np.array(color), (2, 2, 1)))
    table, _ = load_image_folder(FOLDER, "label", tmp_path)
    assert image_shape(table.columns) == (2, 2, 3)
    assert table.loc[table["label"] == "red", ["pixel_1_1_r", "pixel_1_1_g"]].to_numpy().tolist() == [[255, 0]]


def corrupt(folder):
    path = folder / FOLDER / "light/1.png"
    path.write_bytes(path.read_bytes()[:-20])


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (corrupt, f"{FOLDER}/light/1.png: not a readable PNG image (image file is truncated)"),
        (
            lambda folder: (folder / FOLDER / "light/1.png").write_bytes(b"hello"),
            f"{FOLDER}/light/1.png: not a readable PNG image (its bytes are not a PNG)",
        ),
        (
            lambda folder: save_png(folder / FOLDER / "light/1.png", np.zeros((4, 4))),
            f"{FOLDER}/light/1.png: 4x4 pixels, grayscale (L), unlike {FOLDER}/dark/0.png: 4x3 pixels, "
            "grayscale (L); every image must have the same size and mode",
        ),
        (
            lambda folder: save_png(folder / FOLDER / "light/1.png", np.zeros((3, 4)), "RGBA"),
            f"{FOLDER}/light/1.png: image mode RGBA; save the images as 8-bit grayscale (L) or RGB",
        ),
        (
            lambda folder: (folder / FOLDER / "empty").mkdir(),
            f"{FOLDER}/empty: class folder with no .png image; add images or remove the folder",
        ),
        (
            lambda folder: (folder / FOLDER / "light/notes.txt").write_text("x"),
            f"{FOLDER}/light/notes.txt: not a .png file; a class folder holds only PNG images",
        ),
        (
            lambda folder: save_png(folder / FOLDER / "loose.png", np.zeros((3, 4))),
            f"{FOLDER}/loose.png: not directly in a class folder; the layout is {FOLDER}/<class>/<file>.png",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_it(folder, spoil, message):
    spoil(folder)
    with pytest.raises(DataSchemaError) as caught:
        load_image_folder(FOLDER, "label", folder)
    assert str(caught.value) == message


def test_one_class_is_not_enough(tmp_path):
    save_png(tmp_path / FOLDER / "only" / "a.png", np.zeros((2, 2)))
    with pytest.raises(DataSchemaError, match="1 class folder\\(s\\); a classifier needs at least two"):
        load_image_folder(FOLDER, "label", tmp_path)


def test_a_missing_folder_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{FOLDER} not found; put one folder of PNG images per class there"):
        load_image_folder(FOLDER, "label", tmp_path)


def digits_params(**values):
    return TEMPLATE.featurize.model_copy(update={"pairwise_products": False, **values})


def test_featurize_scales_pixels_to_between_0_and_1():
    digits = load_bundled("digits", "target")
    features = featurize(digits, digits_params(scale_pixels=True), "target", pixel_max=16)
    pixels = features.drop(columns="target")
    assert pixels.min().min() == 0 and pixels.max().max() == 1
    unscaled = featurize(digits, digits_params(scale_pixels=False), "target", pixel_max=16)
    assert unscaled.drop(columns="target").max().max() == 16


def test_featurize_pools_blocks_of_pixels_into_a_smaller_image():
    raw = pd.DataFrame([np.arange(16)], columns=pixel_names(4, 4)).assign(label=["x"])
    features = featurize(raw, digits_params(scale_pixels=False, pixel_pooling=2), "label")
    assert list(features.columns) == [*pixel_names(2, 2), "label"]
    assert features.iloc[0, :4].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_featurize_names_a_pooling_that_does_not_fit():
    digits = load_bundled("digits", "target")
    with pytest.raises(ValueError, match="pooling is 3, which does not divide the 8x8 images; use one of 1, 2, 4, 8"):
        featurize(digits, digits_params(pixel_pooling=3), "target", pixel_max=16)
    iris = load_bundled("iris", "target")
    with pytest.raises(ValueError, match="pixel_pooling is 2, but the data has no complete image"):
        featurize(iris, digits_params(pixel_pooling=2), "target")


def test_samples_show_misclassified_rows_first_up_to_half_the_grid():
    labels = pd.Series(list("aaaaaabbbb"))
    predictions = pd.Series(list("abbbbabbba"))
    assert choose_samples(labels, predictions, count=4) == [1, 2, 0, 5]
    assert choose_samples(labels, labels, count=3) == [0, 1, 2]
