"""bench/pwm_sweep.py's readings of a finished sweep, which the results READMEs quote: the checkpoint a run cut by
the deadline is evaluated at (select's rules), and the `compare` table."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from bench_helpers import load_bench_script

from flow_mbpo_pwm import statistics
from flow_mbpo_pwm.aggregate import bootstrap_rng


@pytest.fixture(scope="module")
def sweep_module():
    return load_bench_script("pwm_sweep")


VALIDATION = ["epoch", "env_steps", "val_return_mean", "checkpoint", "flagged", "flag_reason"]


def write_run(run: Path, validations: list[tuple], returns: list[float] | None = None, files: bool = True) -> None:
    """A seed's run folder as a sweep leaves it: work/validation.csv (epoch, return, flagged), its checkpoints, a
    work/metrics.csv, and episodes.csv when it was held out."""
    (run / "work" / "checkpoints").mkdir(parents=True)
    with open(run / "work" / "validation.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(VALIDATION)
        for epoch, value, flagged in validations:
            checkpoint = f"work/checkpoints/epoch_{epoch:06d}.pt"
            writer.writerow([epoch, epoch * 2048, value, checkpoint, flagged, "collapse" if flagged else ""])
            if files:
                (run / checkpoint).touch()
    with open(run / "work" / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "env_steps", "train_return_mean", "train_episodes"])
        for epoch, *_ in validations:
            writer.writerow([epoch, epoch * 2048, 1000.0, 128])
    if returns is not None:
        with open(run / "episodes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["episode", "return"])
            writer.writerows(enumerate(returns))


def test_a_cut_run_is_evaluated_at_its_best_usable_validation_by_selects_rules(sweep_module, tmp_path):
    run = tmp_path / "seed0"
    write_run(run, [(250, 1300.0, False), (500, 2100.0, True), (750, float("nan"), False), (1000, 1800.0, False),
                    (1250, 1800.0, False), (1500, 1750.0, False)])  # fmt: skip
    chosen = sweep_module.best_validated(run)
    # 500 is flagged, 750 is NaN; 1000 and 1250 tie: the later epoch.
    assert chosen == {"epoch": 1250, "val_return": 1800.0, "checkpoint": "work/checkpoints/epoch_001250.pt"}
    (run / chosen["checkpoint"]).unlink()  # a missing file is not evaluated either
    assert sweep_module.best_validated(run)["epoch"] == 1000


def test_a_released_clone_is_evaluated_at_its_best_validation_after_the_release(sweep_module, tmp_path):
    """A clone point's held clone validates best (the reference's gait); what PWM's updates kept of it is the best
    validation after the release, the point's `actor_delay_epochs` over the sweep's."""
    sweep = {"epochs": 2000, "pwm": {"actor_delay_epochs": 100}}
    assert sweep_module.release_epoch(sweep, {"clone": True, "pwm": {"actor_delay_epochs": 250}}) == 250
    assert sweep_module.release_epoch(sweep, {"clone": True}) == 100  # the sweep's delay
    assert sweep_module.release_epoch(sweep, {"pwm": {"actor_delay_epochs": 250}}) == 0  # not a clone: select's rule
    assert sweep_module.release_epoch(sweep, {"clone": True, "pwm": {"actor_delay_epochs": 2000}}) == 0  # held
    assert sweep_module.release_epoch(sweep, {"clone": True, "pwm": {"actor_delay_epochs": 250, "epochs": 200}}) == 0
    run = tmp_path / "seed0"
    write_run(run, [(125, 5200.0, False), (250, 5250.0, False), (375, 1300.0, False), (500, 1400.0, False)])
    assert sweep_module.best_validated(run)["epoch"] == 250  # the held clone
    assert sweep_module.best_validated(run, 250)["epoch"] == 500
    assert sweep_module.best_validated(run, 500) is None


def test_a_held_out_result_is_marked_by_how_its_checkpoint_was_chosen(sweep_module, tmp_path):
    run = tmp_path / "seed0"
    run.mkdir()
    assert sweep_module.held_out_marker(run) == ""  # select over a finished run
    (run / "held_out_cut.json").write_text(json.dumps({"cut_at_epoch": 900}))  # a record from before releases counted
    assert sweep_module.held_out_marker(run) == " (cut)"
    (run / "held_out_cut.json").write_text(json.dumps({"cut_at_epoch": 900, "released_at_epoch": 250}))
    assert sweep_module.held_out_marker(run) == " (cut, released)"
    (run / "held_out_cut.json").unlink()
    (run / "held_out_released.json").write_text(json.dumps({"released_at_epoch": 250}))
    assert sweep_module.held_out_marker(run) == " (released)"


def test_a_run_with_no_usable_validation_has_no_cut_checkpoint(sweep_module, tmp_path):
    run = tmp_path / "seed0"
    write_run(run, [(250, float("nan"), False), (500, 2100.0, True)])
    assert sweep_module.best_validated(run) is None


def test_compare_reports_each_points_held_out_mean_interval_ratio_and_when_seeds_left_standing(
    sweep_module, tmp_path, capsys
):
    sweep = {
        "base": "config/smoke.yaml", "task": "ant", "size": "tiny", "seeds": [0, 1], "epochs": 4,
        "work": str(tmp_path), "points": {"det": {"dynamics": "deterministic"}, "flow": {"dynamics": "flow"}},
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    held = {("det", 0): [3000.0, 3200.0, 3100.0], ("det", 1): [2000.0, 2200.0],
            ("flow", 0): [1400.0, 1500.0], ("flow", 1): [1300.0, 1350.0, 1250.0]}  # fmt: skip
    validations = {
        ("det", 0): [(1, 1500.0, False), (2, 2500.0, False)], ("det", 1): [(1, 1400.0, False), (2, 1990.0, False)],
        ("flow", 0): [(1, 1400.0, False), (2, 1450.0, False)], ("flow", 1): [(1, 1300.0, False), (2, 1420.0, False)],
    }  # fmt: skip
    for (point, seed), returns in held.items():
        write_run(tmp_path / point / f"seed{seed}", validations[point, seed], returns)

    sweep_module.compare(str(path))
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]}

    means = {}
    for point in ("det", "flow"):
        groups = [np.array(held[point, seed]) for seed in (0, 1)]
        rng = bootstrap_rng("ant", "tiny", point, "return_mean")
        low, high = statistics.percentile_interval(statistics.hierarchical_bootstrap(groups, "mean", 10_000, rng))
        means[point] = np.concatenate(groups).mean()  # every episode alike, as the pipeline's per-cell mean
        assert rows[point][1] == f"{means[point]:,.0f} [{low:,.0f}, {high:,.0f}]"
        assert rows[point][2] == " / ".join(f"{g.mean():,.0f}" for g in groups)
    assert rows["det"][3] == "1"
    assert rows["flow"][3].startswith(f"{means['flow'] / means['det']:.2f} [")
    # Validation past 2,000: det seed 0 at epoch 2 (4,096 env steps); det seed 1 (1,990) and flow never.
    assert rows["det"][5].rstrip(" |") == "0.0M / never"
    assert rows["flow"][5].rstrip(" |") == "never / never"


def one_point_sweep(folder: Path) -> Path:
    """A sweep file of one deterministic point and seed 0 on the smoke config, its work folder `folder`."""
    sweep = {
        "base": "config/smoke.yaml", "task": "ant", "size": "tiny", "seeds": [0], "epochs": 4,
        "work": str(folder), "points": {"det": {"dynamics": "deterministic"}},
    }  # fmt: skip
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_compare_reads_the_curve_at_20M_and_30M_once_a_run_reaches_them_and_adds_the_reference_row(
    sweep_module, tmp_path, capsys
):
    """Issue 8's 30.7M target: the training-return marks past 10M appear when a run's metrics reach them, and a PPO
    reference's metrics.csv adds its row at the same marks (each by its own episode period, `curves.return_at`)."""
    path = one_point_sweep(tmp_path)
    run = tmp_path / "det" / "seed0"
    write_run(run, [(1, 1500.0, False)])
    steps = range(1_000_000, 31_000_001, 1_000_000)  # rows far apart next to smoke's periods (400 and 800 env steps)
    with open(run / "work" / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["env_steps", "train_return_mean", "train_episodes"]] + [[x, x / 1e4, 8] for x in steps]
        )
    reference = tmp_path / "reference_metrics.csv"
    with open(reference, "w", newline="") as f:
        csv.writer(f).writerows(
            [["env_steps", "train_return_mean", "train_episodes"]] + [[x, 500 + x / 1e5, 16] for x in steps]
        )

    sweep_module.compare(str(path), "", "", str(reference))
    lines = capsys.readouterr().out.splitlines()
    assert "training return at 2M / 5M / 8M / 10M / 20M / 30M |" in lines[0]
    assert lines[2].split(" | ")[4] == "200 / 500 / 800 / 1,000 / 2,000 / 3,000"
    assert lines[3].startswith("| PPO reference (") and lines[3].split(" | ")[4] == "520 / 550 / 580 / 600 / 700 / 800"


