# Train the seeds of one cell. One job per stack of seeds (`train_seeds_per_job`, default all seeds of a cell),
# one process: the seeds train together as one stack (algorithms/pwm.py) at about the cost of one, each into
# its own run folder, exactly as a lone run of that seed would. A job's outputs are every seed's declared files;
# which seeds share a job is fixed once they start (`TRAIN_JOBS`, common.smk), so adding seeds to the config
# adds jobs of the new seeds only. Resumable state lives in the run folders' undeclared work/ (Snakemake deletes
# declared outputs of failed jobs, never work/), so a retried, requeued or `--rerun-incomplete` job continues from
# the seeds' work/state.pt. Exit 3 (a seed stopped by the collapse guard) counts as done: the stopped seed has
# written its outputs with status "collapsed" (no final model), and the tables report it; failing the job would
# make Snakemake delete its siblings' finished outputs.


for job in TRAIN_JOBS:

    rule:
        name:
            job.rule
        input:
            **job.inputs,
        output:
            **job.outputs,
        log:
            job.log,
        benchmark:
            job.benchmark
        conda:
            PIPELINE_ENV
        # One CPU thread: the work is on the GPU, and in CPU runs the tiny smoke networks gain nothing from
        # intra-op threads but slow down badly when threads outnumber free cores. profiles/slurm raises it.
        threads: 1
        resources:
            **job.resources,
        params:
            config=experiment_file,
            gpu_slot=gpu_slot_tagged(f"train:{job.task}:{job.size}:{job.dynamics}"),  # siblings on different GPUs
            cell=job.cell,
            task=job.task,
            size=job.size,
            dynamics=job.dynamics,
            seeds=job.seeds,
            run_dirs=job.run_dirs,
            offline=job.offline,
        shell:
            "{params.gpu_slot} flow-mbpo-pwm train --config {params.config:q} --task {params.task:q}"
            " --size {params.size:q} --dynamics {params.dynamics:q} --seed {params.seeds}"
            " --run-dir {params.run_dirs} {params.offline} > {log:q} 2>&1 || [ $? -eq 3 ]"
