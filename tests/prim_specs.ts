/**
 * Property-test specifications of every primitive: random operands (shapes, broadcasting, parameters) as
 * fast-check arbitraries, how to apply the primitive through the public API, whether its VJP is checked by
 * finite differences or must be zero, and the tolerance of the WebGPU-vs-CPU comparison.
 *
 * `SPECS` is typed `{ [P in Prim]: PrimSpec }`, so adding a primitive without a spec is a type error.
 */
import fc from "npm:fast-check@4.10.2";
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import { randomBits } from "../ops/random.ts";
import type { DType } from "../ops/dtype.ts";
import type { BinaryPrim, ComparePrim, Prim, ReducePrim, UnaryPrim } from "../ops/prim.ts";
import { fmt, size } from "../ops/shape.ts";

type Arb<T> = fc.Arbitrary<T>;

/** Seed of every sampled or asserted property (override with IBOT_TEST_SEED to explore other cases). */
export const SEED = Number(Deno.env.get("IBOT_TEST_SEED") ?? 20240611);

/**
 * Element type of an operand. `"float"` is float64 in the finite-difference checks (CPU) and float32 in the
 * WebGPU comparison; other dtypes are used as given.
 */
export type OperandDType = DType | "float";

/** One operand: shape, values (row-major) and dtype. */
export interface Operand {
  readonly shape: readonly number[];
  readonly data: readonly number[];
  readonly dtype: OperandDType;
}

/** One random application of a primitive. */
export interface Case {
  readonly ins: readonly Operand[];
  /** Applies the primitive through the public API (ops/api.ts, ops/random.ts). */
  readonly apply: (xs: Tensor[]) => Tensor;
  /** Printed in failure messages, e.g. `add(float[2,1], float[3])`. */
  readonly desc: string;
  /** Finite-difference step (default 1e-6). */
  readonly eps?: number;
  /** Tangents are multiples of 1/tangentGrid in [-1, 1] (exact in float32, for cast float64 -> float32). */
  readonly tangentGrid?: number;
  /** This case has no derivative (e.g. a cast to an integer dtype): its cotangents must be null/zero. */
  readonly nonDiff?: string;
}

/** Tolerance `|gpu - cpu| <= atol + rtol * |cpu|`, elementwise. */
export interface Tol {
  readonly rtol: number;
  readonly atol: number;
}

/** Everything the property tests need to know about one primitive. */
export interface PrimSpec {
  /** Random float cases (operands in the op's smooth domain): used by the VJP check and, by default, on the GPU. */
  readonly cases: Arb<Case>;
  /**
   * (a) `fd`: the VJP is compared with central finite differences in float64.
   * `zero`: the primitive is not differentiable; the VJP must give null or zero cotangents (why says why).
   */
  readonly vjp: { readonly kind: "fd" } | { readonly kind: "zero"; readonly why: string };
  /** (b) WebGPU vs CPU: tolerance for float outputs (integer and bool outputs must match exactly). */
  readonly gpu: {
    readonly tol: Tol;
    /** Float cases for the GPU when they differ from `cases` (wider domains, exact grid data). */
    readonly cases?: Arb<Case>;
    /** Further GPU cases: integer and bool dtypes, edge values. */
    readonly extra?: readonly Arb<Case>[];
  };
}

// ---------------------------------------------------------------------------------------------------------
// Shapes.

const dim = fc.integer({ min: 1, max: 4 });

/** A shape of rank minRank..maxRank with dims 1..4. */
export function shapeArb(minRank = 0, maxRank = 4): Arb<number[]> {
  return fc.array(dim, { minLength: minRank, maxLength: maxRank });
}

/** A shape that broadcasts to `out`: a suffix of it (possibly empty) with some dims replaced by 1. */
export function broadcastable(out: readonly number[]): Arb<number[]> {
  return fc.integer({ min: 0, max: out.length }).chain((r) =>
    fc.array(fc.boolean(), { minLength: r, maxLength: r }).map((ones) =>
      out.slice(out.length - r).map((d, i) => (ones[i] ? 1 : d))
    )
  );
}

/** `count` shapes that broadcast together (to a shape of rank 0..4). */
function broadcastGroup(count: number): Arb<number[][]> {
  return shapeArb(0, 4).chain((out) => fc.tuple(...Array.from({ length: count }, () => broadcastable(out))));
}

