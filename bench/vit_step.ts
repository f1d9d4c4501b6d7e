/**
 * One tiny-ViT training step (forward + backward) on the WebGPU backend, eager `valueAndGrad` against
 * `jit(valueAndGrad)`, and the compile time of the jitted step.
 *
 * The model is `models/vit.ts` (`initVit`, `vit`): 6 pre-norm blocks, dim 192, 3 heads, MLP 768, exact GELU,
 * LayerNorm eps 1e-6, on a batch of 64 images `[64, 3, 32, 32]` with 4x4 patches (64 patches + CLS = 65
 * tokens). The loss is the mean of the final tokens squared; its gradient is taken with respect to the whole
 * params pytree.
 *
 * A step is timed from the call until the loss has been read back and the GPU queue has drained
 * (`backend.sync()`), so every gradient has been computed. The jitted variant's first call comes first (it
 * compiles its own pipelines; compile time = that call minus the median later call), then one eager warm-up
 * step, then `STEPS` steps of each variant, interleaved so that changes in machine load hit both alike.
 *
 * @module
 */
import { type Backend, initVit, jit, random, type Tensor, tidy, tree, valueAndGrad, vit, vitConfig } from "../mod.ts";
import type { WebGpuBackend } from "../wgsl/backend.ts";
import { asWebGpu, fmtMiB, fmtNum, header, machine, mdTable, median, progress, writeResults } from "./util.ts";

/** Timed steps per variant (after warm-up). */
const STEPS = 3;

const CONFIG = vitConfig({ arch: "vit_tiny", depth: 6, imgSize: 32, patchSize: 4, maskedEmbed: false });
const BATCH = 64;

/** One step, fully completed. */
interface StepRecord {
  /** Call until the loss is read back and the queue has drained. */
  ms: number;
  /** Call until it returned (host work: tracing or plan lookup, encoding; the GPU runs concurrently). */
  hostMs: number;
  loss: number;
  dispatches: number;
  submits: number;
  buffersCreated: number;
  pipelinesCompiled: number;
  /** Highest live bytes during the step minus the live bytes before it (transient allocations). */
  transientBytes: number;
}

/** Measurements of one variant. */
interface Variant {
  name: string;
  stepsMs: number[];
  medianMs: number;
  medianHostMs: number;
  dispatchesPerStep: number;
  submitsPerStep: number;
  buffersCreatedPerStep: number;
  /** Peak GPU bytes: the jit plan's `peakBytes`; for eager, the live bytes when `valueAndGrad` returns. */
  peakBytes: number;
  loss: number;
}

type Step = () => [Tensor, unknown];

/** Highest `liveBytes` seen since the last reset (the bench wraps the backend instance's allocators). */
let peakLive = 0;

/** Makes every allocation of this backend instance update `peakLive`; returns the undo. */
function trackPeak(gpu: WebGpuBackend): () => void {
  const g = gpu as unknown as Record<"alloc" | "upload", (...a: unknown[]) => unknown>;
  const orig = { alloc: g.alloc, upload: g.upload };
  for (const k of ["alloc", "upload"] as const) {
    g[k] = (...a: unknown[]) => {
      const r = orig[k].apply(gpu, a);
      peakLive = Math.max(peakLive, gpu.stats.liveBytes);
      return r;
    };
  }
  return () => {
    g.alloc = orig.alloc;
    g.upload = orig.upload;
  };
}

/** Runs one step to completion. */
async function timeStep(gpu: WebGpuBackend, step: Step): Promise<StepRecord> {
  const s0 = { ...gpu.stats };
  peakLive = s0.liveBytes;
  const t0 = performance.now();
  const [l, g] = step();
  const hostMs = performance.now() - t0;
  const loss = await l.item();
  await gpu.sync();
  const ms = performance.now() - t0;
  l.dispose();
  for (const t of tree.leaves(g)) t.dispose();
  const s1 = gpu.stats;
  return {
    ms,
    hostMs,
    loss,
    dispatches: s1.dispatches - s0.dispatches,
    submits: s1.submits - s0.submits,
    buffersCreated: s1.buffersCreated - s0.buffersCreated,
    pipelinesCompiled: s1.pipelinesCompiled - s0.pipelinesCompiled,
    transientBytes: peakLive - s0.liveBytes,
  };
}

