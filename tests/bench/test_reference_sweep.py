"""bench/reference_sweep.py: PPO reference variants side by side, for real on the CPU Ant (the smoke config's tiny
reference), and its refusals of a bad sweep file before anything runs."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bench_helpers import ROOT, load_bench_script


@pytest.fixture(scope="module")
def sweep_module():
    return load_bench_script("reference_sweep")


def write(tmp_path, sweep: dict):
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


@pytest.mark.parametrize(
    ("variants", "named"),
    [
        ({"floor": {"min_std": 0.2}}, "unknown settings ['min_std']"),
        ({"a b": {}}, "variant name 'a b'"),
        ({}, "needs a mapping `variants"),
    ],
)
def test_a_bad_sweep_file_is_refused_naming_the_problem(sweep_module, tmp_path, variants, named):
    with pytest.raises(SystemExit, match=re.escape(named)):
        sweep_module.load(write(tmp_path, {"variants": variants}))


def test_each_variants_settings_reach_reference_gpu_as_its_flags(sweep_module, tmp_path):
    sweep = sweep_module.load(write(tmp_path, {"env_steps": 1000, "variants": {"floor": {"min_noise_std": 0.2}}}))
    cmd = sweep_module.command(sweep, "floor", tmp_path)
    assert cmd[cmd.index("--min-noise-std") + 1] == "0.2"
    assert cmd[cmd.index("--env-steps") + 1] == "1000"
    assert "--max-minutes" not in cmd


SWEEP = {"config": "config/smoke.yaml", "seed": 0, "env_steps": 2048, "episodes": 2,
         "variants": {"control": {}, "floor": {"min_noise_std": 0.9}}}  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Two variants of the smoke reference, trained at once by `run` (its stdout and out folder)."""
    tmp = tmp_path_factory.mktemp("reference_sweep")
    out = tmp / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "bench/reference_sweep.py", "run", write(tmp, SWEEP), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + "".join(p.read_text() for p in out.glob("*.log"))
    return done.stdout, out


