"""experiments/results.py on a tiny stand-in experiment: per-seed JSONs, the table, resuming."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import numpy as np
import pytest

from gan_jax import train
from tests import test_train_support as support

SPEC = importlib.util.spec_from_file_location(
    "results", support.REPO / "experiments" / "results.py"
)
results = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(results)

TINY_EXPERIMENT = '''
"""A tiny seed_mlp for tests.

Launch:

    python -m gan_jax.main --config experiments/tiny_gan.py --workdir workdirs/tiny
"""

from gan_jax.config import get_default_config

RESULTS_NUM_STEPS = 4  # its documented 6 steps are "too long"


def get_config():
    config = get_default_config()
    config.model = "seed_mlp"
    config.g_width = config.d_width = 16
    config.latent_dim = 8
    config.batch_size = 32
    config.num_steps = 6
    config.steps_per_dispatch = 2
    config.log_every = 2
    config.sample_every = 0
    config.checkpoint_every = 2
    config.num_grid_samples = 4
    return config
'''


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    # The evaluation's reference and floor: computed once per test session, never the user's.
    monkeypatch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "eval_cache"))
    support.ensure_mnist()


@pytest.fixture
def experiments(tmp_path):
    directory = tmp_path / "experiments"
    directory.mkdir()
    (directory / "tiny_gan.py").write_text(textwrap.dedent(TINY_EXPERIMENT))
    (directory / "bench_something.py").write_text("def main():\n    pass\n")
    return directory


def test_discovers_the_gan_experiments_only():
    found = results.discover()
    assert set(found) == {
        "baseline_mnist",
        "cdcgan_mnist",
        "dcgan_mnist",
        "dcgan_stacked_mnist",
        "dcgan_tutorial_mnist",
        "seed_mlp_mnist",
        "wgan_gp_mnist",
    }
    assert results.select(found, "dcgan_mnist, seed_mlp_mnist").keys() == {
        "dcgan_mnist",
        "seed_mlp_mnist",
    }
    with pytest.raises(SystemExit, match="unknown experiments.*nope"):
        results.select(found, "nope")
    assert results.launch_command(found["dcgan_mnist"]).startswith(
        "python -m gan_jax.main --config experiments/dcgan_mnist.py"
    )


def test_run_length():
    assert results.run_length({}, 1000, 1.0) == 1000
    assert results.run_length({"RESULTS_NUM_STEPS": 300}, 1000, 1.0) == 300
    assert results.run_length({"RESULTS_NUM_STEPS": 300}, 1000, 0.1) == 30
    assert results.run_length({}, 1000, 0.0001) == 1


def _cells(table: str, row_start: str) -> list[str]:
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {row_start}")]
    return [cell.strip() for cell in row.strip("|").split("|")]


@pytest.mark.slow
def test_two_seeds_write_jsons_a_table_and_skip_when_rerun(tmp_path, experiments, monkeypatch):
    out, workdirs = tmp_path / "results", tmp_path / "workdirs"
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nEnd.\n")
    argv = ["--experiments_dir", str(experiments), "--seeds", "2", "--out", str(out)]
    argv += ["--workdirs", str(workdirs), "--update-readme", "--readme", str(readme)]
    argv += ["--eval_num_samples", "500"]  # real runs use the default, 10,000
    assert results.main(argv) == 0

    records = [json.loads((out / "tiny_gan" / f"seed_{i}.json").read_text()) for i in (0, 1)]
    for i, record in enumerate(records):
        assert record["experiment"] == "tiny_gan" and record["seed_index"] == i
        assert record["seed"] == i and record["config"]["seed"] == i
        assert record["num_steps"] == 4 and record["documented_num_steps"] == 6
        assert record["config"]["num_steps"] == 4 and record["images_seen"] == 4 * 32
        assert record["metrics"]["num_samples"] == 500
        assert np.isfinite(record["metrics"]["fid"]) and record["floor"]["fid"] < 10
        assert record["wall_time_s"] > 0 and record["resumed_from_step"] is None
        assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
        assert record["versions"].keys() >= {"python", "jax", "flax", "optax"}
        assert (workdirs / "tiny_gan" / "steps_4" / f"seed_{i}" / "eval" / "step_4.json").exists()
    assert records[0]["metrics"]["fid"] != records[1]["metrics"]["fid"]  # two seeds, two runs

    table = (out / results.TABLE_FILE).read_text()
    cells = _cells(table, "tiny_gan")
    assert cells[0] == "tiny_gan (shortened to 4 of 6 steps)" and cells[1:3] == ["4", "2"]
    fids = [r["metrics"]["fid"] for r in records]
    mean, std = np.mean(fids), np.std(fids, ddof=1)
    assert cells[3] == f"{mean:.2f} ± {std:.2f}"
    scores = [r["metrics"]["classifier_score"] for r in records]
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    score_cell = cells[header.index("classifier score ↑")]
    assert score_cell == f"{np.mean(scores):.2f} ± {np.std(scores, ddof=1):.2f}"
    assert "modes ↑" not in header  # no Stacked MNIST row
    floor = _cells(table, "real data: MNIST floor")
    assert floor[3] == f"{records[0]['floor']['fid']:.2f}"
    assert "--config experiments/tiny_gan.py" in table  # the full-length command
    assert (
        readme.read_text()
        == f"# Title\n\n<!-- results:start -->\n{table}<!-- results:end -->\n\nEnd.\n"
    )

    # A rerun trains nothing (finished seeds are skipped) and writes the same table.
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: pytest.fail("trained again"))
    (out / results.TABLE_FILE).unlink()
    assert results.main(argv) == 0
    assert (out / results.TABLE_FILE).read_text() == table
    # A seed of another length is refused rather than mixed in.
    with pytest.raises(SystemExit, match="4-step run but this command trains 2 steps"):
        results.main([*argv, "--shorten", "0.5"])


def test_table_mean_and_std_with_stacked_mnist_and_one_seed(tmp_path):
    def record(name, dataset, fid, modes=None, steps=10):
        metrics = {"fid": fid, "classifier_score": 9.0}
        if modes is not None:
            metrics["modes"] = modes
        floor = {"fid": 1.0, "classifier_score": 9.9, "num_samples": 100}
        return dict(
            experiment=name,
            dataset=dataset,
            num_steps=steps,
            documented_num_steps=10,
            metrics=metrics,
            floor=floor,
            wall_time_s=120.0,
            launch_command="cmd",
            machine={"cpu": "CPU", "cores": 2},
        )

    table = results.format_table(
        {
            "a": [
                record("a", "mnist", 10.0),
                record("a", "mnist", 12.0),
                record("a", "mnist", 17.0),
            ],
            "s": [record("s", "stacked_mnist", 50.0, modes=990)],
        }
    )
    a = _cells(table, "a ")
    assert a[3] == f"13.00 ± {np.std([10, 12, 17], ddof=1):.2f}" and a[-1] == "2.0 ± 0.0 min"
    s = _cells(table, "s ")
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[3:] == ["FID ↓", "classifier score ↑", "modes ↑", "wall time"]
    assert s[3:] == ["50.00", "9.00", "990.0", "2.0 min"]  # one seed: no ± part
    assert a[5] == "–"  # MNIST has no modes
    assert _cells(table, "real data: Stacked MNIST floor")
    assert "shortened" not in table


def test_update_readme_needs_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="results:start"):
        results.update_readme(readme, "table\n")
    assert readme.read_text() == "no markers\n"


def test_a_seed_stopped_by_a_signal_says_so_and_writes_no_record(
    tmp_path, experiments, monkeypatch
):
    support.stop_as_if_signalled(monkeypatch)
    out, workdirs = tmp_path / "results", tmp_path / "workdirs"
    argv = ["--experiments_dir", str(experiments), "--seeds", "1", "--out", str(out)]
    with pytest.raises(SystemExit, match="tiny_gan seed 0: stopped at step 0 of 4 by a signal"):
        results.main([*argv, "--workdirs", str(workdirs)])
    assert not (out / "tiny_gan" / "seed_0.json").exists()
    assert support.committed_steps(workdirs / "tiny_gan" / "steps_4" / "seed_0") == [0]
