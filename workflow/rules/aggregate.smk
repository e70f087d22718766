# One comparison table over every cell (statistics only: runs on the login node, no GPU stack needed).


localrules:
    aggregate,


rule aggregate:
    input:
        episodes=all_cells(f"{RUN}/eval/episodes.csv")
        + reference_runs(f"{REFERENCE}/eval/episodes.csv"),
        summaries=all_cells(f"{RUN}/train_summary.json")
        + reference_runs(f"{REFERENCE}/train_summary.json"),
    output:
        compare=report(
            "results/compare.csv", caption=report_caption("compare"), category="Tables"
        ),
        per_seed=report(
            "results/per_seed.csv",
            caption=report_caption("per_seed"),
            category="Tables",
        ),
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    conda:
        STATS_ENV
    threads: 1
    params:
        config=experiment_file,
        experiment=EXPERIMENT_DIGEST,
    shell:
        "flow-mbpo-pwm aggregate --config {params.config:q} --episodes {input.episodes:q}"
        " --summaries {input.summaries:q} --out {output.compare:q}"
        " --out-per-seed {output.per_seed:q} > {log:q} 2>&1"
