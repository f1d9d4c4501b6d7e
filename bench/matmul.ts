/**
 * Matmul throughput (GFLOP/s): our eager `matmul` on the WebGPU backend against tfjs-webgpu and jax-js, all
 * on the same adapter in the same process, at square sizes, the tiny-ViT linear shapes (64 images x 65 tokens
 * = 4160 rows) and the batched attention shapes (64 images x 3 heads = 192 matrices of 65 tokens).
 *
 * Protocol, the same for every library: inputs are uploaded once; a warm-up call (pipeline compilation, buffer
 * pools) and, unless that took over 2 x `TARGET_MS`, a second one, each read back; the last of them calibrates N
 * so that a repetition takes about `TARGET_MS`; each repetition (5, or 3 when a call takes over 2 x
 * `TARGET_MS`) launches N matmuls back to back and stops the clock when the last output has been read back, so
 * one readback is amortised over N. The reported time is the median over repetitions. When the warm-up call
 * alone takes over `SLOW_MS`, it counts as the first of 3 single-call repetitions (saves a multi-second call).
 * jax-js is lazy: every output is realised (`blockUntilReady`, all awaited together with the last `data()`).
 *
 * @module
 */
import { type Backend, matmul, type Tensor, tensor } from "../mod.ts";
import { matmulKernel } from "../wgsl/matmul.ts";
import {
  asWebGpu,
  errorText,
  fmtNum,
  header,
  machine,
  maxAbsDiff,
  mdTable,
  median,
  progress,
  randomMatrix,
  writeResults,
} from "./util.ts";

const TFJS_CORE = "npm:@tensorflow/tfjs-core@4.22.0";
const TFJS_WEBGPU = "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
const JAX = "npm:@jax-js/jax@0.1.25";

/** Milliseconds one repetition should take (N matmuls plus one readback). */
const TARGET_MS = 200;
/** A first call slower than this makes the shape "slow": 3 single-call repetitions, the warm-up the first. */
const SLOW_MS = 2500;
const MAX_ITERS = 200;

/** `batch` independent `[m, k] x [k, n]` products. */
interface Shape {
  label: string;
  batch: number;
  m: number;
  k: number;
  n: number;
  /** Operands stored transposed (`[k, m]` / `[n, k]`), read in place by our kernels. */
  transA?: boolean;
  transB?: boolean;
  /** Measured for our library only (the forms the ViT step runs). */
  oursOnly?: boolean;
}

const SHAPES: Shape[] = [
  { label: "square 256³", batch: 1, m: 256, k: 256, n: 256 },
  { label: "square 512³", batch: 1, m: 512, k: 512, n: 512 },
  { label: "square 1024³", batch: 1, m: 1024, k: 1024, n: 1024 },
  { label: "square 2048³", batch: 1, m: 2048, k: 2048, n: 2048 },
  { label: "ViT qkv", batch: 1, m: 4160, k: 192, n: 576 },
  { label: "ViT fc1", batch: 1, m: 4160, k: 192, n: 768 },
  { label: "ViT fc2", batch: 1, m: 4160, k: 768, n: 192 },
  { label: "attn q·kᵀ", batch: 192, m: 65, k: 64, n: 65 },
  { label: "attn p·v", batch: 192, m: 65, k: 65, n: 64 },
];

/**
 * Ours only: the transposed forms the ViT step actually runs (a linear layer is `x · Wᵀ` with W stored
 * `[out, in]`; its backward is `dy · W` and `dyᵀ · x`; jit folds `q · kᵀ` into a transB matmul).
 */