def test_compare_shows_only_the_marks_to_10M_for_runs_that_stop_before_20M(sweep_module, tmp_path, capsys):
    path = one_point_sweep(tmp_path)
    write_run(tmp_path / "det" / "seed0", [(9_500, 2500.0, False)])  # 19.5M env steps (write_run: 2,048 per epoch)
    sweep_module.compare(str(path))
    assert "training return at 2M / 5M / 8M / 10M |" in capsys.readouterr().out.splitlines()[0]


def test_a_sweep_level_pwm_applies_to_every_point_under_the_points_own(sweep_module):
    """A sweep's own `pwm:` pins what its points share against later changes of the base config; a point's `pwm:`
    still wins."""
    sweep = {"base": "config/short.yaml", "epochs": 100, "seeds": [0, 1],
             "pwm": {"wm_dynamics_coef": 20.0, "wm_reward_coef": 0.1, "actor_saturation_coef": 0.0}}  # fmt: skip
    plain = sweep_module.point_config(sweep, {"dynamics": "flow"})["train"]["pwm"]
    own = sweep_module.point_config(sweep, {"dynamics": "flow", "pwm": {"actor_saturation_coef": 0.1}})["train"]["pwm"]
    assert (plain["wm_dynamics_coef"], plain["wm_reward_coef"], plain["actor_saturation_coef"]) == (20.0, 0.1, 0.0)
    assert (own["wm_dynamics_coef"], own["wm_reward_coef"], own["actor_saturation_coef"]) == (20.0, 0.1, 0.1)
    assert plain["epochs"] == 100


