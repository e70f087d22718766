import torch

from flow_mbpo_pwm.algorithms.returns import td_lambda_targets


def test_td_lambda_targets_hand_computed_with_termination_and_truncation():
    gamma, lam = 0.5, 0.5
    # Three envs, H = 3, rewards 1, 2, 3 and next values 10, 20, 30 (V(z_{i+1})):
    # env 0 never ends; env 1 terminates at step 0 (its next value is already zeroed); env 2 is truncated at
    # step 1 (its bootstrap value is kept).
    rewards = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    next_values = torch.tensor([[10.0, 0.0, 10.0], [20.0, 20.0, 20.0], [30.0, 30.0, 30.0]])
    dones = torch.tensor([[False, True, False], [False, False, True], [False, False, False]])
    targets = td_lambda_targets(rewards, next_values, dones, gamma, lam)
    # By hand:
    # step 2 (the rollout's last step is treated as done): 3 + 0.5 * 30 = 18 for every env.
    # env 0: G1 = 2 + 0.5 * (0.5 * 20 + 0.5 * 18) = 11.5;  G0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 11.5) = 6.375
    # env 1: G1 = 11.5;  G0 = 1 + 0.5 * 0 = 1   (terminated: nothing after step 0 counts)
    # env 2: G1 = 2 + 0.5 * 20 = 12 (truncated: bootstrap only);  G0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 12) = 6.5
    expected = torch.tensor([[6.375, 1.0, 6.5], [11.5, 11.5, 12.0], [18.0, 18.0, 18.0]])
    torch.testing.assert_close(targets, expected)


def test_lambda_extremes_are_one_step_and_monte_carlo_returns():
    rewards = torch.tensor([[1.0], [2.0], [4.0]])
    values = torch.tensor([[8.0], [16.0], [32.0]])
    dones = torch.zeros(3, 1, dtype=torch.bool)
    one_step = td_lambda_targets(rewards, values, dones, gamma=0.5, lam=0.0)
    torch.testing.assert_close(one_step, rewards + 0.5 * values)
    monte_carlo = td_lambda_targets(rewards, values, dones, gamma=0.5, lam=1.0)
    # G0 = 1 + 0.5 * 2 + 0.25 * 4 + 0.125 * 32 = 7
    torch.testing.assert_close(monte_carlo[0, 0], torch.tensor(7.0))


def test_shapes_must_agree():
    try:
        td_lambda_targets(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2, 2), 0.9, 0.9)
    except ValueError as err:
        assert "[H, N]" in str(err)
    else:
        raise AssertionError("expected ValueError")
