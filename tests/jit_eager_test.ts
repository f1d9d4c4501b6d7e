/**
 * jit equals eager, on the CPU backend (jit interprets the traced graph op by op) and on WebGPU (a compiled plan
 * that fuses elementwise chains, inlines elementwise producers into reductions, folds transposes into matmul
 * flags, assigns buffers by liveness and writes outputs into donated arguments):
 * 1. every primitive (cases from tests/prim_specs.ts), forward, and for differentiable primitives
 *    `valueAndGrad(sum(apply(x) * c))`;
 * 2. graphs that stress the compiler: long broadcasting chains, diamonds, reduction prologues over broadcast
 *    operands (softmax, layerNorm, moments over random axes), comparisons/where/casts, alias ops between fused
 *    ops, outputs that are inputs/constants/aliases/repeated, matmuls with folded transposes, donation;
 * 3. the plan allocates no buffer after its first call and fuses (fewer dispatches than equations).
 *
 * Tolerance: the CPU interpreter runs exactly the eager kernels, so everything there must be bitwise equal, and so
 * must a single primitive under jit on WebGPU (one kernel evaluating the same WGSL expression). A fused WebGPU
 * kernel also rounds every op to f32, but the shader compiler may then contract across ops of one kernel: here
 * (lavapipe) `exp` of a product computed in the same kernel, and a product feeding a fused reduction's accumulator
 * (an FMA), differ from the op-by-op values by a few ulps of the operands (measured up to ~4e-7 relative; mul+add,
 * tanh, erf, sin, log, sqrt, div chains stay bitwise equal). Where values cancel (d = b*c + a with b*c ~ -a) that
 * is more relative to the result, so fused graphs and gradients on WebGPU are compared normwise per output:
 * `|jit - eager| <= 1e-6 * max(1, max |eager|)`, and gradient losses weight `f(x)` by its sign (no cancellation
 * in the value). Integer and bool outputs must always be equal.
 */
import fc from "npm:fast-check@4.10.2";
import assert from "node:assert/strict";
import { Tensor } from "../ops/tensor.ts";
import { jit } from "../autograd/jit.ts";
import { valueAndGrad } from "../autograd/vjp.ts";
import { flatten } from "../autograd/tree.ts";
import * as api from "../ops/api.ts";
import * as nn from "../ops/nn.ts";
import type { Backend } from "../ops/backend.ts";
import { tensor } from "../ops/create.ts";
import { type DType, isFloat, toHost } from "../ops/dtype.ts";
import { type Prim, PRIMS } from "../ops/prim.ts";
import { fmt, size } from "../ops/shape.ts";
import type { WebGpuBackend } from "../wgsl/backend.ts";
import { cpu, gpu, readAll } from "./util.ts";
import { broadcastable, type Case, type Operand, rng, SEED, shapeArb, SPECS } from "./prim_specs.ts";

/** Float cases per primitive (and per `gpu.cases` arbitrary), and samples per extra (integer/bool) arbitrary. */
const PRIM_RUNS = Number(Deno.env.get("IBOT_TEST_JIT_RUNS") ?? 10);
const EXTRA_RUNS = 2;
/** Relative tolerance of fused WebGPU float comparisons (see the header); 0 on the CPU. */
const GPU_TOL = 1e-6;

type Arb<T> = fc.Arbitrary<T>;
type Fn = (...args: any[]) => unknown;

const tolOf = (b: Backend) => (b.name === "webgpu" ? GPU_TOL : 0);
const gpuStats = (b: Backend) => (b as WebGpuBackend).stats;

/**
 * Index of the first element where `got` differs from `want` by more than `tol * max(1, max |want|)` (normwise;
 * NaN equals NaN, infinities must match), or -1.
 */
function firstMismatch(got: ArrayLike<number>, want: ArrayLike<number>, tol: number): number {
  if (got.length !== want.length) return 0;
  let scale = 1;
  for (let i = 0; i < want.length; i++) if (Number.isFinite(want[i])) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < got.length; i++) {
    const a = Number(got[i]), b = Number(want[i]);
    if (a === b || (Number.isNaN(a) && Number.isNaN(b))) continue;
    if (!(Math.abs(a - b) <= tol * scale)) return i;
  }
  return -1;
}

/** Compares read-back values; returns a failure message or null. */
function compare(what: string, j: Tensor, e: Tensor, jv: ArrayLike<number>, ev: ArrayLike<number>, tol: number) {
  if (j.dtype !== e.dtype || fmt(j.shape) !== fmt(e.shape)) {
    return `${what}: jit ${j.dtype}${fmt(j.shape)} vs eager ${e.dtype}${fmt(e.shape)}`;
  }
  if (jv.length !== size(e.shape)) return `${what}: ${jv.length} values for ${fmt(e.shape)}`;
  const at = firstMismatch(jv, ev, isFloat(e.dtype) ? tol : 0);
  return at < 0 ? null : `${what}: jit ${jv[at]} vs eager ${ev[at]} at ${at} (of ${ev.length})`;
}

