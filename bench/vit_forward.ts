/**
 * ViT-S/16 forward on 8 random 224-px images, jitted, on the default backend: median ms over 5 runs after a
 * warm-up (the first call, which includes compilation, is reported separately). Compare with the PyTorch CPU
 * reference `bench/torch_vit_forward.py` (offline). Writes bench/results/vit_forward.{json,md}.
 */
import { type Backend, initVit, jit, random, type Tensor, tidy, tree, vit, vitConfig, type VitParams } from "../mod.ts";

/** Runs the benchmark on `backend` and writes its results. */
export async function run(backend: Backend): Promise<void> {
  const cfg = vitConfig({ arch: "vit_small", imgSize: 224, patchSize: 16, inChans: 3 });
  // Initialisation temporaries are freed at once; the params and images are freed at the end.
  const [params, images] = tidy(() =>
    [
      initVit(random.key(0, backend), cfg),
      random.uniform(random.key(1, backend), [8, 3, 224, 224]),
    ] as const
  );
  const fwd = jit((p: VitParams, x: Tensor) => vit(p, x, { ...cfg, returnAllTokens: true }));
  let t0 = performance.now();
  let out = fwd(params, images);
  await out.data();
  const firstMs = performance.now() - t0;
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    out.dispose();
    t0 = performance.now();
    out = fwd(params, images);
    await out.data();
    times.push(performance.now() - t0);
  }
  out.dispose();
  fwd.dispose();
  images.dispose();
  for (const t of tree.leaves(params)) t.dispose();
  times.sort((a, b) => a - b);
  const median = times[2];
  let torch: { median_ms: number; torch: string; threads: number } | null = null;
  try {
    torch = JSON.parse(await Deno.readTextFile(new URL("./results/torch_vit_forward.json", import.meta.url)));
  } catch { /* the PyTorch reference is produced offline */ }
  const adapter = (backend as { adapterInfo?: string }).adapterInfo ?? backend.name;
  let load = "unknown (no --allow-sys)";
  try {
    load = Deno.loadavg().map((v) => v.toFixed(2)).join(" / ");
  } catch { /* optional */ }
  const result = {
    date: new Date().toISOString(),
    adapter,
    loadavg: load,
    firstCallMs: firstMs,
    medianMs: median,
    times,
    torch,
  };
  await Deno.writeTextFile(new URL("./results/vit_forward.json", import.meta.url), JSON.stringify(result, null, 2));
  const md = `# ViT-S/16 forward, batch 8, 224 px

Adapter: ${adapter}; load average ${load}; ${result.date}.

| | first call (trace + compile + run) | median of 5 |
| --- | ---: | ---: |
| ours, jit on ${backend.name} | ${(firstMs / 1000).toFixed(2)} s | ${(median / 1000).toFixed(2)} s |
| PyTorch ${torch?.torch ?? "?"} CPU, ${torch?.threads ?? "?"} threads | | ${
    torch ? (torch.median_ms / 1000).toFixed(2) + " s" : "not measured"
  } |
`;
  await Deno.writeTextFile(new URL("./results/vit_forward.md", import.meta.url), md);
  console.log(md);
}
