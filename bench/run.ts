/**
 * The benchmark suite: `deno task bench` runs every benchmark but `memory_scale`, `deno task bench matmul
 * vit_step` only those named. Each writes `bench/results/<name>.json` and `<name>.md` (a table naming the machine, the adapter and
 * the date) and prints the table.
 *
 * - `memory`: 1,000 calls of a jitted SGD step and N steps of the default training preset: RSS and GPU memory
 *   drift and slopes (`bench/memory.ts`; N from `IBOT_BENCH_MEMORY_STEPS`, default 1000).
 * - `matmul`: eager matmul GFLOP/s against tfjs-webgpu and jax-js on the same adapter (`bench/matmul.ts`).
 * - `vit_step`: a tiny-ViT forward+backward, eager vs `jit`, and its compile time (`bench/vit_step.ts`).
 * - `vit_forward`: a ViT-S/16 forward, batch 8, 224 px, against the offline PyTorch reference (`bench/vit_forward.ts`).
 * - `ibot_step`: one full fmnist-tiny iBOT training step, its compile time and GPU profile (`bench/ibot_step.ts`).
 * - `knn`: weighted k-NN at Fashion-MNIST size, 60,000 × 10,000 features (`bench/knn.ts`).
 * - `memory_scale`: the ViT-S/16 iBOT step's plan peak and time per image per micro-batch size, with and without
 *   remat (`bench/memory_scale.ts`).
 *
 * @module
 */
import { initBackend } from "../mod.ts";
import { asWebGpu, progress } from "./util.ts";

// memory runs first, so that its RSS baseline is the same whether it runs alone or in the suite.
const BENCHES = {
  memory: () => import("./memory.ts"),
  matmul: () => import("./matmul.ts"),
  vit_step: () => import("./vit_step.ts"),
  vit_forward: () => import("./vit_forward.ts"),
  ibot_step: () => import("./ibot_step.ts"),
  knn: () => import("./knn.ts"),
  memory_scale: () => import("./memory_scale.ts"),
} as const;
type Name = keyof typeof BENCHES;

const args = Deno.args.filter((a) => a !== "--");
if (args.includes("--help") || args.includes("-h")) {
  console.log(`usage: deno task bench [${Object.keys(BENCHES).join("|")} ...]   (all when none is named)`);
  Deno.exit(0);
}
const unknown = args.filter((a) => !(a in BENCHES));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(", ")}; one of: ${Object.keys(BENCHES).join(", ")}`);
  Deno.exit(2);
}
// Run only when named: at its default sizes it compiles ten ViT-S/16 training plans (long on a software adapter).
const OPT_IN: readonly string[] = ["memory_scale"];
const selected = (args.length > 0 ? args : Object.keys(BENCHES).filter((n) => !OPT_IN.includes(n))) as Name[];

const backend = await initBackend("webgpu");
const t0 = performance.now();
let failures = 0;
for (const name of selected) {
  const start = performance.now();
  const live0 = asWebGpu(backend).stats.liveBytes;
  progress(`${name}: start`);
  try {
    const mod = await BENCHES[name]();
    await mod.run(backend);
  } catch (e) {
    failures++;
    console.error(`benchmark ${name} failed:`, e);
  }
  asWebGpu(backend).trim(); // give the pooled buffers back, so that benchmarks do not see each other's pools
  const leaked = asWebGpu(backend).stats.liveBytes - live0;
  progress(
    `${name}: ${((performance.now() - start) / 1000).toFixed(1)} s${leaked ? `, ${leaked} GPU bytes still live` : ""}`,
  );
}
progress(`total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
if (failures > 0) Deno.exit(1);
