/**
 * Property-based tests of every primitive (specs in tests/prim_specs.ts):
 * (a) VJP vs central finite differences in float64 on the CPU (JAX check_vjp style), or zero cotangents for
 *     non-differentiable primitives;
 * (b) WebGPU vs CPU results, float32 and every integer/bool dtype the primitive supports;
 * (c) shape-rule properties, and shape errors that name the op and throw before any kernel runs;
 * (d) second derivatives (grad of grad) of the differentiable elementwise primitives.
 */
import fc from "npm:fast-check@4.10.2";
import assert from "node:assert/strict";
import { Tensor } from "../ops/tensor.ts";
import { bind } from "../ops/engine.ts";
import { grad, vjp } from "../autograd/vjp.ts";
import * as api from "../ops/api.ts";
import type { Backend } from "../ops/backend.ts";
import { tensor } from "../ops/create.ts";
import { type DType, isFloat, toHost } from "../ops/dtype.ts";
import { BINARY, COMPARE, type Prim, PRIMS, REDUCE } from "../ops/prim.ts";
import { randomBits } from "../ops/random.ts";
import { fmt, size } from "../ops/shape.ts";
import { RULES } from "../ops/table.ts";
import { closeness, cpu, gpu, readAll, RUNS } from "./util.ts";
import {
  broadcastable,
  type Case,
  numpyBroadcast,
  type Operand,
  type PrimSpec,
  rng,
  SECOND_ORDER,
  SEED,
  shapeArb,
  SPECS,
  type Tol,
} from "./prim_specs.ts";

/** Float GPU cases per primitive and samples per extra (integer/bool) arbitrary; every case compiles a kernel. */
const GPU_RUNS = Number(Deno.env.get("IBOT_TEST_GPU_RUNS") ?? 12);
const EXTRA_RUNS = Number(Deno.env.get("IBOT_TEST_EXTRA_RUNS") ?? 4);
/** Finite-difference relative tolerance (of the scale of the compared sums). */
const FD_RTOL = 1e-6;
const EPS = 1e-6;
const ULP64 = 2 ** -52;

const f64 = (o: Operand): DType => (o.dtype === "float" ? "float64" : o.dtype);
const f32 = (o: Operand): DType => (o.dtype === "float" ? "float32" : o.dtype);

function make(o: Operand, dtype: DType, backend: Backend, data: readonly number[] = o.data): Tensor {
  return tensor(toHost(dtype, data), { shape: o.shape, dtype, backend });
}

function randArray(r: () => number, n: number, grid?: number): number[] {
  return Array.from({ length: n }, () => {
    const v = 2 * r() - 1;
    return grid ? Math.round(v * grid) / grid : v;
  });
}

const primIndex = (p: Prim) => PRIMS.indexOf(p as typeof PRIMS[number]);
const dispatches = (b: Backend): number | undefined => (b as { stats?: { dispatches: number } }).stats?.dispatches;

