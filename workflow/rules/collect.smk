# An offline dataset per task from the snapshots of one reference run (seed `collect.seed`), each snapshot run with
# its own exploration noise. Consumed by world-model pretraining, not by `train` here.


rule collect:
    input:
        summary=collect_summary,
    output:
        dataset=DATASET,
    log:
        "logs/collect/{task}.log",
    benchmark:
        "benchmarks/collect/{task}.tsv"
    conda:
        PIPELINE_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=experiment_file,
        gpu_slot=gpu_slot,
        reference_dir=collect_reference_dir,
        collect=collect_digest,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm collect --config {params.config:q} --task {wildcards.task:q}"
        " --reference-dir {params.reference_dir:q} --out {output.dataset:q} > {log:q} 2>&1"