/** Pairs of (jit, eager) tensors, read back with one Promise.all per side. */
interface Pair {
  what: string;
  jit: Tensor;
  eager: Tensor;
  tol: number;
}

/** One failure message (or null) per pair. */
async function check(pairs: readonly Pair[]): Promise<(string | null)[]> {
  const [jv, ev] = await Promise.all([readAll(pairs.map((p) => p.jit)), readAll(pairs.map((p) => p.eager))]);
  return pairs.map((p, i) => compare(p.what, p.jit, p.eager, jv[i], ev[i], p.tol));
}

/** Pairs the leaves of a jit result with those of the eager one (same tree; static leaves must be equal). */
function pairLeaves(what: string, jitOut: unknown, eagerOut: unknown, tol: number): Pair[] {
  const j = flatten<unknown>(jitOut), e = flatten<unknown>(eagerOut);
  assert.equal(JSON.stringify(j.def), JSON.stringify(e.def), `${what}: output structure`);
  return e.leaves.flatMap((el, i): Pair[] => {
    const jl = j.leaves[i];
    if (el instanceof Tensor) {
      assert.ok(jl instanceof Tensor, `${what}: output ${i} is not a tensor under jit`);
      return [{ what: `${what} [${i}]`, jit: jl, eager: el, tol }];
    }
    assert.deepEqual(jl, el, `${what}: static output ${i}`);
    return [];
  });
}

// ---------------------------------------------------------------------------------------------------------
// 1. Every primitive.

const primIndex = (p: Prim) => PRIMS.indexOf(p as typeof PRIMS[number]);

function make(o: Operand, dtype: DType, backend: Backend): Tensor {
  return tensor(toHost(dtype, o.data), { shape: o.shape, dtype, backend });
}

/** A random cotangent-like tensor with values in [-1, 1] (multiples of 1/8: exact in every float dtype). */
function weights(shape: readonly number[], dtype: DType, backend: Backend, seed: number): Tensor {
  const r = rng(seed);
  const v = Array.from({ length: size(shape) }, () => Math.round(16 * r() - 8) / 8);
  return tensor(toHost(dtype, v), { shape, dtype, backend });
}

/** Whether the printed jit graph applies `p`. */
const applies = (graph: string, p: Prim) => new RegExp(`= ${p}[\\[ ]`).test(graph);

/** The sampled cases of `p`: [case, float dtype on this backend, differentiate?]. */
function primCases(p: Prim, b: Backend): [Case, DType, boolean][] {
  const spec = SPECS[p];
  const seed = SEED + 17 * primIndex(p);
  // The CPU runs the float cases in float64 (its jit and eager kernels are the same either way) and the GPU-only
  // float cases in float32; WebGPU has float32 only.
  const f64 = b.name === "webgpu" ? "float32" : "float64";
  const groups: [Arb<Case>, number, DType, boolean][] = [
    [spec.cases, PRIM_RUNS, f64, true],
    ...(spec.gpu.cases ? [[spec.gpu.cases, PRIM_RUNS, "float32", true] as [Arb<Case>, number, DType, boolean]] : []),
    ...(spec.gpu.extra ?? []).map((a): [Arb<Case>, number, DType, boolean] => [a, EXTRA_RUNS, "float32", false]),
  ];
  const cases = groups.flatMap(([arb, n, float, diff], k) =>
    fc.sample(arb, { seed: seed + k, numRuns: n }).map((c): [Case, DType, boolean] => [c, float, diff])
  );
  // A differentiable primitive whose samples happen to be all non-differentiable (casts to integers): one more.
  for (let k = 0; spec.vjp.kind === "fd" && !cases.some(([c, , d]) => d && !c.nonDiff) && k < 64; k++) {
    const [c] = fc.sample(spec.cases, { seed: seed + 100 + k, numRuns: 1 });
    if (!c.nonDiff) cases.push([c, f64, true]);
  }
  return cases;
}

interface PrimRun {
  pairs: Pair[];
  errors: string[];
  /** Cases whose jit graph applies the primitive. */
  bound: number;
  cases: number;
  grads: number;
}

