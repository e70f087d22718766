# Held-out episodes with the deterministic policy, on evaluation seeds disjoint from training and validation.


rule evaluate:
    input:
        checkpoint=f"{RUN}/best.pt",
    output:
        episodes=f"{RUN}/eval/episodes.csv",
        trajectories=f"{RUN}/eval/trajectories.h5",
    log:
        f"logs/evaluate/{LOG}.log",
    benchmark:
        f"benchmarks/evaluate/{LOG}.tsv"
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
        evaluation=evaluation_digest,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm evaluate --config {params.config:q} --task {wildcards.task:q}"
        " --size {wildcards.size:q} --dynamics {wildcards.dynamics:q} --seed {wildcards.seed:q}"
        " --checkpoint {input.checkpoint:q} --out-csv {output.episodes:q}"
        " --out-h5 {output.trajectories:q} > {log:q} 2>&1"
