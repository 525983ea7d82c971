"""Data sets for the optimizer comparison: digits, Fashion-MNIST and CIFAR-10.

Every loader returns a :class:`Dataset` of NumPy arrays: images in NHWC layout as float32,
standardised per channel with the *training* split's mean and standard deviation (so the
inputs have zero mean and unit variance, and no test statistic leaks into training), and
labels as int32 class indices.

* **digits** — the 8x8 handwritten digits that ship with scikit-learn (1,797 images, 10
  classes, pixel values 0-16). No download. The train/test split is stratified by class and
  fixed by a seed, so every run of every optimizer sees the same 1,437 training and 360 test
  images.
* **Fashion-MNIST** — the four official IDX ``.gz`` files (Xiao, Rasul & Vollgraf, 2017),
  60,000 training and 10,000 test images of 28x28x1.
* **CIFAR-10** — the official "python version" tarball (Krizhevsky, 2009), five pickled
  training batches and one test batch of 32x32x3 images.

The two downloaded sets are looked up in a cache directory: the ``data_dir`` argument when
given, else the environment variable ``RMSPROP_JAX_DATA_DIR``, else
``~/.cache/rmsprop_jax``. Files found there (in ``<data_dir>/<dataset>/`` or directly in
``<data_dir>/``) are used as they are; missing files are downloaded from the official hosts
with a progress bar. Fashion-MNIST is also looked up in Debian's install location
(``apt-get install dataset-fashion-mnist`` puts the four files in
``/usr/share/datasets/fashion-mnist/``) before any download.

Checksums: a Fashion-MNIST file is checked by the MD5 of its *decompressed* content, so the
official ``.gz`` downloads, Debian's copies (whose gzip headers differ: no stored file name)
and any other re-compressed or uncompressed copy verify, while a truncated or altered file does
not. The CIFAR-10 tarball is checked against its published MD5 (the value torchvision checks).
Without the files (and without network) the loader raises :class:`DatasetUnavailableError`,
a bad file :class:`ChecksumError`; either message is one line naming the file and the ways
out (the Debian package, the download, ``--config.data_dir``). Finding, downloading and
checking the files is :mod:`experiments.classification.downloads`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from experiments.classification import downloads
from experiments.classification.downloads import (
    DATA_DIR_ENV,
    ChecksumError,
    DatasetUnavailableError,
    content_md5sum,
    default_data_dir,
    download_file,
    md5sum,
)
from experiments.common.errors import UserError

DATASETS = ("digits", "fashion_mnist", "cifar10")
# The data sets read from files (a cache folder, MD5 checks); digits ships with scikit-learn.
FILE_DATASETS = ("fashion_mnist", "cifar10")

# Official hosts, tried in order. The Fashion-MNIST files are mirrored in the authors' GitHub
# repository; the S3 site is the one the authors' README links first.
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# MD5 of each official file's decompressed content (the IDX bytes). The MD5s of the official
# ``.gz`` downloads (published with the data set, checked by torchvision) cover the gzip header
# too, which holds the file name and a time stamp, so a re-compressed copy of the same bytes
# (Debian's package) fails them.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
# The published MD5s of the official .gz files themselves, for reference (and the messages).
FASHION_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# Where system packages install the files: Debian's ``dataset-fashion-mnist``.
FASHION_MNIST_SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FILES = {CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

DIGITS_CLASSES = tuple(str(digit) for digit in range(10))

# IDX type codes (LeCun's MNIST page): third byte of the magic number -> big-endian dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class CorruptFileError(UserError, ValueError):
  """A data file that cannot be decoded: truncated, damaged or not in the expected format."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A labelled image classification data set, split into train and test.

  Attributes:
    name: the data set's name (``digits``, ``fashion_mnist`` or ``cifar10``).
    train_images: float32 array of shape ``(n_train, height, width, channels)``.
    train_labels: int32 array of shape ``(n_train,)`` with values in ``[0, num_classes)``.
    test_images: float32 array of shape ``(n_test, height, width, channels)``.
    test_labels: int32 array of shape ``(n_test,)``.
    class_names: one readable name per class index.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    height, width, channels = self.train_images.shape[1:]
    return int(height), int(width), int(channels)

  def __post_init__(self) -> None:
    for split in ("train", "test"):
      images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
      if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{split}_images must be (N, H, W, C) and {split}_labels (N,); got "
            f"{images.shape} and {labels.shape}."
        )
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise ValueError(
          f"train and test images differ in shape: {self.train_images.shape[1:]} vs "
          f"{self.test_images.shape[1:]}."
      )