const TRANSPOSED: Shape[] = [
  { label: "qkv fwd x·Wᵀ", batch: 1, m: 4160, k: 192, n: 576, transB: true },
  { label: "qkv dW = dyᵀ·x", batch: 1, m: 576, k: 4160, n: 192, transA: true },
  { label: "fc1 dx = dy·W", batch: 1, m: 4160, k: 768, n: 192 },
  { label: "fc2 fwd x·Wᵀ", batch: 1, m: 4160, k: 768, n: 192, transB: true },
  { label: "fc2 dW = dyᵀ·x", batch: 1, m: 192, k: 4160, n: 768, transA: true },
  { label: "attn q·kᵀ / dP·vᵀ (transB)", batch: 192, m: 65, k: 64, n: 65, transB: true },
  { label: "attn pᵀ·dO (transA)", batch: 192, m: 65, k: 65, n: 64, transA: true },
].map((s) => ({ ...s, oursOnly: true }));

/** The shape whose results are compared across libraries (and against a float64 reference). */
const CHECK_SHAPE = SHAPES[4];

const flops = (s: Shape) => 2 * s.batch * s.m * s.k * s.n;
const dims = (s: Shape) =>
  `${s.batch > 1 ? `${s.batch} × ` : ""}${s.transA ? `(${s.k}×${s.m})ᵀ` : `${s.m}×${s.k}`} · ${
    s.transB ? `(${s.n}×${s.k})ᵀ` : `${s.k}×${s.n}`
  }`;

/** Inputs of one shape on one library, ready to run. */
interface Prepared {
  /** One matmul, awaited to its readback. */
  once(): Promise<Float32Array>;
  /** N matmuls back to back, then the last output read back; returns elapsed ms. */
  timed(iters: number): Promise<number>;
  dispose(): void;
}

/** A library under test. */
interface Lib {
  name: string;
  version: string;
  /** The adapter its device was created on. */
  adapter: string;
  prepare(s: Shape, a: Float32Array, b: Float32Array): Prepared;
  teardown(): void;
}

const batched = (s: Shape, r: number, c: number) => (s.batch > 1 ? [s.batch, r, c] : [r, c]);
const shapeA = (s: Shape) => (s.transA ? batched(s, s.k, s.m) : batched(s, s.m, s.k));
const shapeB = (s: Shape) => (s.transB ? batched(s, s.n, s.k) : batched(s, s.k, s.n));

function ours(backend: Backend): Lib {
  return {
    name: "ours",
    version: "eager matmul",
    adapter: (backend as { adapterInfo?: string }).adapterInfo ?? backend.name,
    prepare(s, ha, hb) {
      const a = tensor(ha, { shape: shapeA(s), backend });
      const b = tensor(hb, { shape: shapeB(s), backend });
      const flags = { transA: s.transA ?? false, transB: s.transB ?? false };
      return {
        async once() {
          const c = matmul(a, b, flags);
          const d = await c.data();
          c.dispose();
          return d as Float32Array;
        },
        async timed(iters) {
          const t0 = performance.now();
          let last: Tensor | null = null;
          for (let i = 0; i < iters; i++) {
            const c = matmul(a, b, flags);
            last?.dispose();
            last = c;
          }
          await last!.data();
          const ms = performance.now() - t0;
          last!.dispose();
          return ms;
        },
        dispose() {
          a.dispose();
          b.dispose();
        },
      };
    },
    teardown() {},
  };
}

async function tfjs(): Promise<Lib> {
  const tf = await import(TFJS_CORE);
  await import(TFJS_WEBGPU);
  if (!(await tf.setBackend("webgpu"))) throw new Error("tf.setBackend('webgpu') returned false");
  await tf.ready();
  const device = (tf.backend() as unknown as { device: GPUDevice & { adapterInfo?: GPUAdapterInfo } }).device;
  return {
    name: "tfjs-webgpu",
    version: "4.22.0",
    adapter: device.adapterInfo?.description ?? "unknown",
    prepare(s, ha, hb) {
      const a = tf.tensor(ha, shapeA(s), "float32");
      const b = tf.tensor(hb, shapeB(s), "float32");
      return {
        async once() {
          const c = tf.matMul(a, b);
          const d = await c.data();
          c.dispose();
          return d as Float32Array;
        },
        async timed(iters) {
          const t0 = performance.now();
          let last: { data(): Promise<unknown>; dispose(): void } | null = null;
          for (let i = 0; i < iters; i++) {
            const c = tf.matMul(a, b);
            last?.dispose();
            last = c;
          }
          await last!.data();
          const ms = performance.now() - t0;
          last!.dispose();
          return ms;
        },
        dispose() {
          a.dispose();
          b.dispose();
        },
      };
    },
    teardown() {
      tf.disposeVariables();
    },
  };
}