/** Counts how often `p`'s shape rule runs (once per application of `p`) while `fn` runs. */
function countBinds(p: Prim, fn: () => void): number {
  const rule = RULES[p] as unknown as { shape: (...a: unknown[]) => unknown };
  const orig = rule.shape;
  let n = 0;
  rule.shape = (...a: unknown[]) => {
    n++;
    return orig(...a);
  };
  try {
    fn();
  } finally {
    rule.shape = orig;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------

Deno.test("every primitive has a VJP check and a GPU check", () => {
  const problems: string[] = [];
  const specs = SPECS as Partial<Record<string, PrimSpec>>;
  for (const k of Object.keys(specs)) {
    if (!(PRIMS as readonly string[]).includes(k)) problems.push(`${k}: spec for an unknown primitive`);
  }
  for (const p of PRIMS) {
    const s = specs[p];
    if (!s) {
      problems.push(`${p}: no spec`);
      continue;
    }
    const v = s.vjp;
    if (!(v?.kind === "fd" || (v?.kind === "zero" && v.why.length > 0))) problems.push(`${p}: no VJP check`);
    if (!(s.gpu?.tol && s.gpu.tol.rtol >= 0 && s.gpu.tol.atol >= 0)) problems.push(`${p}: no GPU check`);
    // The cases must really apply the primitive (an identity transpose or reshape would not bind it).
    const groups = [["cases", s.cases], ["gpu cases", s.gpu?.cases], ...(s.gpu?.extra ?? []).map((a) => ["extra", a])];
    for (const [what, arb] of groups as [string, fc.Arbitrary<Case> | undefined][]) {
      if (!arb) continue;
      const cases = fc.sample(arb, { seed: SEED, numRuns: 20 });
      let hit = 0;
      for (const c of cases) {
        const n = countBinds(p, () => c.apply(c.ins.map((o) => make(o, f64(o), cpu))));
        if (n > 0) hit++;
      }
      if (hit < cases.length / 2) problems.push(`${p}: only ${hit}/${cases.length} of its ${what} bind ${p}`);
    }
  }
  assert.deepEqual(problems, []);
});

// ---------------------------------------------------------------------------------------------------------
// (a) VJP vs finite differences.

async function checkVjp(p: Prim, c: Case, seed: number): Promise<void> {
  const spec = SPECS[p];
  const r = rng(seed);
  const xs = c.ins.map((o) => make(o, f64(o), cpu));
  const [y, pullback] = vjp((...a: Tensor[]) => c.apply(a), ...xs);
  const ct = tensor(randArray(r, y.size), {
    shape: y.shape,
    dtype: isFloat(y.dtype) ? y.dtype : "float64",
    backend: cpu,
  });
  const cts = pullback(ct) as (Tensor | null)[];
  assert.equal(cts.length, xs.length, c.desc);
  xs.forEach((x, i) => {
    const g = cts[i];
    if (!isFloat(x.dtype)) {
      return assert.equal(g, null, `${c.desc}: operand ${i} (${x.dtype}) must get a null cotangent`);
    }
    assert.ok(g instanceof Tensor, `${c.desc}: operand ${i} got no cotangent`);
    assert.deepEqual(g.shape, x.shape, `${c.desc}: cotangent ${i} shape`);
    assert.equal(g.dtype, x.dtype, `${c.desc}: cotangent ${i} dtype`);
  });
  const live = cts.filter((g): g is Tensor => g !== null);
  const vs = await readAll(live);
  const zeroWhy = spec.vjp.kind === "zero" ? spec.vjp.why : c.nonDiff ?? (isFloat(y.dtype) ? null : "non-float output");
  if (zeroWhy !== null) {
    vs.forEach((v) => {
      const k = Array.from(v).findIndex((e) => e !== 0);
      assert.equal(k, -1, `${c.desc}: cotangent must be zero (${zeroWhy}), got ${v[k]} at ${k}`);
    });
    return;
  }
  const eps = c.eps ?? EPS;
  const tangents = xs.map((x) => (isFloat(x.dtype) ? randArray(r, x.size, c.tangentGrid) : null));
  const shifted = (sgn: number) =>
    c.apply(c.ins.map((o, i) => {
      const t = tangents[i];
      return t ? make(o, "float64", cpu, o.data.map((v, j) => v + sgn * eps * t[j])) : xs[i];
    }));
  const [yp, ym, y0, cv] = await readAll([shifted(1), shifted(-1), y, ct]);
  let lhs = 0, lhsScale = 0, k = 0;
  tangents.forEach((t) => {
    if (!t) return;
    const v = vs[k++];
    for (let j = 0; j < t.length; j++) {
      lhs += t[j] * v[j];
      lhsScale += Math.abs(t[j] * v[j]);
    }
  });
  let rhs = 0, rhsScale = 0, yScale = 0;
  for (let j = 0; j < cv.length; j++) {
    // Outputs that do not move (e.g. a pad value of +-Infinity or NaN) have zero slope.
    const d = Object.is(yp[j], ym[j]) ? 0 : ((yp[j] - ym[j]) / (2 * eps)) * cv[j];
    rhs += d;
    rhsScale += Math.abs(d);
    if (Number.isFinite(y0[j])) yScale += Math.abs(y0[j] * cv[j]);
  }
  // Scale-aware: FD_RTOL of the magnitude of the summed terms, plus the rounding error of the difference
  // quotient (a few ulps of |f| divided by eps).
  const tol = FD_RTOL * (lhsScale + rhsScale) + (16 * ULP64 * yScale) / eps + 1e-300;
  if (!(Math.abs(lhs - rhs) <= tol)) {
    throw new Error(`${c.desc}: <t, vjp(c)> = ${lhs} but <(f(x+eps t) - f(x-eps t))/2eps, c> = ${rhs} (tol ${tol})`);
  }
}

Deno.test("VJP matches central finite differences (float64, CPU)", async (t) => {
  for (const p of PRIMS) {
    await t.step(p, async () => {
      await fc.assert(
        fc.asyncProperty(SPECS[p].cases, fc.integer(), (c, s) => checkVjp(p, c, s)),
        { numRuns: RUNS, seed: SEED + primIndex(p) },
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// (b) WebGPU vs CPU.

interface Job {
  desc: string;
  tol: Tol;
  cpu?: Tensor;
  gpu?: Tensor;
  error?: string;
}

Deno.test("WebGPU matches the CPU backend", async (t) => {
  const g = await gpu();
  const device = (g as { device?: GPUDevice }).device;
  const jobs = new Map<Prim, Job[]>();
  const scopes: Promise<[Prim, GPUError | null]>[] = [];
  // Build every case and run it on both backends first; then read everything back with one Promise.all
  // (a readback costs ~11 ms here, and kernel compilation dominates the rest).
  for (const p of PRIMS) {
    const spec = SPECS[p];
    const seed = SEED + 1000 * primIndex(p);
    const cases = [
      ...fc.sample(spec.gpu.cases ?? spec.cases, { seed, numRuns: GPU_RUNS }),
      ...(spec.gpu.extra ?? []).flatMap((a, i) => fc.sample(a, { seed: seed + i + 1, numRuns: EXTRA_RUNS })),
    ];
    device?.pushErrorScope("validation");
    jobs.set(
      p,
      cases.map((c) => {
        const job: Job = { desc: c.desc, tol: spec.gpu.tol };
        const hosts = c.ins.map((o) => toHost(f32(o), o.data));
        const on = (b: Backend) =>
          c.apply(c.ins.map((o, i) => tensor(hosts[i], { shape: o.shape, dtype: f32(o), backend: b })));
        try {
          job.cpu = on(cpu);
          job.gpu = on(g);
        } catch (e) {
          job.error = (e as Error).message;
        }
        return job;
      }),
    );
    // One command buffer per primitive: an invalid pipeline invalidates its whole submit, so a broken kernel
    // must not blank out the results of the other primitives.
    (g as { flush?: () => void }).flush?.();
    if (device) scopes.push(device.popErrorScope().then((e) => [p, e]));
  }
  const all = [...jobs.values()].flat().filter((j) => j.cpu && j.gpu);
  const [cpuVals, gpuVals, errors] = await Promise.all([
    readAll(all.map((j) => j.cpu!)),
    readAll(all.map((j) => j.gpu!)),
    Promise.all(scopes),
  ]);
  const values = new Map(all.map((j, i) => [j, [cpuVals[i], gpuVals[i]]]));
  const gpuErrors = new Map(errors);
  const verbose = Deno.env.get("IBOT_TEST_VERBOSE") === "1";
  for (const [p, list] of jobs) {
    await t.step(`${p} (${list.length} cases)`, () => {
      const fails: string[] = [];
      const err = gpuErrors.get(p);
      if (err) fails.push(`WebGPU validation error: ${err.message}`);
      let worst = 0;
      for (const j of list) {
        if (j.error) {
          fails.push(`${j.desc}: threw ${j.error}`);
          continue;
        }
        const [c, w] = values.get(j)!;
        const co = j.cpu!, go = j.gpu!;
        if (co.dtype !== go.dtype || fmt(co.shape) !== fmt(go.shape)) {
          fails.push(`${j.desc}: cpu ${co.dtype}${fmt(co.shape)} vs gpu ${go.dtype}${fmt(go.shape)}`);
          continue;
        }
        if (c.length !== size(co.shape)) fails.push(`${j.desc}: ${c.length} values for ${fmt(co.shape)}`);
        // Integer and bool results must match exactly; floats within the spec's tolerance.
        const ratio = isFloat(co.dtype) ? closeness(w, c, j.tol.rtol, j.tol.atol) : closeness(w, c, 0, 0);
        worst = Math.max(worst, ratio);
        if (!(ratio <= 1)) {
          const at = Array.from(c).findIndex((v, i) => closeness([w[i]], [v], j.tol.rtol, j.tol.atol) > 1);
          fails.push(`${j.desc}: gpu ${w[at]} vs cpu ${c[at]} at ${at} (ratio ${ratio.toExponential(2)})`);
        }
        co.dispose();
        go.dispose();
      }
      if (verbose) console.log(`${p}: worst tolerance ratio ${worst.toExponential(2)}`);
      assert.deepEqual(fails.slice(0, 8), []);
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// (c) Shape rules.

const ones = (shape: readonly number[], dtype: DType = "float32", backend: Backend = cpu) =>
  tensor(toHost(dtype, new Array(size(shape)).fill(1)), { shape, dtype, backend });
const iota = (shape: readonly number[], dtype: DType = "float32") =>
  tensor(toHost(dtype, Array.from({ length: size(shape) }, (_, i) => i)), { shape, dtype, backend: cpu });

const BINARY_FNS: Record<string, (a: Tensor, b: Tensor) => Tensor> = {
  add: api.add,
  sub: api.sub,
  mul: api.mul,
  div: api.div,
  pow: api.pow,
  maximum: api.maximum,
  minimum: api.minimum,
  eq: api.equal,
  ne: api.notEqual,
  lt: api.less,
  le: api.lessEqual,
  gt: api.greater,
  ge: api.greaterEqual,
};
const REDUCE_FNS = { sum: api.sum, max: api.max, min: api.min };

/** Pairs of shapes that broadcast, and arbitrary (mostly incompatible) pairs. */
const shapePair = fc.oneof(
  shapeArb(0, 4).chain((out) => fc.tuple(broadcastable(out), broadcastable(out))),
  fc.tuple(shapeArb(0, 4), shapeArb(0, 4)),
);
const prop = <T>(arb: fc.Arbitrary<T>, f: (v: T) => void) =>
  fc.assert(fc.property(arb, f), { numRuns: 100, seed: SEED });

Deno.test("scatterAdd on WebGPU: long rows (split into chunks), repeated and unordered indices, equal the CPU", async () => {
  const backend = await gpu();
  const [pre, nIdx, post, dim] = [2, 7, 300, 5];
  const updates = Float32Array.from({ length: pre * nIdx * post }, (_, i) => Math.sin(i) * 3);
  const idx = Int32Array.of(4, 0, 4, 2, 9, -3, 4); // clamped: 9 → 4, -3 → 0; row 1 and 3 get nothing
  const run = (b: Backend) =>
    api.scatterAdd(
      tensor(updates, { shape: [pre, nIdx, post], backend: b }),
      tensor(idx, { dtype: "int32", backend: b }),
      1,
      dim,
    );
  const [want, got] = await readAll([run(cpu), run(backend)]);
  assert.equal(got.length, pre * dim * post);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])), `element ${i}`);
  }
});

Deno.test("views on WebGPU (vec4 runs and merged dimensions): transpose, slice, broadcast, pad equal the CPU", async () => {
  const backend = await gpu();
  const data = Float32Array.from({ length: 2 * 3 * 8 * 12 }, (_, i) => i * 0.5 - 7);
  const cases: [string, (x: Tensor) => Tensor][] = [
    ["transpose inner kept", (x) => api.transpose(x, [2, 0, 1, 3])],
    ["transpose inner moved", (x) => api.transpose(x, [3, 1, 0, 2])],
    ["slice leading", (x) => api.slice(x, [1, 0, 0, 0], [2, 3, 8, 12])],
    ["slice inner aligned", (x) => api.slice(x, [0, 1, 2, 4], [2, 3, 6, 12])],
    ["slice inner unaligned", (x) => api.slice(x, [0, 0, 1, 1], [2, 2, 8, 11])],
    ["broadcast", (x) => api.broadcastTo(api.slice(x, [0, 0, 0, 0], [1, 1, 1, 12]), [5, 3, 2, 12])],
    ["pad leading", (x) => api.pad(x, [1, 0, 0, 0], [2, 0, 0, 0], -1)],
    ["pad inner by 4", (x) => api.pad(x, [0, 1, 0, 4], [0, 0, 1, 8], 2.5)],
    ["pad inner by 1", (x) => api.pad(x, [0, 0, 2, 1], [1, 0, 0, 3], 0)],
  ];
  for (const [name, f] of cases) {
    const run = (b: Backend) => f(tensor(data, { shape: [2, 3, 8, 12], backend: b }));
    const [want, got] = await readAll([run(cpu), run(backend)]);
    assert.deepEqual(Array.from(got), Array.from(want), name);
  }
});

Deno.test("reductions on WebGPU over leading axes with a contiguous kept dimension (vec4 columns) equal the CPU", async () => {
  const backend = await gpu();
  const data = Float32Array.from({ length: 5 * 7 * 12 }, (_, i) => Math.cos(i * 0.37) * 10);
  const cases: [string, (x: Tensor) => Tensor][] = [
    ["sum rows", (x) => api.sum(api.reshape(x, [35, 12]), [0])],
    ["sum leading two", (x) => api.sum(x, [0, 1])],
    ["max leading", (x) => api.max(x, [0])],
    ["min middle", (x) => api.min(x, [1])],
  ];
  for (const [name, f] of cases) {
    const run = (b: Backend) => f(tensor(data, { shape: [5, 7, 12], backend: b }));
    const [want, got] = await readAll([run(cpu), run(backend)]);
    assert.equal(got.length, want.length, name);
    for (let i = 0; i < want.length; i++) {
      assert.ok(
        Math.abs(got[i] - want[i]) <= 1e-4 * (1 + Math.abs(want[i])),
        `${name} [${i}]: ${got[i]} vs ${want[i]}`,
      );
    }
  }
});

Deno.test("shape rules", async (t) => {
  await t.step("binary and comparison ops broadcast like NumPy, symmetrically", () => {
    prop(fc.tuple(fc.constantFrom(...BINARY, ...COMPARE), shapePair), ([op, [a, b]]) => {
      const f = BINARY_FNS[op];
      const want = numpyBroadcast(a, b);
      if (want === null) {
        assert.throws(() => f(ones(a), ones(b)), { message: `${op}: shapes ${fmt(a)} and ${fmt(b)} do not broadcast` });
        assert.throws(() => f(ones(b), ones(a)), { message: `${op}: shapes ${fmt(b)} and ${fmt(a)} do not broadcast` });
        return;
      }
      const ab = f(ones(a), ones(b));
      assert.deepEqual(ab.shape, want);
      assert.deepEqual(f(ones(b), ones(a)).shape, want);
      assert.equal(ab.dtype, (COMPARE as readonly string[]).includes(op) ? "bool" : "float32");
    });
  });

  await t.step("where broadcasts its three operands", () => {
    prop(fc.tuple(shapePair, shapeArb(0, 4)), ([[a, b], c]) => {
      const ab = numpyBroadcast(a, b);
      const want = ab && numpyBroadcast(ab, c);
      const run = () => api.where(ones(c, "bool"), ones(a), ones(b));
      if (want === null) assert.throws(run, /^RangeError: where: shapes .* do not broadcast$/);
      else assert.deepEqual(run().shape, want);
    });
  });

  await t.step("reductions: keepdims keeps the rank, otherwise the axes are dropped", () => {
    const arb = shapeArb(0, 4).chain((s) =>
      fc.tuple(fc.constant(s), fc.shuffledSubarray([...s.keys()]), fc.boolean(), fc.constantFrom(...REDUCE))
    );
    prop(arb, ([s, axes, keepdims, op]) => {
      const y = REDUCE_FNS[op](ones(s), axes, keepdims);
      if (keepdims) assert.deepEqual(y.shape, s.map((d, i) => (axes.includes(i) ? 1 : d)));
      else assert.deepEqual(y.shape, s.filter((_, i) => !axes.includes(i)));
      if (s.length > 0) {
        const a = axes[0] ?? 0;
        const am = api.argmax(ones(s), a, keepdims);
        assert.equal(am.rank, keepdims ? s.length : s.length - 1);
        assert.equal(am.dtype, "int32");
      }
    });
  });

  await t.step("transpose twice with the inverse permutation is the identity", async () => {
    const arb = shapeArb(0, 4).chain((s) =>
      fc.tuple(fc.constant(s), fc.shuffledSubarray([...s.keys()], { minLength: s.length, maxLength: s.length }))
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([s, perm]) => {
        const x = iota(s);
        const y = api.transpose(x, perm);
        assert.deepEqual(y.shape, perm.map((p) => s[p]));
        const inv = new Array<number>(perm.length);
        perm.forEach((p, i) => (inv[p] = i));
        const z = api.transpose(y, inv);
        assert.deepEqual(z.shape, s);
        assert.deepEqual(await z.data(), await x.data());
      }),
      { numRuns: 100, seed: SEED },
    );
  });

  await t.step("reshape preserves the size and the row-major data", async () => {
    const arb = fc.tuple(shapeArb(0, 4), shapeArb(0, 4));
    await fc.assert(
      fc.asyncProperty(arb, async ([s, to]) => {
        const x = iota(s);
        if (size(s) !== size(to)) {
          assert.throws(() => api.reshape(x, to), /^RangeError: reshape: cannot reshape \[/);
          return;
        }
        const y = api.reshape(x, to);
        assert.deepEqual(y.shape, to);
        assert.deepEqual(await y.data(), await x.data());
      }),
      { numRuns: 100, seed: SEED },
    );
  });

  await t.step("concat sums the axis and keeps the other dims", () => {
    const arb = shapeArb(1, 4).chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.integer({ min: 0, max: s.length - 1 }),
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }),
      )
    );
    prop(arb, ([s, axis, sizes]) => {
      const xs = sizes.map((d) => ones(s.map((e, i) => (i === axis ? d : e))));
      const y = api.concat(xs, axis);
      assert.deepEqual(y.shape, s.map((e, i) => (i === axis ? sizes.reduce((a, b) => a + b, 0) : e)));
    });
  });

  await t.step("slice and pad: shapes, and slicing a padding back out is the identity", async () => {
    const arb = shapeArb(1, 4).chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: s.length, maxLength: s.length }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: s.length, maxLength: s.length }),
      )
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([s, lo, hi]) => {
        const x = iota(s);
        const y = api.pad(x, lo, hi, -1);
        assert.deepEqual(y.shape, s.map((d, i) => d + lo[i] + hi[i]));
        const z = api.slice(y, lo, lo.map((l, i) => l + s[i]));
        assert.deepEqual(z.shape, s);
        assert.deepEqual(await z.data(), await x.data());
      }),
      { numRuns: 100, seed: SEED },
    );
  });

  await t.step("gather, scatterAdd, matmul, broadcastTo, randomBits and cast output shapes", () => {
    const arb = fc.tuple(shapeArb(1, 4), shapeArb(0, 2), fc.nat(), shapeArb(0, 2), shapeArb(2, 4));
    prop(arb, ([s, is, ax, batch, mk]) => {
      const axis = ax % s.length;
      const idx = tensor(new Int32Array(size(is)), { shape: is, dtype: "int32", backend: cpu });
      const gth = api.gather(ones(s), idx, axis);
      assert.deepEqual(gth.shape, [...s.slice(0, axis), ...is, ...s.slice(axis + 1)]);
      const sc = api.scatterAdd(gth, idx, axis, s[axis]);
      assert.deepEqual(sc.shape, s);
      const [m, k, n] = [mk[0], mk[1], mk[mk.length - 1]];
      const mm = api.matmul(ones([...batch, m, k]), ones([k, n]));
      assert.deepEqual(mm.shape, [...batch, m, n]);
      assert.deepEqual(api.broadcastTo(ones(is), [...batch, ...is]).shape, [...batch, ...is]);
      const key = tensor([1, 2], { dtype: "uint32", backend: cpu });
      const bits = randomBits(key, s);
      assert.deepEqual([bits.shape, bits.dtype], [s, "uint32"]);
      for (const d of ["int32", "uint32", "bool", "float64"] as DType[]) {
        const c = api.cast(ones(s), d);
        assert.deepEqual([c.shape, c.dtype], [s, d]);
      }
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
// (c) Errors: they name the op and the shapes, and are thrown before any kernel is dispatched.

interface ErrorCase {
  prim: Prim;
  /** Creates the operands on `b` (uploads only) and returns the call that must throw. */
  setup: (b: Backend) => () => unknown;
  message: string | RegExp;
  gpuOnly?: boolean;
}

const ERROR_CASES: ErrorCase[] = [
  {
    prim: "add",
    setup: (b) => {
      const [x, y] = [ones([2], "float32", b), ones([2], "int32", b)];
      return () => api.add(x, y);
    },
    message: "add: dtype mismatch: float32[2] vs int32[2]",
  },
  {
    prim: "exp",
    setup: (b) => {
      const x = ones([2], "int32", b);
      return () => api.exp(x);
    },
    message: "exp: unsupported dtype int32[2] (needs float)",
  },
  {
    prim: "neg",
    setup: (b) => {
      const x = ones([2], "bool", b);
      return () => api.neg(x);
    },
    message: "neg: unsupported dtype bool[2] (needs numeric)",
  },
  {
    prim: "pow",
    setup: (b) => {
      const x = ones([3], "int32", b);
      return () => api.pow(x, x);
    },
    message: "pow: unsupported dtype int32[3] (needs float)",
  },
  {
    prim: "where",
    setup: (b) => {
      const [c, x] = [ones([2], "float32", b), ones([2], "float32", b)];
      return () => api.where(c, x, x);
    },
    message: "where: condition must be bool, got float32",
  },
  {
    prim: "where",
    setup: (b) => {
      const [c, x, y] = [ones([2], "bool", b), ones([3], "float32", b), ones([2], "float32", b)];
      return () => api.where(c, x, y);
    },
    message: "where: shapes [2] and [3] and [2] do not broadcast",
  },
  {
    prim: "matmul",
    setup: (b) => {
      const [x, y] = [ones([2, 3], "float32", b), ones([4, 5], "float32", b)];
      return () => api.matmul(x, y);
    },
    message: "matmul: cannot multiply float32[2,3] by float32[4,5]: inner dimensions 3 and 4 differ",
  },
  {
    prim: "matmul",
    setup: (b) => {
      const [x, y] = [ones([3], "float32", b), ones([3, 2], "float32", b)];
      return () => api.matmul(x, y);
    },
    message: "matmul: cannot multiply float32[3] by float32[3,2]: both need rank >= 2",
  },
  {
    prim: "matmul",
    setup: (b) => {
      const [x, y] = [ones([2, 1, 2], "float32", b), ones([3, 2, 2], "float32", b)];
      return () => api.matmul(x, y);
    },
    message: "matmul: shapes [2] and [3] do not broadcast",
  },
  {
    prim: "matmul",
    setup: (b) => {
      const x = ones([2, 2], "int32", b);
      return () => api.matmul(x, x);
    },
    message: "matmul: cannot multiply int32[2,2] by int32[2,2]: needs float operands",
  },
  ...REDUCE.map((op): ErrorCase => ({
    prim: op,
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => REDUCE_FNS[op](x, 2);
    },
    message: `${op}: axis 2 is out of range for rank 2`,
  })),
  {
    prim: "sum",
    setup: (b) => {
      const x = ones([2], "bool", b);
      return () => api.sum(x);
    },
    message: "sum: cannot reduce bool [2]; cast it first",
  },
  {
    prim: "argmax",
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => api.argmax(x, -3);
    },
    message: "argmax: axis -3 is out of range for rank 2",
  },
  {
    prim: "reshape",
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => api.reshape(x, [4]);
    },
    message: "reshape: cannot reshape [2,3] (6 elements) to [4]",
  },
  {
    prim: "reshape",
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => api.reshape(x, [4, -1]);
    },
    message: "reshape: cannot reshape [2,3] to [4,-1]",
  },
  {
    prim: "transpose",
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => api.transpose(x, [0, 0]);
    },
    message: "transpose: perm [0,0] is not a permutation of the axes of [2,3]",
  },
  {
    prim: "broadcastTo",
    setup: (b) => {
      const x = ones([3], "float32", b);
      return () => api.broadcastTo(x, [2, 4]);
    },
    message: "broadcastTo: shapes [3] and [2,4] do not broadcast",
  },
  {
    prim: "broadcastTo",
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => api.broadcastTo(x, [3]);
    },
    message: "broadcastTo: cannot broadcast [2,3] to [3]",
  },
  {
    prim: "slice",
    setup: (b) => {
      const x = ones([2, 3], "float32", b);
      return () => api.slice(x, [1, 0], [3, 3]);
    },
    message: "slice: [1,0]..[3,3] is out of bounds for [2,3]",
  },
  {
    prim: "pad",
    setup: (b) => {
      const x = ones([2], "float32", b);
      return () => api.pad(x, [-1], [0]);
    },
    message: "pad: lo [-1] / hi [0] do not fit [2] (non-negative ints)",
  },
  {
    prim: "concat",
    setup: (b) => {
      const [x, y] = [ones([2, 3], "float32", b), ones([2, 4], "float32", b)];
      return () => api.concat([x, y], 0);
    },
    message: "concat: cannot join float32[2,3], float32[2,4] on axis 0",
  },
  {
    prim: "concat",
    setup: (b) => {
      const [x, y] = [ones([2], "float32", b), ones([2], "int32", b)];
      return () => api.concat([x, y]);
    },
    message: "concat: cannot join float32[2], int32[2] on axis 0",
  },
  {
    prim: "gather",
    setup: (b) => {
      const [x, i] = [ones([3], "float32", b), ones([2], "float32", b)];
      return () => api.gather(x, i);
    },
    message: "gather: indices must be int32, got float32[2]",
  },
  {
    prim: "scatterAdd",
    setup: (b) => {
      const [u, i] = [ones([2, 3], "float32", b), ones([4], "int32", b)];
      return () => api.scatterAdd(u, i, 0, 5);
    },
    message: "scatterAdd: updates [2,3] do not hold indices [4] at axis 0",
  },
  {
    prim: "randomBits",
    setup: (b) => {
      const k = ones([2], "float32", b);
      return () => randomBits(k, [3]);
    },
    message: "randomBits: key must be uint32[2], got float32[2]",
  },
  {
    prim: "cast",
    setup: (b) => {
      const x = ones([2], "float32", b);
      return () => api.cast(x, "float64");
    },
    message: "cast: the webgpu backend does not support float64",
    gpuOnly: true,
  },
  {
    prim: "cast",
    setup: (b) => {
      const x = ones([2], "float32", b);
      return () => api.cast(x, "int8" as DType);
    },
    message: /^cast: unknown dtype 'int8'/,
  },
  {
    prim: "add",
    setup: (b) => {
      const [x, y] = [ones([2], "float32", b), ones([2], "float32", cpu)];
      return () => api.add(x, y);
    },
    message: /^add: operands live on different backends \(webgpu and cpu\)/,
    gpuOnly: true,
  },
];

