"""Branch a run at its saved state into a new run folder with some `pwm` settings changed.
A lone seed's run folder (`train`'s, with `work/state.pt`) is copied to a new folder, and the listed `pwm.*` settings
are changed in the copy's configs (`work/config.yaml`, `config.yaml` and the state's own copy, which `train`'s resume
checks), so that `flow-mbpo-pwm train` with an experiment config carrying the same change continues the copy from
the saved epoch. Points that differ only after some epoch (e.g. an actor released after `pwm.actor_delay_epochs`)
then share everything before it exactly: the held weights, Adam states, replay buffer, envs and generators.
Used for the CPU release points of bench/RESULTS.md, "PWM's update releases a held gait":

    PYTHONPATH=src python bench/branch_run.py /tmp/rel/held /tmp/rel/rb-lr5 --pwm actor_lr=5.0e-5 critic_bootstrap=real
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import ConfigError, TrainConfig, dump_yaml, from_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import require_files  # noqa: E402


def settings(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs (values read as YAML) as a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--pwm: expected key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def changed(config: dict[str, Any], pwm: dict[str, Any]) -> dict[str, Any]:
    """`config` (a run's saved cell config) with `pwm` merged into its `pwm` section, checked as `train` checks it."""
    unknown = sorted(set(pwm) - set(config["pwm"]))
    if unknown:
        raise ConfigError(f"pwm.{unknown[0]}", f"not a pwm setting of this run ({', '.join(unknown)})")
    new = {**config, "pwm": {**config["pwm"], **pwm}}
    from_dict(TrainConfig, new).validate()
    return new


def branch(source: Path, target: Path, pwm: dict[str, Any]) -> int:
    """Copy `source` to `target` with `pwm` changed; returns the saved epoch it continues from."""
    state = io.torch_load(source / "work" / "state.pt", map_location="cpu")
    state["config"] = changed(state["config"], pwm)
    text = dump_yaml(from_dict(TrainConfig, state["config"]))  # what `train` writes to both config files
    shutil.copytree(source, target)
    try:
        io.torch_save(target / "work" / "state.pt", state)
        for path in (target / "work" / "config.yaml", target / "config.yaml"):
            io.write_text(path, text)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-made branch left behind
        raise
    return int(state["epoch"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a lone seed's run folder with work/state.pt")
    parser.add_argument("target", type=Path, help="the new run folder (must not exist)")
    parser.add_argument("--pwm", nargs="+", required=True, metavar="KEY=VALUE", help="pwm settings to change")
    args = parser.parse_args(argv)
    require_files(parser, args.source / "work" / "state.pt")
    if args.target.exists():
        parser.error(f"{args.target} exists already; give a new folder")
    try:
        epoch = branch(args.source, args.target, settings(args.pwm))
    except (ValueError, ConfigError) as err:
        parser.error(str(err))
    print(f"branched {args.source} at epoch {epoch} into {args.target} with pwm {args.pwm}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
