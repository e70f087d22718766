# With `clone.enabled` (off by default; not the paper's protocol): per (task, size, dynamics variant) the actor is
# fitted to the final policy of the reference the dataset comes from, on the pretrained world model's latents
# (`flow-mbpo-pwm clone`), and every seed of the cell starts training from it. Seconds on a GPU: no resumable state.


rule clone:
    input:
        world_model=f"{PRETRAINED}/world_model.pt",
        dataset=DATASET,
        policy=clone_reference_policy,
    output:
        actor=f"{PRETRAINED}/actor.pt",
        metrics=f"{PRETRAINED}/clone_metrics.csv",
    log:
        "logs/clone/{task}/{size}-{dynamics}.log",
    benchmark:
        "benchmarks/clone/{task}/{size}-{dynamics}.tsv"
    conda:
        PIPELINE_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=experiment_file,
        gpu_slot=gpu_slot,
        settings=clone_digest,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm clone --config {params.config:q} --task {wildcards.task:q}"
        " --size {wildcards.size:q} --dynamics {wildcards.dynamics:q} --dataset {input.dataset:q}"
        " --world-model {input.world_model:q} --reference-policy {input.policy:q}"
        " --out {output.actor:q} > {log:q} 2>&1"
