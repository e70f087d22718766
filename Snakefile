# Flow-MBPO-PWM: does a flow-matching world model beat a deterministic one inside PWM?
# One chain per cell (task x size x dynamics x seed): train -> select -> evaluate, then aggregate -> plot.
# Beside the grid: the model-free PPO reference (reference -> evaluate_reference, in the same tables and figures)
# and an offline dataset collected from its snapshots (collect).

from snakemake.utils import min_version, validate

min_version("9.0")

# `--configfile X` names the whole experiment: X replaces config/config.yaml instead of being deep-merged into it
# (a merge would silently mix, e.g., the dynamics variants of both files).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/clone.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        "results/compare.csv",
        "results/per_seed.csv",
        rules.plot.output,
        datasets(),
