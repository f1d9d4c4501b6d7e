/** Shared test helpers: backends, tolerant comparison, and fast-check settings. */
import { cpu } from "../ops/cpu.ts";
import type { Backend } from "../ops/backend.ts";
import { webgpu } from "../ops/backends.ts";
import type { Tensor } from "../ops/tensor.ts";
import type { HostTensor } from "../models/safetensors.ts";
import assert from "node:assert/strict";

/**
 * The WebGPU backend. Tests need it (CI installs lavapipe); set IBOT_TEST_NO_GPU=1 to run GPU comparisons
 * against the CPU backend instead on a machine without any adapter.
 */
export async function gpu(): Promise<Backend> {
  if (Deno.env.get("IBOT_TEST_NO_GPU") === "1") return cpu;
  return await webgpu();
}

export { cpu };

/** Number of fast-check runs per property (override with IBOT_TEST_RUNS). */
export const RUNS = Number(Deno.env.get("IBOT_TEST_RUNS") ?? 25);

/** Max |a-b| / (atol + rtol*|b|) over elements; <= 1 means close. */
export function closeness(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Number(a[i]);
    const y = Number(b[i]);
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    if (x === y) continue;
    worst = Math.max(worst, Math.abs(x - y) / (atol + rtol * Math.abs(y)));
    if (Number.isNaN(worst)) return Infinity;
  }
  return worst;
}

/** Asserts two arrays agree within tolerance, with the worst element in the message. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = ""): void {
  const c = closeness(a, b, rtol, atol);
  if (!(c <= 1)) {
    let at = 0;
    let w = -1;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(Number(a[i]) - Number(b[i])) / (atol + rtol * Math.abs(Number(b[i])));
      if (!(d <= w)) {
        w = d;
        at = i;
      }
    }
    throw new Error(
      `${what} not close (ratio ${c.toFixed(3)}): at ${at}: ${a[at]} vs ${b[at]} (rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Reads several tensors with one await each, concurrently (a GPU readback costs ~11 ms here). */
export function readAll(ts: readonly Tensor[]): Promise<ArrayLike<number>[]> {
  return Promise.all(ts.map((t) => t.data()));
}

import { vjp as vjpOf } from "../autograd/vjp.ts";
import { flatten as flattenTree, unflatten as unflattenTree } from "../autograd/tree.ts";
import { fromTyped } from "../ops/create.ts";
import { PRESETS, type PretrainConfig } from "../train/presets.ts";