// ---------------------------------------------------------------------------------------------------------
// Values.

/** Uniform values in [lo, hi], or |x| in [away, hi] with a random sign, or multiples of 1/grid in [lo, hi]. */
export interface Domain {
  readonly lo: number;
  readonly hi: number;
  readonly away?: number;
  readonly grid?: number;
}

/** How to draw the values of an operand: a scalar domain, a scalar arbitrary, or whole arrays. */
export type Gen = Domain | { readonly arb: Arb<number> } | { readonly values: (n: number) => Arb<number[]> };

const STEPS = 1 << 20;
const uniform = (lo: number, hi: number) => fc.integer({ min: 0, max: STEPS }).map((i) => lo + ((hi - lo) * i) / STEPS);

function scalarArb(d: Domain | { arb: Arb<number> }): Arb<number> {
  if ("arb" in d) return d.arb;
  if (d.grid) {
    const g = d.grid;
    return fc.integer({ min: Math.ceil(d.lo * g), max: Math.floor(d.hi * g) }).map((i) => i / g);
  }
  if (d.away !== undefined) {
    return fc.tuple(fc.boolean(), uniform(d.away, d.hi)).map(([neg, m]) => (neg ? -m : m));
  }
  return uniform(d.lo, d.hi);
}

/** `n` values drawn from `g`. */
export function valuesArb(n: number, g: Gen): Arb<number[]> {
  if ("values" in g) return g.values(n);
  return fc.array(scalarArb(g), { minLength: n, maxLength: n });
}

/** An operand of `shape` and `dtype` with values from `g`. */
export function operand(shape: readonly number[], dtype: OperandDType, g: Gen): Arb<Operand> {
  return valuesArb(size(shape), g).map((data) => ({ shape, data, dtype }));
}

/** Smooth-everywhere ops: values in [-3, 3]. */
const STD: Domain = { lo: -3, hi: 3 };
/** Positive and away from 0 (log, sqrt, rsqrt, pow base). */
const POS: Domain = { lo: 0.2, hi: 4 };
/** Away from 0 with either sign (reciprocal, divisors, abs). */
const AWAY: Domain = { lo: -3, hi: 3, away: 0.2 };
/**
 * Dyadic values k/64 in [-2, 2]: sums and products of up to 256 of them are exact in float32, so GPU reductions
 * and matmuls (which accumulate in a different order than the float64 CPU oracle) must agree exactly.
 */
const GRID: Domain = { lo: -2, hi: 2, grid: 64 };
/** Half-integers in [-2, 2]: many ties (comparisons, argmax) and exact integers (floor, sign of 0). */
const TIES: Domain = { lo: -2, hi: 2, grid: 2 };
/** Pairwise distinct values 0.02 apart, so max/min reductions have no ties within a finite-difference step. */
const DISTINCT: Gen = {
  values: (n) =>
    fc.uniqueArray(fc.integer({ min: -200, max: 200 }), { minLength: n, maxLength: n }).map((v) =>
      v.map((i) => i * 0.02)
    ),
};
/** maximum/minimum: the first operand is near even multiples of 0.1, the second near odd ones (never within 0.05). */
const SEP_A: Gen = { arb: fc.tuple(fc.integer({ min: -12, max: 12 }), uniform(0, 0.05)).map(([k, j]) => k * 0.2 + j) };
const SEP_B: Gen = {
  arb: fc.tuple(fc.integer({ min: -12, max: 12 }), uniform(0, 0.05)).map(([k, j]) => k * 0.2 + 0.1 + j),
};

/** Integer and bool value generators, with the extremes that exercise wrap-around. */
export const INTS: { readonly [K in "int32" | "uint32" | "bool"]: Gen } = {
  int32: {
    arb: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: -20, max: 20 }) },
      { weight: 2, arbitrary: fc.integer() },
      { weight: 1, arbitrary: fc.constantFrom(-2147483648, 2147483647, -1, 0) },
    ),
  },
  uint32: {
    arb: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 40 }) },
      { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
      { weight: 1, arbitrary: fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff) },
    ),
  },
  bool: { arb: fc.constantFrom(0, 1) },
};
const INT_DTYPES = ["int32", "uint32"] as const;
const NON_FLOAT = ["int32", "uint32", "bool"] as const;