Deno.test("shape errors name the op and the shapes, and throw before any kernel runs", async (t) => {
  const g = await gpu();
  const isGpu = g.name === "webgpu";
  const expectThrow = (run: () => unknown, message: string | RegExp, what: string) => {
    const before = dispatches(g);
    let thrown: unknown = null;
    try {
      run();
    } catch (e) {
      thrown = e;
    }
    assert.ok(thrown instanceof Error, `${what}: did not throw`);
    if (typeof message === "string") assert.equal(thrown.message, message, what);
    else assert.match(thrown.message, message, what);
    assert.equal(dispatches(g), before, `${what}: a kernel was dispatched before the error`);
  };

  await t.step("binary and comparison ops with shapes that do not broadcast", () => {
    const bad = fc.tuple(fc.constantFrom(...BINARY, ...COMPARE), shapeArb(1, 4), shapeArb(1, 4))
      .filter(([, a, b]) => numpyBroadcast(a, b) === null);
    prop(bad, ([op, a, b]) => {
      const [x, y] = [ones(a, "float32", g), ones(b, "float32", g)];
      expectThrow(() => BINARY_FNS[op](x, y), `${op}: shapes ${fmt(a)} and ${fmt(b)} do not broadcast`, op);
    });
  });

  await t.step("matmul with mismatched inner dimensions", () => {
    const bad = fc.tuple(shapeArb(0, 2), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), shapeArb(2, 2))
      .filter(([, k1, k2]) => k1 !== k2);
    prop(bad, ([batch, k1, k2, [m, n]]) => {
      const a = [...batch, m, k1];
      const b = [k2, n];
      const [x, y] = [ones(a, "float32", g), ones(b, "float32", g)];
      expectThrow(
        () => api.matmul(x, y),
        `matmul: cannot multiply float32${fmt(a)} by float32${fmt(b)}: inner dimensions ${k1} and ${k2} differ`,
        "matmul",
      );
    });
  });

  for (const e of ERROR_CASES) {
    if (e.gpuOnly && !isGpu) continue;
    await t.step(`${e.prim}: ${e.message}`, () => expectThrow(e.setup(g), e.message, e.prim));
  }

  await t.step("every fixed-arity primitive rejects a wrong operand count, naming itself", () => {
    const x = ones([2], "float32", g);
    for (const p of PRIMS) {
      const arity = RULES[p].arity;
      if (arity === "variadic") continue;
      const n = arity + 1;
      expectThrow(() => bind(p, new Array(n).fill(x), {} as never), `${p}: expected ${arity} operands, got ${n}`, p);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// (d) Second derivatives.

async function checkSecondOrder(c: Case, seed: number): Promise<void> {
  const r = rng(seed);
  const xs = c.ins.map((o) => make(o, "float64", cpu));
  const argnums = xs.map((_, i) => i);
  const y = c.apply(xs);
  const cy = tensor(randArray(r, y.size), { shape: y.shape, dtype: "float64", backend: cpu });
  const ws = xs.map((x) => tensor(randArray(r, x.size), { shape: x.shape, dtype: "float64", backend: cpu }));
  // s(x) = sum_i <w_i, d/dx_i <c, f(x)>>: its gradient is the Hessian-weighted w; its FD slope along t is <H w, t>.
  const f = (...a: Tensor[]) => api.sum(api.mul(c.apply(a), cy));
  const first = (...a: Tensor[]) => grad(f, { argnums })(...a) as Tensor[];
  const s = (...a: Tensor[]) =>
    first(...a).map((gi, i) => api.sum(api.mul(gi, ws[i]))).reduce((acc, v) => api.add(acc, v));
  const hs = grad(s, { argnums })(...xs) as Tensor[];
  const tangents = xs.map((x) => randArray(r, x.size));
  const at = (sgn: number) =>
    s(...c.ins.map((o, i) => make(o, "float64", cpu, o.data.map((v, j) => v + sgn * EPS * tangents[i][j]))));
  const [sp, sm] = await readAll([at(1), at(-1)]);
  const hv = await readAll(hs);
  const g0 = await readAll(first(...xs));
  const wv = await readAll(ws);
  let lhs = 0, lhsScale = 0, sScale = 0;
  tangents.forEach((t, i) => {
    for (let j = 0; j < t.length; j++) {
      lhs += t[j] * hv[i][j];
      lhsScale += Math.abs(t[j] * hv[i][j]);
      sScale += Math.abs(g0[i][j] * wv[i][j]);
    }
  });
  const rhs = (sp[0] - sm[0]) / (2 * EPS);
  const tol = FD_RTOL * (lhsScale + Math.abs(rhs)) + (16 * ULP64 * sScale) / EPS + 1e-300;
  if (!(Math.abs(lhs - rhs) <= tol)) {
    throw new Error(`${c.desc}: <t, grad(s)> = ${lhs} but (s(x+eps t) - s(x-eps t))/2eps = ${rhs} (tol ${tol})`);
  }
}

Deno.test("second derivatives (grad of grad) match finite differences of the first (float64)", async (t) => {
  for (const p of SECOND_ORDER) {
    await t.step(p, async () => {
      await fc.assert(
        fc.asyncProperty(SPECS[p].cases, fc.integer(), (c, s) => checkSecondOrder(c, s)),
        { numRuns: RUNS, seed: SEED + 7 * primIndex(p) },
      );
    });
  }
});
