# The model-free reference: PPO from rsl-rl-lib on the same env, one run per task and seed (skipped entirely when
# `reference.enabled` is false). Resumable state lives in the undeclared work/ (see train.smk); the snapshots are
# listed in train_summary.json, written last. Evaluated by the same `evaluate` as every PWM cell.


rule reference:
    output:
        policy=f"{REFERENCE}/policy.pt",
        metrics=f"{REFERENCE}/metrics.csv",
        validation=f"{REFERENCE}/validation.csv",
        summary=f"{REFERENCE}/train_summary.json",
    log:
        f"logs/reference/{REFERENCE_LOG}.log",
    benchmark:
        f"benchmarks/reference/{REFERENCE_LOG}.tsv"
    # One CPU thread: the work is on the GPU (see train.smk). profiles/slurm raises it.
    conda:
        PIPELINE_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=experiment_file,
        gpu_slot=gpu_slot,
        run_dir=reference_dir,
        settings=reference_digest,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm reference --config {params.config:q} --task {wildcards.task:q}"
        " --seed {wildcards.seed:q} --run-dir {params.run_dir:q} > {log:q} 2>&1"


rule evaluate_reference:
    input:
        checkpoint=f"{REFERENCE}/policy.pt",
    output:
        episodes=f"{REFERENCE}/eval/episodes.csv",
        trajectories=f"{REFERENCE}/eval/trajectories.h5",
    log:
        f"logs/evaluate/{REFERENCE_LOG}.log",
    benchmark:
        f"benchmarks/evaluate/{REFERENCE_LOG}.tsv"
    conda:
        PIPELINE_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=experiment_file,
        gpu_slot=gpu_slot,
        evaluation=reference_evaluation_digest,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm evaluate --config {params.config:q} --task {wildcards.task:q}"
        " --size reference --dynamics ppo --seed {wildcards.seed:q}"
        " --checkpoint {input.checkpoint:q} --out-csv {output.episodes:q}"
        " --out-h5 {output.trajectories:q} > {log:q} 2>&1"