/** Runs every case of `p` eagerly and under jit (forward, and value and gradients) without reading anything. */
function runPrim(p: Prim, b: Backend): PrimRun {
  const spec = SPECS[p];
  const run: PrimRun = { pairs: [], errors: [], bound: 0, cases: 0, grads: 0 };
  const tol = tolOf(b);
  primCases(p, b).forEach(([c, float, diff], k) => {
    const dt = (o: Operand): DType => (o.dtype === "float" ? float : o.dtype);
    try {
      const xs = c.ins.map((o) => make(o, dt(o), b));
      const eager = c.apply(xs);
      const jf = jit((...a: Tensor[]) => c.apply(a));
      if (applies(jf.graph(...xs), p)) run.bound++;
      run.cases++;
      run.pairs.push(...pairLeaves(c.desc, jf(...xs), eager, 0)); // one kernel, the same expression: exact
      jf.dispose();
      if (!diff || spec.vjp.kind !== "fd" || c.nonDiff || !isFloat(eager.dtype)) return;
      const argnums = c.ins.flatMap((o, i) => (o.dtype === "float" ? [i] : []));
      if (argnums.length === 0) return;
      const ct = weights(eager.shape, eager.dtype, b, caseSeed(p, k));
      // Alternately a captured constant and an argument of the jitted function.
      const vg = valueAndGrad((w: Tensor, ...a: Tensor[]) => api.sum(api.mul(c.apply(a), w)), {
        argnums: argnums.map((i) => i + 1),
      });
      const [jOut, eOut] = k % 2 === 0
        ? [jit((...a: Tensor[]) => vg(ct, ...a))(...xs), vg(ct, ...xs)]
        : [jit(vg)(ct, ...xs), vg(ct, ...xs)];
      run.pairs.push(...pairLeaves(`valueAndGrad ${c.desc}`, jOut, eOut, tol));
      run.grads++;
    } catch (e) {
      run.errors.push(`${c.desc}: threw ${(e as Error).stack}`);
    }
  });
  return run;
}

const caseSeed = (p: Prim, k: number) => SEED + 1000 * primIndex(p) + k;

async function everyPrimitive(t: Deno.TestContext, b: Backend): Promise<void> {
  const runs = PRIMS.map((p) => [p, runPrim(p, b)] as const);
  const fails = await check(runs.flatMap(([, r]) => r.pairs));
  let k = 0;
  for (const [p, r] of runs) {
    const mine = fails.slice(k, k += r.pairs.length).filter((f) => f !== null);
    await t.step(`${p} (${r.cases} cases, ${r.grads} with gradients)`, () => {
      assert.deepEqual([...r.errors, ...mine].slice(0, 6), []);
      assert.ok(r.bound > 0, `${p}: no jit case applies the primitive`);
      if (SPECS[p].vjp.kind === "fd") assert.ok(r.grads > 0, `${p}: no gradient case`);
    });
  }
}

Deno.test("every primitive has jit cases that apply it (and gradient cases when differentiable)", () => {
  const missing: string[] = [];
  for (const p of PRIMS) {
    const spec = (SPECS as Partial<Record<string, typeof SPECS[Prim]>>)[p];
    if (!spec) {
      missing.push(`${p}: no spec`);
      continue;
    }
    const cases = primCases(p, cpu);
    const bound = cases.filter(([c, float]) => {
      const xs = c.ins.map((o) => make(o, o.dtype === "float" ? float : o.dtype, cpu));
      return applies(jit((...a: Tensor[]) => c.apply(a)).graph(...xs), p);
    }).length;
    if (bound === 0) missing.push(`${p}: none of ${cases.length} jit cases applies it`);
    if (spec.vjp.kind === "fd" && !cases.some(([c, , d]) => d && !c.nonDiff)) missing.push(`${p}: no gradient case`);
  }
  assert.deepEqual(missing, []);
});

Deno.test("jit equals eager on every primitive, forward and gradients: CPU (interpreted)", (t) =>
  everyPrimitive(t, cpu));

Deno.test("jit equals eager on every primitive, forward and gradients: WebGPU (compiled plan)", async (t) => {
  const b = await gpu();
  if (b.name !== "webgpu") return;
  await everyPrimitive(t, b);
});

// ---------------------------------------------------------------------------------------------------------
// 2. Graphs that stress the compiler.

/** Creates deterministic arguments on a backend. */
class Maker {
  private r: () => number;
  constructor(readonly backend: Backend, seed: number) {
    this.r = rng(seed);
  }
  /** float32 values in [lo, hi). */
  f(shape: readonly number[], lo = -2, hi = 2): Tensor {
    const v = Array.from({ length: size(shape) }, () => lo + (hi - lo) * this.r());
    return tensor(toHost("float32", v), { shape, dtype: "float32", backend: this.backend });
  }
  /** Values k/4 in [lo, hi] (ties for comparisons). */
  grid(shape: readonly number[], lo = -2, hi = 2): Tensor {
    const v = Array.from({ length: size(shape) }, () => Math.round((lo + (hi - lo) * this.r()) * 4) / 4);
    return tensor(toHost("float32", v), { shape, dtype: "float32", backend: this.backend });
  }
  int(shape: readonly number[], lo: number, hi: number, dtype: DType = "int32"): Tensor {
    const v = Array.from({ length: size(shape) }, () => lo + Math.floor((hi - lo + 1) * this.r()));
    return tensor(toHost(dtype, v), { shape, dtype, backend: this.backend });
  }
}

interface Scenario {
  name: string;
  /** Arguments (fresh tensors each time: donated ones are consumed by a call). */
  args: (m: Maker) => unknown[];
  f: Fn;
  donate?: number[];
  /** WebGPU: the plan must have fewer dispatches than equations. */
  fused?: boolean;
  /**
   * WebGPU: at least this many outputs share a donated argument's buffer in the third call (so that the case
   * really exercises donation); 0: none may.
   */
  shares?: number;
  /** Set to skip a case that exposes a known bug (the string names it). */
  ignore?: string;
}

