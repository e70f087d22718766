"""Warp kernels of the Ant task: actions -> joint torques, observation, reward/termination, stochastic reset.

Layout per env (one articulation each): 9 bodies (torso first), joint coordinates 15 (free root: position xyz,
quaternion xyzw; then 8 hinge angles), joint dofs 14 (free root 6; then 8 hinge rates). Hinge order is the action
order [hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3, hip_4, ankle_4].

Newton is Z-up; dflex's Ant lived in a Y-up world with its start pose rotated -90 deg about x. The observation
reproduces dflex's numbers exactly by expressing the torso quaternion and velocities in dflex's world frame:
x_dflex = C x_newton with C = rotation of -90 deg about x, i.e. (x, y, z) -> (x, z, -y). Height, up and heading
projections are frame-invariant scalars.
"""

from __future__ import annotations

import warp as wp

BODIES_PER_ENV = 9
COORDS_PER_ENV = 15
DOFS_PER_ENV = 14
ACT_DIM = 8
OBS_DIM = 37
NUM_REWARD_TERMS = 5  # forward, up, heading, height, action penalty

# Noise draws per reset: position 3, rotation angle 1 + axis 3, hinge angles 8, velocities 14.


@wp.func
def newton_to_dflex(v: wp.vec3):
    # C = rot_x(-90 deg): (x, y, z) -> (x, z, -y)
    return wp.vec3(v[0], v[2], -v[1])


@wp.kernel
def apply_actions(
    actions: wp.array2d[wp.float32],
    action_scale: float,
    prev_actions: wp.array2d[wp.float32],
    joint_f: wp.array[wp.float32],
    nonfinite_count: wp.array[wp.int32],
):
    """Clip to [-1, 1], scale to joint torque. Non-finite entries become 0 torque and are counted, so a bad
    action can never reach the physics state (the eager host-side check raises before this on CPU)."""
    env, k = wp.tid()
    a = actions[env, k]
    if not wp.isfinite(a):
        a = 0.0
        wp.atomic_add(nonfinite_count, 0, 1)
    a = wp.clamp(a, -1.0, 1.0)
    prev_actions[env, k] = a
    joint_f[env * DOFS_PER_ENV + 6 + k] = a * action_scale


@wp.kernel
def observe(
    body_q: wp.array[wp.transform],
    body_qd: wp.array[wp.spatial_vector],
    joint_q: wp.array[wp.float32],
    joint_qd: wp.array[wp.float32],
    prev_actions: wp.array2d[wp.float32],
    start_xy: wp.array[wp.vec2],
    target_distance: float,
    joint_vel_scale: float,
    mask: wp.array[wp.bool],
    use_mask: int,
    obs: wp.array2d[wp.float32],
):
    """The 37-dim dflex observation of each env (only rows with mask set when use_mask != 0)."""
    env = wp.tid()
    if use_mask != 0 and not mask[env]:
        return
    X = body_q[env * BODIES_PER_ENV]
    pos = wp.transform_get_translation(X)
    rot = wp.transform_get_rotation(X)
    twist = body_qd[env * BODIES_PER_ENV]
    lin_vel = newton_to_dflex(wp.spatial_top(twist))  # torso origin == torso COM (symmetric torso)
    ang_vel = newton_to_dflex(wp.spatial_bottom(twist))
    # dflex's reported quaternion = C * q_newton (its start pose is C).
    C = wp.quat_from_axis_angle(wp.vec3(1.0, 0.0, 0.0), -0.5 * wp.pi)
    q_dflex = C * rot

    up = wp.quat_rotate(rot, wp.vec3(0.0, 0.0, 1.0))
    heading = wp.quat_rotate(rot, wp.vec3(1.0, 0.0, 0.0))
    s = start_xy[env]
    to_target = wp.vec3(target_distance + s[0] - pos[0], s[1] - pos[1], 0.0)
    target_dir = wp.normalize(to_target)

    obs[env, 0] = pos[2]
    obs[env, 1] = q_dflex[0]
    obs[env, 2] = q_dflex[1]
    obs[env, 3] = q_dflex[2]
    obs[env, 4] = q_dflex[3]
    for i in range(3):
        obs[env, 5 + i] = lin_vel[i]
        obs[env, 8 + i] = ang_vel[i]
    for k in range(8):
        obs[env, 11 + k] = joint_q[env * COORDS_PER_ENV + 7 + k]
        obs[env, 19 + k] = joint_vel_scale * joint_qd[env * DOFS_PER_ENV + 6 + k]
        obs[env, 29 + k] = prev_actions[env, k]
    obs[env, 27] = up[2]
    obs[env, 28] = wp.dot(heading, target_dir)


