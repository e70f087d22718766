"""bench/pendulum_dynamics.py: its experiment is one the pipeline accepts, with each variant's dynamics as named,
and its reading of a run's validations (first balanced epoch, best, later-half mean)."""

import pandas as pd
import pytest
import yaml
from bench_helpers import load_bench_script

from flow_mbpo_pwm.config import load_experiment


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("pendulum_dynamics")


def test_every_variant_is_a_valid_cell_of_the_experiment(bench, tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(bench.experiment(list(bench.VARIANTS), [4, 5], 50)))
    experiment = load_experiment(path)  # seeds other than 0 too
    assert list(experiment.seeds) == [4, 5]
    assert experiment.dynamics["det"].residual and experiment.dynamics["det"].kind == "deterministic"
    assert experiment.dynamics["flow-log"].project == "simnorm" and experiment.dynamics["flow-log"].detach_source
    assert experiment.dynamics["flow-simplex"].project == "none"
    assert experiment.dynamics["flow-endpoint"].endpoint_coef == 1.0
    assert experiment.dynamics["flow-metric"].loss_metric == "simplex"
    cell = experiment.cell("pendulum", "tiny", "flow-log", 4)
    assert cell.pwm.epochs == 50 and cell.dynamics.substeps == 4
    wide = bench.experiment(["det"], [0], 50, latent_dim=512)
    assert wide["train"]["world_model"]["latent_dim"] == 512
    weighted = bench.experiment(["flow-metric"], [0], 50, coefs=(1280.0, 0.1))
    assert weighted["train"]["pwm"]["wm_dynamics_coef"] == 1280.0 and weighted["train"]["pwm"]["wm_reward_coef"] == 0.1
    penalised = load_experiment(bench.experiment(["det"], [0], 50, actor_saturation=0.1))
    assert penalised.cell("pendulum", "tiny", "det", 0).pwm.actor_saturation_coef == 0.1


def test_summary_reads_when_a_run_balanced_and_whether_it_stayed_up(bench, tmp_path):
    returns = [5.0, 40.0, 96.0, 100.0, 60.0, 80.0]
    pd.DataFrame({"epoch": [20 * (i + 1) for i in range(6)], "val_return_mean": returns}).to_csv(
        tmp_path / "validation.csv", index=False
    )
    summary = bench.summary(tmp_path)
    assert summary["first_balanced_epoch"] == 60 and summary["best"] == 100.0
    assert summary["later_half_mean"] == pytest.approx((100.0 + 60.0 + 80.0) / 3)
    pd.DataFrame({"epoch": [20, 40], "val_return_mean": [5.0, 94.9]}).to_csv(tmp_path / "validation.csv", index=False)
    assert bench.summary(tmp_path)["first_balanced_epoch"] is None