/** Captured constants, one per backend: a [1,3] tensor and an eager alias of its storage as [3,1]. */
const CONSTS = new Map<Backend, [Tensor, Tensor]>();
const constsOn = (b: Backend): [Tensor, Tensor] => {
  if (!CONSTS.has(b)) {
    const k = tensor([[0.5, -1.25, 2]], { backend: b });
    CONSTS.set(b, [k, k.reshape([3, 1])]);
  }
  return CONSTS.get(b)!;
};
const constOn = (b: Backend) => constsOn(b)[0];

/**
 * A value-and-gradients scenario: `valueAndGrad(sum(f(x) * w))` with respect to the first `nFloat` arguments.
 * The weights `w` (an extra first argument) have the sign of the eager `f(x)`, so the loss sums terms of one sign
 * and its value has no cancellation (a fused reduction may differ from the op-by-op one by a few ulps of the
 * terms, not of the result).
 */
function grads(
  args: (m: Maker) => unknown[],
  f: (...a: any[]) => Tensor,
  nFloat: number,
): Pick<Scenario, "args" | "f"> {
  return {
    args: (m) => {
      const xs = args(m);
      const y = f(...xs);
      return [api.mul(api.sign(y), m.f(y.shape, 0.5, 1.5)), ...xs];
    },
    f: (w: Tensor, ...xs: unknown[]) =>
      valueAndGrad((...v: unknown[]) => api.sum(api.mul(f(...v), w)), { argnums: [...Array(nFloat).keys()] })(...xs),
  };
}

const mT = api.mT;