def test_a_point_of_its_own_size_trains_that_size_beside_the_sweeps(sweep_module, tmp_path):
    """A 48M point beside 5M points (one sweep on a two-GPU machine): its config trains 48M and its CLI cell names
    it, the other points keep the sweep's size, the figure's title names both sizes, and a size that is not a
    preset's name is refused on loading."""
    from flow_mbpo_pwm.config import load_experiment

    sweep = {"base": "config/short.yaml", "task": "ant", "size": "5M", "epochs": 100, "seeds": [0],
             "work": str(tmp_path), "points": {"det": {"dynamics": "deterministic"},
                                               "det-48M": {"dynamics": "deterministic", "size": "48M"}}}  # fmt: skip
    small, large = sweep["points"]["det"], sweep["points"]["det-48M"]
    assert sweep_module.cell(sweep, small) == ["--task", "ant", "--size", "5M"]
    assert sweep_module.cell(sweep, large) == ["--task", "ant", "--size", "48M"]
    assert load_experiment(sweep_module.point_config(sweep, large)).sizes == ("48M",)
    assert load_experiment(sweep_module.point_config(sweep, small)).sizes == ("5M",)  # config/short.yaml's
    assert sweep_module.plot_sizes(sweep) == "5M / 48M"  # the figure's title names both
    assert sweep_module.plot_sizes({**sweep, "points": {"det": small}}) == "5M"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**sweep, "points": {"det-48M": {"dynamics": "deterministic", "size": 48}}}))
    with pytest.raises(SystemExit, match="a point's 'size' must be a size preset's name"):
        sweep_module.load(str(path))


