"""The file layer of the data sets: where their files are looked up, downloads, MD5 checks.

A data set's files are looked up in a cache directory (the ``data_dir`` argument, else
``$RMSPROP_JAX_DATA_DIR``, else ``~/.cache/rmsprop_jax``) and in read-only extra folders; missing
ones are downloaded atomically with a progress bar; every file's MD5 (of the file, or of its
decompressed content) is checked against the published one. A missing file raises
:class:`DatasetUnavailableError`, a bad one :class:`ChecksumError`, each one line naming the file
and the ways out. The decoders and loaders are :mod:`experiments.classification.data`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from experiments.common.errors import UserError

DATA_DIR_ENV = "RMSPROP_JAX_DATA_DIR"


class DatasetUnavailableError(UserError, FileNotFoundError):
  """The files of a data set are neither in the cache directory nor downloadable."""


class ChecksumError(UserError, ValueError):
  """A data file's MD5 differs from the published one: corrupt, truncated or not the original."""


def default_data_dir() -> Path:
  """``$RMSPROP_JAX_DATA_DIR`` when set and non-empty, else ``~/.cache/rmsprop_jax``."""
  from_env = os.environ.get(DATA_DIR_ENV, "")
  return Path(from_env).expanduser() if from_env else Path.home() / ".cache" / "rmsprop_jax"


def md5sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
  """Hex MD5 of a file, read in chunks."""
  digest = hashlib.md5(usedforsecurity=False)
  with open(path, "rb") as handle:
    while chunk := handle.read(chunk_size):
      digest.update(chunk)
  return digest.hexdigest()


def download_file(
    url: str, destination: Path, *, progress: bool = True, timeout: float = 30.0
) -> None:
  """Streams ``url`` to ``destination`` with a tqdm progress bar, atomically.

  The bytes go to ``destination.part`` first and are renamed only when complete, so an
  interrupted download never leaves a truncated file under the final name.
  """
  from tqdm.auto import tqdm

  partial = destination.with_name(destination.name + ".part")
  with urllib.request.urlopen(url, timeout=timeout) as response:
    # Only now: a failed download leaves no empty folder behind.
    destination.parent.mkdir(parents=True, exist_ok=True)
    total = int(response.headers.get("Content-Length") or 0) or None
    with (
        open(partial, "wb") as out,
        tqdm(
            total=total, unit="B", unit_scale=True, desc=destination.name, disable=not progress
        ) as bar,
    ):
      while chunk := response.read(1 << 16):
        out.write(chunk)
        bar.update(len(chunk))
  partial.replace(destination)


def content_md5sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
  """Hex MD5 of a file's content: of the decompressed bytes for a gzip file, else of the file.

  A truncated gzip file raises :class:`ChecksumError`.
  """
  with open(path, "rb") as raw:
    compressed = raw.read(2) == b"\x1f\x8b"
  if not compressed:
    return md5sum(path, chunk_size)
  digest = hashlib.md5(usedforsecurity=False)
  try:
    with gzip.open(path, "rb") as handle:
      while chunk := handle.read(chunk_size):
        digest.update(chunk)
  except (EOFError, OSError, gzip.BadGzipFile) as error:
    raise ChecksumError(f"not a complete gzip file ({error})") from error
  return digest.hexdigest()


def _candidates(filename: str) -> tuple[str, ...]:
  """The names a file may have on disk: as published, and decompressed (``.gz`` removed)."""
  if filename.endswith(".gz"):
    return filename, filename[: -len(".gz")]
  return (filename,)


def _ways_out(filename: str, target: Path, urls: Sequence[str], install_hint: str | None) -> str:
  """The fixes a message offers for a missing or bad file."""
  ways = [install_hint] if install_hint else []
  if urls:
    ways.append(f"download {urls[0]}{filename} into {target}/")
  ways.append(f"or point --config.data_dir (or ${DATA_DIR_ENV}) at a folder holding it")
  return "; ".join(ways)


def resolve_files(
    dataset: str,
    checksums: dict[str, str],
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    verify_checksums: bool,
    urls: Sequence[str],
    *,
    extra_dirs: Sequence[str | os.PathLike[str]] = (),
    content_checksums: bool = False,
    install_hint: str | None = None,
) -> dict[str, Path]:
  """Finds (or downloads) each named file of a data set and verifies its MD5.

  Folders searched, in order: ``<root>/<dataset>/``, ``<root>/``, then ``extra_dirs``; in
  each, the published name and, with ``content_checksums``, the decompressed name. With
  ``content_checksums`` the MD5 is that of the decompressed content (:func:`content_md5sum`).

  Args:
    dataset: the data set's name, the sub-folder of the cache directory.
    checksums: published file name to its MD5.
    data_dir: the cache directory; ``None`` or ``""``: :func:`default_data_dir`.
    download: fetch missing files from ``urls``.
    verify_checksums: check every file's MD5.
    urls: base URLs tried in order.
    extra_dirs: further folders searched (read only).
    content_checksums: the MD5s are those of the decompressed content.
    install_hint: a first way out offered for a missing or bad file (a system package).

  Returns:
    Published file name to the path found.
  """
  root = Path(data_dir).expanduser() if data_dir else default_data_dir()
  target = root / dataset
  folders = [target, root, *(Path(folder) for folder in extra_dirs)]
  paths: dict[str, Path] = {}
  missing: list[str] = []
  for filename in checksums:
    names = _candidates(filename) if content_checksums else (filename,)
    found = next((folder / name for folder in folders for name in names
                  if (folder / name).is_file()), None)
    if found is None:
      missing.append(filename)
    else:
      paths[filename] = found
  errors: list[str] = []
  if missing and download:
    for filename in list(missing):
      for base in urls:
        try:
          download_file(base + filename, target / filename)
        except (urllib.error.URLError, OSError, ValueError) as error:
          errors.append(f"{base + filename}: {error}")
          continue
        paths[filename] = target / filename
        missing.remove(filename)
        break
  if missing:
    searched = ", ".join(str(folder) for folder in folders)
    if not download:
      reason = "download=False"
    elif errors:
      reason = f"the download failed ({errors[-1]})"
    else:
      reason = "no download URL"
    first = missing[0]
    others = f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if missing[1:] else ""
    raise DatasetUnavailableError(
        f"{dataset}: {first}{others} not found in {searched} and {reason}. Fix: "
        + _ways_out(first, target, urls, install_hint) + "."
    )
  if verify_checksums:
    for filename, path in paths.items():
      what = "decompressed content" if content_checksums else "file"
      try:
        actual = content_md5sum(path) if content_checksums else md5sum(path)
        problem = f"MD5 of its {what} is {actual}, not the official {checksums[filename]}"
      except ChecksumError as error:
        actual, problem = "", f"unreadable: {error}"
      if actual != checksums[filename]:
        raise ChecksumError(
            f"{path}: {problem} (the file is truncated, altered or not {filename}). Fix: "
            "delete it and "
            + _ways_out(filename, target, urls, install_hint)
            + "; or set --config.verify_checksums=False to use it anyway."
        )
  return paths
