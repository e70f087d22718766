"""Adam for a stack of S seeds in one update: every seed's moments and step count, and one elementwise step of all
seeds of a network at once.

The update of seed s, at its step count t_s (bias corrections bc1 = 1 - beta1^t_s, bc2 = 1 - beta2^t_s):

    m <- beta1 m + (1 - beta1) g
    v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)

torch.optim.Adam's (weight decay 0, no amsgrad), computed as `p - (lr sqrt(bc2) / bc1) m / (sqrt(v) + eps sqrt(bc2))`
with the per-seed factors in float64, so results differ from torch's by rounding only.

Layout: a network's moments live in one flat buffer in which parameter i's block is its `[S, ...]` shape (seed
slices contiguous), so one step is a fixed handful of kernels whatever the number of parameters and seeds: the
gradients are concatenated into the same layout, the per-seed factors are spread over it by a seed index, and the
parameters take the step with one `_foreach_sub_`. A seed that does not train this step (its flag is False in
`mask`) keeps its parameters, moments and step count bitwise (its update is masked out with `torch.where`, so NaN
in its gradients or state cannot leak). Only correctly rounded elementwise operations touch a seed's entries, so a
seed's step does not depend on where its slice lies: a seed of a stack steps bitwise as it does alone.

CUDA graphs: the lr is a 0-d float64 tensor on the parameters' device, filled in place (`set_lr`); step counts live
there too; the step reads nothing on the host and allocates only temporaries.

Checkpoints: each seed has a `SeedAdam`, a `torch.optim.Adam` over its own parameters (views of the stack's) whose
state tensors are views of the stack's state. Its `state_dict` is a lone torch Adam's (copies), and its
`load_state_dict` copies a lone torch Adam's state into the stack in place, so run states and checkpoints move
between lone runs, stacks and earlier versions (which stepped one `torch.optim.Adam` per seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class StackedAdam:
    """Adam over the stacked parameters `[S, ...]` of one network (`params`); `seed_params[s]`: seed s's own
    parameters (views of `params`, in the same order), for which `seeds[s]` is its `SeedAdam`."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        seed_params: Sequence[Sequence[torch.Tensor]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if not params:
            raise ValueError("StackedAdam: no parameters")
        self.params = list(params)
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        first = self.params[0]
        num_seeds, device, dtype = first.shape[0], first.device, first.dtype
        if any(p.shape[0] != num_seeds or p.device != device or p.dtype != dtype for p in self.params):
            raise ValueError("StackedAdam: parameters must share the seed axis, device and dtype")
        self.sizes = [p.numel() for p in self.params]
        numel = sum(self.sizes)
        self.exp_avg = torch.zeros(numel, device=device, dtype=dtype)
        self.exp_avg_sq = torch.zeros(numel, device=device, dtype=dtype)
        self.steps = torch.zeros(num_seeds, device=device, dtype=torch.float32)  # as capturable torch Adam keeps it
        self.lr = torch.tensor(float(lr), device=device, dtype=torch.float64)
        # The seed of every entry of the flat layout (parameter i's block is seed-major).
        seeds = torch.arange(num_seeds, device=device)
        self.seed_of = torch.cat([seeds.repeat_interleave(p[0].numel()) for p in self.params])
        self.seeds = [SeedAdam(self, s, mine) for s, mine in enumerate(seed_params)]
        if len(self.seeds) != num_seeds:
            raise ValueError(f"StackedAdam: {len(self.seeds)} seeds' parameters for {num_seeds} stacked seeds")

    def blocks(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """`flat` (the moments' layout) as one `[S, ...]` view per parameter."""
        return [block.view(p.shape) for block, p in zip(flat.split(self.sizes), self.params, strict=True)]

    def set_lr(self, value: float) -> None:
        self.lr.fill_(value)  # in place: a captured graph holds this tensor
        for optimizer in self.seeds:
            optimizer.param_groups[0]["lr"] = float(value)  # the record a seed's state_dict carries

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], mask: torch.Tensor) -> None:
        """One Adam step of the seeds whose flag in `mask` (`[S]` bool, on the parameters' device) is True, on
        `grads` (`[S, ...]`, one per parameter); the other seeds are left exactly as they are."""
        beta1, beta2 = self.betas
        g = torch.cat([grad.reshape(-1) for grad in grads])
        trains = mask.index_select(0, self.seed_of)
        torch.where(mask, self.steps + 1, self.steps, out=self.steps)
        t = self.steps.double()
        bc2_sqrt = (1 - beta2**t).sqrt()
        scale = (self.lr * bc2_sqrt / (1 - beta1**t)).to(g.dtype).index_select(0, self.seed_of)
        eps = (self.eps * bc2_sqrt).to(g.dtype).index_select(0, self.seed_of)
        m = self.exp_avg * beta1 + g * (1 - beta1)
        v = self.exp_avg_sq * beta2 + g * g * (1 - beta2)
        update = torch.where(trains, scale * m / (v.sqrt() + eps), 0.0)  # NaN of a masked seed stays out
        torch.where(trains, m, self.exp_avg, out=self.exp_avg)
        torch.where(trains, v, self.exp_avg_sq, out=self.exp_avg_sq)
        torch._foreach_sub_(self.params, self.blocks(update))

    def seed_state(self, seed: int) -> list[dict[str, torch.Tensor]]:
        """Seed `seed`'s Adam state per parameter, as views of the stack's (what its `SeedAdam.state` holds)."""
        step = self.steps[seed]
        return [
            {"step": step, "exp_avg": m[seed], "exp_avg_sq": v[seed]}
            for m, v in zip(self.blocks(self.exp_avg), self.blocks(self.exp_avg_sq), strict=True)
        ]

    def load_seed_state(self, seed: int, states: Sequence[dict[str, Any] | None], lr: float) -> None:
        """Copy a lone torch Adam's per-parameter states (None: never stepped) into seed `seed`'s state, in place
        (a captured graph holds these tensors). One step count per seed: the saved ones must agree. `lr` becomes
        the stack's (its seeds share one schedule)."""
        held = self.seed_state(seed)
        if len(states) != len(held):
            raise ValueError(f"Adam state for {len(states)} parameters, the network has {len(held)}")
        stepped = [state is not None for state in states]
        if any(stepped) and not all(stepped):
            raise ValueError("Adam state: some parameters have state and others none (one step count per seed)")
        steps = {float(state["step"]) for state in states if state is not None}
        if len(steps) > 1:
            raise ValueError(f"Adam state: the parameters' step counts differ ({sorted(steps)}); one per seed")
        for i, (mine, saved) in enumerate(zip(held, states, strict=True)):
            for key in ("exp_avg", "exp_avg_sq"):
                if saved is None:
                    mine[key].zero_()
                elif saved[key].shape != mine[key].shape:
                    raise ValueError(
                        f"Adam state of parameter {i}: {key} {tuple(saved[key].shape)}, "
                        f"expected {tuple(mine[key].shape)}"
                    )
                else:
                    mine[key].copy_(saved[key])
        self.steps[seed].fill_(steps.pop() if steps else 0.0)
        self.set_lr(lr)