const FIXED: Scenario[] = [
  {
    name: "long broadcasting chain [4,1,3] x [1,5,1] x [3] x scalars",
    args: (m) => [m.f([4, 1, 3]), m.f([1, 5, 1]), m.f([3], 0.5, 2), 0.75, 1.5],
    f: (a: Tensor, b: Tensor, c: Tensor, s: number, u: number) => {
      let y = a.mul(b).add(s).sub(c.mul(u));
      y = api.tanh(y).mul(c).add(a.exp().mul(0.25));
      y = api.maximum(y, b.neg()).div(c).sub(api.sqrt(c.add(s)));
      return api.abs(y.mul(y).sub(1)).add(api.cos(a).mul(b)).mul(u);
    },
    fused: true,
  },
  {
    name: "chain gradients over broadcast operands (sumToShape over leading and middle axes)",
    ...grads(
      (m) => [m.f([4, 1, 3]), m.f([1, 5, 1]), m.f([3], 0.5, 2), 0.5],
      (a, b, c, s) => api.tanh(a.mul(b).add(c.mul(s as unknown as Tensor))).mul(c).sub(api.erf(b.mul(a))),
      3,
    ),
    fused: true,
  },
  {
    name: "diamond: one value feeds several consumers, one of them an output",
    args: (m) => [m.f([3, 4]), m.f([4])],
    f: (x: Tensor, y: Tensor) => {
      const a = x.mul(y).exp();
      const b = a.add(1);
      const c = a.mul(y).sub(x);
      const d = b.mul(c).add(a);
      return [d, a.sum(0), c, d.sub(b).max(1, true)];
    },
    fused: true,
  },
  {
    name: "deep diamond (beyond the inlining cost bound)",
    args: (m) => [m.f([2, 3, 4], -1, 1)],
    f: (x: Tensor) => {
      let a = x;
      for (let i = 0; i < 8; i++) a = api.tanh(a.mul(a).add(a.mul(0.5)).sub(0.25));
      return [a, a.sum([0, 2])];
    },
    fused: true,
  },
  {
    name: "alias ops (reshape, stopGradient) between fused ops",
    args: (m) => [m.f([2, 3, 4]), m.f([6, 4])],
    f: (x: Tensor, y: Tensor) => {
      const a = x.mul(2).add(1).reshape([6, 4]);
      const b = api.stopGradient(a.sub(y)).exp().reshape([2, 12]);
      const c = b.reshape([24]).mul(api.stopGradient(x).reshape([24]));
      return [c.reshape([4, 6]).sum(0), api.stopGradient(c).add(1), b];
    },
    fused: true,
  },
  {
    name: "alias ops between fused ops, gradients",
    ...grads(
      (m) => [m.f([2, 3, 4]), m.f([6, 4])],
      (x, y) => x.mul(2).reshape([6, 4]).sub(api.stopGradient(y.exp())).mul(y).reshape([3, 8]),
      2,
    ),
  },
  {
    name: "outputs that are inputs, constants, aliases of inputs, repeated outputs",
    args: (m) => [m.f([2, 3]), m.f([3]), 2.5],
    f: (x: Tensor, y: Tensor, s: number) => {
      const k = constOn(x.backend);
      const z = x.mul(y).add(s);
      return [x, x, y.reshape([3, 1]), k, k.reshape([3]), z, z, z.reshape([6]), api.stopGradient(x), { z, k }];
    },
  },
  {
    name: "a constant and an eager alias of its storage under another shape",
    args: (m) => [m.f([3, 3])],
    f: (x: Tensor) => {
      const [k, kt] = constsOn(x.backend);
      return [x.mul(k).sub(kt), kt, api.sum(x.add(kt), 0).mul(k.reshape([3]))];
    },
  },
  {
    name: "static outputs, an unused argument, repeated arguments",
    args: (m) => {
      const x = m.f([2, 3]);
      return [x, m.f([5]), x, "tag"];
    },
    f: (x: Tensor, _unused: Tensor, y: Tensor, tag: string) => [x.add(y).exp(), tag, 3, { y: x.mul(y), n: null }],
  },
  {
    name: "same-size operands of different ranks ([4], [1,4], [1,1,4]) and size-1 dims",
    args: (m) => [m.f([4]), m.f([1, 4]), m.f([1, 1, 4]), m.f([1, 1]), m.f([3, 1, 1])],
    f: (x: Tensor, y: Tensor, z: Tensor, one: Tensor, col: Tensor) => {
      const a = x.exp().add(y).mul(z).sub(x); // [1,1,4], everything inlined
      const b = a.mul(one).add(col); // [3,1,4]
      return [a, b, api.sum(a.mul(y), [0, 1]), api.max(b.sub(one), 2, true)];
    },
    fused: true,
  },
  {
    name: "zero-size arrays: elementwise, reductions over an empty axis, matmul with K = 0",
    args: (m) => [m.f([3, 0]), m.f([3, 1]), m.f([0, 2])],
    f: (
      x: Tensor,
      y: Tensor,
      z: Tensor,
    ) => [x.exp().sum(1), x.mul(2), y.add(x.sum(1, true)), api.matmul(x, z), x.sum()],
  },
  {
    name: "a constant read by fused and reduction kernels",
    args: (m) => [m.f([4, 3])],
    f: (x: Tensor) => {
      const k = constOn(x.backend);
      return [x.mul(k).add(k.exp()), api.sum(x.sub(k), 0), api.matmul(x, mT(k))];
    },
    fused: true,
  },
  {
    name: "softmax and logSoftmax over every axis of [3,4,5]",
    args: (m) => [m.f([3, 4, 5], -4, 4)],
    f: (x: Tensor) => [0, 1, 2].flatMap((a) => [nn.softmax(x.mul(1.5), a), nn.logSoftmax(x, a)]),
    fused: true,
  },
  {
    name: "layerNorm with broadcast weight and bias, and gradients",
    ...grads((m) => [m.f([2, 3, 6]), m.f([6], 0.5, 1.5), m.f([6], -0.5, 0.5)], (x, w, b) => nn.layerNorm(x, w, b), 3),
    fused: true,
  },
  {
    name: "softmax cross-entropy gradients",
    args: (m) => [m.f([4, 7], -3, 3), m.f([4, 7], 0, 1)],
    f: (x: Tensor, t: Tensor) =>
      valueAndGrad((v: Tensor) => api.mean(nn.softCrossEntropy(api.div(t, api.sum(t, -1, true)), v)))(x),
    fused: true,
  },
  {
    name: "reductions over non-last and multiple axes with broadcast prologues",
    args: (m) => [m.f([3, 4, 5]), m.f([4, 1]), m.f([3, 1, 5])],
    f: (x: Tensor, y: Tensor, z: Tensor) => {
      const d = x.sub(y).mul(z);
      return [
        api.sum(d.mul(d), 0),
        api.sum(d.exp(), [0, 2], true),
        api.max(d, [2, 0]),
        api.min(d.add(y), 1, true),
        api.mean(d.mul(z), [0, 1, 2]),
        api.sum(x.add(y), [1]).mul(api.max(z, 1)),
      ];
    },
    fused: true,
  },
  {
    name: "comparisons, where and casts to int and bool at the end of chains",
    args: (m) => [m.grid([3, 4]), m.grid([4]), m.int([3, 1], -5, 5)],
    f: (x: Tensor, y: Tensor, n: Tensor) => {
      const a = x.mul(2).sub(y);
      const c = api.greater(a, y);
      return [
        c,
        api.where(c, a.exp(), y.neg()),
        api.cast(a.mul(3.5), "int32"),
        api.cast(a, "bool"),
        api.cast(api.lessEqual(x, 0.5), "float32").add(x),
        api.cast(n, "float32").mul(x).add(api.cast(api.cast(x, "int32").add(n), "float32")),
        api.cast(n.mul(n).sub(3), "uint32"),
        api.equal(api.floor(x), api.cast(n, "float32")),
        api.sum(api.cast(api.notEqual(x, y), "float32"), 1),
        api.sum(api.cast(api.greater(x, y), "int32").mul(n), 0),
        api.max(api.cast(x.mul(4), "int32").sub(n), 1, true),
        api.min(api.cast(x.mul(4).add(9), "uint32"), [0, 1]),
        api.argmax(a.add(y), 1),
      ];
    },
    fused: true,
  },
  {
    name: "where gradients through comparisons",
    ...grads(
      (m) => [m.f([3, 4]), m.f([3, 1])],
      (x, y) => api.where(api.less(x, y), x.mul(y).exp(), y.sub(x).mul(x)),
      2,
    ),
  },
  {
    name: "matmul: transposed operands and outputs fold into flags",
    args: (m) => [m.f([2, 4, 3]), m.f([2, 4, 5]), m.f([2, 3, 4]), m.f([5, 4])],
    f: (a: Tensor, b: Tensor, c: Tensor, d: Tensor) => [
      api.matmul(api.transpose(a, [0, 2, 1]), b), // transA
      api.matmul(c, mT(c)), // transB, same operand
      mT(api.matmul(c, b)), // transposed output: swapped operands
      mT(api.matmul(mT(a), b)), // both
      api.matmul(mT(b), mT(d)), // broadcast batch, both flags
      api.matmul(mT(d), mT(c), { transA: true }), // double transposition cancels
      mT(api.matmul(mT(api.matmul(c, b)), mT(a))), // chains
    ],
  },
  {
    name: "matmul: a transpose that is also read elsewhere, a transposed product read twice",
    args: (m) => [m.f([3, 4]), m.f([3, 5]), m.f([2, 1, 4, 3]), m.f([3, 4, 2])],
    f: (a: Tensor, b: Tensor, c: Tensor, d: Tensor) => {
      const t = mT(a);
      const p = api.matmul(t, b);
      const q = api.matmul(c, a.exp());
      return [
        p,
        t.add(1),
        mT(p),
        api.sum(p),
        mT(q).mul(2),
        q,
        api.matmul(mT(c), d), // broadcast batch [2,1] x [3]
        api.matmul(api.transpose(c, [1, 0, 2, 3]), a), // not a swap of the last two axes: stays a transpose
        api.matmul(api.transpose(c, [0, 1, -1, -2]), d), // negative axes
      ];
    },
  },
  {
    name: "matmul gradients (batched, broadcast batch dims)",
    ...grads(
      (m) => [m.f([2, 3, 4]), m.f([4, 5]), m.f([2, 1, 5])],
      (a, b, bias) => nn.gelu(api.matmul(a, b).add(bias)),
      3,
    ),
    fused: true,
  },
  {
    name: "donation: the donated argument is read by non-elementwise kernels after an elementwise one",
    args: (m) => [m.f([4, 4]), m.f([4, 4])],
    f: (w: Tensor, x: Tensor) => {
      const m1 = api.max(w, 1);
      const u = w.mul(0.5).add(x); // elementwise, reads w first: must not be written into w
      const t = api.transpose(w); // a kernel reading w later
      const r = api.sum(w.mul(x), 0); // a reduction prologue reading w later
      const mm = api.matmul(w, x); // and a matmul
      return [u, t.mul(r).add(mm), m1]; // the second output goes into w's buffer
    },
    donate: [0],
    fused: true,
    shares: 1,
  },
  {
    name: "donation: in-place update after reductions read the argument",
    args: (m) => [m.f([3, 5]), m.f([3, 5]), 0.25],
    f: (w: Tensor, g: Tensor, lr: number) => [api.sum(w, 1), api.max(w.exp(), 0), w.sub(g.mul(lr))],
    donate: [0],
    shares: 1,
  },
  {
    name: "donation: into a reduction output, after a reduction prologue read the argument",
    args: (m) => [m.f([4]), m.f([3, 4])],
    f: (w: Tensor, x: Tensor) => {
      const s = api.sum(x.mul(w).exp(), 0);
      const c = w.add(1).cast("int32"); // elementwise, but of another dtype
      return [api.sum(x, 0), s, c]; // the first output is computed after the last read of w
    },
    donate: [0],
    shares: 1,
  },
  {
    name: "donation: SGD step on a parameter tree (matmuls read w after elementwise backward ops)",
    args: (m) => [{ w: m.f([3, 4]), b: m.f([3]) }, m.f([5, 4]), 0.1],
    f: (p: { w: Tensor; b: Tensor }, x: Tensor, lr: number) => {
      const loss = (q: { w: Tensor; b: Tensor }) => api.mean(nn.linear(x, q.w, q.b).exp().mul(q.w.sum()));
      const g = valueAndGrad(loss)(p)[1] as { w: Tensor; b: Tensor };
      const wt = mT(p.w);
      return { w: p.w.sub(g.w.mul(lr)), b: p.b.sub(g.b.mul(lr)), wt };
    },
    donate: [0],
    fused: true,
    shares: 2,
  },
  {
    name: "donation: the same tensor passed twice (copy, never overwrite)",
    args: (m) => {
      const w = m.f([6]);
      return [w, w];
    },
    f: (u: Tensor, v: Tensor) => [u.add(v).mul(2), v.exp()],
    donate: [0],
    shares: 0,
  },
  {
    name: "donation: the donated storage is shared with another argument (an eager alias)",
    args: (m) => {
      const w = m.f([6]);
      return [w, w.reshape([2, 3])];
    },
    f: (u: Tensor, v: Tensor) => [u.mul(2), v.exp(), api.sum(v, 0)], // v must still read the original values
    donate: [0],
    shares: 0,
  },
  {
    name: "donation: a donated argument also returned through an alias",
    args: (m) => [m.f([4]), m.f([4])],
    f: (w: Tensor, x: Tensor) => [w.reshape([2, 2]), api.stopGradient(w), w.mul(2).add(x)],
    donate: [0],
    shares: 2, // the two aliases; the product must get a buffer of its own
  },
  {
    name: "donation: in-place update reading the donated argument through an alias",
    args: (m) => [m.f([6]), m.f([2, 3])],
    f: (w: Tensor, x: Tensor) => w.reshape([2, 3]).mul(x).add(api.stopGradient(w).reshape([2, 3])),
    donate: [0],
  },
  {
    name: "donation: in-place update of a parameter tree (Adam-like, several outputs of the argument's size)",
    args: (m) => [{ w: m.f([2, 3]), m: m.f([2, 3]), v: m.f([2, 3], 0.1, 1) }, m.f([2, 3]), 0.9],
    f: (p: { w: Tensor; m: Tensor; v: Tensor }, g: Tensor, beta: number) => {
      const m = p.m.mul(beta).add(g.mul(0.1));
      const v = p.v.mul(0.99).add(g.mul(g).mul(0.01));
      return { w: p.w.sub(m.div(v.sqrt().add(1e-3)).mul(0.01)), m, v, norm: api.sum(p.w.mul(p.w)) };
    },
    donate: [0],
    fused: true,
    shares: 2,
  },
];