async function jaxjs(): Promise<Lib> {
  const jax = await import(JAX);
  const devices = await jax.init("webgpu");
  if (!devices.includes("webgpu")) throw new Error(`jax.init('webgpu') gave devices [${devices.join(", ")}]`);
  jax.defaultDevice("webgpu");
  const np = jax.numpy;
  const device = jax.getWebGPUDevice() as GPUDevice & { adapterInfo?: GPUAdapterInfo };
  return {
    name: "jax-js",
    version: "0.1.25",
    adapter: device.adapterInfo?.description ?? "unknown",
    prepare(s, ha, hb) {
      // jax-js arrays are reference counted and every op consumes its arguments: pass `.ref` to keep them.
      const a = np.array(ha, { device: "webgpu" }).reshape(shapeA(s));
      const b = np.array(hb, { device: "webgpu" }).reshape(shapeB(s));
      return {
        async once() {
          return (await np.matmul(a.ref, b.ref).data()) as Float32Array;
        },
        async timed(iters) {
          const t0 = performance.now();
          const outs = [];
          for (let i = 0; i < iters; i++) outs.push(np.matmul(a.ref, b.ref));
          const last = outs.pop()!;
          // Lazy: realise every output; blockUntilReady does not consume, so dispose afterwards.
          await Promise.all([...outs.map((o) => o.blockUntilReady()), last.data()]);
          const ms = performance.now() - t0;
          for (const o of outs) o.dispose();
          return ms;
        },
        dispose() {
          a.dispose();
          b.dispose();
        },
      };
    },
    teardown() {},
  };
}

/** One library on one shape. */
interface Measurement {
  lib: string;
  iters: number;
  reps: number;
  msPerIter: number[];
  medianMs: number;
  gflops: number;
}

async function measure(p: Prepared, s: Shape): Promise<Omit<Measurement, "lib">> {
  let t0 = performance.now();
  await p.once(); // warm-up: pipelines, pools
  let once = performance.now() - t0;
  const msPerIter: number[] = [];
  if (once > SLOW_MS) {
    // Slow shapes: compilation is a small part of one call, so the warm-up call is the first of 3 repetitions
    // of N = 1 (the median drops it if compilation made it the slowest).
    msPerIter.push(once);
    for (let r = 1; r < 3; r++) msPerIter.push(await p.timed(1));
    const medianMs = median(msPerIter);
    return { iters: 1, reps: 3, msPerIter, medianMs, gflops: flops(s) / (medianMs * 1e6) };
  }
  if (once < 2 * TARGET_MS) {
    // A second warm-up call calibrates N (the first one included compilation).
    t0 = performance.now();
    await p.once();
    once = performance.now() - t0;
  }
  once = Math.max(once, 0.05);
  const iters = Math.min(MAX_ITERS, Math.max(1, Math.round(TARGET_MS / once)));
  const reps = once > 2 * TARGET_MS ? 3 : 5;
  for (let r = 0; r < reps; r++) msPerIter.push((await p.timed(iters)) / iters);
  const medianMs = median(msPerIter);
  return { iters, reps, msPerIter, medianMs, gflops: flops(s) / (medianMs * 1e6) };
}