/** A seeded PRNG (mulberry32) for reproducible test data; returns floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` seeded uniform values in `[lo, hi)` as float64. */
export function randArray(seed: number, n: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/** Options of `checkVjp`. */
export interface CheckVjpOptions {
  /** Seed of the random tangent and cotangent. */
  seed?: number;
  /** Finite-difference step along the tangent. */
  eps?: number;
  rtol?: number;
  atol?: number;
  what?: string;
}

/**
 * JAX `check_vjp` style gradient check on float64 CPU tensors: for a random tangent `v` (one per argument) and a
 * random cotangent `u` (one per output leaf), `<u, J v>` by central differences must equal `<vjp(u), v>` within
 * `atol + rtol * sum_j |u_j (J v)_j|` (the default atol absorbs ~1e-14 noise of float64 primitives such as erf,
 * which finite differences amplify by 1/eps).
 * `args` are float64 tensors; the output may be any tree of float64 tensors. Returns both scalars.
 */
export async function checkVjp(
  f: (...args: any[]) => unknown,
  args: readonly Tensor[],
  opts: CheckVjpOptions = {},
): Promise<{ analytic: number; numeric: number }> {
  const { seed = 1, eps = 1e-5, rtol = 1e-6, atol = 1e-8, what = "vjp" } = opts;
  const leavesOf = (t: unknown) => flattenTree<Tensor>(t).leaves;
  const [out, pullback] = vjpOf(f as (...a: never[]) => unknown, ...args);
  const { leaves: outs, def } = flattenTree<Tensor>(out);
  const us = outs.map((o, i) => randArray(seed * 7919 + i, o.size));
  const vs = args.map((a, i) => randArray(seed * 104729 + 31 * i + 3, a.size));
  const cts = pullback(unflattenTree(def, outs.map((o, i) => fromTyped(us[i], o.shape, "float64", cpu)))) as Tensor[];
  let analytic = 0;
  for (let i = 0; i < args.length; i++) {
    const ct = await cts[i].data();
    for (let j = 0; j < ct.length; j++) analytic += ct[j] * vs[i][j];
  }
  const shifted = async (sgn: number) => {
    const xs = await Promise.all(args.map(async (a, i) => {
      const d = (await a.data()) as Float64Array;
      return fromTyped(d.map((x, j) => x + sgn * eps * vs[i][j]), a.shape, "float64", cpu);
    }));
    return await readAll(leavesOf(f(...xs)));
  };
  // Fourth-order central differences: truncation error O(eps^4), so that sharp (but smooth) functions pass.
  const [p2, p1, m1, m2] = [await shifted(2), await shifted(1), await shifted(-1), await shifted(-2)];
  let numeric = 0;
  let scale = 0;
  for (let k = 0; k < outs.length; k++) {
    for (let j = 0; j < us[k].length; j++) {
      const term = us[k][j] * (8 * (p1[k][j] - m1[k][j]) - (p2[k][j] - m2[k][j])) / (12 * eps);
      numeric += term;
      scale += Math.abs(term);
    }
  }
  const err = Math.abs(analytic - numeric);
  if (!(err <= atol + rtol * Math.max(scale, Math.abs(analytic)))) {
    throw new Error(
      `${what}: <vjp(u), v> = ${analytic} but finite differences give ${numeric} (|diff| ${err.toExponential(2)}, ` +
        `scale ${scale.toExponential(2)}, rtol ${rtol}, atol ${atol})`,
    );
  }
  return { analytic, numeric };
}

/**
 * A tiny pretraining configuration on embedded-small: a 1-block ViT of width 32, batch 16, 2 local crops, 1 epoch,
 * with the official photometric augmentations (the preset has none) so that the jitted step exercises them.
 */
export function tinyPretrainConfig(): PretrainConfig {
  const base = PRESETS["embedded-small"];
  return {
    ...base,
    backbone: { ...base.backbone, embedDim: 32, depth: 1, numHeads: 2 },
    head: { hiddenDim: 32, bottleneckDim: 16, outDim: 64, normLastLayer: true },
    augment: {
      ...base.augment,
      jitter: { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 },
      grayscaleP: 0.2,
      blur: { pGlobal1: 1, pGlobalOther: 0.1, pLocal: 0.5, sigma: [0.1, 1.0], taps: 5 },
      solarize: { pGlobal1: 0, pGlobalOther: 0.2, pLocal: 0, threshold: 0.5 },
      localCrops: { ...base.augment.localCrops, number: 2 },
    },
    batchSize: 16,
    epochs: 1,
  };
}

/**
 * Asserts two checkpoints' states agree: keys and step counts exactly; everything else within rtol 1e-4 of the
 * value plus 1e-5 of the tensor's largest entry — except parameters whose gradient is mathematically zero (the
 * attention's key biases: first AdamW moment below 1e-6 of its tensor's largest), which AdamW moves by the
 * normalised rounding noise, up to `lr` (the largest learning rate of the run) either way: those only within
 * 2·lr.
 */
export function assertSameState(
  got: Map<string, HostTensor>,
  want: Map<string, HostTensor>,
  lr: number,
  what: string,
): void {
  assert.deepEqual([...got.keys()], [...want.keys()]);
  let noise = 0;
  const worst = { r: 0, at: "" };
  for (const [name, t] of want) {
    const g = got.get(name)!.data;
    if (t.dtype !== "float32" || name.startsWith("opt.count")) {
      assert.deepEqual(Array.from(g), Array.from(t.data), `${what}: ${name}`);
      continue;
    }
    const m = want.get(name.replace(/^(student|teacher)\./, "opt.m."))?.data;
    const mScale = m ? Math.max(...Array.from(m, Math.abs)) : 0;
    const scale = Math.max(...Array.from(t.data, Math.abs));
    for (let i = 0; i < t.data.length; i++) {
      const d = Math.abs(g[i] - t.data[i]);
      const r = d / (1e-5 * scale + 1e-4 * Math.abs(t.data[i]) + 1e-12);
      const at = `${name}[${i}]: ${g[i]} vs ${t.data[i]}`;
      if (m && Math.abs(m[i]) < 1e-6 * mScale && r > 1) {
        noise++;
        assert.ok(d <= 2 * lr, `${what}: ${at} differ by more than 2·lr`);
      } else if (r > worst.r) [worst.r, worst.at] = [r, at];
    }
  }
  console.log(`  ${what}: worst ratio ${worst.r.toFixed(3)} (${noise} zero-gradient entries within 2·lr)`);
  assert.ok(worst.r <= 1, `${what}: ${worst.at}`);
}
