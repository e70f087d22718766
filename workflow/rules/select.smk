# Pick the checkpoint to evaluate by its held-out validation return (a normal rule, not a checkpoint, so the
# whole DAG shows in `snakemake -n` and `--rulegraph`).


rule select:
    input:
        summary=f"{RUN}/train_summary.json",
        validation=f"{RUN}/validation.csv",
    output:
        best=f"{RUN}/best.pt",
        report=f"{RUN}/selection.json",
    log:
        f"logs/select/{LOG}.log",
    benchmark:
        f"benchmarks/select/{LOG}.tsv"
    conda:
        PIPELINE_ENV
    threads: 1
    resources:
        gpu=0,
    params:
        run_dir=run_dir,
    shell:
        "flow-mbpo-pwm select --run-dir {params.run_dir:q} --out {output.best:q}"
        " --report {output.report:q} > {log:q} 2>&1"
