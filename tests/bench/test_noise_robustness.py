"""bench/noise_robustness.py: the two noise forms around one deterministic action, and the bench run end to end on
the pinned 5.3k PPO reference (a few short CPU episodes)."""

import json
import subprocess
import sys
import tarfile

import torch
from bench_helpers import ROOT, load_bench_script

POLICY = "results/ant/reference/seed0/policy.pt"


def test_pwm_noise_is_added_before_the_tanh_and_ppo_noise_around_the_unclipped_mean():
    bench = load_bench_script("noise_robustness")
    mean = torch.tensor([[0.0, 0.5, 1.0, 3.0]])  # PPO's mean may lie beyond the bounds the env clips to
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))

    def noisy(form: str, std: float) -> torch.Tensor:
        return bench.with_noise(lambda obs: mean, form, std, torch.Generator().manual_seed(7))(None)

    torch.testing.assert_close(noisy("none", 0.3), mean.clamp(-1, 1))
    edge = mean.clamp(-1 + bench.EDGE, 1 - bench.EDGE)
    torch.testing.assert_close(noisy("pwm", 0.3), torch.tanh(torch.atanh(edge) + 0.3 * eps))
    torch.testing.assert_close(noisy("ppo", 0.3), (mean + 0.3 * eps).clamp(-1, 1))
    assert noisy("ppo", 0.3)[0, 3] == 1.0  # 3 + noise stays clipped at the bound
    assert torch.all(noisy("pwm", 0.3).abs() < 1)


def test_noise_robustness_plays_the_reference_without_and_with_each_noise(tmp_path):
    with tarfile.open(ROOT / "bench" / "carried" / "reference-config.tar.gz") as archive:
        archive.extract(POLICY, tmp_path, filter="data")
    out = tmp_path / "noise.json"
    args = ["--config", "config/smoke.yaml", "--policy", str(tmp_path / POLICY), "--stds", "0.3", "--envs", "2",
            "--episode-length", "30", "--out", str(out)]  # fmt: skip
    subprocess.run([sys.executable, "bench/noise_robustness.py", *args], cwd=ROOT, check=True)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["noise"], r["std"]) for r in rows] == [("none", 0.0), ("pwm", 0.3), ("ppo", 0.3)]
    assert all(r["return_mean"] > 0 and 0 < r["action_magnitude"] <= 1 for r in rows)
    assert rows[1]["return_mean"] != rows[0]["return_mean"]  # the noise reached the env