/** Random graphs (fixed seed): chains over broadcast groups, reductions and normalisations over random axes. */
function randomScenarios(): Scenario[] {
  const out: Scenario[] = [];
  const group = shapeArb(1, 4).chain((s) =>
    fc.tuple(fc.constant(s), broadcastable(s), broadcastable(s), broadcastable(s))
  );
  fc.sample(group, { seed: SEED, numRuns: 8 }).forEach(([s, sa, sb, sc], i) => {
    out.push({
      name: `random broadcast chain ${i}: ${fmt(s)} ${fmt(sa)} ${fmt(sb)} ${fmt(sc)}`,
      args: (m) => [m.f(s), m.f(sa), m.f(sb), m.f(sc, 0.5, 2), 1.25],
      f: (x: Tensor, a: Tensor, b: Tensor, c: Tensor, k: number) => {
        const u = x.mul(a).add(b.mul(k));
        const v = api.tanh(u).sub(c.log()).mul(u);
        const w = api.where(api.greater(v, a), v, u.exp().mul(c));
        return [w.add(x.sub(b)), api.sum(w.mul(c), 0), api.cast(v.mul(4), "int32")];
      },
      fused: true,
    });
    out.push({
      name: `random broadcast chain gradients ${i}: ${fmt(s)} ${fmt(sa)} ${fmt(sb)}`,
      ...grads(
        (m) => [m.f(s), m.f(sa), m.f(sb), m.f(sc, 0.5, 2)],
        (x, a, b, c) => api.tanh(x.mul(a).add(b)).mul(c).add(x.mul(b).exp().mul(0.1)),
        4,
      ),
      fused: true,
    });
  });
  const axes = shapeArb(1, 4).filter((s) => size(s) > 1).chain((s) =>
    fc.tuple(
      fc.constant(s),
      fc.shuffledSubarray([...s.keys()], { minLength: 1 }),
      fc.boolean(),
      broadcastable(s),
    )
  );
  fc.sample(axes, { seed: SEED + 1, numRuns: 10 }).forEach(([s, ax, keepdims, sy], i) => {
    out.push({
      name: `random reductions ${i}: ${fmt(s)} axes ${JSON.stringify(ax)} keepdims=${keepdims}, operand ${fmt(sy)}`,
      args: (m) => [m.f(s), m.f(sy)],
      f: (x: Tensor, y: Tensor) => {
        const d = x.sub(y);
        const [mu, v] = nn.moments(x.mul(y), ax, keepdims);
        const mx = api.max(d, ax, true);
        const e = d.sub(mx).exp(); // softmax over several axes
        return [
          api.sum(d.mul(d), ax, keepdims),
          api.min(d.exp(), ax, keepdims),
          mu,
          v,
          e.div(api.sum(e, ax, true)),
          api.mean(api.cast(api.greater(x, y), "float32"), ax, keepdims),
        ];
      },
      fused: true,
    });
    out.push({
      name: `random normalisation gradients ${i}: ${fmt(s)} axes ${JSON.stringify(ax)} keepdims=${keepdims}`,
      ...grads((m) => [m.f(s), m.f(sy, 0.5, 1.5)], (x, w) => {
        const [mu, v] = nn.moments(x, ax, true);
        const y = x.sub(mu).mul(api.rsqrt(v.add(1e-5))).mul(w);
        return api.sum(nn.softmax(y, ax[0]).mul(x), ax, keepdims);
      }, 2),
      fused: true,
    });
  });
  return out;
}