# ----------------------------------------------------------------------------------------------
# Entry point.


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    verify_checksums: bool = True,
) -> Dataset:
  """Loads one of :data:`DATASETS` by name.

  Args:
    name: ``"digits"``, ``"fashion_mnist"`` or ``"cifar10"``.
    data_dir: cache folder for the downloaded sets; empty or ``None`` means
      ``$RMSPROP_JAX_DATA_DIR`` or ``~/.cache/rmsprop_jax``. Ignored for digits.
    download: fetch missing files from the official hosts.
    verify_checksums: compare every file with its published MD5.

  Returns:
    The :class:`Dataset`.
  """
  if name == "digits":
    return load_digits()
  if name == "fashion_mnist":
    return load_fashion_mnist(
        data_dir=data_dir, download=download, verify_checksums=verify_checksums
    )
  if name == "cifar10":
    return load_cifar10(data_dir=data_dir, download=download, verify_checksums=verify_checksums)
  raise ValueError(f"dataset must be one of {DATASETS}; got {name!r}.")


def load_config_dataset(config: Any) -> Dataset:
  """The data set a config names: ``config.dataset`` and, for the data sets with files
  (:data:`FILE_DATASETS`), ``config.data_dir`` and ``config.verify_checksums``."""
  if config.dataset not in FILE_DATASETS:
    return load_dataset(config.dataset)
  return load_dataset(
      config.dataset,
      data_dir=config.data_dir or None,
      verify_checksums=bool(config.verify_checksums),
  )