const sig = (o: Operand) => `${o.dtype}${fmt(o.shape)}`;

// ---------------------------------------------------------------------------------------------------------
// Case builders, one per kind of primitive. Each takes the operand dtype and value generator so that the same
// builder yields the float cases and the integer/bool GPU cases.

function unaryCases(name: string, fn: (x: Tensor) => Tensor, dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(0, 4).chain((s) => operand(s, dtype, g)).map((x) => ({
    ins: [x],
    apply: ([a]) => fn(a),
    desc: `${name}(${sig(x)})`,
  }));
}

function binaryCases(
  name: string,
  fn: (a: Tensor, b: Tensor) => Tensor,
  dtype: OperandDType,
  ga: Gen,
  gb: Gen = ga,
): Arb<Case> {
  return broadcastGroup(2)
    .chain(([sa, sb]) => fc.tuple(operand(sa, dtype, ga), operand(sb, dtype, gb)))
    .map(([a, b]) => ({ ins: [a, b], apply: ([x, y]) => fn(x, y), desc: `${name}(${sig(a)}, ${sig(b)})` }));
}

function whereCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return broadcastGroup(3)
    .chain(([sc, sa, sb]) => fc.tuple(operand(sc, "bool", INTS.bool), operand(sa, dtype, g), operand(sb, dtype, g)))
    .map(([c, a, b]) => ({
      ins: [c, a, b],
      apply: ([x, y, z]) => api.where(x, y, z),
      desc: `where(${sig(c)}, ${sig(a)}, ${sig(b)})`,
    }));
}

/** Random axes (a shuffled subset, some negative, sometimes a bare number, or undefined for all) and keepdims. */
function axesArb(rank: number): Arb<{ axes: number | number[] | undefined; keepdims: boolean }> {
  const all = [...Array(rank).keys()];
  return fc.record({
    pick: fc.option(fc.shuffledSubarray(all), { nil: undefined }),
    neg: fc.array(fc.boolean(), { minLength: rank, maxLength: rank }),
    bare: fc.boolean(),
    keepdims: fc.boolean(),
  }).map(({ pick, neg, bare, keepdims }) => {
    const ax = pick?.map((a) => (neg[a] ? a - rank : a));
    return { axes: ax && ax.length === 1 && bare ? ax[0] : ax, keepdims };
  });
}

const REDUCERS = { sum: api.sum, max: api.max, min: api.min };

function reduceCases(p: ReducePrim, dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(0, 4)
    .chain((s) => fc.tuple(operand(s, dtype, g), axesArb(s.length)))
    .map(([x, { axes, keepdims }]) => ({
      ins: [x],
      apply: ([a]) => REDUCERS[p](a, axes, keepdims),
      desc: `${p}(${sig(x)}, axes=${JSON.stringify(axes)}, keepdims=${keepdims})`,
    }));
}

function argmaxCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(1, 4)
    .chain((s) => fc.tuple(operand(s, dtype, g), fc.integer({ min: -s.length, max: s.length - 1 }), fc.boolean()))
    .map(([x, axis, keepdims]) => ({
      ins: [x],
      apply: ([a]) => api.argmax(a, axis, keepdims),
      desc: `argmax(${sig(x)}, axis=${axis}, keepdims=${keepdims})`,
    }));
}

/** Batched matmuls with broadcast batch dims, and random transA/transB flags (operands stored transposed). */
function matmulCases(g: Gen): Arb<Case> {
  return shapeArb(0, 2)
    .chain((batch) => fc.tuple(broadcastable(batch), broadcastable(batch), dim, dim, dim, fc.boolean(), fc.boolean()))
    .chain(([ba, bb, m, k, n, transA, transB]) =>
      fc.tuple(
        operand([...ba, ...(transA ? [k, m] : [m, k])], "float", g),
        operand([...bb, ...(transB ? [n, k] : [k, n])], "float", g),
        fc.constant({ transA, transB }),
      )
    )
    .map(([a, b, t]) => ({
      ins: [a, b],
      apply: ([x, y]) => api.matmul(x, y, t),
      desc: `matmul(${sig(a)}, ${sig(b)}, ${JSON.stringify(t)})`,
    }));
}

