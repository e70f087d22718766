"""Every expected failure of the command line ends in one line naming the file, key or option and a documented
exit code (no traceback unless asked for), and leaves existing files as they were."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flow_mbpo_pwm import __version__, cli, exit_codes
from flow_mbpo_pwm.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"flow-mbpo-pwm {__version__}"


def test_help_lists_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in (0, 1, 2, 3, 74, 75, 130):
        assert f"\n  {code:<4} " in out, code
    assert "--debug" in out and exit_codes.DEBUG_ENV in out


def _stage_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (stages,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(stages.choices)


@pytest.mark.parametrize("stage", list(_stage_parsers()))
def test_every_option_has_help_with_its_default(stage):
    for action in _stage_parsers()[stage]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{stage} {action.dest} has no help text"
        optional = action.option_strings and not action.required and action.nargs != 0
        if optional:
            assert "default" in action.help, f"{stage} {action.option_strings[0]}: help does not give the default"


@pytest.mark.parametrize("option", ["--obs-dim", "--act-dim"])
@pytest.mark.parametrize("value", ["0", "-3", "eight", "2.5"])
def test_nonsensical_params_dimensions_are_usage_errors(capsys, option, value):
    code, err = run(capsys, "params", option, value)
    assert code == exit_codes.INVALID_CONFIG
    assert f"argument {option}: must be a positive integer" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- tasks\n- sizes\n", "must be a mapping"),
        ("tasks: {ant: [unclosed\n", "is not valid YAML"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "is not valid YAML"),
        ({"tasks": {"antt": {}}}, "tasks.antt.task"),
        ({"train": {"pwm": {"gamma": float("inf")}}}, "train.pwm.gamma"),
        (None, "is a directory"),
    ],
    ids=["not a mapping", "malformed", "binary", "unknown task", "inf", "directory"],
)
def test_bad_config_files_name_the_file_or_key(tmp_path, capsys, content, message):
    path = tmp_path / "experiment.yaml"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    code, err = run(capsys, "check-config", str(path))
    assert code == exit_codes.INVALID_CONFIG
    assert one_line(err) and message in err, err
    assert str(path) in err or "config key 'tasks" in err or "config key 'train" in err


def test_an_output_path_under_a_file_is_an_io_error_naming_it(tmp_path, capsys):
    config = tmp_path / "experiment.yaml"
    config.write_text(
        yaml.safe_dump({"tasks": {"p": {"task": "gym:InvertedPendulum-v5"}}, "sizes": ["tiny"], "seeds": [0]})
    )
    blocker = tmp_path / "results"
    blocker.write_text("a file where the run folder's parent should be")
    run_dir = blocker / "run"
    code, err = run(
        capsys, "train", "--config", str(config), "--task", "p", "--size", "tiny", "--dynamics", "flow",
        "--seed", "0", "--device", "cpu", "--run-dir", str(run_dir),
    )  # fmt: skip
    assert code == exit_codes.IO_ERROR
    assert one_line(err) and str(run_dir) in err and "a file is where a folder belongs" in err, err
    assert blocker.read_text() == "a file where the run folder's parent should be"


@pytest.mark.parametrize(
    ("seeds", "run_dirs", "key"),
    [(["0", "1"], ["a"], "--run-dir"), (["0", "0"], ["a", "b"], "run.seed"), (["0", "1"], ["a", "a"], "run_dir")],
)
def test_a_stack_needs_one_run_folder_per_distinct_seed(tmp_path, capsys, seeds, run_dirs, key):
    config = tmp_path / "experiment.yaml"
    config.write_text(
        yaml.safe_dump({"tasks": {"p": {"task": "gym:InvertedPendulum-v5"}}, "sizes": ["tiny"], "seeds": [0, 1]})
    )
    code, err = run(
        capsys, "train", "--config", str(config), "--task", "p", "--size", "tiny", "--dynamics", "flow",
        "--seed", *seeds, "--device", "cpu", "--run-dir", *(str(tmp_path / d) for d in run_dirs),
    )  # fmt: skip
    assert code == exit_codes.INVALID_CONFIG
    assert one_line(err) and key in err, err
    assert not any((tmp_path / d).exists() for d in run_dirs)


def test_a_directory_given_as_checkpoint_is_named(tmp_path, capsys):
    config = tmp_path / "experiment.yaml"
    config.write_text(
        yaml.safe_dump({"tasks": {"p": {"task": "gym:InvertedPendulum-v5"}}, "sizes": ["tiny"], "seeds": [0]})
    )
    checkpoint = tmp_path / "best.pt"
    checkpoint.mkdir()
    out_csv = tmp_path / "eval" / "episodes.csv"
    code, err = run(
        capsys, "evaluate", "--config", str(config), "--task", "p", "--size", "tiny", "--dynamics", "flow",
        "--seed", "0", "--device", "cpu", "--checkpoint", str(checkpoint), "--out-csv", str(out_csv),
        "--out-h5", str(tmp_path / "eval" / "t.h5"),
    )  # fmt: skip
    assert code == exit_codes.BAD_INPUT
    assert one_line(err) and f"{checkpoint}: is a directory" in err, err
    assert not out_csv.parent.exists()


def test_debug_flag_and_environment_variable_show_the_traceback(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ConfigError):
        cli.main(["--debug", "check-config", str(folder)])
    with pytest.raises(ConfigError):
        cli.main(["check-config", str(folder), "--debug"])
    monkeypatch.setenv(exit_codes.DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        cli.main(["check-config", str(folder)])
    monkeypatch.setenv(exit_codes.DEBUG_ENV, "0")
    assert run(capsys, "check-config", str(folder))[0] == exit_codes.INVALID_CONFIG


def test_ctrl_c_exits_130_and_a_bug_keeps_its_traceback(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    code, err = run(capsys, "params")
    assert code == exit_codes.INTERRUPTED == 130 and "interrupted" in err

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_dispatch", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["params"])


def test_the_console_script_returns_the_code(tmp_path):
    missing = tmp_path / "missing.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "flow_mbpo_pwm.cli", "check-config", str(missing)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == exit_codes.INVALID_CONFIG
    assert (
        done.stderr
        == f"flow-mbpo-pwm check-config: invalid configuration: config key '<file>': {missing} does not exist\n"
    )
