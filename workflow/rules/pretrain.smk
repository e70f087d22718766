# The paper's protocol: one world model per (task, size, dynamics variant) pretrained offline on the collected
# dataset; every seed of the cell starts training from it (and, with pretrain.seed_buffer, from the data).
# Resumable like train: its state lives in the folder's undeclared work/.


rule pretrain:
    input:
        dataset=DATASET,
    output:
        world_model=f"{PRETRAINED}/world_model.pt",
        metrics=f"{PRETRAINED}/pretrain_metrics.csv",
    log:
        "logs/pretrain/{task}/{size}-{dynamics}.log",
    benchmark:
        "benchmarks/pretrain/{task}/{size}-{dynamics}.tsv"
    conda:
        PIPELINE_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        config=experiment_file,
        gpu_slot=gpu_slot,
        settings=pretrain_digest,
    shell:
        "{params.gpu_slot} flow-mbpo-pwm pretrain --config {params.config:q} --task {wildcards.task:q}"
        " --size {wildcards.size:q} --dynamics {wildcards.dynamics:q} --dataset {input.dataset:q}"
        " --out {output.world_model:q} > {log:q} 2>&1"