/** A random target shape with `n` elements: n's prime factors shuffled into 0..4 dims, maybe one given as -1. */
function reshapeTarget(n: number): Arb<number[]> {
  const primes: number[] = [];
  for (let m = n, p = 2; m > 1; p++) for (; m % p === 0; m /= p) primes.push(p);
  return fc.record({
    order: fc.shuffledSubarray(primes, { minLength: primes.length, maxLength: primes.length }),
    rank: fc.integer({ min: primes.length ? 1 : 0, max: 4 }),
    buckets: fc.array(fc.nat(), { minLength: primes.length, maxLength: primes.length }),
    hole: fc.option(fc.nat(), { nil: undefined }),
  }).map(({ order, rank, buckets, hole }) => {
    const s = new Array<number>(rank).fill(1);
    order.forEach((p, i) => (s[buckets[i] % rank] *= p));
    if (hole !== undefined && rank > 0) s[hole % rank] = -1;
    return s;
  });
}

function reshapeCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(0, 4)
    .chain((s) => fc.tuple(operand(s, dtype, g), reshapeTarget(size(s))))
    .map(([x, to]) => ({ ins: [x], apply: ([a]) => api.reshape(a, to), desc: `reshape(${sig(x)}, ${fmt(to)})` }));
}

function transposeCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(2, 4)
    .chain((s) => {
      const axes = [...s.keys()];
      const perm = fc.shuffledSubarray(axes, { minLength: s.length, maxLength: s.length })
        .filter((p) => p.some((a, i) => a !== i));
      return fc.tuple(operand(s, dtype, g), fc.option(perm, { nil: undefined, freq: 4 }), fc.boolean());
    })
    .map(([x, perm, neg]) => {
      const p = perm && neg ? perm.map((a) => a - x.shape.length) : perm;
      return { ins: [x], apply: ([a]) => api.transpose(a, p), desc: `transpose(${sig(x)}, ${JSON.stringify(p)})` };
    });
}

function broadcastToCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(1, 4)
    .chain((out) => fc.tuple(fc.constant(out), broadcastable(out)))
    .filter(([out, s]) => size(out) !== size(s))
    .chain(([out, s]) => fc.tuple(fc.constant(out), operand(s, dtype, g)))
    .map(([out, x]) => ({
      ins: [x],
      apply: ([a]) => api.broadcastTo(a, out),
      desc: `broadcastTo(${sig(x)}, ${fmt(out)})`,
    }));
}

function sliceCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(1, 4)
    .chain((s) =>
      fc.tuple(
        operand(s, dtype, g),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: s.length, maxLength: s.length }),
        fc.boolean(),
      )
    )
    .map(([x, raw, omitEnds]) => {
      const starts = raw.map(([a], i) => a % (x.shape[i] + 1));
      const ends = raw.map(([, b], i) => starts[i] + (b % (x.shape[i] - starts[i] + 1)));
      const full = omitEnds && ends.every((e, i) => e === x.shape[i]);
      return {
        ins: [x],
        apply: ([a]) => api.slice(a, starts, full ? undefined : ends),
        desc: `slice(${sig(x)}, [${starts}], ${full ? "(whole)" : `[${ends}]`})`,
      };
    });
}

function padCases(dtype: OperandDType, g: Gen, value: Arb<number>): Arb<Case> {
  return shapeArb(1, 4)
    .chain((s) => {
      const widths = fc.array(fc.integer({ min: 0, max: 2 }), { minLength: s.length, maxLength: s.length });
      return fc.tuple(operand(s, dtype, g), widths, widths, value);
    })
    .filter(([, lo, hi]) => [...lo, ...hi].some((w) => w > 0))
    .map(([x, lo, hi, v]) => ({
      ins: [x],
      apply: ([a]) => api.pad(a, lo, hi, v),
      desc: `pad(${sig(x)}, [${lo}], [${hi}], ${v})`,
    }));
}

function concatCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return shapeArb(1, 4)
    .chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.integer({ min: 0, max: s.length - 1 }),
        fc.array(dim, { minLength: 1, maxLength: 3 }),
        fc.boolean(),
      )
    )
    .chain(([s, axis, sizes, neg]) =>
      fc.tuple(
        fc.constant(neg ? axis - s.length : axis),
        fc.tuple(...sizes.map((d) => operand(s.map((e, i) => (i === axis ? d : e)), dtype, g))),
      )
    )
    .map(([axis, xs]) => ({
      ins: xs,
      apply: (ts) => api.concat(ts, axis),
      desc: `concat([${xs.map(sig).join(", ")}], ${axis})`,
    }));
}

