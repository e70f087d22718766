"""`flow-mbpo-pwm`: one console script, one subcommand per pipeline stage. Argument parsing only.

Stage modules are imported lazily, so `aggregate` and `plot` run on a login node without torch or Warp.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flow_mbpo_pwm.config import ConfigError


def _add_cell(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML (e.g. config/config.yaml)")
    parser.add_argument("--task", required=True, help="task name from the config's `tasks`")
    parser.add_argument("--size", required=True, help="size preset from the config's `sizes` (or `reference`)")
    parser.add_argument("--dynamics", required=True, help="dynamics variant from the config's `dynamics` (or `ppo`)")
    parser.add_argument("--seed", type=int, required=True, help="training seed from the config's `seeds`")
    parser.add_argument("--device", default=None, help="override run.device: auto, cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flow-mbpo-pwm", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    train = stages.add_parser("train", help="train one cell (resumes from the run folder's saved state)")
    _add_cell(train)
    train.add_argument("--run-dir", type=Path, required=True, help="the cell's run folder")
    train.add_argument("--epochs", type=int, default=None, help="override pwm.epochs (quick runs)")

    export = stages.add_parser("export-dataset", help="write a finished run's replay buffer to an HDF5 dataset")
    export.add_argument("--run-dir", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="HDF5 file to write")

    ref = stages.add_parser("reference", help="train the model-free PPO reference (rsl-rl) of one task and seed")
    ref.add_argument("--config", type=Path, required=True, help="experiment YAML (its `reference` section)")
    ref.add_argument("--task", required=True, help="task name from the config's `tasks`")
    ref.add_argument("--seed", type=int, required=True, help="seed from the config's `seeds`")
    ref.add_argument("--run-dir", type=Path, required=True, help="results/{task}/reference/seed{seed}")
    ref.add_argument("--device", default=None, help="override reference.device: auto, cpu, cuda or cuda:N")
    ref.add_argument("--env-steps", type=int, default=None, help="override reference.env_steps")
    ref.add_argument("--max-minutes", type=float, default=None, help="override reference.max_minutes (0 = none)")

    coll = stages.add_parser("collect", help="offline HDF5 dataset from the reference's snapshots (with noise)")
    coll.add_argument("--config", type=Path, required=True, help="experiment YAML (its `collect` section)")
    coll.add_argument("--task", required=True, help="task name from the config's `tasks`")
    coll.add_argument("--reference-dir", type=Path, required=True, help="a completed reference run folder")
    coll.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    coll.add_argument("--device", default=None, help="override reference.device: auto, cpu, cuda or cuda:N")

    select = stages.add_parser("select", help="pick the checkpoint with the best validation return")
    select.add_argument("--run-dir", type=Path, required=True)
    select.add_argument("--out", type=Path, required=True, help="where to write best.pt")
    select.add_argument("--report", type=Path, required=True, help="where to write selection.json")

    evaluate = stages.add_parser("evaluate", help="run held-out episodes with the deterministic policy")
    _add_cell(evaluate)
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="policy checkpoint (best.pt)")
    evaluate.add_argument("--episodes", type=int, default=None, help="override evaluation.episodes")
    evaluate.add_argument("--out-csv", type=Path, required=True, help="one row per episode")
    evaluate.add_argument("--out-h5", type=Path, required=True, help="trajectories (observations, actions, rewards)")

    aggregate = stages.add_parser("aggregate", help="statistics over all cells -> compare.csv")
    aggregate.add_argument("--config", type=Path, required=True)
    aggregate.add_argument("--episodes", type=Path, nargs="+", required=True, help="every cell's episodes CSV")
    aggregate.add_argument("--summaries", type=Path, nargs="+", required=True, help="every cell's train_summary.json")
    aggregate.add_argument("--out", type=Path, required=True, help="compare.csv")
    aggregate.add_argument("--out-per-seed", type=Path, required=True, help="long-format per-seed table")
    aggregate.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")

    plot = stages.add_parser("plot", help="figures (PNG and PDF)")
    plot.add_argument("--config", type=Path, required=True)
    plot.add_argument("--compare", type=Path, required=True)
    plot.add_argument("--per-seed", type=Path, required=True)
    plot.add_argument("--metrics", type=Path, nargs="+", required=True, help="every cell's metrics.csv")
    plot.add_argument("--out-dir", type=Path, required=True)

    params = stages.add_parser("params", help="print true parameter counts per size and dynamics preset")
    params.add_argument("--obs-dim", type=int, default=37)
    params.add_argument("--act-dim", type=int, default=8)

    check = stages.add_parser("check-config", help="validate an experiment config and list its cells")
    check.add_argument("config", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args) or 0
    except ConfigError as err:
        print(f"flow-mbpo-pwm {args.stage}: invalid configuration: {err}", file=sys.stderr)
        return 2


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


def _dispatch(args: argparse.Namespace) -> int | None:
    stage = args.stage
    if stage == "check-config":
        from flow_mbpo_pwm.config import load_experiment

        experiment = load_experiment(args.config)
        print(f"{args.config}: valid, {len(experiment.cells())} cells")
        return 0
    if stage == "train":
        from flow_mbpo_pwm.config import with_overrides
        from flow_mbpo_pwm.train import train

        _, config = _cell_config(args)
        if args.epochs is not None:
            config = with_overrides(config, pwm={"epochs": args.epochs})
        return train(config, args.run_dir)
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

        return plot(load_experiment(args.config), args.compare, args.per_seed, args.metrics, args.out_dir)
    if stage == "params":
        from flow_mbpo_pwm.models.counts import print_parameter_counts

        return print_parameter_counts(args.obs_dim, args.act_dim)
    raise AssertionError(f"unhandled stage {stage}")


if __name__ == "__main__":
    sys.exit(main())
