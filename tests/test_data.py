import gzip
import struct

import numpy as np
import pytest

from ood_utils.course import data
from ood_utils.course.profiles import FMNIST_KNOWN, FMNIST_UNKNOWN, get_profile


def test_fashion_mnist_shapes_and_class_balance():
    images, labels = data.load_fashion_mnist("test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    # The test split of Fashion-MNIST has exactly 1,000 images per class.
    assert np.bincount(labels).tolist() == [1000] * 10


def test_feature_splits_follow_the_profile():
    p = get_profile("miniclip")
    for split, n in p.counts.items():
        ds = data.feature_dataset(p, split)
        assert len(ds) == n
    id_test = data.feature_dataset(p, "id_test")
    assert sorted(set(id_test.labels.tolist())) == list(range(len(FMNIST_KNOWN)))
    ood = data.feature_dataset(p, "ood_test")
    assert sorted(set(ood.labels.tolist())) == sorted(FMNIST_UNKNOWN)


def test_remap_labels_is_order_of_classes():
    labels = np.array([9, 0, 5, 9, 2])
    assert data.remap_labels(labels, FMNIST_KNOWN).tolist() == [5, 0, 4, 5, 2]


def test_images_are_padded_to_32_rgb():
    ds = data.feature_dataset("miniclip", "id_test")
    img = ds.image(0)
    assert img.size == (32, 32) and img.mode == "RGB"
    arr = np.asarray(img)[:, :, 0]
    assert (arr[:2] == 0).all() and (arr[:, :2] == 0).all()  # the two-pixel zero border
    assert (arr[2:30, 2:30] == ds.images[0]).all()


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_truncated_idx_file_is_rejected(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "x.gz", arr)
    with gzip.open(tmp_path / "x.gz", "rb") as fh:
        raw = fh.read()
    with gzip.open(tmp_path / "y.gz", "wb") as fh:
        fh.write(raw[:-10])
    assert data._read_idx(tmp_path / "x.gz", 3).shape == (3, 28, 28)
    with pytest.raises(ValueError, match="truncated"):
        data._read_idx(tmp_path / "y.gz", 3)


def test_missing_dataset_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("OOD_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataMissingError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train")


def test_unknown_split_and_profile_are_clear_errors():
    with pytest.raises(ValueError, match="split must be"):
        data.load_fashion_mnist("validation")
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("imagenet")