/** gather with 0-2 dimensional int32 index arrays; `clampDemo` also draws out-of-range indices (clamped). */
function gatherCases(dtype: OperandDType, g: Gen, clampDemo = false): Arb<Case> {
  return shapeArb(1, 4)
    .chain((s) => fc.tuple(fc.constant(s), fc.integer({ min: 0, max: s.length - 1 }), shapeArb(0, 2), fc.boolean()))
    .chain(([s, axis, is, neg]) => {
      const d = s[axis];
      const idx = { arb: clampDemo ? fc.integer({ min: -2, max: d + 1 }) : fc.integer({ min: 0, max: d - 1 }) };
      return fc.tuple(operand(s, dtype, g), operand(is, "int32", idx), fc.constant(neg ? axis - s.length : axis));
    })
    .map(([x, idx, axis]) => ({
      ins: [x, idx],
      apply: ([a, i]) => api.gather(a, i, axis),
      desc: `gather(${sig(x)}, ${sig(idx)}=${JSON.stringify(idx.data)}, ${axis})`,
    }));
}

function scatterAddCases(dtype: OperandDType, g: Gen): Arb<Case> {
  return fc.tuple(shapeArb(0, 2), shapeArb(0, 2), shapeArb(0, 1), dim)
    .chain(([pre, is, post, n]) =>
      fc.tuple(
        operand([...pre, ...is, ...post], dtype, g),
        operand(is, "int32", { arb: fc.integer({ min: 0, max: n - 1 }) }),
        fc.constant(pre.length),
        fc.constant(n),
      )
    )
    .map(([u, idx, axis, n]) => ({
      ins: [u, idx],
      apply: ([a, i]) => api.scatterAdd(a, i, axis, n),
      desc: `scatterAdd(${sig(u)}, ${sig(idx)}=${JSON.stringify(idx.data)}, axis=${axis}, size=${n})`,
    }));
}

function castCases(from: OperandDType, to: Arb<DType>, g: Gen): Arb<Case> {
  return shapeArb(0, 4)
    .chain((s) => fc.tuple(operand(s, from, g), to))
    .map(([x, d]) => ({
      ins: [x],
      apply: ([a]) => api.cast(a, d),
      desc: `cast(${sig(x)}, ${d})`,
      ...(d === "float32" ? { eps: 1, tangentGrid: 8 } : { nonDiff: `cast to ${d} is piecewise constant` }),
    }));
}

function randomBitsCases(shape: Arb<number[]>): Arb<Case> {
  return fc.tuple(operand([2], "uint32", { arb: fc.integer({ min: 0, max: 0xffffffff }) }), shape)
    .map(([key, s]) => ({
      ins: [key],
      apply: ([k]) => randomBits(k, s),
      desc: `randomBits(key=${JSON.stringify(key.data)}, ${fmt(s)})`,
    }));
}

// ---------------------------------------------------------------------------------------------------------
// The table.

/** Default GPU tolerance: float32 rounding of a few ulps (the CPU computes in float64 and rounds once). */
const F32: Tol = { rtol: 1e-5, atol: 1e-6 };
/** Integer-to-float32 casts may round either way in WGSL (one ulp = 2^-23 relative). */
const ONE_ULP: Tol = { rtol: 2 ** -23, atol: 0 };
const FD = { kind: "fd" } as const;

function unary(p: UnaryPrim, fn: (x: Tensor) => Tensor, g: Gen, opts: { tol?: Tol; ints?: boolean } = {}): PrimSpec {
  return {
    cases: unaryCases(p, fn, "float", g),
    vjp: FD,
    gpu: {
      tol: opts.tol ?? F32,
      extra: opts.ints ? INT_DTYPES.map((d) => unaryCases(p, fn, d, INTS[d])) : undefined,
    },
  };
}

function binary(p: BinaryPrim, fn: (a: Tensor, b: Tensor) => Tensor, ga: Gen, gb: Gen = ga, ints = true): PrimSpec {
  return {
    cases: binaryCases(p, fn, "float", ga, gb),
    vjp: FD,
    gpu: { tol: F32, extra: ints ? INT_DTYPES.map((d) => binaryCases(p, fn, d, INTS[d])) : undefined },
  };
}