def test_a_sweep_level_config_is_merged_into_the_base_for_its_points_and_its_dataset(sweep_module, tmp_path):
    """`config: {reference: {max_minutes: 10}}` gives a sweep its own PPO reference: every point's config and the
    config its dataset is built from (`base`, which gpu_grid.sh checks a carried reference against) hold it, the
    base's other reference keys stay, and a reference of the plain base's settings no longer matches it."""
    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.reference import reference_settings

    root = Path(__file__).parents[2]
    sweep = {"base": "config/short.yaml", "task": "ant", "size": "5M", "epochs": 100, "seeds": [0],
             "work": str(tmp_path), "points": {"det": {"dynamics": "deterministic"}},
             "config": {"reference": {"max_minutes": 10}}}  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    point = sweep_module.point_config(sweep, {"dynamics": "deterministic"})
    plain = yaml.safe_load((root / "config/short.yaml").read_text())
    assert point["reference"] == {**plain["reference"], "max_minutes": 10}

    sweep_module.base(str(path), str(tmp_path / "effective.yaml"))
    effective = load_experiment(yaml.safe_load((tmp_path / "effective.yaml").read_text()))
    assert effective.reference.max_minutes == 10
    assert reference_settings(effective, "ant", 0) != reference_settings(load_experiment(plain), "ant", 0)
    assert sweep_module.base_file(sweep, tmp_path) == str(tmp_path / "base.yaml")
    assert yaml.safe_load((tmp_path / "base.yaml").read_text()) == sweep_module.base_config(sweep)
    assert sweep_module.base_file({**sweep, "config": {}}, tmp_path) == "config/short.yaml"

    path.write_text(yaml.safe_dump({**sweep, "config": ["reference"]}))
    with pytest.raises(SystemExit, match="'config' must be a mapping"):
        sweep_module.load(str(path))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "bench" / "sweeps").glob("*.yaml")), ids=str)
def test_every_sweep_file_resolves_each_point_to_a_valid_experiment(sweep_module, path):
    """Every point of every sweep file in bench/sweeps is a valid experiment on today's base config, so a recorded
    sweep can be rerun and a candidate fails here, not on a GPU machine."""
    from flow_mbpo_pwm.config import load_experiment

    sweep = sweep_module.load(str(path))
    for spec in sweep["points"].values():
        load_experiment(sweep_module.point_config(sweep, spec))