@wp.kernel
def reward_and_done(
    obs: wp.array2d[wp.float32],
    prev_actions: wp.array2d[wp.float32],
    termination_height: float,
    up_weight: float,
    action_penalty: float,
    max_episode_steps: int,
    advance: int,
    episode_step: wp.array[wp.int32],
    reward: wp.array[wp.float32],
    reward_terms: wp.array2d[wp.float32],
    terminated: wp.array[wp.bool],
    truncated: wp.array[wp.bool],
    done: wp.array[wp.bool],
    final_obs: wp.array2d[wp.float32],
    physics_failures: wp.array[wp.int32],
):
    """dflex's Ant reward on the post-step observation; termination below the height; truncation at the limit.

    A non-finite observation (physics blow-up) also terminates the env, so one bad env is reset instead of
    poisoning the batch; it is counted in physics_failures for the caller's guard. `advance` (1 in a step, 0
    when only evaluating a hand-set state) is added to the episode step counter."""
    env = wp.tid()
    finite = int(1)  # noqa: UP018 -- Warp needs the constructor for a variable assigned in a loop
    for j in range(OBS_DIM):
        final_obs[env, j] = obs[env, j]
        if not wp.isfinite(obs[env, j]):
            finite = 0
    sq = float(0.0)  # noqa: UP018
    for k in range(ACT_DIM):
        sq += prev_actions[env, k] * prev_actions[env, k]
    forward = obs[env, 5]
    up = up_weight * obs[env, 27]
    heading = obs[env, 28]
    height = obs[env, 0] - termination_height
    penalty = action_penalty * sq
    reward_terms[env, 0] = forward
    reward_terms[env, 1] = up
    reward_terms[env, 2] = heading
    reward_terms[env, 3] = height
    reward_terms[env, 4] = penalty
    reward[env] = forward + up + heading + height + penalty

    step = episode_step[env] + advance
    episode_step[env] = step
    term = obs[env, 0] < termination_height
    if finite == 0:
        term = True
        wp.atomic_add(physics_failures, 0, 1)
    trunc = (step >= max_episode_steps) and (not term)
    terminated[env] = term
    truncated[env] = trunc
    done[env] = term or trunc


@wp.kernel
def sample_reset(
    done: wp.array[wp.bool],
    seed: wp.array[wp.int32],
    block: int,
    reset_count: wp.array[wp.int32],
    start_joint_q: wp.array[wp.float32],
    pos_noise: float,
    rot_noise: float,
    joint_noise: float,
    vel_noise: float,
    joint_q: wp.array[wp.float32],
    joint_qd: wp.array[wp.float32],
    prev_actions: wp.array2d[wp.float32],
    episode_step: wp.array[wp.int32],
):
    """dflex's stochastic reset for envs with done set: position += U(+-pos_noise)^3, rotation by U(+-rot_noise)
    about a random axis (body frame), hinges += U(+-joint_noise), all 14 velocities = U(+-vel_noise).

    The random stream of env e's n-th reset is a pure function of (seed, e, n): no RNG state but the reset
    counter, so state_dict/load_state_dict continue bitwise. Envs come in blocks of `block` (a stack of seeds),
    each with its own seed: env e draws as env e % block of a lone env with that seed."""
    env = wp.tid()
    if not done[env]:
        return
    n = reset_count[env]
    reset_count[env] = n + 1
    rng = wp.rand_init(seed[env], env % block)
    rng = wp.rand_init(wp.int32(wp.randi(rng)), n)

    qs = env * COORDS_PER_ENV
    for i in range(3):
        joint_q[qs + i] = start_joint_q[i] + pos_noise * (2.0 * wp.randf(rng) - 1.0)
    angle = rot_noise * (2.0 * wp.randf(rng) - 1.0)
    axis = wp.vec3(wp.randf(rng) - 0.5, wp.randf(rng) - 0.5, wp.randf(rng) - 0.5)
    axis = wp.normalize(axis)
    q0 = wp.quat(start_joint_q[3], start_joint_q[4], start_joint_q[5], start_joint_q[6])
    q = q0 * wp.quat_from_axis_angle(axis, angle)
    joint_q[qs + 3] = q[0]
    joint_q[qs + 4] = q[1]
    joint_q[qs + 5] = q[2]
    joint_q[qs + 6] = q[3]
    for k in range(8):
        joint_q[qs + 7 + k] = start_joint_q[7 + k] + joint_noise * (2.0 * wp.randf(rng) - 1.0)
    ds = env * DOFS_PER_ENV
    for k in range(DOFS_PER_ENV):
        joint_qd[ds + k] = vel_noise * (2.0 * wp.randf(rng) - 1.0)
    for k in range(ACT_DIM):
        prev_actions[env, k] = 0.0
    episode_step[env] = 0