function compare(p: ComparePrim, fn: (a: Tensor, b: Tensor) => Tensor): PrimSpec {
  return {
    cases: binaryCases(p, fn, "float", TIES),
    vjp: { kind: "zero", why: `${p} returns bool: no cotangent flows to its operands` },
    gpu: { tol: F32, extra: NON_FLOAT.map((d) => binaryCases(p, fn, d, INTS[d])) },
  };
}

function reduce(p: ReducePrim, g: Gen): PrimSpec {
  return {
    cases: reduceCases(p, "float", g),
    vjp: FD,
    gpu: { tol: F32, cases: reduceCases(p, "float", GRID), extra: INT_DTYPES.map((d) => reduceCases(p, d, INTS[d])) },
  };
}

/** Movement primitives: float cases for the VJP, plus every other dtype on the GPU. */
function movement(build: (dtype: OperandDType, g: Gen) => Arb<Case>): PrimSpec {
  return { cases: build("float", STD), vjp: FD, gpu: { tol: F32, extra: NON_FLOAT.map((d) => build(d, INTS[d])) } };
}

/** Pad values: any float on the GPU (including infinities and NaN, as used for max-pooling), ints in range. */
const PAD_VALUES: { readonly [K in OperandDType]?: Arb<number> } = {
  float: fc.constantFrom(0, 1, -2.5, 1e-3, 3.4e38, -Infinity, Infinity, NaN),
  int32: fc.constantFrom(0, -7, 5, -2147483648, 2147483647),
  uint32: fc.constantFrom(0, 7, 0xffffffff),
  bool: fc.constantFrom(0, 1),
};

/** Float32 values for casts to integers: fractions of both signs, and values beyond the integer ranges. */
const CAST_F32: Gen = {
  arb: fc.oneof(
    { weight: 4, arbitrary: uniform(-100, 100) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        -0.99,
        0.99,
        2147483520,
        2147483648,
        -2147483648,
        -3e9,
        3e9,
        4294967040,
        4294967296,
        1e20,
        -1e20,
        Infinity,
        -Infinity,
      ),
    },
  ),
};

