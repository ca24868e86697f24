"""Dataset readers: every layout round-trips, --layout auto picks it, malformed layouts stop with
one line naming the first offending path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qc_stream.datasets import defect_word, detect_layout, load_image, load_mask, read_dataset
from qc_stream.datasets.readers import LoadedSamples
from qc_stream.errors import InputError
from tests.support.dataset_layouts import CATEGORIES, FOLDER_NAMES, write_layout

LAYOUT_DIRS = {"mvtec": "mvtec_ad", "mpdd": "mpdd", "visa": "visa", "btad": "btad", "folder": "own"}


def _expected_words(layout: str) -> list[str]:
    if layout == "btad":
        return ["defect"]
    return sorted(defect_word(FOLDER_NAMES[t]) for ts in CATEGORIES.values() for t in ts)


@pytest.mark.parametrize("layout", list(LAYOUT_DIRS))
def test_layout_round_trips_and_is_detected(tmp_path, layout):
    root = write_layout(tmp_path / LAYOUT_DIRS[layout], layout)
    assert detect_layout(root) == layout
    data = read_dataset(root)
    assert data.layout == layout
    assert len(data.products) == 2
    test = data.select(split="test")
    # 2 good + 2 types x 2 defective per category
    assert len(test.items) == 2 * (2 + 4)
    assert sum(i.label for i in test.items) == 8
    assert data.words == _expected_words(layout)
    samples = LoadedSamples(test.items)
    for k in range(len(samples)):
        s = samples[k]
        assert s["image"].dtype == np.uint8 and s["image"].shape == (64, 64, 3)
        assert s["mask"].shape == (64, 64)
        assert bool(s["mask"].any()) == (s["defect_type"] is not None)
    # the hash names the file list: stable, and changes with the data
    assert data.file_list_hash() == read_dataset(root).file_list_hash()
    assert data.info()["file_list_sha256"] != data.select([data.products[0]]).file_list_hash()


def test_defect_words_from_folder_names():
    assert defect_word("broken_large") == "broken large"
    assert defect_word("Faulty-Imprint") == "faulty imprint"


def test_folder_masks_beside_the_images_are_read(tmp_path):
    """The ``retrain --examples`` spelling: <product>/<defect>/masks/<stem>.png."""
    root = write_layout(tmp_path / "own", "folder")
    for mask in sorted((root / "carpet" / "masks" / "hole").iterdir()):
        dest = root / "carpet" / "hole" / "masks" / mask.name
        dest.parent.mkdir(exist_ok=True)
        mask.rename(dest)
    data = read_dataset(root, "folder")
    holes = [i for i in data.items if i.defect_type == "hole"]
    assert holes and all(
        i.mask_path is not None and i.mask_path.parent.name == "masks" for i in holes
    )


def _first_defect(root, pattern):
    return sorted(root.glob(pattern))[0]


def test_missing_mask_names_it(tmp_path):
    root = write_layout(tmp_path / "mvtec_ad", "mvtec")
    gone = _first_defect(root, "carpet/ground_truth/hole/*.png")
    gone.unlink()
    with pytest.raises(InputError) as e:
        read_dataset(root)
    assert str(gone) in str(e.value) and "missing mask" in str(e.value)


def test_mask_of_another_size_names_it(tmp_path):
    root = write_layout(tmp_path / "btad", "btad")
    bad = _first_defect(root, "01/ground_truth/ko/*.png")
    Image.new("L", (32, 32)).save(bad)
    with pytest.raises(InputError, match=str(bad).replace("\\", "\\\\") + ": mask is 32x32"):
        read_dataset(root)


def test_empty_category_names_it(tmp_path):
    root = write_layout(tmp_path / "own", "folder")
    (root / "empty_product" / "good").mkdir(parents=True)
    with pytest.raises(InputError, match="empty_product: empty product"):
        read_dataset(root)


def test_unreadable_file_names_it(tmp_path):
    root = write_layout(tmp_path / "visa", "visa")
    bad = _first_defect(root, "pill/Data/Images/Anomaly/*.png")
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        read_dataset(root)
    try:
        read_dataset(root)
    except InputError as e:
        assert str(e).startswith(str(bad)) and "\n" not in str(e)


def test_unknown_layout_and_missing_root(tmp_path):
    (tmp_path / "x" / "loose").mkdir(parents=True)
    with pytest.raises(InputError, match="layout not recognised"):
        read_dataset(tmp_path / "x")
    with pytest.raises(InputError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown layout"):
        read_dataset(write_layout(tmp_path / "own", "folder"), "coco")


def test_wide_frames_keep_their_size(tmp_path):
    root = write_layout(tmp_path / "own", "folder", wide=True)
    item = next(i for i in read_dataset(root).items if i.defect_type)
    image = load_image(item)
    assert image.shape == (64, 128, 3)
    assert load_mask(item, image.shape[:2]).shape == (64, 128)
