"""`flow-mbpo-pwm`: one console script, one subcommand per pipeline stage. Argument parsing and error reporting.

Stage modules are imported lazily, so `aggregate` and `plot` run on a login node without torch or Warp.

Every expected failure ends in one line on stderr that names the file, key or option, and an exit code from
`exit_codes.py` (listed by `--help`). Only a bug shows a traceback; `--debug` or FLOW_MBPO_PWM_DEBUG=1 shows it
for every error.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from flow_mbpo_pwm import __version__, exit_codes
from flow_mbpo_pwm.config import ConfigError
from flow_mbpo_pwm.io import InputError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_cell(parser: argparse.ArgumentParser, several_seeds: bool = False) -> None:
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML (e.g. config/config.yaml)")
    parser.add_argument("--task", required=True, help="task name from the config's `tasks`")
    parser.add_argument("--size", required=True, help="size preset from the config's `sizes` (or `reference`)")
    parser.add_argument("--dynamics", required=True, help="dynamics variant from the config's `dynamics` (or `ppo`)")
    if several_seeds:
        parser.add_argument(
            "--seed", type=int, nargs="+", required=True, help="training seed(s) from the config's `seeds`"
        )
    else:
        parser.add_argument("--seed", type=int, required=True, help="training seed from the config's `seeds`")
    parser.add_argument(
        "--device", default=None, help="override run.device: auto, cpu, cuda or cuda:N (default: the config's)"
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the subcommand it sets `debug`, absent it leaves the main parser's value alone.
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the Python traceback of an error (also: {exit_codes.DEBUG_ENV}=1)",
    )
    kwargs = {"epilog": exit_codes.HELP, "formatter_class": argparse.RawDescriptionHelpFormatter}
    parser = argparse.ArgumentParser(prog="flow-mbpo-pwm", description=__doc__.splitlines()[0], **kwargs)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the Python traceback of an error (also: {exit_codes.DEBUG_ENV}=1)",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        return stages.add_parser(name, help=help, description=help, parents=[common], **kwargs)

    train = stage(
        "train", "train one cell, or several seeds of it in one process (resumes from the run folders' saved state)"
    )
    _add_cell(train, several_seeds=True)
    train.add_argument(
        "--run-dir",
        type=Path,
        nargs="+",
        required=True,
        help="the run folder of each --seed, in the same order (several: the seeds train as one stack)",
    )
    train.add_argument(
        "--epochs", type=_positive_int, default=None, help="override pwm.epochs, for quick runs (default: the config's)"
    )
    train.add_argument(
        "--world-model-init",
        type=Path,
        default=None,
        help="start a fresh run from this pretrained world model (`pretrain`'s world_model.pt; default: none)",
    )
    train.add_argument(
        "--actor-init",
        type=Path,
        default=None,
        help="every seed's actor starts as this cloned actor (`clone`'s actor.pt; default: PWM's fresh actor)",
    )
    train.add_argument(
        "--offline-data",
        type=Path,
        default=None,
        help="HDF5 dataset put into a fresh run's replay buffer before training (default: none)",
    )

    def offline_stage(name: str, help: str, out: str) -> argparse.ArgumentParser:
        """A stage that fits one cell's networks offline on the collected dataset (pretrain, clone)."""
        parser = stage(name, help)
        parser.add_argument("--config", type=Path, required=True, help="experiment YAML (e.g. config/config.yaml)")
        parser.add_argument("--task", required=True, help="task name from the config's `tasks`")
        parser.add_argument("--size", required=True, help="size preset from the config's `sizes`")
        parser.add_argument("--dynamics", required=True, help="dynamics variant from the config's `dynamics`")
        parser.add_argument("--dataset", type=Path, required=True, help="HDF5 dataset (`collect`)")
        parser.add_argument("--out", type=Path, required=True, help=f"{out} to write")
        parser.add_argument(
            "--steps", type=_positive_int, default=None, help=f"override {name}.steps (default: the config's)"
        )
        parser.add_argument(
            "--device", default=None, help="override run.device: auto, cpu, cuda or cuda:N (default: the config's)"
        )
        return parser

    offline_stage("pretrain", "pretrain a cell's world model offline on a collected dataset", "world_model.pt")
    cloning = offline_stage(
        "clone",
        "fit a cell's actor to the PPO reference's policy on the pretrained world model's latents (a diagnostic start)",
        "actor.pt",
    )
    cloning.add_argument(
        "--world-model", type=Path, required=True, help="the pretrained world model (`pretrain`'s world_model.pt)"
    )
    cloning.add_argument(
        "--reference-policy", type=Path, required=True, help="the reference's policy (its run folder's policy.pt)"
    )

    export = stage("export-dataset", "write a finished run's replay buffer to an HDF5 dataset")
    export.add_argument("--run-dir", type=Path, required=True, help="a completed run folder")
    export.add_argument("--out", type=Path, required=True, help="HDF5 file to write")

    ref = stage("reference", "train the model-free PPO reference (rsl-rl) of one task and seed")
    ref.add_argument("--config", type=Path, required=True, help="experiment YAML (its `reference` section)")
    ref.add_argument("--task", required=True, help="task name from the config's `tasks`")
    ref.add_argument("--seed", type=int, required=True, help="seed from the config's `seeds`")
    ref.add_argument("--run-dir", type=Path, required=True, help="results/{task}/reference/seed{seed}")
    ref.add_argument(
        "--device", default=None, help="override reference.device: auto, cpu, cuda or cuda:N (default: the config's)"
    )
    ref.add_argument(
        "--env-steps", type=_positive_int, default=None, help="override reference.env_steps (default: the config's)"
    )
    ref.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="override reference.max_minutes, 0 = none (default: the config's)",
    )

    coll = stage("collect", "offline HDF5 dataset from the reference's snapshots (with their exploration noise)")
    coll.add_argument("--config", type=Path, required=True, help="experiment YAML (its `collect` section)")
    coll.add_argument("--task", required=True, help="task name from the config's `tasks`")
    coll.add_argument("--reference-dir", type=Path, required=True, help="a completed reference run folder")
    coll.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    coll.add_argument(
        "--device", default=None, help="override reference.device: auto, cpu, cuda or cuda:N (default: the config's)"
    )

    select = stage("select", "pick the checkpoint with the best validation return")
    select.add_argument("--run-dir", type=Path, required=True, help="a completed run folder")
    select.add_argument("--out", type=Path, required=True, help="where to write best.pt")
    select.add_argument("--report", type=Path, required=True, help="where to write selection.json")

    evaluate = stage("evaluate", "run held-out episodes with the deterministic policy")
    _add_cell(evaluate)
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="policy checkpoint (best.pt)")
    evaluate.add_argument(
        "--episodes",
        type=_positive_int,
        default=None,
        help="override evaluation.episodes (default: the config's; `aggregate` accepts only the config's number)",
    )
    evaluate.add_argument("--out-csv", type=Path, required=True, help="one row per episode")
    evaluate.add_argument("--out-h5", type=Path, required=True, help="trajectories (observations, actions, rewards)")

    aggregate = stage("aggregate", "statistics over all cells -> compare.csv")
    aggregate.add_argument("--config", type=Path, required=True, help="experiment YAML")
    aggregate.add_argument("--episodes", type=Path, nargs="+", required=True, help="every cell's episodes CSV")
    aggregate.add_argument("--summaries", type=Path, nargs="+", required=True, help="every cell's train_summary.json")
    aggregate.add_argument("--out", type=Path, required=True, help="compare.csv")
    aggregate.add_argument("--out-per-seed", type=Path, required=True, help="long-format per-seed table")
    aggregate.add_argument("--bootstrap", type=_positive_int, default=2000, help="bootstrap resamples (default: 2000)")

    plot = stage("plot", "figures (PNG and PDF)")
    plot.add_argument("--config", type=Path, required=True, help="experiment YAML")
    plot.add_argument("--compare", type=Path, required=True, help="compare.csv of `aggregate`")
    plot.add_argument("--per-seed", type=Path, required=True, help="per_seed.csv of `aggregate`")
    plot.add_argument("--metrics", type=Path, nargs="+", required=True, help="every cell's metrics.csv")
    plot.add_argument("--wm-diagnostics", type=Path, nargs="+", required=True, help="every cell's wm_diagnostics.csv")
    plot.add_argument("--out-dir", type=Path, required=True, help="folder for the figures")

    params = stage("params", "print true parameter counts per size and dynamics preset")
    params.add_argument("--obs-dim", type=_positive_int, default=37, help="observation size (default: 37, the Ant)")
    params.add_argument("--act-dim", type=_positive_int, default=8, help="action size (default: 8, the Ant)")

    check = stage("check-config", "validate an experiment config and list its cells")
    check.add_argument("config", type=Path, help="experiment YAML")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(exit_codes.DEBUG_ENV, "") not in ("", "0")
    try:
        return _dispatch(args) or exit_codes.OK
    except (Exception, KeyboardInterrupt) as err:
        known = None if debug else describe(err)
        if known is None:
            raise  # a bug (or --debug): the traceback is what a developer needs
        code, message = known
        print(f"flow-mbpo-pwm {args.stage}: {message}", file=sys.stderr)
        return code