def test_variants_train_side_by_side_and_are_tabled(swept):
    """Each variant is held out and gets its row, and the floor reaches the run (its saved settings and its
    exploration std)."""
    stdout, out = swept
    assert "control: exit 0" in stdout and "floor: exit 0" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| control") or line.startswith("| floor")]
    assert len(rows) == 2, stdout
    assert "min_noise_std 0.9" in rows[1] and "config's" in rows[0]
    for name in ("control", "floor"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["env_steps"] >= 2048 and result["heldout_episodes"] == 2
    floor = json.loads((out / "floor.json").read_text())
    assert floor["reference"]["min_noise_std"] == 0.9
    run = out / "floor" / "results" / "ant" / "reference" / "seed0"  # the pipeline's layout, for ppo_reference
    settings = yaml.safe_load((run / "work" / "settings.yaml").read_text())
    assert settings["reference"]["min_noise_std"] == 0.9
    assert (run / "train_summary.json").is_file() and (run / "policy.pt").is_file()
    with open(run / "metrics.csv") as f:
        stds = [float(r["action_std"]) for r in csv.DictReader(f)]
    assert stds and min(stds) >= 0.9 - 1e-6


def repo_copy(tmp_path) -> Path:
    """What bench/gpu_grid.sh reads of a checkout (bench/, config/, src/), in a folder of its own: results/ and
    .carry/ it writes stay there."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "bench", repo / "bench", ignore=shutil.ignore_patterns("__pycache__", "out"))
    shutil.copytree(ROOT / "config", repo / "config")
    (repo / "src").symlink_to(ROOT / "src")
    return repo


def gpu_grid(repo: Path, env: dict, *args: str) -> tuple[int, str]:
    """`bash bench/gpu_grid.sh ARGS` in `repo` with this Python first on PATH: exit code and output."""
    env = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "bench/gpu_grid.sh", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(("floor", "used"), [(0.9, True), (0.5, False)])
def test_a_variant_becomes_the_reference_of_a_sweep_that_asks_for_its_settings(swept, tmp_path, floor, used):
    """`gpu_grid.sh ppo_reference NAME` packs the variant as the carried reference; the sweep's check
    (`carry_reference`) puts it into results/ only where the config asks for the same reference settings."""
    _, out = swept
    repo = repo_copy(tmp_path)
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["reference"]["min_noise_std"] = floor
    (repo / "asks.yaml").write_text(yaml.safe_dump(config))
    env = {"PPO": str(out), "GRID": str(tmp_path / "grid"), "OMP_NUM_THREADS": "1"}

    assert gpu_grid(repo, env, "ppo_reference", "nothing")[0] != 0
    code, log = gpu_grid(repo, env, "ppo_reference", "floor")
    assert code == 0 and (repo / ".carry" / "reference.tar.gz").is_file(), log
    code, log = gpu_grid(repo, env, "carry_reference", "asks.yaml")
    assert code == 0, log
    carried = repo / "results" / "ant" / "reference" / "seed0"
    if used:
        assert "used as it is" in log and (carried / "train_summary.json").is_file(), log
        assert not list(carried.glob("work/*.pt"))  # no resumable state travels
    else:
        assert "other settings" in log and "min_noise_std" in log and not carried.exists(), log


PINNED = [("config.yaml", "reference-config.tar.gz", "reference.tar.gz"),
          ("short.yaml", "reference.tar.gz", "reference-config.tar.gz")]  # fmt: skip


@pytest.mark.parametrize(("config", "used", "other"), PINNED)
def test_every_pinned_reference_is_tried_and_the_configs_own_is_used(tmp_path, config, used, other):
    """`carry_reference` tries each archive in bench/carried (no session copy in `.carry/`): the one trained with
    the config's reference settings goes into results/, the other is named and left out."""
    repo = repo_copy(tmp_path)
    env = {"GRID": str(tmp_path / "grid"), "CARRIED": str(tmp_path / "none")}
    code, log = gpu_grid(repo, env, "carry_reference", f"config/{config}")
    assert code == 0, log
    blocks = dict(block.split("\n", 1) for block in log.split("carried reference: bench/carried/")[1:])
    assert set(blocks) == {used, other}, log
    assert "used as it is" in blocks[used], log
    assert "not used" in blocks[other] and "used as it is" not in blocks[other], log
    carried = repo / "results" / "ant" / "reference" / "seed0"
    summary = json.loads((carried / "train_summary.json").read_text())
    settings = yaml.safe_load((carried / "work" / "settings.yaml").read_text())
    wanted = yaml.safe_load((ROOT / "config" / config).read_text())["reference"]
    assert settings["reference"]["max_minutes"] == wanted["max_minutes"] and summary["env_steps"] > 0


def test_adopt_takes_the_variant_held_out_highest_and_refuses_the_config_own(sweep_module, tmp_path):
    """`adopt` names the variant of the highest held-out mean and writes the PWM sweep asking for its settings; when
    that variant is the config's own reference there is nothing to adopt (exit 3, no file)."""
    out, pwm = tmp_path / "out", tmp_path / "pwm.yaml"
    out.mkdir()
    pwm.write_text(yaml.safe_dump({"seeds": [0], "config": {"reference": {"max_minutes": 10, "min_noise_std": 0.2}}}))

    def result(name, held_out, **changes):
        overrides = {"env_steps": 400, "max_minutes": 10, **changes}
        (out / f"{name}.json").write_text(json.dumps({"overrides": overrides, "heldout_return_mean": held_out}))

    result("control", 2300.0)
    result("floor0.2", 3100.0, min_noise_std=0.2)
    result("entropy0.01", 4200.0, entropy_coef=0.01)
    assert sweep_module.main(["adopt", str(out), str(pwm), str(tmp_path / "new.yaml")]) == 0
    new = yaml.safe_load((tmp_path / "new.yaml").read_text())
    assert new["seeds"] == [0] and new["config"]["reference"] == {"max_minutes": 10, "entropy_coef": 0.01}
    result("control", 5000.0)
    assert sweep_module.main(["adopt", str(out), str(pwm), str(tmp_path / "none.yaml")]) == 3
    assert not (tmp_path / "none.yaml").exists()


@pytest.mark.parametrize("name", ["floor0.2", "floor0.4", "entropy0.005", "entropy0.01"])
def test_the_det_floor_sweep_adopted_asks_for_the_reference_settings_of_each_exploration_variant(
    sweep_module, tmp_path, name
):
    """bench/sweeps/ant-5M-det-floor.yaml, adopted for a variant of bench/sweeps/reference/exploration.yaml (`adopt`),
    takes that variant over on the same machine (`ppo_reference`): the reference settings its merged config asks for
    are the variant's exactly, as bench/reference_gpu.py trains it (the config's reference with the variant's
    overrides and the sweep's budget)."""
    import dataclasses

    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.reference import reference_settings, settings_defaults
    from flow_mbpo_pwm.train_state import config_differences

    exploration = sweep_module.load(str(ROOT / "bench" / "sweeps" / "reference" / "exploration.yaml"))
    pwm_sweep = load_bench_script("pwm_sweep")
    floor = yaml.safe_load((ROOT / "bench" / "sweeps" / "ant-5M-det-floor.yaml").read_text())
    adopted = tmp_path / "adopted.yaml"
    adopted.write_text(yaml.safe_dump(sweep_module.adopted(floor, exploration["variants"][name])))
    pwm_sweep.base(str(adopted), str(tmp_path / "base.yaml"))
    asked = reference_settings(load_experiment(tmp_path / "base.yaml"), "ant", exploration["seed"])
    experiment = load_experiment(ROOT / exploration["config"])
    variant = dataclasses.replace(experiment.reference, **exploration["variants"][name])
    trained = reference_settings(dataclasses.replace(experiment, reference=variant), "ant", exploration["seed"],
                                 device="auto", env_steps=exploration["env_steps"],
                                 max_minutes=exploration["max_minutes"])  # fmt: skip
    assert config_differences(trained, asked, settings_defaults()) == []


PPO_RECORDS = sorted({p.parents[2] for p in (ROOT / "docs" / "results").glob("*/runs/*/results")})


@pytest.mark.parametrize("record", PPO_RECORDS, ids=lambda p: p.name)
def test_every_ppo_records_table_gives_the_held_out_results_its_readme_reports(sweep_module, record, capsys):
    """A PPO variants record keeps `table`'s inputs (`runs/<variant>.json` and the run folders): its table is one
    command, and each variant's held-out cell it prints is what the record's README reports."""
    sweep_module.table(str(record / "runs"))
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    readme = (record / "README.md").read_text()
    assert rows
    for cells in rows:
        held_out = cells[-1].rstrip(" |")
        assert "+-" in held_out and held_out in readme, f"{record.name}: {cells[0]} {held_out}"