const SCENARIOS = [...FIXED, ...randomScenarios()];

interface ScenarioRun {
  s: Scenario;
  pairs: Pair[];
  /** Buffers created by the second and third call (WebGPU). */
  created: number[];
  dispatches?: number;
  eqns: number;
  /** [argument leaf, output leaf] pairs sharing a buffer in the third call. */
  reused?: [number, number][];
  error?: string;
}

const handleOf = (t: Tensor) => (t.source as { ref: { handle: unknown } }).ref.handle;

function leavesOf(x: unknown): Tensor[] {
  return flatten<unknown>(x).leaves.filter((l): l is Tensor => l instanceof Tensor);
}

/**
 * Runs a scenario eagerly, then jitted three times: the first two results are disposed (so that the third call
 * can reuse their pooled buffers), the third is compared with eager. Fresh arguments per call when donating.
 */
function runScenario(s: Scenario, b: Backend, k: number): ScenarioRun {
  const run: ScenarioRun = { s, pairs: [], created: [], eqns: 0 };
  try {
    const eager = s.f(...s.args(new Maker(b, SEED + k)));
    const jf = jit(s.f, { donate: s.donate });
    const shared = s.donate ? null : s.args(new Maker(b, SEED + k));
    let out: unknown = null;
    for (let call = 0; call < 3; call++) {
      const args = shared ?? s.args(new Maker(b, SEED + k));
      const argBufs = leavesOf(args).map(handleOf);
      const before = b.name === "webgpu" ? gpuStats(b).buffersCreated : 0;
      out = jf(...args);
      if (b.name === "webgpu") run.created.push(gpuStats(b).buffersCreated - before);
      // Fresh arguments are freed too (donated ones already are), so that the next call's uploads reuse their
      // pooled buffers instead of the ones the plan's outputs would take.
      if (!shared) { for (const t of leavesOf(args)) if (!t.disposed) t.dispose(); }
      if (call < 2) { for (const t of leavesOf(out)) t.dispose(); }
      else {
        const outBufs = leavesOf(out).map(handleOf);
        run.reused = argBufs.flatMap((h, i) =>
          outBufs.flatMap((o, j): [number, number][] => (o === h ? [[i, j]] : []))
        );
      }
    }
    run.created.shift();
    const st = jf.stats();
    run.eqns = st.eqns;
    run.dispatches = st.plan?.dispatches;
    assert.equal(st.traces, 1, "traced once");
    run.pairs = pairLeaves(s.name, out, eager, tolOf(b));
  } catch (e) {
    run.error = (e as Error).stack;
  }
  return run;
}

