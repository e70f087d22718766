# Train one cell. Resumable state lives in the run folder's undeclared work/ (Snakemake deletes declared outputs
# of failed jobs, never work/), so a retried, requeued or `--rerun-incomplete` job continues from work/state.pt.


rule train:
    input:
        unpack(train_inputs),
    output:
        final=f"{RUN}/final.pt",
        metrics=f"{RUN}/metrics.csv",
        validation=f"{RUN}/validation.csv",
        wm_diagnostics=f"{RUN}/wm_diagnostics.csv",
        summary=f"{RUN}/train_summary.json",
    log:
        f"logs/train/{LOG}.log",
    benchmark:
        f"benchmarks/train/{LOG}.tsv"
    conda:
        PIPELINE_ENV
    # One CPU thread: the work is on the GPU, and in CPU runs the tiny smoke networks gain nothing from
    # intra-op threads but slow down badly when threads outnumber free cores. profiles/slurm raises it.
    threads: 1
    resources:
        gpu=1,
    params:
        config=experiment_file,
        gpu_slot=gpu_slot,
        run_dir=run_dir,
        cell=cell_digest,
        offline=offline_flags,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm train --config {params.config:q} --task {wildcards.task:q}"
        " --size {wildcards.size:q} --dynamics {wildcards.dynamics:q} --seed {wildcards.seed:q}"
        " --run-dir {params.run_dir:q} {params.offline} > {log:q} 2>&1"
