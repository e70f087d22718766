"""The dflex Ant (as used by SHAC and PWM) rebuilt on Newton: one batched env object steps all ants at once.

One env step (1/60 s) is a fixed sequence of Warp launches: apply actions -> 16 physics substeps -> joint
coordinates from body poses -> observation -> reward/termination -> masked stochastic reset of done envs ->
observation of the reset envs. On CUDA the whole sequence is captured once in a CUDA graph and replayed, so a step
costs one graph launch and no host sync. Torch sees every buffer zero-copy (`wp.to_torch`).

Physics constants that differ from dflex are a calibration for Newton's SolverSemiImplicit; they live in
`AntCalibration` and are measured and explained in CALIBRATION.md next to this file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
import warp as wp

from . import ant_kernels as K
from .validation import check_action_shape, check_actions_finite, seed_blocks

SOLVERS = ("semi_implicit", "featherstone")


@dataclass(frozen=True)
class AntCalibration:
    """Contact, joint and solver constants of the Ant. Defaults are calibration "F" (CALIBRATION.md)."""

    contact_ke: float = 2.0e5  # ground contact stiffness [N/m] (set on every shape and the ground plane)
    contact_kd: float = 1.0e3  # contact damping [N s/m] (unscaled; dflex scaled its kd by penetration)
    contact_kf: float = 3.0e3  # viscous friction slope [N s/m], capped at mu * normal force
    contact_mu: float = 0.75
    limit_ke: float = 1.0e5  # joint-limit stiffness [N m/rad]
    limit_kd: float = 0.0
    joint_damping: float = 11.0  # dflex's always-on damping 1.0 + limit kd 10
    joint_attach_ke: float = 6.0e4  # SemiImplicit's penalty joints
    joint_attach_kd: float = 1.0e2
    angular_damping: float = 0.05
    limb_inertia_add: float = 0.05  # kg m^2 * I3 added to thighs and feet (stands in for armature 0.05)
    termination_height: float = 0.27
    substeps: int = 16
    collide_every_substep: bool = False  # contacts (with a 10 cm gap) found once per env step; see CALIBRATION.md

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "collide_every_substep":
                if not isinstance(value, bool):
                    raise ValueError(f"Ant calibration '{f.name}' must be a bool, got {value!r}")
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"Ant calibration '{f.name}' must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"Ant calibration '{f.name}' must be >= 0, got {value}")
        if self.substeps < 1 or int(self.substeps) != self.substeps:
            raise ValueError(f"Ant calibration 'substeps' must be a positive integer, got {self.substeps}")


CALIBRATION_FIELDS = frozenset(f.name for f in dataclasses.fields(AntCalibration))

# Named alternatives to the default calibration ("newton" = AntCalibration()), selected by `env.calibration`.
# "dflex": dflex's own contact and joint constants (shared/specs/ant.md), kept stable on SemiImplicit by the
# default's limb inertia. The idle ant sinks onto its belly, below the 0.27 m termination height, within 19-89
# steps (zero torque, 2 x 32 ants, CPU; CALIBRATION.md), as dflex's did (the public PWM curves start at 16-196):
# a policy must earn standing, which the default calibration gives for free.
CALIBRATION_PRESETS: dict[str, dict[str, float]] = {
    "dflex": {
        "contact_ke": 4.0e4,
        "contact_kd": 1.0e2,
        "limit_ke": 1.0e3,
        "limit_kd": 10.0,
        "joint_damping": 1.0,
        "joint_attach_ke": 1.0e4,
    },
}

# dflex task constants (shared/specs/ant.md).
FRAME_DT = 1.0 / 60.0
ACTION_SCALE = 200.0
START_HEIGHT = 0.75
START_HINGES = (0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0)
TARGET_DISTANCE = 10_000.0
JOINT_VEL_OBS_SCALE = 0.1
UP_WEIGHT = 0.1
ACTION_PENALTY = 0.0
RESET_POS_NOISE = 0.1
RESET_ROT_NOISE = math.pi / 24.0
RESET_JOINT_NOISE = 0.2
RESET_VEL_NOISE = 0.25


def ant_mjcf_path() -> str:
    return str(resources.files("flow_mbpo_pwm.envs") / "assets" / "ant.xml")


def torch_to_warp_device(device: str | torch.device) -> tuple[torch.device, str]:
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return torch.device("cuda", index), f"cuda:{index}"
    if dev.type == "cpu":
        return torch.device("cpu"), "cpu"
    raise ValueError(f"unsupported device '{device}': the Ant runs on 'cpu' or 'cuda[:i]'")


def build_ant_model(num_envs: int, calibration: AntCalibration, wp_device: str, solver: str):
    """Newton model of `num_envs` ants (one world each, so they never collide) on one shared ground plane."""
    import newton  # local import: newton pulls in a lot; keep `import flow_mbpo_pwm.envs` cheap

    ant = newton.ModelBuilder()
    ant.add_mjcf(ant_mjcf_path(), enable_self_collisions=False, parse_mujoco_options=False, parse_visuals=False)
    for s in range(ant.shape_count):
        ant.shape_material_ke[s] = calibration.contact_ke
        ant.shape_material_kd[s] = calibration.contact_kd
        ant.shape_material_kf[s] = calibration.contact_kf
        ant.shape_material_mu[s] = calibration.contact_mu
    for d in range(6, K.DOFS_PER_ENV):
        ant.joint_limit_ke[d] = calibration.limit_ke
        ant.joint_limit_kd[d] = calibration.limit_kd
        ant.joint_damping[d] = calibration.joint_damping
    if solver == "semi_implicit":
        # SemiImplicit ignores armature; extra limb inertia keeps the stiff penalty joints stable.
        for b in range(1, ant.body_count):
            inertia = np.asarray(ant.body_inertia[b], dtype=np.float32).reshape(3, 3)
            inertia += np.eye(3, dtype=np.float32) * calibration.limb_inertia_add
            ant.body_inertia[b] = wp.mat33(inertia)
    ant.joint_q[7:] = list(START_HINGES)

    builder = newton.ModelBuilder()
    builder.replicate(ant, num_envs, spacing=(0.0, 0.0, 0.0))
    ground = newton.ModelBuilder.ShapeConfig(
        ke=calibration.contact_ke, kd=calibration.contact_kd, kf=calibration.contact_kf, mu=calibration.contact_mu
    )
    builder.add_ground_plane(cfg=ground)
    model = builder.finalize(device=wp_device)
    if model.body_count != num_envs * K.BODIES_PER_ENV or model.joint_coord_count != num_envs * K.COORDS_PER_ENV:
        raise RuntimeError("unexpected Ant model layout; the MJCF and ant_kernels.py disagree")
    return model


class AntEnv:
    """Batched dflex Ant on Newton. See the package docstring (`flow_mbpo_pwm.envs`) for the interface.

    Action checking (`check_actions`): True checks every action batch for NaN/Inf on the host and raises
    ValueError before anything is touched (one device sync per step on CUDA). False skips the host check; a
    non-finite entry is then replaced by zero torque inside the action kernel (the state is never corrupted) and
    counted in `nonfinite_actions` (device tensor), which the caller's guard reads when it syncs anyway, or
    `raise_if_nonfinite_actions()` raises. Default: True on CPU, False on CUDA (no host sync in the hot path).

    Reproducibility: on CPU a seed fixes the trajectory bitwise. On CUDA float atomics (contact and joint force
    accumulation) make runs differ in the last bits unless `deterministic=True` (slower).
    """

    task = "ant"

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        *,
        episode_length: int = 1000,
        solver: str = "semi_implicit",
        calibration: AntCalibration | None = None,
        check_actions: bool | None = None,
        use_cuda_graph: bool = True,
        deterministic: bool = False,
    ):
        import newton

        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if not isinstance(episode_length, int) or isinstance(episode_length, bool) or episode_length < 1:
            raise ValueError(f"episode_length must be an integer >= 1, got {episode_length!r}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown Ant solver '{solver}'; choose one of {list(SOLVERS)}")
        block_seeds, block = seed_blocks(seed, num_envs)
        self.calibration = calibration or AntCalibration()
        self.calibration.validate()
        self.device, self._wp_device = torch_to_warp_device(device)
        self.num_envs = num_envs
        self.obs_dim = K.OBS_DIM
        self.act_dim = K.ACT_DIM
        self.max_episode_steps = episode_length
        self.solver_name = solver
        self.seed = list(seed) if isinstance(seed, list | tuple) else seed
        # Env e of block b (a stack of seeds: one block per seed) draws as env e % block of a lone env seeded
        # block_seeds[b]. Warp's rand_init takes an int32.
        env_seeds = np.repeat([int(s) % (2**31 - 1) for s in block_seeds], block).astype(np.int32)
        self._seed_block = block
        self.check_actions = (self.device.type == "cpu") if check_actions is None else bool(check_actions)
        self.substeps = int(self.calibration.substeps)
        self.sim_dt = FRAME_DT / self.substeps

        cal = self.calibration
        with wp.ScopedDevice(self._wp_device):
            self.model = build_ant_model(num_envs, cal, self._wp_device, solver)
            model = self.model
            # CPU kernels run sequentially, so CPU runs are bitwise reproducible either way; on CUDA
            # `deterministic` sorts contacts and orders float atomics (run-to-run reproducible, slower).
            mode = wp.DeterministicMode.RUN_TO_RUN if deterministic else wp.DeterministicMode.NOT_GUARANTEED
            if solver == "semi_implicit":
                self.solver = newton.solvers.SolverSemiImplicit(
                    model,
                    angular_damping=cal.angular_damping,
                    joint_attach_ke=cal.joint_attach_ke,
                    joint_attach_kd=cal.joint_attach_kd,
                    deterministic=mode,
                )
            else:
                # mass matrix refreshed once per env step, as dflex did (the host-side counter stays aligned:
                # every env step makes exactly `substeps` solver calls)
                self.solver = newton.solvers.SolverFeatherstone(
                    model,
                    angular_damping=cal.angular_damping,
                    update_mass_matrix_interval=self.substeps,
                    deterministic=mode,
                )
            self.state_0 = model.state()
            self.state_1 = model.state()
            self.control = model.control()
            self.pipeline = newton.CollisionPipeline(model, deterministic=deterministic)
            self.contacts = self.pipeline.contacts()
            # Joint coordinates: the state's own for Featherstone (reduced coordinates), recovered by eval_ik
            # from body poses for SemiImplicit (maximal coordinates).
            if solver == "featherstone":
                self._joint_q, self._joint_qd = self.state_0.joint_q, self.state_0.joint_qd
            else:
                self._joint_q = wp.zeros_like(model.joint_q)
                self._joint_qd = wp.zeros_like(model.joint_qd)

            n = num_envs
            start = np.zeros(K.COORDS_PER_ENV, dtype=np.float32)
            start[2] = START_HEIGHT
            start[6] = 1.0
            start[7:] = START_HINGES
            self._start_joint_q = wp.array(start, dtype=wp.float32)
            self._env_seeds = wp.array(env_seeds, dtype=wp.int32)
            self._start_xy = wp.zeros(n, dtype=wp.vec2)
            self._actions_in = wp.zeros((n, K.ACT_DIM), dtype=wp.float32)
            self._prev_actions = wp.zeros((n, K.ACT_DIM), dtype=wp.float32)
            self._obs = wp.zeros((n, K.OBS_DIM), dtype=wp.float32)
            self._final_obs = wp.zeros((n, K.OBS_DIM), dtype=wp.float32)
            self._reward = wp.zeros(n, dtype=wp.float32)
            self._reward_terms = wp.zeros((n, K.NUM_REWARD_TERMS), dtype=wp.float32)
            self._terminated = wp.zeros(n, dtype=wp.bool)
            self._truncated = wp.zeros(n, dtype=wp.bool)
            self._done = wp.zeros(n, dtype=wp.bool)
            self._all_true = wp.array(np.ones(n, dtype=bool), dtype=wp.bool)
            self._episode_step = wp.zeros(n, dtype=wp.int32)
            self._reset_count = wp.zeros(n, dtype=wp.int32)
            self._nonfinite_actions = wp.zeros(1, dtype=wp.int32)
            self._physics_failures = wp.zeros(1, dtype=wp.int32)

        # Zero-copy torch views of the Warp buffers.
        t = wp.to_torch
        self._actions_in_t = t(self._actions_in)
        self._obs_t = t(self._obs)
        self._final_obs_t = t(self._final_obs)
        self._reward_t = t(self._reward)
        self._reward_terms_t = t(self._reward_terms)
        self._terminated_t = t(self._terminated)
        self._truncated_t = t(self._truncated)
        self.nonfinite_actions = t(self._nonfinite_actions)
        self.physics_failures = t(self._physics_failures)

        self._graph = None
        self._use_cuda_graph = use_cuda_graph and self.device.type == "cuda"
        self.graph_captured = False
        # Warp wrappers of torch streams, made outside any capture and reused (see _warp_section).
        self._stream_wrappers: dict[int, wp.Stream] = {}
        # The training core may record env.step inside its own torch CUDA graph (PWM's captured imagination).
        self.supports_torch_graph_capture = self.device.type == "cuda"

    @contextlib.contextmanager
    def _warp_section(self):
        """Warp work ordered after the pending torch work on this device and before any later torch work.

        Warp launches on its own CUDA stream, torch on its current stream: two event handshakes (no host sync)
        keep zero-copy buffers consistent. On CPU everything is synchronous."""
        with wp.ScopedDevice(self._wp_device):
            if self.device.type != "cuda":
                yield
                return
            torch_stream = self._warp_stream_of(torch.cuda.current_stream(self.device))
            if torch.cuda.is_current_stream_capturing():
                # Inside a torch CUDA-graph capture: launch straight onto the capturing stream (no handshake;
                # Warp cannot launch its own graph or wait on another stream there).
                with wp.ScopedStream(torch_stream, sync_enter=False):
                    yield
                return
            warp_stream = wp.get_stream(self._wp_device)
            warp_stream.wait_stream(torch_stream)
            try:
                yield
            finally:
                torch_stream.wait_stream(warp_stream)

    def _warp_stream_of(self, torch_stream: torch.cuda.Stream) -> wp.Stream:
        wrapper = self._stream_wrappers.get(torch_stream.cuda_stream)
        if wrapper is None:
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError(
                    "AntEnv.step under a CUDA-graph capture on a stream it never ran on: step the env once on "
                    "that stream, outside capture, first (PWM's captured phases do: their first call is eager)"
                )
            wrapper = self._stream_wrappers[torch_stream.cuda_stream] = wp.stream_from_torch(torch_stream)
        return wrapper

    # ------------------------------------------------------------------------------------------------------
    # The step as a fixed sequence of launches (captured as one CUDA graph on GPU)
    # ------------------------------------------------------------------------------------------------------

    def _physics(self) -> None:
        import newton

        if self.solver_name == "featherstone":
            # Featherstone integrates joint coordinates; body poses must match them before collision.
            newton.eval_fk(self.model, self.state_0.joint_q, self.state_0.joint_qd, self.state_0)
        if not self.calibration.collide_every_substep:
            self.pipeline.collide(self.state_0, self.contacts)
        for _ in range(self.substeps):
            if self.calibration.collide_every_substep:
                self.pipeline.collide(self.state_0, self.contacts)
            self.state_0.clear_forces()
            self.solver.step(self.state_0, self.state_1, self.control, self.contacts, self.sim_dt)
            self.state_0, self.state_1 = self.state_1, self.state_0
        if self.substeps % 2 == 1:
            # keep `state_0` the same object after every step (the CUDA graph and torch views rely on it)
            self.state_1.assign(self.state_0)
            self.state_0, self.state_1 = self.state_1, self.state_0

    def _sync_joint_coords(self, mask: wp.array | None = None) -> None:
        import newton

        if self.solver_name == "semi_implicit":
            newton.eval_ik(self.model, self.state_0, self._joint_q, self._joint_qd, mask=mask)

    def _observe(self, mask: wp.array | None = None) -> None:
        wp.launch(
            K.observe,
            dim=self.num_envs,
            inputs=[
                self.state_0.body_q,
                self.state_0.body_qd,
                self._joint_q,
                self._joint_qd,
                self._prev_actions,
                self._start_xy,
                TARGET_DISTANCE,
                JOINT_VEL_OBS_SCALE,
                mask if mask is not None else self._done,
                0 if mask is None else 1,
            ],
            outputs=[self._obs],
            device=self._wp_device,
        )

    def _reset_masked(self, mask: wp.array) -> None:
        """Sample fresh start states for envs in `mask`, write their bodies, observe them (only them)."""
        import newton

        wp.launch(
            K.sample_reset,
            dim=self.num_envs,
            inputs=[
                mask,
                self._env_seeds,
                self._seed_block,
                self._reset_count,
                self._start_joint_q,
                RESET_POS_NOISE,
                RESET_ROT_NOISE,
                RESET_JOINT_NOISE,
                RESET_VEL_NOISE,
            ],
            outputs=[self._joint_q, self._joint_qd, self._prev_actions, self._episode_step],
            device=self._wp_device,
        )
        newton.eval_fk(self.model, self._joint_q, self._joint_qd, self.state_0, mask=mask)
        self._sync_joint_coords(mask)
        self._observe(mask)

    def _reward_and_done(self, advance: int) -> None:
        wp.launch(
            K.reward_and_done,
            dim=self.num_envs,
            inputs=[
                self._obs,
                self._prev_actions,
                self.calibration.termination_height,
                UP_WEIGHT,
                ACTION_PENALTY,
                self.max_episode_steps,
                advance,
            ],
            outputs=[
                self._episode_step,
                self._reward,
                self._reward_terms,
                self._terminated,
                self._truncated,
                self._done,
                self._final_obs,
                self._physics_failures,
            ],
            device=self._wp_device,
        )

    def _step_launches(self) -> None:
        wp.launch(
            K.apply_actions,
            dim=(self.num_envs, K.ACT_DIM),
            inputs=[self._actions_in, ACTION_SCALE],
            outputs=[self._prev_actions, self.control.joint_f, self._nonfinite_actions],
            device=self._wp_device,
        )
        self._physics()
        self._sync_joint_coords()
        self._observe()
        self._reward_and_done(advance=1)
        self._reset_masked(self._done)

    # ------------------------------------------------------------------------------------------------------
    # Public interface
    # ------------------------------------------------------------------------------------------------------

    def reset(self) -> torch.Tensor:
        """Reset every env (fresh noise from the seeded per-env streams); returns obs [N, 37]."""
        with self._warp_section():
            self._reset_masked(self._all_true)
        return self._obs_t.clone()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One 1/60 s step of every env; done envs are reset (obs is post-reset, info["final_obs"] pre-reset)."""
        check_action_shape(actions, self.num_envs, self.act_dim)
        if self.check_actions:
            check_actions_finite(actions)
        self._actions_in_t.copy_(actions.detach())
        with self._warp_section():
            if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                self._step_launches()  # recorded into the caller's torch graph
            else:
                if self._use_cuda_graph and self._graph is None:
                    self._capture()
                if self._graph is not None:
                    wp.capture_launch(self._graph)
                else:
                    self._step_launches()
        info = {
            "final_obs": self._final_obs_t.clone(),
            "reward_terms": self._reward_terms_t.clone(),
            "nonfinite_actions": self.nonfinite_actions,
            "physics_failures": self.physics_failures,
        }
        return (
            self._obs_t.clone(),
            self._reward_t.clone(),
            self._terminated_t.clone(),
            self._truncated_t.clone(),
            info,
        )

    def current_obs(self) -> torch.Tensor:
        """The observation of the current state (what the last reset/step returned; restored by
        load_state_dict), so a resumed run can continue without a reset."""
        with self._warp_section():
            pass
        return self._obs_t.clone()

    def reset_envs(self, mask: torch.Tensor) -> torch.Tensor:
        """Reset only the envs where `mask` [N] bool is set (same noise streams as automatic resets); returns
        the full obs [N, 37] (rows not in `mask` untouched)."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (self.num_envs,):
            raise ValueError(f"mask must be a bool tensor of shape ({self.num_envs},)")
        wp_mask = wp.from_torch(mask.to(self.device).contiguous(), dtype=wp.bool)
        with self._warp_section():
            self._reset_masked(wp_mask)
        return self._obs_t.clone()

    def joint_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current joint coordinates [N, 15] (root position, root quaternion xyzw, 8 hinges) and joint rates
        [N, 14] (root linear velocity of the torso COM and angular velocity, world frame; 8 hinge rates)."""
        with self._warp_section():
            self._sync_joint_coords()
        q = wp.to_torch(self._joint_q).view(self.num_envs, K.COORDS_PER_ENV).clone()
        qd = wp.to_torch(self._joint_qd).view(self.num_envs, K.DOFS_PER_ENV).clone()
        return q, qd

    def set_joint_state(self, joint_q: torch.Tensor, joint_qd: torch.Tensor) -> torch.Tensor:
        """Place every ant at the given joint coordinates/rates (layout of `joint_state`) and return the
        observation of that state. For tests, calibration and diagnostics; episode counters are untouched."""
        n = self.num_envs
        if tuple(joint_q.shape) != (n, K.COORDS_PER_ENV) or tuple(joint_qd.shape) != (n, K.DOFS_PER_ENV):
            raise ValueError(
                f"joint_q must be ({n}, {K.COORDS_PER_ENV}) and joint_qd ({n}, {K.DOFS_PER_ENV}), "
                f"got {tuple(joint_q.shape)} and {tuple(joint_qd.shape)}"
            )
        if not (torch.isfinite(joint_q).all() and torch.isfinite(joint_qd).all()):
            raise ValueError("joint_q / joint_qd must be finite")
        import newton

        wp.to_torch(self._joint_q).copy_(joint_q.reshape(-1).to(self.device, torch.float32))
        wp.to_torch(self._joint_qd).copy_(joint_qd.reshape(-1).to(self.device, torch.float32))
        with self._warp_section():
            newton.eval_fk(self.model, self._joint_q, self._joint_qd, self.state_0)
            self._sync_joint_coords()
            self._observe()
        return self._obs_t.clone()

    def evaluate_state(self) -> dict[str, torch.Tensor]:
        """Observation, reward (and its terms: forward, up, heading, height, action penalty), terminated and
        truncated of the current state, computed by the step's own kernels without stepping or resetting."""
        with self._warp_section():
            self._sync_joint_coords()
            self._observe()
            self._reward_and_done(advance=0)
        return {
            "obs": self._obs_t.clone(),
            "reward": self._reward_t.clone(),
            "reward_terms": self._reward_terms_t.clone(),
            "terminated": self._terminated_t.clone(),
            "truncated": self._truncated_t.clone(),
        }

    def body_positions(self) -> torch.Tensor:
        """World positions of all bodies [N, 9, 3] (torso first)."""
        with self._warp_section():
            pass
        q = wp.to_torch(self.state_0.body_q).view(self.num_envs, K.BODIES_PER_ENV, 7)
        return q[..., :3].clone()

    def body_masses(self) -> torch.Tensor:
        """Body masses [N, 9] in kg, as the simulator uses them."""
        return wp.to_torch(self.model.body_mass).view(self.num_envs, K.BODIES_PER_ENV).clone()

    def _capture(self) -> None:
        """Record one step as a CUDA graph. A first eager step loads every kernel module; its effect is undone
        from a Warp-side snapshot. If capture fails (e.g. a library call that syncs), fall back to eager
        launches with a warning; `graph_captured` says which path runs."""
        arrays = self._state_arrays()
        snapshot = {k: wp.clone(a) for k, a in arrays.items()}
        self._step_launches()
        for k, a in arrays.items():
            wp.copy(a, snapshot[k])
        states = (self.state_0, self.state_1)
        try:
            with wp.ScopedCapture(device=self._wp_device) as capture:
                self._step_launches()
            self._graph = capture.graph
            self.graph_captured = True
        except Exception as err:  # noqa: BLE001 -- any capture failure degrades to eager launches
            self.state_0, self.state_1 = states
            self._use_cuda_graph = False
            warnings.warn(
                f"Ant step could not be captured as a CUDA graph ({err}); using eager launches",
                RuntimeWarning,
                stacklevel=3,
            )

    def raise_if_nonfinite_actions(self) -> None:
        """Host sync: raise ValueError if any non-finite action was received with check_actions off."""
        count = int(self.nonfinite_actions.item())
        if count:
            raise ValueError(f"{count} non-finite action entries were received (replaced by zero torque)")

    # ------------------------------------------------------------------------------------------------------
    # Exact resume
    # ------------------------------------------------------------------------------------------------------

    _STATE_ARRAYS = (
        "body_q",
        "body_qd",
        "joint_q",
        "joint_qd",
        "prev_actions",
        "episode_step",
        "reset_count",
        "obs",
        "nonfinite_actions",
        "physics_failures",
    )

    def _state_arrays(self) -> dict[str, wp.array]:
        return {
            "body_q": self.state_0.body_q,
            "body_qd": self.state_0.body_qd,
            "joint_q": self._joint_q,
            "joint_qd": self._joint_qd,
            "prev_actions": self._prev_actions,
            "episode_step": self._episode_step,
            "reset_count": self._reset_count,
            "obs": self._obs,
            "nonfinite_actions": self._nonfinite_actions,
            "physics_failures": self._physics_failures,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bitwise: bodies, joint coordinates, previous actions, episode step
        counters, per-env reset counters (the whole RNG state: reset noise is a pure function of seed, env and
        reset count), and the identity of the env so a mismatched restore fails loudly."""
        with self._warp_section():  # torch reads only after pending Warp work
            pass
        d: dict[str, Any] = {k: wp.to_torch(a).clone() for k, a in self._state_arrays().items()}
        d["meta"] = {
            "task": self.task,
            "num_envs": self.num_envs,
            "seed": self.seed,
            "solver": self.solver_name,
            "max_episode_steps": self.max_episode_steps,
        }
        return d

    def load_state_dict(self, state: dict[str, Any]) -> None:
        meta = state.get("meta")
        if not isinstance(meta, dict):
            raise ValueError("Ant state_dict has no 'meta' entry; not a state_dict of this env")
        for key in ("task", "num_envs", "seed", "solver"):
            if meta.get(key) != getattr(self, {"solver": "solver_name"}.get(key, key)):
                raise ValueError(
                    f"Ant state_dict mismatch on '{key}': saved {meta.get(key)!r}, "
                    f"this env has {getattr(self, {'solver': 'solver_name'}.get(key, key))!r}"
                )
        for key, arr in self._state_arrays().items():
            if key not in state:
                raise ValueError(f"Ant state_dict lacks '{key}'")
            view = wp.to_torch(arr)
            src = state[key]
            if tuple(src.shape) != tuple(view.shape) or src.dtype != view.dtype:
                raise ValueError(
                    f"Ant state_dict '{key}' has shape {tuple(src.shape)} {src.dtype}, "
                    f"expected {tuple(view.shape)} {view.dtype}"
                )
            view.copy_(src.to(view.device))
