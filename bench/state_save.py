"""What a training state save costs the loop: written in place (`io.torch_save_all`) against copied to host memory
and written in a thread (`io.BackgroundSaves`, the periodic saves of `train`).

A state is mostly each seed's replay buffer: `pwm.buffer_size` transitions (1M in every real config, full once the
offline dataset is in it) of the Ant's shapes, saved as `ReplayBuffer.state_dict` does. For S seeds the script
builds S such buffers on the device, then times, per repeat:
- `inline`: `torch_save_all` of every seed's state, as `train` wrote every save before;
- `blocking`: what a background save holds the loop for (the state's clones on the device, as `train` builds it,
  and their copy into host memory);
- `written`: from `submit` until the thread's write is done.
- `lost beside a loop`: what a host-bound loop of small tensor ops on the device (an epoch's launches, roughly)
  loses while the thread writes: the time of the write times the share of the loop's iterations per second, alone,
  that it no longer makes (the thread holding the GIL, or the cores). In `written` the timed loop does nothing
  else, so that column is the write alone.
- `table write, longest`: the longest of the small atomic table writes (40 kB, fsynced, as train's metrics.csv
  every log) made every 20 ms while the thread writes; alone, such a write takes milliseconds. On ext4 a table's
  fsync waits for the state file's data, which is why `train` defers its table writes during a save.
The first repeat allocates the host copies that the later ones reuse, so with three or more repeats (the default)
the median is a reusing save's.

    PYTHONPATH=src python bench/state_save.py --device cpu --seeds 1 3 --out bench/out/state_save_cpu.json
    PYTHONPATH=src python bench/state_save.py --device cuda --seeds 1 3 5 --out state_save_gpu.json

Prints a table (seconds per save, median of the repeats) and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import report, write_record  # noqa: E402

from flow_mbpo_pwm import io  # noqa: E402
from flow_mbpo_pwm.data.replay import ReplayBuffer  # noqa: E402

OBS_DIM, ACT_DIM, NUM_ENVS, HORIZON = 37, 8, 128, 16  # the Ant's shapes, the 5M cell's envs and horizon


def full_buffer(capacity: int, device: torch.device, generator: torch.Generator) -> ReplayBuffer:
    """A buffer whose every slot is filled (random contents; the bytes written do not depend on them)."""
    buffer = ReplayBuffer(capacity, NUM_ENVS, OBS_DIM, ACT_DIM, device, horizon=HORIZON)
    for name in ("obs", "action", "reward", "next_obs"):
        tensor = getattr(buffer, name)
        tensor.copy_(torch.randn(tensor.shape, generator=generator, device=device))
    buffer.num_added = buffer.slots
    buffer.steps.fill_(buffer.slots)
    return buffer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy(x: torch.Tensor, until) -> tuple[int, float]:
    """Iterations of a host-bound loop of small ops on `x`'s device, run until `until()` is true, and the seconds."""
    begun, count = time.perf_counter(), 0
    while not until():
        x.mul(2.0).add_(1.0).relu_()
        count += 1
    sync(x.device)
    return count, time.perf_counter() - begun


def lost_beside_a_loop(saves: io.BackgroundSaves, items: list, device: torch.device) -> float:
    """Seconds a host-bound loop loses while `saves` writes `items` (see the top)."""
    x = torch.randn(128, 256, device=device)
    ends = time.perf_counter() + 1.0
    count, seconds = busy(x, lambda: time.perf_counter() > ends)
    alone = count / seconds
    saves.submit(items)
    count, seconds = busy(x, lambda: not saves.writing)
    saves.wait()
    return seconds * max(0.0, 1.0 - count / seconds / alone)


def longest_table_write(saves: io.BackgroundSaves, items: list, folder: Path) -> float:
    """The longest of the small atomic writes made every 20 ms while `saves` writes `items` (see the top)."""
    table, longest = "0," * 20_000, 0.0
    saves.submit(items)
    while saves.writing:
        begun = time.perf_counter()
        io.write_text(folder / "metrics.csv", table)
        longest = max(longest, time.perf_counter() - begun)
        time.sleep(0.02)
    saves.wait()
    return longest


def measure(seeds: int, capacity: int, device: torch.device, repeats: int, folder: Path) -> dict:
    generator = torch.Generator(device=device).manual_seed(0)
    buffers = [full_buffer(capacity, device, generator) for _ in range(seeds)]
    paths = [folder / f"seed{s}.pt" for s in range(seeds)]

    def items() -> list:
        return [
            (path, {"epoch": 1, "buffer": buffer.state_dict()}) for path, buffer in zip(paths, buffers, strict=True)
        ]

    saves = io.BackgroundSaves()
    inline, blocking, written, lost, table = [], [], [], [], []
    for _ in range(repeats):
        sync(device)
        begun = time.perf_counter()
        io.torch_save_all(items())
        inline.append(time.perf_counter() - begun)
        sync(device)
        begun = time.perf_counter()
        saves.submit(items())
        blocking.append(time.perf_counter() - begun)
        saves.wait()
        written.append(time.perf_counter() - begun)
        lost.append(lost_beside_a_loop(saves, items(), device))
        table.append(longest_table_write(saves, items(), folder))
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    return {
        "seeds": seeds,
        "capacity": capacity,
        "megabytes": round(megabytes, 1),
        "inline_s": statistics.median(inline),
        "blocking_s": statistics.median(blocking),
        "written_s": statistics.median(written),
        "lost_beside_loop_s": statistics.median(lost),
        "longest_table_write_s": statistics.median(table),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="transitions per seed (pwm.buffer_size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/state_save.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.capacity < NUM_ENVS * (HORIZON + 1) or min(args.seeds) < 1:
        parser.error("--repeats and --seeds must be >= 1, --capacity >= 128 x 17")
    device = torch.device(args.device)
    print(
        f"{'seeds':>5} {'MB':>8} {'inline s':>9} {'blocking s':>11} {'written s':>10} {'lost beside a loop s':>21} "
        f"{'table write, longest s':>23}"
    )

    def line(row: dict) -> str:
        return (
            f"{row['seeds']:>5} {row['megabytes']:>8.1f} {row['inline_s']:>9.2f} {row['blocking_s']:>11.2f} "
            f"{row['written_s']:>10.2f} {row['lost_beside_loop_s']:>21.2f} {row['longest_table_write_s']:>23.2f}"
        )

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        rows = report((measure(seeds, args.capacity, device, args.repeats, Path(folder)) for seeds in args.seeds), line)
    write_record(args.out, device, args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
