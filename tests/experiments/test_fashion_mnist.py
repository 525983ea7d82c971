"""Fashion-MNIST on the real data (Debian's dataset-fashion-mnist or the official files), and the
one-line messages a command gives for a missing or bad data set.

The real-data tests skip, saying why, where the four files are neither installed by Debian's
package nor in the data cache (``$RMSPROP_JAX_DATA_DIR`` or ``~/.cache/rmsprop_jax``).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.classification import data
from experiments.common import optimizers as optimizer_lib
from tests.conftest import REPO


def _real_files_present() -> bool:
  folders = [Path(folder) for folder in data.FASHION_MNIST_SYSTEM_DIRS]
  root = data.default_data_dir()
  folders += [root / "fashion_mnist", root]
  return all(
      any((folder / name).is_file() or (folder / name.removesuffix(".gz")).is_file()
          for folder in folders)
      for name in data.FASHION_MNIST_FILES
  )


real_data = pytest.mark.skipif(
    not _real_files_present(),
    reason="real Fashion-MNIST not installed: apt-get install dataset-fashion-mnist (Debian), "
    f"or put the four official files into {data.default_data_dir() / 'fashion_mnist'}",
)


@pytest.fixture(scope="module")
def fashion_mnist() -> data.Dataset:
  return data.load_fashion_mnist(download=False)  # Checksums verified.


@real_data
def test_real_fashion_mnist_has_the_official_shapes_and_classes(fashion_mnist):
  assert fashion_mnist.train_images.shape == (60_000, 28, 28, 1)
  assert fashion_mnist.test_images.shape == (10_000, 28, 28, 1)
  assert fashion_mnist.train_images.dtype == np.float32
  assert fashion_mnist.train_labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(fashion_mnist.train_labels), [6_000] * 10)
  np.testing.assert_array_equal(np.bincount(fashion_mnist.test_labels), [1_000] * 10)
  assert abs(float(fashion_mnist.train_images.mean())) < 1e-3
  assert abs(float(fashion_mnist.train_images.std()) - 1.0) < 1e-3
  assert fashion_mnist.class_names[9] == "Ankle boot"


@real_data
def test_debian_copies_verify_by_content_though_their_gzip_bytes_differ():
  folder = Path(data.FASHION_MNIST_SYSTEM_DIRS[0])
  if not (folder / "train-labels-idx1-ubyte.gz").is_file():
    pytest.skip(f"Debian's copy is not in {folder} (the files found are elsewhere)")
  for name, content_md5 in data.FASHION_MNIST_FILES.items():
    path = folder / name
    assert data.content_md5sum(path) == content_md5
    assert data.md5sum(path) != data.FASHION_MNIST_GZ_MD5[name]  # Why .gz MD5s cannot work.


@real_data
def test_one_epoch_of_the_mlp_passes_80_percent(fashion_mnist, tmp_path):
  from configs.classification import fashion_mnist_mlp
  from experiments.classification import train

  config = fashion_mnist_mlp.get_config()
  config.num_epochs = 1
  config.num_seeds = 1
  config.optimizer = "rmsprop"
  result = train.train_and_evaluate(config, tmp_path, dataset=fashion_mnist)
  assert result.test_accuracy[0, -1] > 0.80


def _run_compare(tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "experiments.classification.compare", "--config",
       "configs/classification/fashion_mnist_mlp.py",
       f"--config.data_dir={data_dir}", f"--workdir={tmp_path / 'out'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
  )


def test_a_bad_file_ends_the_command_with_one_line(tmp_path):
  folder = tmp_path / "fashion_mnist"
  folder.mkdir()
  for name in data.FASHION_MNIST_FILES:  # Found first (data_dir), so checked first.
    (folder / name).write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01x"))
  completed = _run_compare(tmp_path, tmp_path)
  assert completed.returncode == 2
  lines = completed.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
  assert "train-images-idx3-ubyte.gz" in lines[0]
  assert "apt-get install dataset-fashion-mnist" in lines[0]
  assert "--config.data_dir" in lines[0]
  assert "Traceback" not in completed.stderr


def test_the_report_tables_quote_the_runs_and_the_plots_are_pngs(tmp_path):
  """classification.fashion_report on a small comparison (digits MLP stands in for the data)."""
  from experiments.classification import compare, fashion_report
  from tests.experiments.test_experiments import PNG_SIGNATURE, fast_config

  config = fast_config(num_epochs=2, vmap_seeds=True, epoch_loop="scan", target_accuracy=0.5)
  summary = compare.run_comparison(config, tmp_path / "runs" / "fashion_mnist_mlp",
                                   progress=False)
  fashion_report.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
  tables = (tmp_path / "out" / "fashion_tables.md").read_text()
  for name, result in summary["optimizers"].items():
    assert (f"| {fashion_report.LABELS[name]} |" in tables
            and f"{result['test_accuracy']:.4f} ± {result['test_accuracy_std']:.4f}" in tables)
  # Epochs to a threshold: the first epoch at or above it, per seed.
  assert fashion_report.epochs_to(np.array([[0.8, 0.9, 0.95], [0.9, 0.9, 0.9]]), 0.9) == [2, 1]
  assert fashion_report.epochs_to(np.array([[0.8, 0.85]]), 0.9) == [None]
  for png in ("fashion_learning_curves.png", "fashion_per_class.png",
              "fashion_confusion_fashion_mnist_mlp.png"):
    assert (tmp_path / "out" / png).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("name", ["fashion_mnist_mlp", "fashion_mnist_mlp_tuned",
                                  "fashion_mnist_cnn_cpu", "fashion_mnist_cnn_cpu_tuned"])
def test_cpu_configs_are_complete(name):
  import importlib

  from experiments.classification import train

  config = importlib.import_module(f"configs.classification.{name}").get_config()
  assert config.name == name and config.dataset == "fashion_mnist"
  assert set(config.optimizers) == set(optimizer_lib.OPTIMIZERS) and config.num_seeds >= 3
  if name.endswith("_tuned"):
    sweep_name = "sweep_fashion_cnn" if "cnn" in name else "sweep_fashion_mlp"
    assert config.tuned_from == f"runs/{sweep_name}/sweep.json"
    config.tuned_from = ""  # The sweep's output need not exist for the check.
  train.check_config(config)


def test_2c2d_has_deepobs_size_and_shapes():
  import jax
  from flax import nnx

  from experiments.classification import models

  model = nnx.eval_shape(lambda: models.build_model("2c2d", (28, 28, 1), 10, rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  # DeepOBS's fmnist_2c2d: 3,274,634 trainable parameters.
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 3_274_634
  small = models.build_model("2c2d", (28, 28, 1), 10, rngs=nnx.Rngs(0), channels=(16, 32),
                             hidden_size=256)
  assert small(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 10)


def test_sequential_sweep_chooses_on_validation_and_feeds_tuned_from(tmp_path):
  """experiments.sweeps.trial_loop on digits (MLP, 2 epochs): the best trial is the one with the
  highest validation accuracy, and train.load_tuned_hparams reads it back."""
  from configs.sweeps import sweep_fashion_cnn
  from experiments.classification import train
  from experiments.sweeps import trial_loop as sweep_loop
  from tests.experiments.test_experiments import fast_config

  config = sweep_fashion_cnn.get_config()
  base = fast_config(num_epochs=2, num_seeds=1)
  for field in ("dataset", "model", "model_kwargs", "batch_size", "num_epochs", "num_seeds",
                "epoch_loop", "vmap_seeds"):
    setattr(config, field, base[field])
  config.optimizers = {"sgd": {"grid": {"learning_rate": [1e-4, 0.1]}},
                       "rmsprop": {"grid": {"learning_rate": [1e-3], "decay": [0.9, 0.99]}}}
  summary = sweep_loop.run_sweep_loop(config, tmp_path)
  assert summary["num_train"] + summary["num_validation"] == 1_437  # digits' training split.
  sgd = [r for r in summary["trials"] if r["optimizer"] == "sgd"]
  assert summary["best"]["sgd"]["hparams"]["learning_rate"] == 0.1
  assert max(r["validation_accuracy"] for r in sgd) == summary["best"]["sgd"]["validation_accuracy"]
  assert all(r["test_accuracy"] is None for r in summary["trials"])
  # The records and the choice of the vmapped sweep (experiments.sweeps.selection).
  assert [r["trial"] for r in sgd] == [0, 1]
  assert summary["best"]["sgd"]["selected_by"] == "validation_accuracy"
  assert train.load_tuned_hparams(tmp_path / "sweep.json", "rmsprop")["decay"] in (0.9, 0.99)


def test_validation_split_is_stratified_and_disjoint():
  from experiments.sweeps import trial_loop as sweep_loop

  dataset = data.load_digits()
  held_out = sweep_loop.validation_dataset(dataset, 0.2, seed=0)
  assert held_out.test_images.shape[0] == 288  # ceil(0.2 * 1,437), as scikit-learn rounds.
  counts = np.bincount(held_out.test_labels, minlength=10)
  assert counts.max() - counts.min() <= 2
  train_rows = {row.tobytes() for row in held_out.train_images}
  assert not any(row.tobytes() in train_rows for row in held_out.test_images)
