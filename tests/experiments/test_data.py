"""The data loaders, run on small files written here in the official formats (no network)."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from experiments.classification import data


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
  """Writes ``array`` (uint8) in the IDX format: magic 0x0000_08_DD, big-endian sizes, bytes."""
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
      f">{array.ndim}I", *array.shape
  )
  payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
  path.write_bytes(gzip.compress(payload) if compress else payload)
  return path


def write_fashion_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> dict[str, Path]:
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True, exist_ok=True)
  arrays = {
      "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
      "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
      "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
  }
  return {name: write_idx(folder / name, array) for name, array in arrays.items()}


def md5(path: Path) -> str:
  return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def content_md5(path: Path) -> str:
  return hashlib.md5(gzip.decompress(path.read_bytes()), usedforsecurity=False).hexdigest()


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch):
  """Hides Debian's installed Fashion-MNIST, so these tests see only the files they write."""
  monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", ())


# ----------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST.


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_images_and_labels(tmp_path, compress):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  labels = np.array([7, 1], dtype=np.uint8)
  np.testing.assert_array_equal(
      data.read_idx(write_idx(tmp_path / "images", images, compress)), images
  )
  np.testing.assert_array_equal(
      data.read_idx(write_idx(tmp_path / "labels", labels, compress)), labels
  )


def test_read_idx_reads_big_endian_int32(tmp_path):
  values = np.array([[1, -2], [70000, 3]], dtype=">i4")
  path = tmp_path / "ints"
  path.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">2I", 2, 2)
                   + values.tobytes())
  read = data.read_idx(path)
  assert read.dtype.isnative
  np.testing.assert_array_equal(read, values.astype(np.int32))


def test_read_idx_rejects_bad_magic_and_truncated_data(tmp_path):
  bad_magic = tmp_path / "bad"
  bad_magic.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
  with pytest.raises(ValueError, match="not an IDX file"):
    data.read_idx(bad_magic)
  truncated = tmp_path / "truncated"
  truncated.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 5) + b"abc")
  with pytest.raises(ValueError, match="announces shape"):
    data.read_idx(truncated)


def test_a_truncated_gzip_names_the_file_even_without_checksums(tmp_path):
  # With verify_checksums=False nothing checks the file before decompression: a cut .gz must
  # still be reported with its name (it was a bare EOFError).
  files = write_fashion_mnist(tmp_path / "fashion_mnist")
  images = files["train-images-idx3-ubyte.gz"]
  images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
  with pytest.raises(data.CorruptFileError, match=r"train-images-idx3-ubyte\.gz is truncated"):
    data.load_fashion_mnist(tmp_path, download=False, verify_checksums=False)


def test_load_fashion_mnist_from_a_user_folder(tmp_path):
  write_fashion_mnist(tmp_path / "fashion_mnist", n_train=20, n_test=10)
  dataset = data.load_fashion_mnist(tmp_path, download=False, verify_checksums=False)
  assert dataset.train_images.shape == (20, 28, 28, 1)
  assert dataset.test_images.shape == (10, 28, 28, 1)
  assert dataset.train_images.dtype == np.float32 and dataset.train_labels.dtype == np.int32
  np.testing.assert_array_equal(dataset.train_labels, np.arange(20) % 10)
  # Standardised with training statistics.
  assert abs(float(dataset.train_images.mean())) < 1e-4
  assert abs(float(dataset.train_images.std()) - 1.0) < 1e-3
  assert dataset.num_classes == 10 and dataset.class_names[0] == "T-shirt/top"


def test_files_directly_in_data_dir_are_found_too(tmp_path):
  write_fashion_mnist(tmp_path)
  dataset = data.load_fashion_mnist(tmp_path, download=False, verify_checksums=False)
  assert dataset.train_images.shape[0] == 20


def test_checksum_mismatch_is_reported_with_the_file(tmp_path):
  write_fashion_mnist(tmp_path / "fashion_mnist")
  with pytest.raises(data.ChecksumError, match=re.escape("train-images-idx3-ubyte.gz")):
    data.load_fashion_mnist(tmp_path, download=False)


def test_download_from_a_mirror_verifies_checksums(tmp_path, monkeypatch):
  mirror = tmp_path / "mirror"
  files = write_fashion_mnist(mirror)
  monkeypatch.setattr(data, "FASHION_MNIST_FILES", {name: content_md5(path) for name, path in
                                                    files.items()})
  cache = tmp_path / "cache"
  dataset = data.load_fashion_mnist(cache, urls=(mirror.as_uri() + "/",))
  assert dataset.train_images.shape == (20, 28, 28, 1)
  for name in files:
    assert (cache / "fashion_mnist" / name).read_bytes() == files[name].read_bytes()
  assert not list((cache / "fashion_mnist").glob("*.part"))