/** Every primitive's spec. */
export const SPECS: { [P in Prim]: PrimSpec } = {
  neg: unary("neg", api.neg, STD, { ints: true }),
  exp: unary("exp", api.exp, STD),
  log: unary("log", api.log, POS),
  sqrt: unary("sqrt", api.sqrt, POS),
  rsqrt: unary("rsqrt", api.rsqrt, POS),
  reciprocal: unary("reciprocal", api.reciprocal, AWAY),
  tanh: unary("tanh", api.tanh, STD),
  // erf_f32 on the GPU is Abramowitz-Stegun 7.1.26 (|error| <= 1.5e-7) beyond 0.5 and a degree-9 Taylor
  // polynomial below (|error| < 5e-7 at 0.5): covered by atol 1e-6, not by rtol alone.
  erf: unary("erf", api.erf, STD),
  abs: unary("abs", api.abs, AWAY, { ints: true }),
  sign: {
    cases: unaryCases("sign", api.sign, "float", TIES),
    vjp: { kind: "zero", why: "sign is piecewise constant" },
    gpu: { tol: F32, extra: INT_DTYPES.map((d) => unaryCases("sign", api.sign, d, INTS[d])) },
  },
  sin: unary("sin", api.sin, { lo: -4, hi: 4 }),
  cos: unary("cos", api.cos, { lo: -4, hi: 4 }),
  floor: {
    cases: unaryCases("floor", api.floor, "float", STD),
    vjp: { kind: "zero", why: "floor is piecewise constant" },
    gpu: {
      tol: F32,
      extra: [
        unaryCases("floor", api.floor, "float", TIES),
        ...INT_DTYPES.map((d) => unaryCases("floor", api.floor, d, INTS[d])),
      ],
    },
  },
  add: binary("add", api.add, STD),
  sub: binary("sub", api.sub, STD),
  mul: binary("mul", api.mul, STD),
  div: binary("div", api.div, STD, AWAY),
  pow: {
    ...binary("pow", api.pow, { lo: 0.2, hi: 3 }, { lo: -2, hi: 2 }, false),
    gpu: {
      tol: F32,
      // Negative and zero bases with integer exponents (pow_f32's special cases).
      extra: [binaryCases("pow", api.pow, "float", { lo: -3, hi: 3, grid: 4 }, { lo: -3, hi: 3, grid: 1 })],
    },
  },
  maximum: binary("maximum", api.maximum, SEP_A, SEP_B),
  minimum: binary("minimum", api.minimum, SEP_A, SEP_B),
  eq: compare("eq", api.equal),
  ne: compare("ne", api.notEqual),
  lt: compare("lt", api.less),
  le: compare("le", api.lessEqual),
  gt: compare("gt", api.greater),
  ge: compare("ge", api.greaterEqual),
  sum: reduce("sum", STD),
  max: reduce("max", DISTINCT),
  min: reduce("min", DISTINCT),
  argmax: {
    cases: argmaxCases("float", STD),
    vjp: { kind: "zero", why: "argmax returns int32 indices" },
    gpu: { tol: F32, cases: argmaxCases("float", TIES), extra: INT_DTYPES.map((d) => argmaxCases(d, INTS[d])) },
  },
  where: {
    cases: whereCases("float", STD),
    vjp: FD,
    gpu: { tol: F32, extra: NON_FLOAT.map((d) => whereCases(d, INTS[d])) },
  },
  cast: {
    // float64 -> float32 is differentiable (checked with dyadic data and tangents, exact in float32, and eps = 1);
    // casts to integer dtypes must give zero cotangents.
    cases: castCases("float", fc.constantFrom<DType>("float32", "int32", "uint32", "bool"), { lo: -4, hi: 4, grid: 8 }),
    vjp: FD,
    gpu: {
      tol: ONE_ULP,
      cases: castCases("float", fc.constantFrom<DType>("int32", "uint32", "bool"), CAST_F32),
      extra: NON_FLOAT.flatMap((from) =>
        (["float32", ...NON_FLOAT] as DType[]).filter((to) => to !== from).map((to) =>
          castCases(from, fc.constant(to), INTS[from])
        )
      ),
    },
  },
  matmul: {
    cases: matmulCases(STD),
    vjp: FD,
    gpu: { tol: F32, cases: matmulCases(GRID) },
  },
  reshape: movement(reshapeCases),
  transpose: movement(transposeCases),
  broadcastTo: movement(broadcastToCases),
  slice: movement(sliceCases),
  pad: movement((d, g) => padCases(d, g, PAD_VALUES[d]!)),
  concat: movement(concatCases),
  gather: {
    ...movement(gatherCases),
    gpu: {
      tol: F32,
      extra: [gatherCases("float", STD, true), ...NON_FLOAT.map((d) => gatherCases(d, INTS[d], true))],
    },
  },
  scatterAdd: {
    cases: scatterAddCases("float", STD),
    vjp: FD,
    gpu: { tol: F32, cases: scatterAddCases("float", GRID), extra: INT_DTYPES.map((d) => scatterAddCases(d, INTS[d])) },
  },
  randomBits: {
    cases: randomBitsCases(shapeArb(0, 3)),
    vjp: { kind: "zero", why: "randomBits has no float operand (its key is uint32)" },
    gpu: { tol: F32, extra: [randomBitsCases(fc.constantFrom([513], [3, 130], [2, 2, 2, 2]))] },
  },
  stopGradient: {
    cases: unaryCases("stopGradient", api.stopGradient, "float", STD),
    vjp: { kind: "zero", why: "stopGradient blocks the cotangent by definition" },
    gpu: { tol: F32, extra: NON_FLOAT.map((d) => unaryCases("stopGradient", api.stopGradient, d, INTS[d])) },
  },
};

/** Differentiable elementwise primitives whose second derivatives are checked (grad of grad). */
export const SECOND_ORDER: readonly Prim[] = [
  "neg",
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "reciprocal",
  "tanh",
  "erf",
  "abs",
  "sin",
  "cos",
  "mul",
  "div",
  "pow",
];

/** NumPy broadcasting, written independently of ops/shape.ts (the reference for the shape-rule properties). */
export function numpyBroadcast(a: readonly number[], b: readonly number[]): number[] | null {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** A small deterministic PRNG (mulberry32) for tangents and cotangents. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
