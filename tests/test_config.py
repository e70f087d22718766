"""The typed config rejects bad input by name and resolves every cell of the grid."""

import pytest

from flow_mbpo_pwm.config import ConfigError, deep_merge, load_experiment


def test_default_experiment_has_every_cell():
    experiment = load_experiment({})
    assert len(experiment.cells()) == 1 * 2 * 2 * 5
    config = experiment.cell("ant", "48M", "flow", 3)
    assert config.world_model.latent_dim == 768
    assert config.dynamics.kind == "flow" and config.dynamics.integrator == "heun"
    assert config.run.seed == 3


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"tasks": {"ant": {"num_envs": 0}}}, "tasks.ant.num_envs"),
        ({"train": {"world_model": {"task_dim": 96}}}, "train.world_model.task_dim"),
        ({"train": {"pwm": {"gamma": 1.5}}}, "train.pwm.gamma"),
        ({"train": {"pwm": {"buffer_size": 10}}}, "train.pwm.buffer_size"),
        ({"train": {"pwm": {"wm_dynamics_coef": 0}}}, "train.pwm.wm_dynamics_coef"),
        ({"sizes": ["7M"]}, "sizes"),
        ({"unknown_section": 1}, "unknown_section"),
        ({"train": {"pwm": {"gamma": "high"}}}, "train.pwm.gamma"),
        ({"train": {"pwm": {"horizon": 2.5}}}, "train.pwm.horizon"),
        ({"dynamics": {"flow8": {"kind": "flow", "substeps": 0}}}, "dynamics.flow8.substeps"),
        ({"dynamics": {"flow8": {"kind": "flow", "integrator": "rk45"}}}, "dynamics.flow8.integrator"),
        ({"train": {"run": {"seed": 3}}}, "train.run.seed"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"train_seeds_per_job": -1}, "train_seeds_per_job"),
        ({"train_seeds_per_job": "all"}, "train_seeds_per_job"),
        ({"tasks": {"ant;rm -rf": {}}}, "tasks"),
        ({"evaluation": {"seed_base": 500_001}}, "evaluation.seed_base"),
        ({"evaluation": {"curve_env_steps": [2_000_000, 1_000_000]}}, "evaluation.curve_env_steps"),
        ({"evaluation": {"curve_env_steps": []}}, "evaluation.curve_env_steps"),
        ({"train": {"pwm": {"actor_lr": float("inf")}}}, "train.pwm.actor_lr"),
        ({"train": {"pwm": {"epochs": 3000, "lr_decay_epochs": 1500}}}, "train.pwm.lr_decay_epochs"),
        ({"train": {"pwm": {"min_logstd": float("-inf")}}}, "train.pwm.min_logstd"),
        ({"train": {"pwm": {"min_logstd_decay_epochs": -1}}}, "train.pwm.min_logstd_decay_epochs"),
        ({"train": {"pwm": {"actor_smoothness_coef": -0.5}}}, "train.pwm.actor_smoothness_coef"),
        ({"train": {"pwm": {"actor_saturation_coef": -0.1}}}, "train.pwm.actor_saturation_coef"),
        ({"train": {"pwm": {"actor_saturation_coef": float("nan")}}}, "train.pwm.actor_saturation_coef"),
        (
            {"train": {"pwm": {"actor_saturation_coef": 0.1, "actor_saturation_threshold": 1.0}}},
            "train.pwm.actor_saturation_threshold",
        ),
        (
            {"train": {"pwm": {"actor_saturation_coef": 0.1, "actor_saturation_threshold": -0.5}}},
            "train.pwm.actor_saturation_threshold",
        ),
        ({"train": {"pwm": {"actor_saturation_threshold": 0.9}}}, "train.pwm.actor_saturation_threshold"),
        ({"train": {"pwm": {"epochs": 100, "actor_delay_epochs": 101}}}, "train.pwm.actor_delay_epochs"),
        ({"train": {"pwm": {"actor_delay_epochs": -1}}}, "train.pwm.actor_delay_epochs"),
        ({"train": {"run": {"actor_init": "a.pt"}}}, "train.run.actor_init"),
        ({"clone": {"enabled": True}, "pretrain": {"enabled": False}}, "clone.enabled"),
        ({"clone": {"steps": 0}}, "clone.steps"),
        ({"train": {"pwm": {"latent_norm": "layer"}}}, "train.pwm.latent_norm"),
        (
            {"train": {"pwm": {"latent_norm": "standardize"}}, "pretrain": {"seed_buffer": False}},
            "train.pwm.latent_norm",
        ),
        ({"clone": {"lr": 0.0}}, "clone.lr"),
        ({"train": {"world_model": {"bin_max": float("nan")}}}, "train.world_model.bin_max"),
        ({"tasks": {"antt": {}}}, "tasks.antt.task"),
        ({"tasks": {"pendulum": {"task": "gym:"}}}, "tasks.pendulum.task"),
        ({"tasks": {"ant": [1, 2]}}, "tasks.ant"),
        ({"dynamics": {"flow": 4}}, "dynamics.flow"),
        (["tasks", "sizes"], "<root>"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(bad, key):
    with pytest.raises(ConfigError) as err:
        load_experiment(bad)
    assert err.value.key == key


def test_train_jobs_stack_all_seeds_of_a_cell_and_never_regroup_started_seeds():
    one_cell = {"sizes": ["5M"], "dynamics": {"flow": {}}, "seeds": [0, 1, 2, 3, 4]}
    assert load_experiment(one_cell).train_jobs() == [("ant", "5M", "flow", (0, 1, 2, 3, 4))]
    pairs = load_experiment({**one_cell, "train_seeds_per_job": 2}).train_jobs()
    assert [stack for *_, stack in pairs] == [(0, 1), (2, 3), (4,)]
    # Seeds 0 and 1 started as a stack of their own, seed 3 alone (recorded in their run folders): they keep those
    # stacks; the other seeds are grouped among themselves.
    recorded = {0: (0, 1), 1: (0, 1), 3: (3,)}
    jobs = load_experiment({**one_cell, "seeds": [0, 1, 2, 3, 4, 5]}).train_jobs(lambda *cell: recorded.get(cell[3]))
    assert [stack for *_, stack in jobs] == [(0, 1), (3,), (2, 4, 5)]
    default = load_experiment({})
    assert len(default.train_jobs()) == len(default.cells()) // len(default.seeds)  # one job per cell


def test_dynamics_variant_merges_over_its_preset():
    experiment = load_experiment({"dynamics": {"flow-k8": {"kind": "flow", "substeps": 8}}})
    dynamics = experiment.cell("ant", "5M", "flow-k8", 0).dynamics
    assert dynamics.substeps == 8 and dynamics.integrator == "heun"


def test_train_jobs_ignore_a_recorded_stack_that_overlaps_one_already_taken():
    """Seed 0's folder says it trains alone, seed 1's that it trains with seed 0 (e.g. after a manual run): every
    seed still lands in exactly one job."""
    recorded = {0: (0,), 1: (0, 1)}
    jobs = load_experiment({"sizes": ["5M"], "dynamics": {"flow": {}}, "seeds": [0, 1, 2]}).train_jobs(
        lambda *cell: recorded.get(cell[3])
    )
    assert [stack for *_, stack in jobs] == [(0,), (1, 2)]


def test_a_cut_run_follows_the_longer_learning_rate_schedule_it_names():
    pwm = load_experiment({}).cell("ant", "5M", "flow", 0).pwm
    assert pwm.schedule_progress(0) == 0.0 and pwm.schedule_progress(pwm.epochs) == 1.0
    cut = load_experiment({"train": {"pwm": {"epochs": 3000, "lr_decay_epochs": 15000}}}).cell("ant", "5M", "flow", 0)
    assert cut.pwm.schedule_progress(3000) == pytest.approx(0.2)


def test_the_actors_std_floor_is_pwms_throughout_or_falls_from_its_start_to_it():
    pwm = load_experiment({}).cell("ant", "5M", "deterministic", 0).pwm
    assert [pwm.logstd_floor(e) for e in (0, 500, 15_000)] == [pwm.min_logstd] * 3
    falling = {"train": {"pwm": {"init_logstd": -0.5, "min_logstd": -1.5, "min_logstd_decay_epochs": 2000}}}
    pwm = load_experiment(falling).cell("ant", "5M", "deterministic", 0).pwm
    floors = [pwm.logstd_floor(e) for e in (0, 500, 1000, 2000, 2001, 15_000)]
    assert floors == pytest.approx([-0.5, -0.75, -1.0, -1.5, -1.5, -1.5])


def test_deep_merge_replaces_nested_keys_one_by_one_and_leaves_its_inputs_alone():
    base = {"reference": {"num_envs": 4096, "max_minutes": 3}, "seeds": [0, 1], "sizes": ["5M"]}
    overrides = {"reference": {"max_minutes": 10}, "seeds": [2], "collect": {"seed": 0}}
    merged = deep_merge(base, overrides)
    assert merged == {"reference": {"num_envs": 4096, "max_minutes": 10}, "seeds": [2], "sizes": ["5M"],
                      "collect": {"seed": 0}}  # fmt: skip
    assert base == {"reference": {"num_envs": 4096, "max_minutes": 3}, "seeds": [0, 1], "sizes": ["5M"]}
    assert deep_merge(base, {"reference": 7})["reference"] == 7  # a non-mapping replaces a mapping whole


def test_the_actor_is_held_for_its_delay_and_then_follows_the_schedule():
    """`pwm.actor_delay_epochs`: the actor's learning rate is 0 for the first that many epochs (all of them at
    `epochs`), then the schedule's; the critic's and world model's are never held."""
    from flow_mbpo_pwm.algorithms.pwm import PWM

    def rates(delay: int, epochs_done: int) -> dict:
        experiment = {"sizes": ["tiny"], "train": {"pwm": {"epochs": 100, "actor_delay_epochs": delay}}}
        config = load_experiment(experiment).cell("ant", "tiny", "deterministic", 0)
        return PWM(37, 8, config, "cpu").learning_rates(config.pwm.schedule_progress(epochs_done))

    assert rates(10, 9)["actor"] == 0.0 and rates(10, 9)["critic"] > 0 and rates(10, 9)["wm"] > 0
    assert rates(10, 10)["actor"] == rates(0, 10)["actor"] > 0
    assert rates(100, 99)["actor"] == 0.0