def test_unreachable_host_gives_a_message_naming_files_and_folder(tmp_path):
  unreachable = (tmp_path / "no-such-mirror").as_uri() + "/"
  with pytest.raises(data.DatasetUnavailableError) as error:
    data.load_fashion_mnist(tmp_path / "cache", urls=(unreachable,))
  message = str(error.value)
  assert str(tmp_path / "cache" / "fashion_mnist") in message
  for name in data.FASHION_MNIST_FILES:
    assert name in message
  assert "the download failed" in message
  assert "\n" not in message
  assert "apt-get install dataset-fashion-mnist" in message and "--config.data_dir" in message


def official_checksums(monkeypatch, files: dict[str, Path]) -> None:
  """Makes ``files`` (written by write_fashion_mnist) the 'official' data: their content MD5s."""
  monkeypatch.setattr(data, "FASHION_MNIST_FILES",
                      {name: content_md5(path) for name, path in files.items()})


def test_a_recompressed_or_decompressed_copy_verifies(tmp_path, monkeypatch):
  files = write_fashion_mnist(tmp_path / "original")
  official_checksums(monkeypatch, files)
  # Debian's copies: the same IDX bytes, another gzip header (no file name, other mtime, level).
  repacked = tmp_path / "repacked" / "fashion_mnist"
  repacked.mkdir(parents=True)
  for name, path in files.items():
    payload = gzip.decompress(path.read_bytes())
    (repacked / name).write_bytes(gzip.compress(payload, compresslevel=1, mtime=12345))
    assert md5(repacked / name) != md5(path)
  reference = data.load_fashion_mnist(tmp_path / "original", download=False)
  dataset = data.load_fashion_mnist(tmp_path / "repacked", download=False)
  np.testing.assert_array_equal(dataset.train_images, reference.train_images)
  # Decompressed files, named without .gz.
  plain = tmp_path / "plain"
  plain.mkdir()
  for name, path in files.items():
    (plain / name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
  dataset = data.load_fashion_mnist(plain, download=False)
  np.testing.assert_array_equal(dataset.test_labels, reference.test_labels)


@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_a_truncated_or_altered_file_is_rejected_in_one_line(tmp_path, monkeypatch, damage):
  files = write_fashion_mnist(tmp_path / "fashion_mnist")
  official_checksums(monkeypatch, files)
  path = files["train-images-idx3-ubyte.gz"]
  if damage == "truncate":
    path.write_bytes(path.read_bytes()[:-100])
  else:
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[-1] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(payload)))
  with pytest.raises(data.ChecksumError) as error:
    data.load_fashion_mnist(tmp_path, download=False)
  message = str(error.value)
  assert str(path) in message and "\n" not in message
  assert "apt-get install dataset-fashion-mnist" in message and "--config.data_dir" in message


def test_the_system_copy_is_used_when_data_dir_lacks_the_files(tmp_path, monkeypatch):
  files = write_fashion_mnist(tmp_path / "usr-share")
  official_checksums(monkeypatch, files)
  monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", (str(tmp_path / "usr-share"),))
  dataset = data.load_fashion_mnist(tmp_path / "empty-cache", urls=())
  assert dataset.train_images.shape == (20, 28, 28, 1)
  assert not (tmp_path / "empty-cache").exists()  # Nothing downloaded or copied.
  # Files in data_dir win over the system copy.
  write_fashion_mnist(tmp_path / "mine" / "fashion_mnist", n_train=30)
  mine = data.load_fashion_mnist(tmp_path / "mine", download=False, verify_checksums=False)
  assert mine.train_images.shape == (30, 28, 28, 1)


def test_without_download_the_message_names_the_env_variable(tmp_path, monkeypatch):
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "from-env"))
  assert data.default_data_dir() == tmp_path / "from-env"
  with pytest.raises(data.DatasetUnavailableError, match=data.DATA_DIR_ENV):
    data.load_dataset("fashion_mnist", download=False)


def test_default_data_dir_is_under_the_user_cache(monkeypatch):
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
  assert data.default_data_dir() == Path.home() / ".cache" / "rmsprop_jax"


def test_unknown_dataset_name_is_rejected():
  with pytest.raises(ValueError, match="dataset must be one of"):
    data.load_dataset("mnist")


# ----------------------------------------------------------------------------------------------
# CIFAR-10.


def cifar_batch(count: int, first_label: int) -> tuple[dict[bytes, object], np.ndarray]:
  """A batch in the official layout; image i has red = i, green = 100 + i, blue = 200 + i
  everywhere except pixel (row 0, column 1) of the red plane, which is 255."""
  images = np.zeros((count, 32, 32, 3), np.uint8)
  for index in range(count):
    images[index, ..., 0] = index
    images[index, ..., 1] = 100 + index
    images[index, ..., 2] = 200 + index
    images[index, 0, 1, 0] = 255
  rows = images.transpose(0, 3, 1, 2).reshape(count, 3072)  # R plane, G plane, B plane.
  labels = [(first_label + index) % 10 for index in range(count)]
  # The official batches were pickled by Python 2: byte-string keys.
  return {b"batch_label": b"test", b"labels": labels, b"data": rows,
          b"filenames": [b"x.png"] * count}, images