/** Which variant of our blocked kernel a shape gets (read off the generated WGSL). */
function kernelOf(s: Shape): string {
  const a = { shape: shapeA(s), dtype: "float32" as const };
  const b = { shape: shapeB(s), dtype: "float32" as const };
  const batch = s.batch > 1 ? [s.batch] : [];
  const { code } = matmulKernel({ a, b, transA: !!s.transA, transB: !!s.transB, batch, m: s.m, k: s.k, n: s.n });
  if (!code.includes("c0")) return "scalar";
  const vec = (name: string) => code.includes(`${name}4: array<vec4<f32>>`);
  const parts = [
    `A ${vec("A") ? "vec4" : "scalar"}`,
    `B ${vec("B") ? "vec4" : "scalar"}`,
    `C ${vec("C") ? "vec4" : "scalar"}`,
  ];
  return `blocked (${parts.join(", ")}${code.includes("dot(") ? ", dot" : ""})`;
}

/** float64 reference of `a · b` for the correctness check. */
function reference(s: Shape, a: Float32Array, b: Float32Array): Float64Array {
  const out = new Float64Array(s.batch * s.m * s.n);
  for (let bi = 0; bi < s.batch; bi++) {
    const oa = bi * s.m * s.k, ob = bi * s.k * s.n, oc = bi * s.m * s.n;
    for (let i = 0; i < s.m; i++) {
      for (let p = 0; p < s.k; p++) {
        const av = a[oa + i * s.k + p];
        const row = ob + p * s.n;
        const o = oc + i * s.n;
        for (let j = 0; j < s.n; j++) out[o + j] += av * b[row + j];
      }
    }
  }
  return out;
}