async function stressGraphs(t: Deno.TestContext, b: Backend): Promise<void> {
  const runs = SCENARIOS.map((s, k) => (s.ignore ? null : runScenario(s, b, k)));
  const fails = await check(runs.flatMap((r) => r?.pairs ?? []));
  let k = 0;
  for (const [i, s] of SCENARIOS.entries()) {
    const r = runs[i];
    const mine = r ? fails.slice(k, k += r.pairs.length).filter((f) => f !== null) : [];
    await t.step({
      name: s.name,
      ignore: r === null,
      fn: () => {
        assert.equal(r!.error, undefined);
        assert.deepEqual(mine.slice(0, 6), []);
        if (b.name !== "webgpu") return;
        assert.deepEqual(r!.created, [0, 0], "buffers created by the second and third call");
        if (s.fused) assert.ok(r!.dispatches! < r!.eqns, `${r!.dispatches} dispatches for ${r!.eqns} equations`);
        const shared = r!.reused!.length;
        if (s.shares === 0) assert.equal(shared, 0, "outputs written into a donated argument");
        else if (s.shares) assert.ok(shared >= s.shares, `${shared} outputs written into donated arguments`);
      },
    });
  }
}

Deno.test("jit equals eager on graphs that stress fusion, aliasing, transposes and donation: CPU", (t) =>
  stressGraphs(t, cpu));

Deno.test("jit equals eager on graphs that stress fusion, aliasing, transposes and donation: WebGPU", async (t) => {
  const b = await gpu();
  if (b.name !== "webgpu") return;
  await stressGraphs(t, b);
});

// ---------------------------------------------------------------------------------------------------------
// 3. Plan invariants.

Deno.test("a number argument returned as an output keeps its value across later calls", async () => {
  for (const b of [cpu, await gpu()]) {
    const f = jit((x: Tensor, s: number) => [x.mul(s), s]);
    const x = tensor([1, 2], { backend: b });
    const outs = [1.5, 2.5, -4].map((s) => f(x, s) as Tensor[]);
    const got = await readAll(outs.flat());
    assert.deepEqual(got.map((v) => Array.from(v)), [[1.5, 3], [1.5], [2.5, 5], [2.5], [-4, -8], [-4]], b.name);
  }
});