def test_compare_and_plot_read_a_results_records_runs_as_they_read_a_sweeps_work_folder(sweep_module, tmp_path, capsys):
    """A record keeps each seed's tables as `runs/<point>-seed<k>-<file>`; a compare file whose points name those
    (`runs:`, one record or several), its baseline and its reference needs no layout by hand and gives the work
    folder's table."""
    work, record = tmp_path / "work", tmp_path / "record" / "runs"
    held = {("det", 0): [3000.0, 3200.0], ("det", 1): [2000.0, 2200.0], ("flow", 0): [1400.0], ("flow", 1): [2500.0]}
    for (point, seed), returns in held.items():
        run = work / point / f"seed{seed}"
        write_run(run, [(1, 1500.0 + 400 * seed, False), (2, 2100.0 * (point == "det"), False)], returns)
    (work / "det" / "train.log").write_text("Module ant 1a2b load on device 'cuda:0' took 1.00 ms  (cached)\nepoch 2\n")
    reference = tmp_path / "reference_metrics.csv"
    reference.write_text("env_steps,train_return_mean,train_episodes\n2000000,900,16\n")
    sweep = {"base": "config/smoke.yaml", "task": "ant", "size": "tiny", "seeds": [0, 1], "epochs": 4}
    points = {"det": {"dynamics": "deterministic"}, "flow": {"dynamics": "flow"}}
    laid_out = tmp_path / "sweep.yaml"
    laid_out.write_text(yaml.safe_dump({**sweep, "work": str(work), "points": points}))
    sweep_module.record(str(laid_out), str(record.parent))  # the cut seeds' tables from work/, the log without Warp's
    assert sorted(f.name for f in record.iterdir()) == sorted(
        [f"{point}-seed{seed}-{file}" for point, seed in held for file in ("episodes.csv", "metrics.csv",
                                                                             "validation.csv")] + ["det-train.log"]
    )  # fmt: skip
    assert (record / "det-train.log").read_text() == "epoch 2\n"
    assert (record.parent / "sweep.yaml").read_text() == laid_out.read_text()
    assert "recorded 13 files" in capsys.readouterr().out
    recorded = tmp_path / "compare.yaml"
    recorded.write_text(yaml.safe_dump({
        **sweep, "against": "flow", "reference_metrics": str(reference),
        "points": {name: {**spec, "runs": str(record / name)} for name, spec in points.items()},
    }))  # fmt: skip

    sweep_module.compare(str(laid_out), "", "flow", str(reference))
    expected = capsys.readouterr().out
    sweep_module.compare(str(recorded))
    assert capsys.readouterr().out == expected
    assert "| det | 2,600 [" in expected and "| PPO reference (" in expected
    sweep_module.plot(str(recorded), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0

    # A point whose seeds ran in two sweeps names both records: each seed's files from the first that has them.
    later = tmp_path / "later" / "runs"
    later.mkdir(parents=True)
    for file in record.glob("*-seed1-*"):
        file.rename(later / file.name)
    split = yaml.safe_load(recorded.read_text())
    for name, spec in split["points"].items():
        spec["runs"] = [str(record / name), str(later / name)]
    recorded.write_text(yaml.safe_dump(split))
    sweep_module.compare(str(recorded))
    assert capsys.readouterr().out == expected

    (later / "flow-seed1-metrics.csv").unlink()  # a record missing a seed's table is named, not read as empty
    with pytest.raises(SystemExit, match="flow-seed1-metrics.csv"):
        sweep_module.compare(str(recorded))


RECORDS = sorted((Path(__file__).parents[2] / "docs" / "results").glob("*/compare.yaml"))


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.parent.name)
def test_every_records_compare_file_gives_the_held_out_results_its_readme_reports(sweep_module, path, capsys):
    """A results record's table is one command (`compare docs/results/<record>/compare.yaml`), from the files the
    record keeps: each point's held-out mean [95% CI] it prints is what the record's README reports (the ratios
    are laid out differently from record to record: one README gives a point's ratio to two baselines)."""
    sweep_module.compare(str(path))
    readme = (path.parent / "README.md").read_text()
    held_out = [line.split(" | ")[:2] for line in capsys.readouterr().out.splitlines()[2:]]
    assert any("[" in cell for _, cell in held_out), f"{path.parent.name}: no held-out result"
    for point, cell in held_out:
        assert "[" not in cell or cell in readme, f"{path.parent.name}: {point} {cell}"


def test_a_sweep_of_other_seeds_keeps_the_reference_seed_of_its_dataset_in_the_config(sweep_module):
    """The offline dataset comes from the base config's reference seed (`collect.seed`, 0), which a config's seeds
    must list: a sweep of seeds 3 and 4 trains those and keeps 0 listed, so the point's config is valid."""
    from flow_mbpo_pwm.config import load_experiment

    sweep = {"base": "config/short.yaml", "epochs": 100, "seeds": [3, 4]}
    config = sweep_module.point_config(sweep, {"dynamics": "flow"})
    assert config["seeds"] == [0, 3, 4]
    assert load_experiment(config).collect.seed == 0
    assert sweep_module.point_config({**sweep, "seeds": [1, 0]}, {"dynamics": "flow"})["seeds"] == [1, 0]