/** Runs the matmul comparison and writes `bench/results/matmul.{json,md}`. */
export async function run(backend: Backend): Promise<void> {
  const gpu = asWebGpu(backend);
  const m = machine(backend);
  const libs: Lib[] = [ours(gpu)];
  const failed: Record<string, string> = {};
  for (const [name, make] of [["tfjs-webgpu", tfjs], ["jax-js", jaxjs]] as const) {
    try {
      libs.push(await make());
      progress(`${name} initialised on ${libs[libs.length - 1].adapter}`);
    } catch (e) {
      failed[name] = errorText(e);
      progress(`${name} failed to initialise: ${failed[name]}`);
    }
  }
  const names = ["ours", "tfjs-webgpu", "jax-js"];

  const results: { shape: Shape; gflop: number; ours: string; byLib: Record<string, Measurement | string> }[] = [];
  const check: Record<string, { vsOurs: number | null; vsFloat64: number } | string> = {};
  for (const [si, s] of [...SHAPES, ...TRANSPOSED].entries()) {
    const oursOnly = !!s.oursOnly;
    const ha = randomMatrix(s.batch * s.m * s.k, 1 + si);
    const hb = randomMatrix(s.batch * s.k * s.n, 101 + si);
    const byLib: Record<string, Measurement | string> = {};
    for (const name of names) if (failed[name]) byLib[name] = `init failed: ${failed[name]}`;
    if (oursOnly) { for (const name of names.slice(1)) byLib[name] = "ours only"; }
    let oursOut: Float32Array | null = null;
    const ref = s === CHECK_SHAPE ? reference(s, ha, hb) : null;
    for (const lib of oursOnly ? libs.slice(0, 1) : libs) {
      let p: Prepared | null = null;
      try {
        p = lib.prepare(s, ha, hb);
        if (ref) {
          const out = await p.once();
          if (lib.name === "ours") oursOut = out;
          check[lib.name] = {
            vsOurs: oursOut && lib.name !== "ours" ? maxAbsDiff(out, oursOut) : null,
            vsFloat64: maxAbsDiff(out, ref),
          };
        }
        byLib[lib.name] = { lib: lib.name, ...(await measure(p, s)) };
        const r = byLib[lib.name] as Measurement;
        progress(`${s.label}: ${lib.name} ${r.gflops.toFixed(2)} GFLOP/s (${r.iters} iters x ${r.reps} reps)`);
      } catch (e) {
        byLib[lib.name] = errorText(e);
        if (ref) check[lib.name] = errorText(e);
        progress(`${s.label}: ${lib.name} failed: ${byLib[lib.name]}`);
      } finally {
        try {
          p?.dispose();
        } catch { /* a failed library may not dispose cleanly */ }
      }
    }
    results.push({
      shape: s,
      gflop: flops(s) / 1e9,
      ours: kernelOf(s),
      byLib,
    });
  }
  for (const lib of libs) lib.teardown();

  const cell = (r: Measurement | string | undefined) =>
    r === undefined || r === "ours only" ? "—" : typeof r === "string" ? `error: ${r}` : fmtNum(r.gflops);
  const ratio = (a: Measurement | string | undefined, b: Measurement | string | undefined) =>
    typeof a === "object" && typeof b === "object" ? `${fmtNum(a.gflops / b.gflops)}×` : "—";
  const row = ({ shape, byLib, ours: kernel }: (typeof results)[number]) => {
    const o = byLib["ours"] as Measurement | string;
    return [
      shape.label,
      dims(shape),
      typeof o === "object" ? fmtNum(o.medianMs, 3) : "—",
      cell(o),
      cell(byLib["tfjs-webgpu"]),
      cell(byLib["jax-js"]),
      ratio(o, byLib["tfjs-webgpu"]),
      ratio(o, byLib["jax-js"]),
      kernel,
    ];
  };
  const compared = results.filter((r) => !r.shape.oursOnly);
  const transposed = results.filter((r) => r.shape.oursOnly);
  const table = mdTable(
    [
      "shape",
      "m×k · k×n",
      "ours ms",
      "ours GFLOP/s",
      "tfjs-webgpu GFLOP/s",
      "jax-js GFLOP/s",
      "ours/tfjs",
      "ours/jax-js",
      "our kernel",
    ],
    compared.map(row),
    [false, false, true, true, true, true, true, true, false],
  );
  const transposedTable = mdTable(
    ["shape", "op(A) · op(B)", "ours ms", "ours GFLOP/s", "our kernel"],
    transposed.map(row).map((r) => [r[0], r[1], r[2], r[3], r[8]]),
    [false, false, true, true, false],
  );
  const checkRows = names.map((name) => {
    const c = check[name];
    if (c === undefined) return [name, "—", failed[name] ? `init failed: ${failed[name]}` : "—"];
    if (typeof c === "string") return [name, "—", `error: ${c}`];
    return [name, c.vsOurs === null ? "—" : c.vsOurs.toExponential(2), c.vsFloat64.toExponential(2)];
  });
  const adapters = libs.map((l) => `${l.name}: ${l.adapter}`).join("; ");
  const md = [
    header("matmul: ours vs tfjs-webgpu vs jax-js", m, [
      `Libraries: ours (eager \`matmul\`), ${
        names.slice(1).map((n) => (failed[n] ? `${n} (failed: ${failed[n]})` : n)).join(", ")
      } (tfjs-core + tfjs-backend-webgpu 4.22.0, @jax-js/jax 0.1.25), each on its own device of the same adapter (${adapters}).`,
      "Float32. Per library and shape: 1-2 warm-up calls (the last calibrates N), then 5 (3 when slow) repetitions",
      `of N back-to-back matmuls (N so that a repetition takes ~${TARGET_MS} ms) ending when the last output has been read`,
      `back (a warm-up call over ${SLOW_MS} ms counts as the first of 3 single-call repetitions); the median time per`,
      "matmul is reported (GFLOP/s = 2·batch·m·k·n / time). jax-js outputs are realised with",
      "`blockUntilReady` (lazy evaluation). Ratios > 1 mean ours is faster.",
      "",
      table,
      "",
      "Ours only: the operand forms the ViT step runs (transposed operands are read in place, no copy):",
      "",
      transposedTable,
      "",
      `Correctness on ${CHECK_SHAPE.label} (${dims(CHECK_SHAPE)}), max |difference|:`,
      "",
      mdTable(["library", "vs ours", "vs float64 reference"], checkRows, [false, true, true]),
      "",
    ]),
  ].join("\n");
  await writeResults("matmul", {
    machine: m,
    adapters: Object.fromEntries(libs.map((l) => [l.name, l.adapter])),
    failed,
    targetMs: TARGET_MS,
    results,
    check,
  }, md);
}
