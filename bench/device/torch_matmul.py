"""Phase `torch_matmul` of the device benchmark: PyTorch float32 matmul GFLOP/s (CUDA, TF32 off) on the shapes the
`matmul` phase measured (read from its fragment, so both sides run the same list), transposed operands as views.
Run by bench/device/run.sh; offline only.
"""
from torch_env import left_s, read_fragment, setup, time_calls, write_fragment, DRY

torch, device, env = setup()
out = {"env": env, "shapes": []}
shapes = (read_fragment("matmul") or {}).get("shapes", [])
if torch is None:
    write_fragment("torch_matmul", out)
    raise SystemExit(0)
if not shapes:
    out["error"] = "the matmul phase left no shapes"
for s in shapes:
    row = {"label": s["label"]}
    out["shapes"].append(row)
    if left_s() < 3:
        row["skipped"] = "phase budget spent"
        continue
    lead = [s["batch"]] if s["batch"] > 1 else []
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.rand(*lead, *((s["k"], s["m"]) if s["transA"] else (s["m"], s["k"])), device=device, generator=g)
    b = torch.rand(*lead, *((s["n"], s["k"]) if s["transB"] else (s["k"], s["n"])), device=device, generator=g)
    opa = a.transpose(-1, -2) if s["transA"] else a
    opb = b.transpose(-1, -2) if s["transB"] else b
    ms = time_calls(torch, device, lambda: torch.matmul(opa, opb), target_ms=20 if DRY else 100, reps=1 if DRY else 3)
    row.update(ms=ms, gflops=2 * s["batch"] * s["m"] * s["k"] * s["n"] / (ms * 1e6))
    print(f"[torch] {s['label']}: {row['gflops']:.1f} GFLOP/s", flush=True)
    del a, b, opa, opb
    write_fragment("torch_matmul", out)
write_fragment("torch_matmul", out)