def test_points_share_a_pretraining_and_a_clone_where_their_settings_agree(sweep_module, tmp_path):
    # the pipeline's pretrain fingerprint decides: the actor's settings leave it alone, a world-model loss weight, the
    # steps and the dynamics do not; a clone also depends on the actor's input (the standardised latent)
    points = {
        "det": {"dynamics": "deterministic"},
        "det-held": {"dynamics": "deterministic", "clone": True, "pwm": {"actor_delay_epochs": 5}},
        "det-nopen": {"dynamics": "deterministic", "clone": True, "pwm": {"actor_saturation_coef": 0.0}},
        "det-std": {"dynamics": "deterministic", "clone": True, "pwm": {"latent_norm": "standardize"}},
        "det-imagined": {"dynamics": "deterministic", "clone": {"imagined_steps": 4}},
        "det-reward": {"dynamics": "deterministic", "pwm": {"wm_reward_coef": 3.0}},
        "det-long": {"dynamics": "deterministic", "pretrain_steps": 99},
        "flow": {"dynamics": "flow"},
    }
    sweep = {"base": "config/smoke.yaml", "task": "ant", "size": "tiny", "seeds": [0, 1], "epochs": 20,
             "work": str(tmp_path), "points": points}  # fmt: skip
    keys = {}
    for name, spec in points.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(sweep_module.point_config(sweep, spec)))
        keys[name] = {step: sweep_module.shared_key(sweep, spec, folder, step) for step in ("pretrain", "clone")}
    shared = {keys[name]["pretrain"] for name in ("det", "det-held", "det-nopen", "det-std", "det-imagined")}
    assert len(shared) == 1
    assert len({keys[name]["pretrain"] for name in ("det", "det-reward", "det-long", "flow")}) == 4
    assert keys["det-held"]["clone"] == keys["det-nopen"]["clone"] != keys["det-std"]["clone"]
    assert keys["det-imagined"]["clone"] not in (keys["det-held"]["clone"], keys["det-std"]["clone"])
    # a point's own clone settings go over the base's into its config, which the clone reads
    assert sweep_module.point_config(sweep, points["det-imagined"])["clone"]["imagined_steps"] == 4


def test_shared_products_are_copied_whole(sweep_module, tmp_path):
    maker, follower = tmp_path / "maker", tmp_path / "follower"
    maker.mkdir()
    follower.mkdir()
    for name, text in (("world_model.pt", "weights"), ("pretrain_metrics.csv", "step\n1\n"), ("pretrain.log", "log")):
        (maker / name).write_text(text)
    sweep_module.shared_products("pretrain", maker, follower)
    assert {p.name for p in follower.iterdir()} == {"world_model.pt", "pretrain_metrics.csv", "pretrain.log"}
    assert (follower / "world_model.pt").read_text() == "weights"


def test_status_reads_the_last_training_return_a_run_logged(sweep_module, tmp_path):
    """`status` shows the training env's last episode return beside the validations (the gap between the two was
    docs/results/2026-12-07-det-frozen's finding): the last row with one, a row without episodes skipped."""
    run = tmp_path / "seed0"
    assert sweep_module.last_training_return(run) == "-"  # no metrics.csv yet
    (run / "work").mkdir(parents=True)
    with open(run / "work" / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_return_mean", "train_episodes"])
        writer.writerows([[25, "", 0], [50, 1326.4, 128], [75, "nan", 0]])
    assert sweep_module.last_training_return(run) == "1326"


def test_the_ppo_line_runs_to_its_first_validation_past_the_points_range_on_the_points_axis(sweep_module, tmp_path):
    """PPO validates every few tens of millions of env steps, past a PWM sweep's range: its line keeps the first
    validation beyond the range (so its slope over the range shows) while the axis stays the points'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = tmp_path / "work"
    write_run(work / "det" / "seed0", [(250, 1300.0, False), (500, 2100.0, False)])  # 0.51M and 1.02M env steps
    reference = tmp_path / "validation.csv"
    reference.write_text("env_steps,val_return_mean\n0,1100\n500000,1500\n40000000,3000\n90000000,4100\n")
    sweep = {"base": "config/smoke.yaml", "task": "ant", "size": "tiny", "seeds": [0], "epochs": 4,
             "points": {"det": {"dynamics": "deterministic"}}}  # fmt: skip
    axes = []

    class Recording:  # pyplot, keeping the axes _plot draws on
        def subplots(self, *args, **kwargs):
            fig, ax = plt.subplots(*args, **kwargs)
            axes.append(ax)
            return fig, ax

    sweep_module._plot(sweep, work, str(tmp_path / "curves.png"), str(reference), Recording())
    ax = axes[0]
    ppo = next(line for line in ax.get_lines() if line.get_label() == "PPO reference")
    assert list(ppo.get_xdata()) == [0.0, 0.5, 40.0] and list(ppo.get_ydata()) == [1100.0, 1500.0, 3000.0]
    assert ax.get_xlim()[1] < 2.0
    plt.close("all")