def write_cifar_folder(folder: Path, count: int = 3) -> np.ndarray:
  folder.mkdir(parents=True, exist_ok=True)
  reference = None
  for index, name in enumerate((*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH)):
    batch, images = cifar_batch(count, first_label=index)
    reference = images
    with open(folder / name, "wb") as handle:
      pickle.dump(batch, handle, protocol=2)
  with open(folder / "batches.meta", "wb") as handle:
    pickle.dump({b"label_names": [name.encode() for name in data.CIFAR10_CLASSES]}, handle)
  assert reference is not None
  return reference


def write_cifar_tarball(root: Path, count: int = 3) -> Path:
  staging = root / "staging"
  write_cifar_folder(staging / data.CIFAR10_FOLDER, count)
  tarball = root / data.CIFAR10_ARCHIVE
  with tarfile.open(tarball, "w:gz") as archive:
    archive.add(staging / data.CIFAR10_FOLDER, arcname=data.CIFAR10_FOLDER)
  return tarball


def test_read_cifar10_batch_restores_nhwc_pixels(tmp_path):
  batch, images = cifar_batch(4, first_label=3)
  path = tmp_path / "batch"
  with open(path, "wb") as handle:
    pickle.dump(batch, handle, protocol=2)
  with open(path, "rb") as handle:
    read_images, labels = data.read_cifar10_batch(handle)
  np.testing.assert_array_equal(read_images, images)
  np.testing.assert_array_equal(labels, [3, 4, 5, 6])
  assert read_images[2, 0, 1, 0] == 255 and read_images[2, 0, 1, 1] == 102


def test_read_cifar10_from_tarball_and_from_folder_agree(tmp_path):
  tarball = write_cifar_tarball(tmp_path, count=3)
  from_tar = data.read_cifar10(tarball)
  from_folder = data.read_cifar10(tmp_path / "staging" / data.CIFAR10_FOLDER)
  assert from_tar[0].shape == (15, 32, 32, 3) and from_tar[2].shape == (3, 32, 32, 3)
  for left, right in zip(from_tar, from_folder, strict=True):
    np.testing.assert_array_equal(left, right)
  np.testing.assert_array_equal(from_tar[1][:6], [0, 1, 2, 1, 2, 3])


def test_load_cifar10_from_cached_tarball(tmp_path):
  (tmp_path / "cifar10").mkdir()
  tarball = write_cifar_tarball(tmp_path / "cifar10", count=2)
  assert tarball.parent == tmp_path / "cifar10"
  dataset = data.load_cifar10(tmp_path, download=False, verify_checksums=False)
  assert dataset.train_images.shape == (10, 32, 32, 3)
  assert dataset.test_labels.tolist() == [5, 6]
  assert dataset.class_names[0] == "airplane"
  means = dataset.train_images.mean(axis=(0, 1, 2))
  np.testing.assert_allclose(means, 0.0, atol=1e-4)
  with pytest.raises(data.ChecksumError, match=re.escape(data.CIFAR10_ARCHIVE)):
    data.load_cifar10(tmp_path, download=False)


def test_load_cifar10_from_extracted_folder(tmp_path):
  write_cifar_folder(tmp_path / data.CIFAR10_FOLDER, count=2)
  dataset = data.load_cifar10(tmp_path, download=False)  # No checksum for loose batches.
  assert dataset.test_images.shape == (2, 32, 32, 3)


def test_tarball_without_batches_is_rejected(tmp_path):
  tarball = tmp_path / "wrong.tar.gz"
  (tmp_path / "readme.txt").write_text("hello")
  with tarfile.open(tarball, "w:gz") as archive:
    archive.add(tmp_path / "readme.txt", arcname="readme.txt")
  with pytest.raises(ValueError, match="data_batch_1"):
    data.read_cifar10(tarball)


def test_missing_cifar10_names_the_tarball(tmp_path):
  with pytest.raises(data.DatasetUnavailableError, match=re.escape(data.CIFAR10_ARCHIVE)):
    data.load_cifar10(tmp_path, download=False)


# ----------------------------------------------------------------------------------------------
# digits.


def test_digits_split_is_fixed_stratified_and_standardised():
  first, second = data.load_digits(), data.load_digits()
  np.testing.assert_array_equal(first.test_labels, second.test_labels)
  np.testing.assert_array_equal(first.train_images, second.train_images)
  assert first.train_images.shape == (1437, 8, 8, 1)
  assert first.test_images.shape == (360, 8, 8, 1)
  counts = np.bincount(first.test_labels, minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37  # 20% of 174-183 images per class.
  assert abs(float(first.train_images.mean())) < 1e-5
  assert abs(float(first.train_images.std()) - 1.0) < 1e-4
  assert first.image_shape == (8, 8, 1)


def test_digits_rejects_bad_test_fraction():
  with pytest.raises(ValueError, match="test_fraction"):
    data.load_digits(test_fraction=1.5)
