from flow_mbpo_pwm.models.counts import parameter_counts, print_parameter_counts


def test_5m_deterministic_world_model_on_ant_matches_the_spec():
    counts = parameter_counts(37, 8, "5M", "deterministic")
    # Spec: ~1.47M. Encoder 142,848 + dynamics 795,136 + reward 531,969 (hand count in models/counts.py).
    assert counts["world_model"] == 1_469_953
    assert abs(counts["world_model"] - 1.47e6) / 1.47e6 < 0.02
    assert (
        counts["actor"]
        == (512 * 400 + 400 + 800) + (400 * 200 + 200 + 400) + (200 * 100 + 100 + 200) + (100 * 8 + 8) + 8
    )
    assert counts["critic"] == 3 * ((512 * 400 + 400 + 800) + (400 * 200 + 200 + 400) + (200 + 1))
    assert counts["total"] == counts["world_model"] + counts["actor"] + counts["critic"]


def test_flow_world_model_adds_the_time_embedding_inputs():
    det = parameter_counts(37, 8, "5M", "deterministic")["world_model"]
    flow = parameter_counts(37, 8, "5M", "flow")["world_model"]
    # +32 time-embedding inputs x 512 units; the velocity head's last layer has no LayerNorm (-2 x 512).
    assert flow - det == 32 * 512 - 2 * 512


def test_print_parameter_counts_prints_every_preset_and_returns_zero(capsys):
    assert print_parameter_counts(3, 1) == 0
    out = capsys.readouterr().out
    for name in ("tiny", "5M", "48M", "deterministic", "flow"):
        assert name in out