def standardize(
    train_images: np.ndarray, test_images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel standardisation with the training split's statistics, in float32.

  Args:
    train_images: ``(N, H, W, C)`` array of any real dtype.
    test_images: ``(M, H, W, C)`` array.

  Returns:
    Both arrays as float32, shifted by the training mean and divided by the training standard
    deviation of each channel (a channel that is constant in training is only shifted).
  """
  train = np.asarray(train_images, dtype=np.float32)
  test = np.asarray(test_images, dtype=np.float32)
  # Accumulate in float64: 50,000 CIFAR images summed in float32 lose digits.
  mean = train.mean(axis=(0, 1, 2), dtype=np.float64)
  std = train.std(axis=(0, 1, 2), dtype=np.float64)
  std = np.where(std > 0, std, 1.0)
  mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
  return (train - mean32) / std32, (test - mean32) / std32


# ----------------------------------------------------------------------------------------------
# digits.


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 digits with a stratified, seeded train/test split.

  Args:
    test_fraction: share of the 1,797 images held out for testing, in ``(0, 1)``.
    split_seed: seed of the split; the default gives the split every result here uses.

  Returns:
    A :class:`Dataset` of ``(N, 8, 8, 1)`` standardised images.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
  from sklearn.datasets import load_digits as sklearn_load_digits
  from sklearn.model_selection import train_test_split

  bunch = sklearn_load_digits()
  images = bunch.images.astype(np.float32)[..., None] / 16.0  # pixel values are 0..16.
  labels = bunch.target.astype(np.int32)
  train_images, test_images, train_labels, test_labels = train_test_split(
      images, labels, test_size=test_fraction, stratify=labels, random_state=split_seed
  )
  train_images, test_images = standardize(train_images, test_images)
  return Dataset(
      "digits", train_images, train_labels, test_images, test_labels, DIGITS_CLASSES
  )


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST.


def read_idx(source: str | os.PathLike[str] | IO[bytes]) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzip-compressed or not.

  The format is a big-endian magic number ``0x0000 TT DD`` (TT the element type, DD the number
  of dimensions), DD big-endian uint32 sizes, then the elements in C order.

  Args:
    source: a path (``.gz`` or raw; gzip is recognised by its signature) or a binary file.

  Returns:
    The array, in native byte order.
  """
  if isinstance(source, (str, os.PathLike)):
    with open(source, "rb") as handle:
      raw = handle.read()
  else:
    raw = source.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
      raise CorruptFileError(
          f"{_describe(source)} is truncated or damaged ({error}); replace it (download it "
          f"again, or apt-get install --reinstall dataset-fashion-mnist)."
      ) from error
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise CorruptFileError(
        f"{_describe(source)} is not an IDX file: its magic number is {raw[:4]!r}."
    )
  type_code, ndim = raw[2], raw[3]
  if type_code not in _IDX_DTYPES:
    raise CorruptFileError(f"{_describe(source)}: unknown IDX element type 0x{type_code:02x}.")
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise CorruptFileError(f"{_describe(source)}: truncated IDX header.")
  shape = struct.unpack(f">{ndim}I", raw[4:header_size])
  dtype = _IDX_DTYPES[type_code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - header_size != expected:
    raise CorruptFileError(
        f"{_describe(source)}: IDX header announces shape {shape} ({expected} bytes of data) "
        f"but the file holds {len(raw) - header_size}."
    )
  array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header_size)
  return array.reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify_checksums: bool = True,
    urls: Sequence[str] = FASHION_MNIST_URLS,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
) -> Dataset:
  """Fashion-MNIST from the four official IDX files (``.gz`` or decompressed).

  Each file is looked up in ``data_dir/fashion_mnist/``, ``data_dir/``, then ``system_dirs``
  (Debian's package), and downloaded into ``data_dir/fashion_mnist/`` only when absent from
  all of them.

  Args:
    data_dir: folder holding the files (directly or in ``fashion_mnist/``) and where missing
      ones are downloaded to; ``None`` or ``""`` means :func:`default_data_dir`.
    download: fetch missing files from ``urls``.
    verify_checksums: check the MD5 of each file's decompressed content.
    urls: base URLs tried in order.
    system_dirs: further folders searched after ``data_dir``; ``None`` means
      :data:`FASHION_MNIST_SYSTEM_DIRS`.

  Returns:
    A :class:`Dataset` of ``(N, 28, 28, 1)`` standardised images.
  """
  paths = downloads.resolve_files(
      "fashion_mnist", FASHION_MNIST_FILES, data_dir, download, verify_checksums, urls,
      extra_dirs=FASHION_MNIST_SYSTEM_DIRS if system_dirs is None else system_dirs,
      content_checksums=True,
      install_hint=f"install Debian's copy (apt-get install {FASHION_MNIST_DEBIAN_PACKAGE})",
  )
  train_images = read_idx(paths["train-images-idx3-ubyte.gz"])
  train_labels = read_idx(paths["train-labels-idx1-ubyte.gz"])
  test_images = read_idx(paths["t10k-images-idx3-ubyte.gz"])
  test_labels = read_idx(paths["t10k-labels-idx1-ubyte.gz"])
  for split, images in (("train", train_images), ("test", test_images)):
    if images.ndim != 3:
      raise ValueError(f"Fashion-MNIST {split} images must be (N, 28, 28); got {images.shape}.")
  train, test = standardize(train_images[..., None] / 255.0, test_images[..., None] / 255.0)
  return Dataset(
      "fashion_mnist",
      train,
      train_labels.astype(np.int32),
      test,
      test_labels.astype(np.int32),
      FASHION_MNIST_CLASSES,
  )


# ----------------------------------------------------------------------------------------------
# CIFAR-10.


