# Figures (PNG for the HTML report of `snakemake --report`, PDF for papers), captioned from workflow/report/.


localrules:
    plot,


rule plot:
    input:
        compare="results/compare.csv",
        per_seed="results/per_seed.csv",
        metrics=all_cells(f"{RUN}/metrics.csv")
        + reference_runs(f"{REFERENCE}/metrics.csv"),
        wm_diagnostics=all_cells(f"{RUN}/wm_diagnostics.csv"),
    output:
        png=[
            report(
                f"{FIGURES_DIR}/{stem}.png",
                caption=report_caption(stem),
                category="Figures",
            )
            for stem in FIGURES
        ],
        pdf=[f"{FIGURES_DIR}/{stem}.pdf" for stem in FIGURES],
        curves=report(
            f"{FIGURES_DIR}/{CURVES_TABLE}",
            caption=report_caption("learning_curves_table"),
            category="Tables",
        ),
    log:
        "logs/plot.log",
    benchmark:
        "benchmarks/plot.tsv"
    conda:
        STATS_ENV
    threads: 1
    params:
        config=experiment_file,
        experiment=EXPERIMENT_DIGEST,
        out_dir=figures_dir,
    shell:
        "flow-mbpo-pwm plot --config {params.config:q} --compare {input.compare:q}"
        " --per-seed {input.per_seed:q} --metrics {input.metrics:q}"
        " --wm-diagnostics {input.wm_diagnostics:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