class SeedAdam(torch.optim.Adam):
    """Seed `seed` of a `StackedAdam`, in the form of a lone run's `torch.optim.Adam` over its parameters: its state
    is views of the stack's. Stepped only through the stack (`step` refuses)."""

    def __init__(self, stack: StackedAdam, seed: int, params: Sequence[torch.Tensor]):
        super().__init__(list(params), lr=float(stack.lr), betas=stack.betas, eps=stack.eps)
        self.stack, self.seed = stack, seed
        mine = self.param_groups[0]["params"]
        for p, state in zip(mine, stack.seed_state(seed), strict=True):
            if p.shape != state["exp_avg"].shape:
                raise ValueError(f"SeedAdam: parameter {tuple(p.shape)}, stacked {tuple(state['exp_avg'].shape)}")
            self.state[p] = state

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        raise RuntimeError("a seed of a stack is stepped by its StackedAdam (PWM._optimize), not on its own")

    def state_dict(self) -> dict[str, Any]:
        """A lone torch Adam's state_dict, with copies of the stack's tensors (no aliasing of the live state)."""
        state = super().state_dict()
        state["state"] = {i: {k: v.clone() for k, v in s.items()} for i, s in state["state"].items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a lone torch Adam's state_dict (this version's or an earlier one's, eager or capturable) into the
        stack's state in place. Refuses hyperparameters this Adam does not implement or does not share."""
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"Adam state: {len(groups)} param groups, expected 1")
        group = groups[0]
        expected = {"betas": self.stack.betas, "eps": self.stack.eps, "weight_decay": 0.0}
        found = {
            "betas": tuple(float(b) for b in group["betas"]),
            "eps": float(group["eps"]),
            "weight_decay": float(group.get("weight_decay", 0.0)),
        }
        if found != expected or group.get("amsgrad") or group.get("maximize"):
            raise ValueError(
                f"Adam state: hyperparameters {found} (amsgrad {group.get('amsgrad')}, maximize "
                f"{group.get('maximize')}); this run uses {expected}, no amsgrad or maximize"
            )
        states = [state_dict["state"].get(i) for i in group["params"]]
        self.stack.load_seed_state(self.seed, states, float(group["lr"]))