def read_cifar10_batch(handle: IO[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Reads one pickled CIFAR-10 batch of the python version.

  Each batch is a pickled dict with ``data`` — a ``(N, 3072)`` uint8 array whose rows hold the
  red, green and blue 32x32 planes one after another — and ``labels``, a list of N ints.

  Args:
    handle: a binary file positioned at the pickle.

  Returns:
    ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` and int32 ``(N,)``.
  """
  # The batches were pickled by Python 2: byte-string keys, hence encoding="bytes".
  batch = pickle.load(handle, encoding="bytes")
  batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
  if "data" not in batch or "labels" not in batch:
    raise ValueError(f"not a CIFAR-10 batch: its keys are {sorted(batch)}.")
  data = np.asarray(batch["data"], dtype=np.uint8)
  labels = np.asarray(batch["labels"], dtype=np.int32)
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
    raise ValueError(
        f"CIFAR-10 batch has data of shape {data.shape} and {labels.shape[0]} labels; "
        "expected (N, 3072) and N."
    )
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def read_cifar10(path: str | os.PathLike[str]) -> tuple[np.ndarray, ...]:
  """Reads CIFAR-10 from the official tarball or from its extracted folder.

  Args:
    path: ``cifar-10-python.tar.gz`` (read in place, nothing is extracted) or a folder holding
      ``data_batch_1`` … ``data_batch_5`` and ``test_batch``.

  Returns:
    ``(train_images, train_labels, test_images, test_labels)``: uint8 NHWC images, int32 labels.
  """
  path = Path(path)
  opener: Callable[[str], Any]
  if path.is_dir():
    def opener(member: str) -> Any:
      return open(path / member, "rb")
    archive = None
  else:
    archive = tarfile.open(path, "r:*")
    members = {Path(info.name).name: info for info in archive.getmembers() if info.isfile()}

    def opener(member: str) -> Any:
      if member not in members:
        raise ValueError(f"{path} holds no {member}; is it the CIFAR-10 python tarball?")
      extracted = archive.extractfile(members[member])
      assert extracted is not None  # members holds regular files only.
      return extracted
  try:
    parts = []
    for member in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH):
      with opener(member) as handle:
        parts.append(read_cifar10_batch(handle))
  finally:
    if archive is not None:
      archive.close()
  train_images = np.concatenate([images for images, _ in parts[:-1]])
  train_labels = np.concatenate([labels for _, labels in parts[:-1]])
  test_images, test_labels = parts[-1]
  return train_images, train_labels, test_images, test_labels


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify_checksums: bool = True,
    urls: Sequence[str] = CIFAR10_URLS,
) -> Dataset:
  """CIFAR-10 from the official python tarball (or its extracted ``cifar-10-batches-py``).

  Args:
    data_dir: folder holding the tarball or the extracted folder (directly or in
      ``cifar10/``), where a missing tarball is downloaded to; ``None`` or ``""`` means
      :func:`default_data_dir`.
    download: fetch the tarball when neither it nor the extracted folder is found.
    verify_checksums: check the tarball against its published MD5.
    urls: base URLs tried in order.

  Returns:
    A :class:`Dataset` of ``(N, 32, 32, 3)`` standardised images.
  """
  root = Path(data_dir).expanduser() if data_dir else default_data_dir()
  extracted = [
      folder / CIFAR10_FOLDER
      for folder in (root / "cifar10", root)
      if (folder / CIFAR10_FOLDER / CIFAR10_TEST_BATCH).is_file()
  ]
  if extracted:
    source = extracted[0]
  else:
    source = downloads.resolve_files(
        "cifar10", CIFAR10_FILES, data_dir, download, verify_checksums, urls
    )[CIFAR10_ARCHIVE]
  train_images, train_labels, test_images, test_labels = read_cifar10(source)
  train, test = standardize(train_images / 255.0, test_images / 255.0)
  return Dataset("cifar10", train, train_labels, test, test_labels, CIFAR10_CLASSES)


def _describe(source: Any) -> str:
  if isinstance(source, (str, os.PathLike)):
    return str(source)
  return getattr(source, "name", None) or type(source).__name__


__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "FILE_DATASETS",
    "ChecksumError",
    "CorruptFileError",
    "Dataset",
    "DatasetUnavailableError",
    "content_md5sum",
    "default_data_dir",
    "download_file",
    "load_cifar10",
    "load_config_dataset",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "md5sum",
    "read_cifar10",
    "read_cifar10_batch",
    "read_idx",
    "standardize",
]