def describe(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an expected failure; None for anything else (a bug)."""
    if isinstance(err, KeyboardInterrupt):
        return exit_codes.INTERRUPTED, "interrupted (Ctrl-C)"
    if isinstance(err, ConfigError):
        return exit_codes.INVALID_CONFIG, f"invalid configuration: {err}"
    if isinstance(err, InputError):
        return exit_codes.BAD_INPUT, str(err)
    if isinstance(err, OSError):
        where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
        reason = err.strerror or str(err)
        hint = {
            errno.EACCES: "check the permissions of that path or choose another",
            errno.EROFS: "choose a writable location",
            errno.EISDIR: "a folder is where a file belongs; move it away or choose another path",
            errno.ENOTDIR: "a file is where a folder belongs; move it away or choose another path",
            errno.EEXIST: "a file is where a folder belongs; move it away or choose another path",
            errno.ENOSPC: "free some space and rerun",
            errno.EDQUOT: "free some space and rerun",
        }.get(err.errno, "")
        return exit_codes.IO_ERROR, f"{where + ': ' if where else ''}{reason}{'; ' + hint if hint else ''}"
    return None


def _cell_config(args: argparse.Namespace):
    from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, REFERENCE_SIZE, load_experiment, with_overrides

    experiment = load_experiment(args.config)
    if (args.size, args.dynamics) == (REFERENCE_SIZE, REFERENCE_DYNAMICS):  # the PPO reference (evaluate only)
        from flow_mbpo_pwm.reference import evaluation_cell

        return experiment, evaluation_cell(experiment, args.task, args.seed, args.device)
    config = experiment.cell(args.task, args.size, args.dynamics, args.seed)
    if args.device is not None:
        config = with_overrides(config, run={"device": args.device})
    return experiment, config


def _offline_config(args: argparse.Namespace, section: str):
    """The experiment, the stage's section (`pretrain`, `clone`) and the cell's training config with the section's
    seed: the world model, dynamics, actor and optimiser settings are the ones training will use."""
    from flow_mbpo_pwm.config import load_experiment, with_overrides

    experiment = load_experiment(args.config)
    settings = getattr(experiment, section)
    config = experiment.cell(args.task, args.size, args.dynamics, experiment.seeds[0])
    run = {"seed": settings.seed} | ({"device": args.device} if args.device is not None else {})
    return settings, with_overrides(config, run=run)


def _pretrain(args: argparse.Namespace) -> int:
    from flow_mbpo_pwm.pretrain import pretrain

    settings, config = _offline_config(args, "pretrain")
    steps = settings.steps if args.steps is None else args.steps
    return pretrain(config, args.dataset, steps, args.out, settings.log_every, settings.save_state_every)


def _clone(args: argparse.Namespace) -> int:
    from flow_mbpo_pwm.clone import clone

    settings, config = _offline_config(args, "clone")
    steps = settings.steps if args.steps is None else args.steps
    return clone(
        config, args.world_model, args.dataset, args.reference_policy, args.out, steps, settings.batch, settings.lr,
        settings.log_every, settings.imagined_steps, settings.imagined_weight,
    )  # fmt: skip


def _dispatch(args: argparse.Namespace) -> int | None:
    stage = args.stage
    if stage == "check-config":
        from flow_mbpo_pwm.config import load_experiment

        experiment = load_experiment(args.config)
        print(f"{args.config}: valid, {len(experiment.cells())} cells")
        return 0
    if stage == "train":
        from flow_mbpo_pwm.config import ConfigError, with_overrides
        from flow_mbpo_pwm.train import train_seeds

        if len(args.seed) != len(args.run_dir):
            raise ConfigError(
                "--run-dir", f"give one run folder per seed: {len(args.seed)} seeds, {len(args.run_dir)} folders"
            )
        configs = []
        for seed in args.seed:
            _, config = _cell_config(argparse.Namespace(**{**vars(args), "seed": seed}))
            if args.epochs is not None:
                config = with_overrides(config, pwm={"epochs": args.epochs})
            offline = {
                "world_model_init": args.world_model_init,
                "offline_data": args.offline_data,
                "actor_init": args.actor_init,
            }
            offline = {key: str(path) for key, path in offline.items() if path is not None}
            if offline:
                config = with_overrides(config, run=offline)
            configs.append(config)
        return train_seeds(configs, args.run_dir)
    if stage == "pretrain":
        return _pretrain(args)
    if stage == "clone":
        return _clone(args)
    if stage == "reference":
        from flow_mbpo_pwm.config import load_experiment
        from flow_mbpo_pwm.reference import reference

        overrides = {"device": args.device, "env_steps": args.env_steps, "max_minutes": args.max_minutes}
        return reference(load_experiment(args.config), args.task, args.seed, args.run_dir, **overrides)
    if stage == "collect":
        from flow_mbpo_pwm.collect import collect
        from flow_mbpo_pwm.config import load_experiment

        return collect(load_experiment(args.config), args.task, args.reference_dir, args.out, args.device)
    if stage == "export-dataset":
        from flow_mbpo_pwm.data.datasets import export_run

        return export_run(args.run_dir, args.out)
    if stage == "select":
        from flow_mbpo_pwm.select import select

        return select(args.run_dir, args.out, args.report)
    if stage == "evaluate":
        from flow_mbpo_pwm.evaluate import evaluate

        experiment, config = _cell_config(args)
        episodes = args.episodes if args.episodes is not None else experiment.evaluation.episodes
        return evaluate(config, experiment.evaluation, args.checkpoint, episodes, args.out_csv, args.out_h5)
    if stage == "aggregate":
        from flow_mbpo_pwm.aggregate import aggregate
        from flow_mbpo_pwm.config import load_experiment

        return aggregate(
            load_experiment(args.config), args.episodes, args.summaries, args.out, args.out_per_seed, args.bootstrap
        )
    if stage == "plot":
        from flow_mbpo_pwm.config import load_experiment
        from flow_mbpo_pwm.plots import plot

        experiment = load_experiment(args.config)
        return plot(experiment, args.compare, args.per_seed, args.metrics, args.out_dir, args.wm_diagnostics)
    if stage == "params":
        from flow_mbpo_pwm.models.counts import print_parameter_counts

        return print_parameter_counts(args.obs_dim, args.act_dim)
    raise AssertionError(f"unhandled stage {stage}")


if __name__ == "__main__":
    sys.exit(main())