/** One kernel of the jitted plan, replayed alone. */
interface KernelTime {
  category: "matmul" | "reduction" | "elementwise/movement";
  /** What the generated WGSL says about it (matmul m×k×n, reduction length, threads). */
  what: string;
  threads: number;
  /** Matmul FLOPs (0 for other kernels). */
  flops: number;
  ms: number;
}

/** Classifies a generated shader and pulls its problem size out of the constants baked into the code. */
function describe(code: string, threads: number): Pick<KernelTime, "category" | "what" | "flops"> {
  if (code.includes("let row0 = rt *") || code.includes("acc = fma(in0[oa")) {
    const m = code.match(/min\(row0 \+ 0u, (\d+)u\)/);
    const k = code.match(/p < (\d+)u/);
    const n = code.match(/min\(col4 \* 4u \+ 0u, (\d+)u\)/);
    const tiles = code.match(/let rt = \(gid \/ (\d+)u\) % (\d+)u;/);
    const tA = /A4?\[oa \+ \(?p\)? \* \d+u \+ r0\]|A4\[\(oa \+ p \*/.test(code);
    const tB = /B\[ob \+ j0 \* \d+u/.test(code) || code.includes("dot(");
    if (!(m && k && n)) return { category: "matmul", what: `${threads} threads`, flops: 0 };
    const [mm, kk, nn] = [+m[1] + 1, +k[1], +n[1] + 1];
    const batch = tiles ? Math.round(threads / (+tiles[1] * +tiles[2])) : 1;
    const flags = [tA ? "transA" : "", tB ? "transB" : ""].filter((f) => f).join(", ");
    return {
      category: "matmul",
      what: `${batch > 1 ? `${batch} × ` : ""}${mm}×${kk}×${nn}${flags ? ` (${flags})` : ""}`,
      flops: 2 * batch * mm * kk * nn,
    };
  }
  if (code.includes("for (var r = 0u; r <")) {
    const r = code.match(/for \(var r = 0u; r < (\d+)u/);
    return { category: "reduction", what: `${threads} outputs × ${r ? r[1] : "?"} elements`, flops: 0 };
  }
  return { category: "elementwise/movement", what: `${threads} threads`, flops: 0 };
}

/**
 * Records the dispatches of one jitted call (wrapping the backend instance's `dispatchPrebuilt`), then replays
 * each alone (own submit, awaited) and subtracts the cost of an empty submit: time per kernel of the plan.
 */
async function profilePlan(gpu: WebGpuBackend, call: () => [Tensor, unknown]): Promise<KernelTime[]> {
  type Rec = { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; threads: number; wg: number; code: string };
  const recs: Rec[] = [];
  const g = gpu as unknown as { dispatchPrebuilt: WebGpuBackend["dispatchPrebuilt"] };
  const orig = g.dispatchPrebuilt;
  g.dispatchPrebuilt = (pipeline, bindGroup, kernel) => {
    recs.push({ pipeline, bindGroup, threads: kernel.threads, wg: kernel.workgroupSize, code: kernel.code });
    orig.call(gpu, pipeline, bindGroup, kernel);
  };
  let out: [Tensor, unknown];
  try {
    out = call();
  } finally {
    g.dispatchPrebuilt = orig;
  }
  await out[0].item();
  await gpu.sync();
  // Output buffers go back to the pool (not destroyed), so the recorded bind groups stay valid.
  out[0].dispose();
  for (const t of tree.leaves(out[1])) t.dispose();

  const device = gpu.device;
  const submit = async (rec: Rec | null) => {
    const enc = device.createCommandEncoder();
    if (rec) {
      const pass = enc.beginComputePass();
      pass.setPipeline(rec.pipeline);
      pass.setBindGroup(0, rec.bindGroup);
      const groups = Math.ceil(rec.threads / rec.wg);
      const x = Math.min(groups, 65535);
      pass.dispatchWorkgroups(x, Math.ceil(groups / x));
      pass.end();
    }
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  const empty: number[] = [];
  for (let i = 0; i < 20; i++) empty.push(await submit(null));
  const overhead = median(empty);
  const times: KernelTime[] = [];
  for (const rec of recs) {
    if (rec.threads === 0) continue;
    const ms = Math.max(0, (await submit(rec)) - overhead);
    times.push({ ...describe(rec.code, rec.threads), threads: rec.threads, ms });
  }
  return times;
}

function summarise(name: string, steps: StepRecord[], peakBytes: number): Variant {
  const mean = (f: (r: StepRecord) => number) => steps.reduce((a, r) => a + f(r), 0) / steps.length;
  return {
    name,
    stepsMs: steps.map((r) => r.ms),
    medianMs: median(steps.map((r) => r.ms)),
    medianHostMs: median(steps.map((r) => r.hostMs)),
    dispatchesPerStep: mean((r) => r.dispatches),
    submitsPerStep: mean((r) => r.submits),
    buffersCreatedPerStep: mean((r) => r.buffersCreated),
    peakBytes,
    loss: steps[steps.length - 1].loss,
  };
}

/** Runs the ViT step benchmark and writes `bench/results/vit_step.{json,md}`. */
export async function run(backend: Backend): Promise<void> {
  const gpu = asWebGpu(backend);
  const m = machine(backend);
  const liveBefore = gpu.stats.liveBytes;
  // Set-up intermediates (the PRNG samplers are composites) are freed by tidy.
  const { params, images } = tidy(() => {
    const [kp, kx] = random.split(random.key(0, backend));
    return {
      params: initVit(kp, CONFIG),
      images: random.normal(kx, [BATCH, CONFIG.inChans, CONFIG.imgSize, CONFIG.imgSize]),
    };
  });
  await images.data();
  const argBytes = gpu.stats.liveBytes - liveBefore; // params and images
  const untrack = trackPeak(gpu);
  const nParams = tree.leaves(params).reduce((n, t) => n + t.size, 0);
  const tokens = 1 + (CONFIG.imgSize / CONFIG.patchSize) ** 2;

  const loss = (p: typeof params, x: Tensor) => {
    const y = vit(p, x, { ...CONFIG, returnAllTokens: true });
    return y.mul(y).mean();
  };
  const vg = valueAndGrad(loss);

  // jit first: its first call compiles the plan's pipelines from scratch.
  const jitted = jit(vg);
  const jitStep: Step = () => jitted(params, images) as [Tensor, unknown];
  const first = await timeStep(gpu, jitStep);
  const firstMs = first.ms;
  const callMs = first.hostMs;
  const firstLoss = first.loss;
  const pipelines = first.pipelinesCompiled;
  progress(`vit_step jit: first call ${firstMs.toFixed(0)} ms (${callMs.toFixed(0)} ms before the GPU work)`);
  const jitStats = jitted.stats();

  const eagerStep: Step = () => tidy(() => vg(params, images)) as [Tensor, unknown];
  const warm = await timeStep(gpu, eagerStep); // compiles the eager kernels, fills the pool
  progress(`vit_step eager: warm-up step ${warm.ms.toFixed(0)} ms`);

  // Interleaved, so that a change in machine load affects both variants alike.
  const jitSteps: StepRecord[] = [];
  const eagerSteps: StepRecord[] = [];
  for (let i = 0; i < STEPS; i++) {
    jitSteps.push(await timeStep(gpu, jitStep));
    eagerSteps.push(await timeStep(gpu, eagerStep));
    progress(
      `vit_step ${i + 1}/${STEPS}: jit ${jitSteps[i].ms.toFixed(0)} ms, eager ${eagerSteps[i].ms.toFixed(0)} ms, ` +
        `loss ${jitSteps[i].loss.toFixed(6)} / ${eagerSteps[i].loss.toFixed(6)}`,
    );
  }
  untrack();
  const maxTransient = (steps: StepRecord[]) => Math.max(...steps.map((r) => r.transientBytes));
  const jv = summarise("jit(valueAndGrad)", jitSteps, jitStats.plan?.peakBytes ?? NaN);
  const ev = summarise("eager valueAndGrad", eagerSteps, argBytes + maxTransient([warm, ...eagerSteps]));
  const transient = { jit: maxTransient(jitSteps), eager: maxTransient([warm, ...eagerSteps]) };
  const heldBytes = gpu.stats.liveBytes + gpu.stats.pooledBytes;
  // The same function jitted afresh: traced and planned again, but every pipeline is already in the backend's
  // cache, so this first call shows the compile cost without the driver's shader compilation.
  const rejitted = jit(vg);
  const again = await timeStep(gpu, () => rejitted(params, images) as [Tensor, unknown]);
  rejitted.dispose();
  progress(`vit_step: fresh jit with warm pipeline cache: first call ${again.ms.toFixed(0)} ms`);
  progress("vit_step: replaying each kernel of the jitted plan alone");
  const kernels = await profilePlan(gpu, jitStep);

  jitted.dispose();
  for (const t of tree.leaves(params)) t.dispose();
  images.dispose();

  const compileMs = firstMs - jv.medianMs;
  const hostCompileMs = callMs - jv.medianHostMs;
  const speedup = ev.medianMs / jv.medianMs;
  // Matmul work: forward linears and attention products, backward about twice the forward (dX and dW).
  const D = CONFIG.embedDim, T = tokens, H = CONFIG.numHeads, hid = D * CONFIG.mlpRatio;
  const rowsBT = BATCH * T;
  const fwdBlock = 2 * rowsBT * (D * 3 * D + D * D + 2 * D * hid) + 2 * 2 * BATCH * H * T * T * (D / H);
  const patchIn = CONFIG.inChans * CONFIG.patchSize ** 2;
  const fwdFlops = CONFIG.depth * fwdBlock + 2 * BATCH * (T - 1) * patchIn * D;
  const stepGflop = (3 * fwdFlops) / 1e9;
  const rows = [ev, jv].map((v) => [
    v.name,
    fmtNum(v.medianMs, 0),
    v.stepsMs.map((x) => x.toFixed(0)).join(", "),
    fmtNum(v.medianHostMs, 0),
    fmtNum(v.dispatchesPerStep, 0),
    fmtNum(v.submitsPerStep, 1),
    fmtNum(v.buffersCreatedPerStep, 1),
    fmtMiB(v.peakBytes),
    v.loss.toPrecision(7),
  ]);
  const table = mdTable(
    [
      "variant",
      "median ms/step",
      "steps (ms)",
      "host ms/step",
      "dispatches/step",
      "submits/step",
      "buffers created/step",
      "peak GPU bytes",
      "loss",
    ],
    rows,
    [false, true, false, true, true, true, true, true, true],
  );
  const kernelMs = kernels.reduce((a, k) => a + k.ms, 0);
  const pct = (ms: number) => `${((100 * ms) / kernelMs).toFixed(1)} %`;
  const categories = (["matmul", "reduction", "elementwise/movement"] as const).map((c) => {
    const ks = kernels.filter((k) => k.category === c);
    const ms = ks.reduce((a, k) => a + k.ms, 0);
    const fl = ks.reduce((a, k) => a + k.flops, 0);
    return [c, ks.length, ms.toFixed(0), pct(ms), fl > 0 ? fmtNum(fl / (ms * 1e6)) : "—"];
  });
  const categoryTable = mdTable(
    ["kernel kind", "dispatches", "ms", "share", "GFLOP/s"],
    [...categories, ["total", kernels.length, kernelMs.toFixed(0), "100 %", "—"]],
    [false, true, true, true, true],
  );
  const byShape = new Map<string, { n: number; ms: number; flops: number }>();
  for (const k of kernels.filter((k) => k.category === "matmul")) {
    const e = byShape.get(k.what) ?? { n: 0, ms: 0, flops: 0 };
    e.n++;
    e.ms += k.ms;
    e.flops += k.flops;
    byShape.set(k.what, e);
  }
  const matmulTable = mdTable(
    ["matmul m×k×n (flags)", "dispatches", "ms", "share", "GFLOP/s"],
    [...byShape.entries()].sort((a, b) => b[1].ms - a[1].ms).map(([what, e]) => [
      what,
      e.n,
      e.ms.toFixed(0),
      pct(e.ms),
      fmtNum(e.flops / (e.ms * 1e6)),
    ]),
    [false, true, true, true, true],
  );
  const slowOthers = kernels.filter((k) => k.category !== "matmul").sort((a, b) => b.ms - a.ms).slice(0, 8);
  const othersTable = mdTable(
    ["kernel kind", "size", "ms", "share"],
    slowOthers.map((k) => [k.category, k.what, k.ms.toFixed(1), pct(k.ms)]),
    [false, false, true, true],
  );
  const compileTable = mdTable(
    [
      "first jitted call",
      "later call (median)",
      "compile time (first − later)",
      "host part: first / later call",
      "host compile time",
      "fresh jit, warm pipeline cache: first call / compile time",
      "pipelines compiled",
      "traced eqns",
      "plan steps / dispatches",
    ],
    [[
      `${firstMs.toFixed(0)} ms`,
      `${jv.medianMs.toFixed(0)} ms`,
      `${(compileMs / 1000).toFixed(2)} s`,
      `${callMs.toFixed(0)} / ${jv.medianHostMs.toFixed(0)} ms`,
      `${(hostCompileMs / 1000).toFixed(2)} s`,
      `${again.ms.toFixed(0)} ms / ${((again.ms - jv.medianMs) / 1000).toFixed(2)} s`,
      pipelines,
      jitStats.eqns,
      `${jitStats.plan?.steps ?? "—"} / ${jitStats.plan?.dispatches ?? "—"}`,
    ]],
    [true, true, true, true, true, true, true, true, true],
  );
  const md = header("tiny-ViT training step: eager vs jit", m, [
    `Model: \`models/vit.ts\`, ${CONFIG.depth} blocks, dim ${CONFIG.embedDim}, ${CONFIG.numHeads} heads, MLP ${
      CONFIG.embedDim * CONFIG.mlpRatio
    }, exact GELU, pre-norm, LayerNorm eps ${CONFIG.layerNormEps}; batch ${BATCH} of ${CONFIG.inChans}×${CONFIG.imgSize}×${CONFIG.imgSize} images,`,
    `${CONFIG.patchSize}×${CONFIG.patchSize} patches (${tokens} tokens); ${
      nParams.toLocaleString("en-US")
    } parameters. Step = \`valueAndGrad\` of mean(tokens²) over the params pytree, timed until the loss`,
    `is read back and the queue has drained. One warm-up step each (for jit, its first call), then ${STEPS} steps of each`,
    "variant, interleaved; medians. Host ms: until the call returned (tracing / plan lookup and encoding; the GPU",
    "starts on submitted work meanwhile). Dispatches, submits and buffers created are `backend.stats` deltas per step.",
    "Peak GPU bytes: jit, `stats().plan.peakBytes` (slots + arguments + outputs + constants); eager, params + images",
    "plus the highest rise of the backend's live bytes during a step (the bench wraps the backend's allocators).",
    "",
    table,
    "",
    `Matmul work per step ≈ ${stepGflop.toFixed(1)} GFLOP (3× the forward's ${(fwdFlops / 1e9).toFixed(1)}), i.e. ${
      (stepGflop / (ev.medianMs / 1000)).toFixed(1)
    } GFLOP/s eager and ${
      (stepGflop / (jv.medianMs / 1000)).toFixed(1)
    } GFLOP/s jitted: the step is bound by matmul throughput.`,
    "",
    `Speed-up of jit over eager: **${speedup.toFixed(2)}×**. First jitted loss ${
      firstLoss.toPrecision(7)
    }. GPU bytes held by`,
    `the backend (live + pooled) after both variants: ${fmtMiB(heldBytes)}.`,
    "",
    "Compile time of the jitted step: the first call minus a later call (as measured, sensitive to load); its host",
    "part alone (tracing, planning, pipeline and bind-group creation, encoding; first call minus a later call); and",
    "the first call of the same function jitted afresh once every pipeline is cached (so without the driver's shader",
    "compilation, which lavapipe does on first use, on the GPU side of the first call):",
    "",
    compileTable,
    "",
    `Where the jitted step's time goes: each of its ${kernels.length} kernels replayed alone (own submit, awaited, minus an`,
    `empty submit); the sum is ${kernelMs.toFixed(0)} ms against ${jv.medianMs.toFixed(0)} ms per step.`,
    "",
    categoryTable,
    "",
    "Matmuls by shape (m×k×n of the product as computed, flags as read off the generated WGSL):",
    "",
    matmulTable,
    "",
    "Slowest other kernels:",
    "",
    othersTable,
    "",
  ]);
  await writeResults("vit_step", {
    machine: m,
    config: CONFIG,
    batch: BATCH,
    tokens,
    params: nParams,
    eager: ev,
    jit: jv,
    speedup,
    stepGflop,
    heldBytes,
    argBytes,
    kernels,
    transientBytes: transient,
    compile: {
      firstMs,
      callMs,
      laterMs: jv.medianMs,
      laterHostMs: jv.medianHostMs,
      compileMs,
      hostCompileMs,
      warmCacheFirstMs: again.ms,
      pipelines,
      jitStats,
    },
  }, md);
}
