"""What the device benchmark's PyTorch phases share: where PyTorch runs (CUDA float32 with TF32 off, or the CPU in
the dry run), how it is timed, and the record of the environment. Offline only; never imports anything outside
the standard library and torch.
"""
import datetime
import json
import os
import statistics
import time

WORK = os.environ.get("DEVICE_BENCH_WORK", "")
DRY = os.environ.get("DEVICE_BENCH_DRY") == "1"
BUDGET_S = float(os.environ.get("DEVICE_BENCH_BUDGET_S", "60"))
START = time.monotonic()


def left_s(margin=5.0):
    """Seconds this phase has before it should stop measuring."""
    return BUDGET_S - margin - (time.monotonic() - START)


def read_fragment(name):
    path = os.path.join(WORK, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_fragment(name, data):
    path = os.path.join(WORK, name + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def setup():
    """Imports torch and picks the device: CUDA with TF32 off; the CPU only in the dry run.

    Returns (torch, device, env) or (None, None, env) with env["unavailable"] saying why."""
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "loadavg": list(os.getloadavg())}
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "no PyTorch here"
        env["unavailable"] = f"python3 cannot import torch: {type(e).__name__}: {e}"
        return None, None, env
    env["torch"] = torch.__version__
    env["config"] = torch.__config__.show()
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        device = torch.device("cuda")
        env.update(
            device=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            allow_tf32={"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        )
    elif DRY:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny shapes: threads only contend with the other jobs
        env.update(device="cpu (dry run: no CUDA here)", threads=torch.get_num_threads())
    else:
        env["unavailable"] = f"torch {torch.__version__} sees no CUDA device"
        return None, None, env
    return torch, device, env


def time_calls(torch, device, fn, target_ms=100.0, reps=3):
    """Median ms per call of fn(): a warm-up, a calibrating call, then reps of N calls (N so a rep takes ~target)."""
    cuda = device.type == "cuda"

    def elapsed(n):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(n):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) * 1000

    elapsed(1)
    once = max(elapsed(1), 1e-3)
    n = max(1, min(500, round(target_ms / once)))
    return statistics.median(elapsed(n) / n for _ in range(reps))
