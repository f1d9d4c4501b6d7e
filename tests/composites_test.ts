/**
 * Composite ops (ops/nn.ts, `mean`, `random.erfinv`): VJP against central finite differences in float64 on the
 * CPU (JAX `check_vjp` style, random shapes), WebGPU against the CPU in float32, and values against independent
 * float64 formulas written out in this file. Ends with the acceptance gradient check of a small MLP.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4.10.2";
import { type Backend, cpu, type DType, fromTyped, grad, mean, nn, random, type Tensor, tree, vjp } from "../mod.ts";
import { assertClose, checkVjp, gpu, randArray, readAll, RUNS } from "./util.ts";

// ---------------------------------------------------------------------------------------------------------
// Independent float64 references.

/** Row-major flat indices of `shape`, grouped by the kept (non-reduced) coordinates. */
function groups(shape: readonly number[], axes: readonly number[]): number[][] {
  const rank = shape.length;
  const ax = axes.map((a) => (a < 0 ? a + rank : a));
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const n = shape.reduce((a, b) => a * b, 1);
  const byKey = new Map<string, number[]>();
  for (let flat = 0; flat < n; flat++) {
    const coord = shape.map((d, i) => Math.floor(flat / strides[i]) % d);
    const key = coord.map((c, i) => (ax.includes(i) ? "*" : c)).join(",");
    const g = byKey.get(key);
    if (g) g.push(flat);
    else byKey.set(key, [flat]);
  }
  return [...byKey.values()];
}

function logSumExp(v: number[]): number {
  const m = Math.max(...v);
  return m + Math.log(v.reduce((a, x) => a + Math.exp(x - m), 0));
}

/** erf by composite Simpson integration of 2/sqrt(pi) e^{-t^2} (independent of the library's erf). */
function erfRef(x: number): number {
  const n = 4000;
  const h = x / n;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return (s * h / 3) * 2 / Math.sqrt(Math.PI);
}

/** Keys' cubic convolution kernel with A = -0.75. */
function keys(x: number, A = -0.75): number {
  const t = Math.abs(x);
  if (t <= 1) return (A + 2) * t ** 3 - (A + 3) * t ** 2 + 1;
  if (t < 2) return A * t ** 3 - 5 * A * t ** 2 + 8 * A * t - 4 * A;
  return 0;
}

/** Taps floor(src)-1 .. floor(src)+2 (indices clamped) with their weights. */
function taps(src: number, inSize: number): [number, number][] {
  const f = Math.floor(src);
  return [-1, 0, 1, 2].map((k) => [Math.min(Math.max(f + k, 0), inSize - 1), keys(src - (f + k))]);
}

/** Direct 2-D bicubic resize of one [h, w] plane (PyTorch align_corners=False, given scale factors). */
function bicubic2d(x: Float64Array, h: number, w: number, oh: number, ow: number, sh: number, sw: number) {
  const out = new Float64Array(oh * ow);
  for (let i = 0; i < oh; i++) {
    for (let j = 0; j < ow; j++) {
      let acc = 0;
      for (const [r, wr] of taps((i + 0.5) / sh - 0.5, h)) {
        for (const [c, wc] of taps((j + 0.5) / sw - 0.5, w)) acc += wr * wc * x[r * w + c];
      }
      out[i * ow + j] = acc;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The case table: every composite with random argument shapes (float64 VJP check) and fixed GPU shapes.

/** A generated case: argument shapes, a data seed, and case parameters. */
interface Spec {
  shapes: readonly (readonly number[])[];
  seed: number;
  // deno-lint-ignore no-explicit-any
  p?: any;
}

interface CompositeCase {
  arb: fc.Arbitrary<Spec>;
  fn: (spec: Spec) => (...xs: Tensor[]) => unknown;
  /** Range of the generated argument values. */
  range?: [number, number];
  /** Finite-difference step. */
  eps?: number;
  /** Few fixed specs for WebGPU vs CPU (each new shape compiles new pipelines, ~15 ms each on lavapipe). */
  gpu: Spec[];
  /** fp32 tolerance of WebGPU vs CPU (default rtol 3e-5, atol 3e-6: ~10x what lavapipe needs). */
  gpuTol?: [number, number];
}

const dim = fc.integer({ min: 1, max: 4 });
const shapeArb = (minRank = 1, maxRank = 3) => fc.array(dim, { minLength: minRank, maxLength: maxRank });
const seed = fc.integer({ min: 0, max: 2 ** 30 });
/** One shape and an axis of it. */
const withAxis = shapeArb().chain((s) =>
  fc.record({ shapes: fc.constant([s]), seed, p: fc.integer({ min: -s.length, max: s.length - 1 }) })
);
/** One shape, a non-empty set of its axes, and keepdims. */
const withAxes = shapeArb().chain((s) =>
  fc.record({
    shapes: fc.constant([s]),
    seed,
    p: fc.record({
      axes: fc.subarray([...s.keys()], { minLength: 1 }),
      keepdims: fc.boolean(),
    }),
  })
);
const oneShape = shapeArb().chain((s) => fc.record({ shapes: fc.constant([s]), seed }));

const KEY_SEED = 42;
/** A fixed key on the backend of `x`. */
const keyFor = (x: Tensor) => random.key(KEY_SEED, x.backend);

const CASES: Record<string, CompositeCase> = {
  softmax: {
    arb: withAxis,
    fn: ({ p }) => (x) => nn.softmax(x, p),
    range: [-3, 3],
    gpu: [{ shapes: [[3, 5]], seed: 1, p: -1 }, { shapes: [[2, 1, 4]], seed: 2, p: 0 }],
  },
  logSoftmax: {
    arb: withAxis,
    fn: ({ p }) => (x) => nn.logSoftmax(x, p),
    range: [-3, 3],
    gpu: [{ shapes: [[3, 5]], seed: 3, p: -1 }, { shapes: [[2, 1, 4]], seed: 4, p: 1 }],
  },
  moments: {
    arb: withAxes,
    fn: ({ p }) => (x) => nn.moments(x, p.axes, p.keepdims),
    gpu: [{ shapes: [[3, 5]], seed: 5, p: { axes: [1], keepdims: false } }, {
      shapes: [[2, 1, 4]],
      seed: 6,
      p: { axes: [0, 2], keepdims: true },
    }],
  },
  variance: {
    arb: withAxes,
    fn: ({ p }) => (x) => nn.variance(x, p.axes, p.keepdims),
    gpu: [{ shapes: [[3, 5]], seed: 7, p: { axes: [0], keepdims: true } }],
  },
  mean: {
    arb: shapeArb().chain((s) =>
      fc.record({
        shapes: fc.constant([s]),
        seed,
        p: fc.record({ axes: fc.option(fc.subarray([...s.keys()], { minLength: 1 })), keepdims: fc.boolean() }),
      })
    ),
    fn: ({ p }) => (x) => mean(x, p.axes ?? undefined, p.keepdims),
    gpu: [{ shapes: [[3, 5]], seed: 8, p: { axes: null, keepdims: false } }, {
      shapes: [[2, 1, 4]],
      seed: 9,
      p: { axes: [1, 2], keepdims: false },
    }],
  },
  layerNorm: {
    arb: shapeArb(1, 3).chain((s) =>
      fc.record({
        shapes: fc.constant([s, [s[s.length - 1]], [s[s.length - 1]]]),
        seed,
        p: fc.constantFrom("none", "weight", "both"),
      })
    ),
    fn: ({ p }) => (x, w, b) => nn.layerNorm(x, p === "none" ? null : w, p === "both" ? b : null),
    gpu: [{ shapes: [[3, 6], [6], [6]], seed: 10, p: "both" }, { shapes: [[2, 1, 4], [4], [4]], seed: 11, p: "none" }],
  },
  gelu: {
    arb: oneShape,
    fn: () => (x) => nn.gelu(x),
    range: [-4, 4],
    gpu: [{ shapes: [[3, 5]], seed: 12 }],
  },
  l2Normalize: {
    arb: withAxis,
    fn: ({ p }) => (x) => nn.l2Normalize(x, p),
    gpu: [{ shapes: [[3, 5]], seed: 13, p: -1 }, { shapes: [[2, 1, 4]], seed: 14, p: 0 }],
  },
  softCrossEntropy: {
    arb: shapeArb().chain((s) =>
      fc.record({ shapes: fc.constant([s, s]), seed, p: fc.integer({ min: -s.length, max: s.length - 1 }) })
    ),
    fn: ({ p }) => (t, x) => nn.softCrossEntropy(t, x, p),
    range: [-2, 2],
    gpu: [{ shapes: [[3, 5], [3, 5]], seed: 15, p: -1 }, { shapes: [[2, 1, 4], [2, 1, 4]], seed: 16, p: 0 }],
  },
  linear: {
    arb: fc.tuple(shapeArb(1, 3), dim, fc.boolean()).chain(([s, out, withBias]) =>
      fc.record({
        shapes: fc.constant([s, [out, s[s.length - 1]], [out]]),
        seed,
        p: fc.constant(withBias),
      })
    ),
    fn: ({ p }) => (x, w, b) => nn.linear(x, w, p ? b : null),
    gpu: [{ shapes: [[2, 3, 4], [5, 4], [5]], seed: 17, p: true }, { shapes: [[1], [3, 1], [3]], seed: 18, p: false }],
  },
  dropout: {
    arb: oneShape.chain((s) => fc.record({ shapes: fc.constant(s.shapes), seed, p: fc.constantFrom(0.1, 0.5, 0.9) })),
    fn: ({ p }) => (x) => nn.dropout(keyFor(x), x, p, true),
    gpu: [{ shapes: [[4, 8]], seed: 19, p: 0.5 }],
  },
  dropPath: {
    arb: oneShape.chain((s) => fc.record({ shapes: fc.constant(s.shapes), seed, p: fc.constantFrom(0.1, 0.5, 0.9) })),
    fn: ({ p }) => (x) => nn.dropPath(keyFor(x), x, p, true),
    gpu: [{ shapes: [[8, 2, 3]], seed: 20, p: 0.5 }],
  },
  resizeBicubic: {
    arb: fc.tuple(shapeArb(2, 4), dim, dim, fc.option(fc.tuple(fc.double({ min: 0.3, max: 3, noNaN: true }))))
      .chain(([s, oh, ow, sc]) =>
        fc.record({
          shapes: fc.constant([s]),
          seed,
          p: fc.constant({ oh: oh + 1, ow, scale: sc ? [sc[0], sc[0] * 0.9] : undefined }),
        })
      ),
    fn: ({ p }) => (x) => nn.resizeBicubic(x, p.oh, p.ow, p.scale),
    gpu: [{ shapes: [[2, 14, 14]], seed: 21, p: { oh: 6, ow: 6, scale: [6.1 / 14, 6.1 / 14] } }],
  },
  erfinv: {
    arb: oneShape,
    fn: () => (x) => random.erfinv(x),
    range: [-0.99, 0.99],
    gpu: [{ shapes: [[4, 16]], seed: 22 }],
    gpuTol: [2e-4, 1e-5],
  },
};

/** Composites whose value is not a differentiable tensor function (checked by value only). */
const NOT_DIFFERENTIABLE = new Set(["bicubicMatrix"]);

function makeArgs(spec: Spec, range: [number, number], dtype: DType, backend: Backend): Tensor[] {
  return spec.shapes.map((s, i) => {
    const n = s.reduce((a, b) => a * b, 1);
    const data = randArray(spec.seed * 101 + i, n, ...range);
    return fromTyped(dtype === "float64" ? data : Float32Array.from(data), s, dtype, backend);
  });
}

const leaves = (t: unknown) => tree.leaves<Tensor>(t);

Deno.test("composite VJPs match central finite differences (float64, random shapes)", async (t) => {
  for (const [name, c] of Object.entries(CASES)) {
    await t.step(name, async () => {
      await fc.assert(
        fc.asyncProperty(c.arb, async (spec) => {
          const args = makeArgs(spec, c.range ?? [-1, 1], "float64", cpu);
          await checkVjp(c.fn(spec), args, { seed: spec.seed, eps: c.eps, what: `${name} ${JSON.stringify(spec)}` });
        }),
        { numRuns: RUNS },
      );
    });
  }
  await t.step("erfinv near +-1 (the large-w branch)", async () => {
    for (const [lo, hi] of [[0.9975, 0.9995], [-0.9995, -0.9975]]) {
      const x = fromTyped(randArray(5, 12, lo, hi), [12], "float64", cpu);
      await checkVjp((v: Tensor) => random.erfinv(v), [x], { eps: 1e-8, rtol: 1e-5, what: "erfinv tails" });
    }
  });
  await t.step("dropout and dropPath are the identity (with identity VJP) when not training", async () => {
    const x = fromTyped(randArray(3, 6), [2, 3], "float64", cpu);
    for (const f of [nn.dropout, nn.dropPath]) {
      const [y, pb] = vjp((v: Tensor) => f(random.key(1), v, 0.5, false), x);
      const u = fromTyped(randArray(4, 6), [2, 3], "float64", cpu);
      const [g] = pb(u) as Tensor[];
      assert.deepEqual(await y.data(), await x.data());
      assert.deepEqual(await g.data(), await u.data());
    }
  });
});

Deno.test("composites on WebGPU match the CPU in float32 (forward and VJP)", async () => {
  const g = await gpu();
  const pairs: { what: string; c: Tensor; g: Tensor; tol: [number, number] }[] = [];
  for (const [name, c] of Object.entries(CASES)) {
    for (const spec of c.gpu) {
      const range = c.range ?? [-1, 1];
      const run = (backend: Backend) => {
        const args = makeArgs(spec, range, "float32", backend);
        const [out, pb] = vjp(c.fn(spec) as (...a: never[]) => unknown, ...args);
        const outs = leaves(out);
        const us = outs.map((o, i) =>
          fromTyped(Float32Array.from(randArray(spec.seed + 7 * i, o.size)), o.shape, "float32", backend)
        );
        const cts = pb(tree.unflatten(tree.flatten(out).def, us)) as Tensor[];
        return [...outs, ...cts];
      };
      const onCpu = run(cpu);
      const onGpu = run(g);
      onCpu.forEach((ct, i) =>
        pairs.push({ what: `${name} ${JSON.stringify(spec)} #${i}`, c: ct, g: onGpu[i], tol: c.gpuTol ?? [3e-5, 3e-6] })
      );
    }
  }
  const [cpuData, gpuData] = await Promise.all([readAll(pairs.map((p) => p.c)), readAll(pairs.map((p) => p.g))]);
  pairs.forEach((p, i) => {
    assert.deepEqual(p.g.shape, p.c.shape, p.what);
    assertClose(gpuData[i], cpuData[i], p.tol[0], p.tol[1], p.what);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Values against independent formulas.

const f64 = (data: ArrayLike<number>, shape: number[]) => fromTyped(Float64Array.from(data), shape, "float64", cpu);
const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string, rtol = 1e-12, atol = 1e-13) =>
  assertClose(a, b, rtol, atol, what);

/** Property over one random float64 tensor (shape from fast-check, data seeded). */
function withTensor(
  arb: fc.Arbitrary<Spec>,
  body: (x: Tensor, xs: Float64Array, spec: Spec) => Promise<void>,
  range: [number, number] = [-2, 2],
) {
  return fc.assert(
    fc.asyncProperty(arb, async (spec) => {
      const [x] = makeArgs(spec, range, "float64", cpu);
      await body(x, (await x.data()) as Float64Array, spec);
    }),
    { numRuns: RUNS },
  );
}

const VALUE_TESTS: Record<string, () => void | Promise<void>> = {
  softmax: async () => {
    await withTensor(withAxis, async (x, xs, spec) => {
      const y = (await nn.softmax(x, spec.p).data()) as Float64Array;
      const want = new Float64Array(xs.length);
      for (const gi of groups(x.shape, [spec.p])) {
        const lse = logSumExp(gi.map((i) => xs[i]));
        for (const i of gi) want[i] = Math.exp(xs[i] - lse);
        const total = gi.reduce((a, i) => a + y[i], 0);
        assert.ok(Math.abs(total - 1) < 1e-12, `softmax sums to ${total}`);
      }
      close(y, want, "softmax");
      assert.ok(y.every((v) => v > 0));
      // Shift invariance.
      close(await nn.softmax(x.add(3.5), spec.p).data(), y, "softmax(x + c)", 1e-12, 1e-15);
    });
    // Max-shifted: huge logits do not overflow.
    const y = await nn.softmax(f64([1000, 1000, -1000], [3])).data();
    close(y, [0.5, 0.5, 0], "softmax of large logits");
  },
  logSoftmax: async () => {
    await withTensor(withAxis, async (x, xs, spec) => {
      const y = (await nn.logSoftmax(x, spec.p).data()) as Float64Array;
      const want = new Float64Array(xs.length);
      for (const gi of groups(x.shape, [spec.p])) {
        const lse = logSumExp(gi.map((i) => xs[i]));
        for (const i of gi) want[i] = xs[i] - lse;
      }
      close(y, want, "logSoftmax");
      close(y, await nn.softmax(x, spec.p).log().data(), "log(softmax)", 1e-10, 1e-12);
    });
    close(await nn.logSoftmax(f64([1000, 0], [2])).data(), [0, -1000], "logSoftmax of large logits");
  },
  moments: async () => {
    await withTensor(withAxes, async (x, xs, spec) => {
      const [mu, v] = nn.moments(x, spec.p.axes, spec.p.keepdims);
      const gs = groups(x.shape, spec.p.axes);
      const wantMu = gs.map((gi) => gi.reduce((a, i) => a + xs[i], 0) / gi.length);
      const wantV = gs.map((gi, k) => gi.reduce((a, i) => a + (xs[i] - wantMu[k]) ** 2, 0) / gi.length);
      const kept = x.shape.map((d, i) => (spec.p.axes.includes(i) ? 1 : d));
      const wantShape = spec.p.keepdims ? kept : x.shape.filter((_, i) => !spec.p.axes.includes(i));
      assert.deepEqual(mu.shape, wantShape);
      assert.deepEqual(v.shape, wantShape);
      close(await mu.data(), wantMu, "moments mean");
      close(await v.data(), wantV, "moments biased variance");
    });
  },
  variance: async () => {
    // Biased (divides by N): the variance of [1, 2, 3, 4] is 1.25.
    close(await nn.variance(f64([1, 2, 3, 4], [4])).data(), [1.25], "variance");
    close(await nn.variance(f64([1, 2, 3, 4, 5, 9], [2, 3]), 0).data(), [2.25, 2.25, 9], "variance axis 0");
    const v = nn.variance(f64([1, 2, 3, 4], [2, 2]), [0, 1], true);
    assert.deepEqual(v.shape, [1, 1]);
    close(await v.data(), [1.25], "variance keepdims");
  },
  mean: async () => {
    await withTensor(withAxes, async (x, xs, spec) => {
      const m = mean(x, spec.p.axes, spec.p.keepdims);
      close(
        await m.data(),
        groups(x.shape, spec.p.axes).map((gi) => gi.reduce((a, i) => a + xs[i], 0) / gi.length),
        "mean",
      );
    });
    close(await mean(f64([1, 2, 3, 6], [2, 2])).data(), [3], "mean of all");
  },
  layerNorm: async () => {
    await withTensor(shapeArb(1, 3).chain((s) => fc.record({ shapes: fc.constant([s]), seed })), async (x, xs) => {
      const d = x.shape[x.rank - 1];
      const w = randArray(9, d, 0.5, 2);
      const b = randArray(10, d);
      const want = new Float64Array(xs.length);
      const wantPlain = new Float64Array(xs.length);
      for (let r = 0; r < xs.length / d; r++) {
        let mu = 0;
        for (let j = 0; j < d; j++) mu += xs[r * d + j];
        mu /= d;
        let v = 0;
        for (let j = 0; j < d; j++) v += (xs[r * d + j] - mu) ** 2;
        v /= d;
        for (let j = 0; j < d; j++) {
          wantPlain[r * d + j] = (xs[r * d + j] - mu) / Math.sqrt(v + 1e-6);
          want[r * d + j] = wantPlain[r * d + j] * w[j] + b[j];
        }
      }
      close(await nn.layerNorm(x, f64(w, [d]), f64(b, [d])).data(), want, "layerNorm affine");
      close(await nn.layerNorm(x).data(), wantPlain, "layerNorm");
      close(await nn.layerNorm(x, null, null, 1e-6).data(), wantPlain, "layerNorm eps");
    });
  },
  gelu: async () => {
    await withTensor(oneShape, async (x, xs) => {
      close(await nn.gelu(x).data(), xs.map((v) => v * (1 + erfRef(v / Math.SQRT2)) / 2), "gelu", 1e-11, 5e-13);
    }, [-6, 6]);
    // Known values: gelu(1) = 0.8413447460685429, gelu(-1) = -0.15865525393145707.
    close(await nn.gelu(f64([1, -1, 0], [3])).data(), [0.8413447460685429, -0.15865525393145707, 0], "gelu(+-1)");
  },
  l2Normalize: async () => {
    await withTensor(withAxis, async (x, xs, spec) => {
      const y = (await nn.l2Normalize(x, spec.p).data()) as Float64Array;
      for (const gi of groups(x.shape, [spec.p])) {
        const norm = Math.sqrt(gi.reduce((a, i) => a + xs[i] ** 2, 0));
        const ynorm = Math.sqrt(gi.reduce((a, i) => a + y[i] ** 2, 0));
        assert.ok(Math.abs(ynorm - 1) < 1e-12, `norm ${ynorm}`);
        close(gi.map((i) => y[i]), gi.map((i) => xs[i] / norm), "l2Normalize");
      }
    });
    // The zero vector stays zero (norm clamped at eps), no NaN; its gradient is finite: c / eps, as in PyTorch.
    assert.deepEqual([...await nn.l2Normalize(f64([0, 0, 0], [3])).data()], [0, 0, 0]);
    const c = f64([1, 2, 3, 1, 2, 3], [2, 3]);
    const g = await grad((v: Tensor) => nn.l2Normalize(v).mul(c).sum())(f64([0, 0, 0, 1, 2, 2], [2, 3])).data();
    close(g.subarray(0, 3), [1e12, 2e12, 3e12], "gradient at a zero vector");
    close(g.subarray(3), [-2 / 27, -4 / 27, 5 / 27], "gradient of [1, 2, 2]", 1e-12, 1e-15);
  },
  softCrossEntropy: async () => {
    await withTensor(withAxis, async (x, xs, spec) => {
      const tgt = randArray(spec.seed + 1, xs.length, 0, 1);
      const loss = nn.softCrossEntropy(f64(tgt, [...x.shape]), x, spec.p);
      const want = groups(x.shape, [spec.p]).map((gi) => {
        const lse = logSumExp(gi.map((i) => xs[i]));
        return -gi.reduce((a, i) => a + tgt[i] * (xs[i] - lse), 0);
      });
      assert.deepEqual(loss.shape, x.shape.filter((_, i) => i !== (spec.p < 0 ? spec.p + x.rank : spec.p)));
      close(await loss.data(), want, "softCrossEntropy");
    });
    // A one-hot target gives -log p of the class.
    close(await nn.softCrossEntropy(f64([0, 1], [2]), f64([0, 0], [2])).data(), [Math.LN2], "one-hot");
  },
  linear: async () => {
    await withTensor(oneShape, async (x, xs, spec) => {
      const k = x.shape[x.rank - 1];
      const out = 1 + (spec.seed % 4);
      const w = randArray(spec.seed + 2, out * k);
      const b = randArray(spec.seed + 3, out);
      const rows = xs.length / k;
      const want = new Float64Array(rows * out);
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < out; o++) {
          let acc = b[o];
          for (let i = 0; i < k; i++) acc += xs[r * k + i] * w[o * k + i];
          want[r * out + o] = acc;
        }
      }
      const y = nn.linear(x, f64(w, [out, k]), f64(b, [out]));
      assert.deepEqual(y.shape, [...x.shape.slice(0, -1), out]);
      close(await y.data(), want, "linear");
      close(await nn.linear(x, f64(w, [out, k])).add(f64(b, [out])).data(), want, "linear without bias");
    });
    assert.throws(() => nn.linear(f64([1, 2, 3], [3]), f64([1, 2], [1, 2])), /linear: input \[3\] does not fit/);
  },
  dropout: async () => {
    const n = 20000;
    const x = f64(randArray(1, n, 1, 2), [100, 200]);
    const xs = await x.data();
    for (const rate of [0.1, 0.5]) {
      const y = await nn.dropout(random.key(7), x, rate, true).data();
      let kept = 0;
      for (let i = 0; i < n; i++) {
        if (y[i] === 0) continue;
        kept++;
        assert.ok(Math.abs(y[i] - xs[i] / (1 - rate)) < 1e-12, "kept values are rescaled by 1/(1-rate)");
      }
      // Binomial: 5 standard deviations.
      assert.ok(Math.abs(kept / n - (1 - rate)) < 5 * Math.sqrt(rate * (1 - rate) / n), `kept ${kept / n}`);
      // Same key, same mask; another key, another mask.
      assert.deepEqual(await nn.dropout(random.key(7), x, rate, true).data(), y);
      assert.notDeepEqual(await nn.dropout(random.key(8), x, rate, true).data(), y);
    }
    assert.equal(nn.dropout(random.key(7), x, 0.5, false), x);
    assert.equal(nn.dropout(random.key(7), x, 0, true), x);
    assert.throws(() => nn.dropout(random.key(7), x, 1, true), /dropout: rate 1/);
  },
  dropPath: async () => {
    const x = f64(randArray(2, 400 * 6, 1, 2), [400, 2, 3]);
    const xs = await x.data();
    const y = await nn.dropPath(random.key(3), x, 0.3, true).data();
    let kept = 0;
    for (let s = 0; s < 400; s++) {
      const row = Array.from({ length: 6 }, (_, j) => y[s * 6 + j]);
      if (row.every((v) => v === 0)) continue;
      kept++;
      row.forEach((v, j) =>
        assert.ok(Math.abs(v - xs[s * 6 + j] / 0.7) < 1e-12, "a whole sample is kept and rescaled")
      );
    }
    assert.ok(Math.abs(kept / 400 - 0.7) < 5 * Math.sqrt(0.21 / 400), `kept ${kept / 400}`);
    assert.equal(nn.dropPath(random.key(3), x, 0.3, false), x);
    assert.throws(() => nn.dropPath(random.key(3), x, -0.1, true), /dropPath: rate -0.1/);
  },
  bicubicMatrix: () => {
    // iBOT's positional-embedding interpolation: source coordinates (dst + 0.5) / scale - 0.5.
    const tables: [number, number, number, number[]][] = [
      [14, 6, 6.1 / 14, [0.64754, 2.94262, 5.2377, 7.53279, 9.82787, 12.12295]],
      [8, 4, 4.1 / 8, [0.47561, 2.42683, 4.37805, 6.32927]],
    ];
    for (const [inSize, outSize, scale, srcs] of tables) {
      const m = nn.bicubicMatrix(inSize, outSize, scale);
      assert.equal(m.length, outSize * inSize);
      srcs.forEach((src, d) => {
        assert.ok(Math.abs((d + 0.5) / scale - 0.5 - src) < 5e-6, `src coordinate ${d}`);
        const want = new Float64Array(inSize);
        for (const [i, w] of taps(src, inSize)) want[i] += w;
        // The table is rounded to 5 decimals; the weights' slope is below 2.
        assertClose(m.subarray(d * inSize, (d + 1) * inSize), want, 0, 1e-5, `${inSize}->${outSize} row ${d}`);
      });
    }
    // Rows sum to 1 (so constants are preserved), for any sizes and scales, with the default scale too.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 20 }),
        fc.option(fc.double({ min: 0.2, max: 5, noNaN: true })),
        (n, o, s) => {
          const m = nn.bicubicMatrix(n, o, s ?? undefined);
          const sc = s ?? o / n;
          for (let d = 0; d < o; d++) {
            const row = m.subarray(d * n, (d + 1) * n);
            assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-12, `row ${d} of ${n}->${o}`);
            const want = new Float64Array(n);
            for (const [i, w] of taps((d + 0.5) / sc - 0.5, n)) want[i] += w;
            assertClose(row, want, 1e-12, 1e-14, `bicubicMatrix(${n}, ${o}, ${s}) row ${d}`);
          }
        },
      ),
      { numRuns: RUNS * 4 },
    );
    // Identity when the size does not change.
    const eye = nn.bicubicMatrix(5, 5);
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 5; j++) assert.ok(Math.abs(eye[i * 5 + j] - (i === j ? 1 : 0)) < 1e-15);
    }
  },
  resizeBicubic: async () => {
    const arb = fc.record({
      b: fc.integer({ min: 1, max: 2 }),
      h: fc.integer({ min: 1, max: 9 }),
      w: fc.integer({ min: 1, max: 9 }),
      oh: fc.integer({ min: 1, max: 9 }),
      ow: fc.integer({ min: 1, max: 9 }),
      scaled: fc.boolean(),
      seed,
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ b, h, w, oh, ow, scaled, seed }) => {
        const sh = scaled ? (oh + 0.1) / h : oh / h;
        const sw = scaled ? (ow + 0.1) / w : ow / w;
        const xs = randArray(seed, b * h * w);
        const y = nn.resizeBicubic(f64(xs, [b, h, w]), oh, ow, scaled ? [sh, sw] : undefined);
        assert.deepEqual(y.shape, [b, oh, ow]);
        const data = await y.data();
        for (let k = 0; k < b; k++) {
          const want = bicubic2d(xs.subarray(k * h * w, (k + 1) * h * w), h, w, oh, ow, sh, sw);
          close(data.subarray(k * oh * ow, (k + 1) * oh * ow), want, "resizeBicubic vs direct 2-D loop", 1e-12, 1e-12);
        }
        // A constant grid stays constant.
        const c = await nn.resizeBicubic(f64(new Float64Array(h * w).fill(2.5), [h, w]), oh, ow).data();
        close(c, new Float64Array(oh * ow).fill(2.5), "constant grid", 1e-12, 1e-12);
      }),
      { numRuns: RUNS },
    );
    // iBOT: a 14x14 grid of 3 channels to 6x6 with scale (6 + 0.1) / 14.
    const xs = randArray(77, 3 * 14 * 14);
    const y = await nn.resizeBicubic(f64(xs, [1, 3, 14, 14]), 6, 6, [6.1 / 14, 6.1 / 14]).data();
    for (let ch = 0; ch < 3; ch++) {
      const want = bicubic2d(xs.subarray(ch * 196, (ch + 1) * 196), 14, 14, 6, 6, 6.1 / 14, 6.1 / 14);
      close(y.subarray(ch * 36, (ch + 1) * 36), want, "iBOT 14->6");
    }
    assert.throws(() => nn.resizeBicubic(f64([1], [1]), 2, 2), /resizeBicubic: needs \[..., H, W\]/);
  },
  erfinv: async () => {
    await withTensor(oneShape, async (x, xs) => {
      const y = await random.erfinv(x).data();
      // Giles' approximation is single-precision accurate.
      for (let i = 0; i < xs.length; i++) {
        assert.ok(Math.abs(erfRef(y[i]) - xs[i]) < 2e-7 * Math.max(1, Math.abs(y[i])), `erf(erfinv(${xs[i]}))`);
      }
    }, [-0.999, 0.999]);
    // Near the tails (large-w branch) the inverse is still accurate relative to 1 - |x|.
    const tail = [0.9999, -0.99999, 0.999999];
    const y = await random.erfinv(f64(tail, [3])).data();
    tail.forEach((x, i) => {
      const back = erfRef(y[i]);
      assert.ok(Math.abs((1 - Math.abs(back)) / (1 - Math.abs(x)) - 1) < 1e-4, `erfinv(${x}) = ${y[i]}`);
      assert.equal(Math.sign(y[i]), Math.sign(x));
    });
    assert.equal((await random.erfinv(f64([0], [1])).data())[0], 0);
  },
};

Deno.test("composite values match independent float64 formulas", async (t) => {
  for (const [name, body] of Object.entries(VALUE_TESTS)) await t.step(name, body);
});

Deno.test("every exported composite is covered", () => {
  const exported = Object.keys(nn);
  const noVjp = exported.filter((k) => !(k in CASES) && !NOT_DIFFERENTIABLE.has(k));
  const noValue = exported.filter((k) => !(k in VALUE_TESTS));
  assert.deepEqual(noVjp, [], `composites without a VJP/GPU case: ${noVjp}`);
  assert.deepEqual(noValue, [], `composites without a value test: ${noValue}`);
  for (const [name, c] of Object.entries(CASES)) assert.ok(c.gpu.length > 0, `${name} has no GPU case`);
  // The extra composites outside ops/nn.ts are in the table too.
  for (const extra of ["mean", "erfinv"]) assert.ok(extra in CASES && extra in VALUE_TESTS);
});

// ---------------------------------------------------------------------------------------------------------
// Acceptance: a gradient check of a small MLP, parameters as a pytree.

Deno.test("MLP gradient (linear, layerNorm, gelu, linear, softmax, softCrossEntropy) matches finite differences", async () => {
  const [n, din, dh, dout] = [5, 4, 6, 3];
  const p = (seed: number, shape: number[], lo = -1, hi = 1) =>
    f64(randArray(seed, shape.reduce((a, b) => a * b, 1), lo, hi), shape);
  const params = {
    fc1: { weight: p(1, [dh, din]), bias: p(2, [dh]) },
    norm: { weight: p(3, [dh], 0.5, 1.5), bias: p(4, [dh]) },
    fc2: { weight: p(5, [dout, dh], -2, 2), bias: p(6, [dout]) },
  };
  const x = p(7, [n, din], -2, 2);
  // A fixed soft target: rows are distributions.
  const raw = randArray(8, n * dout, 0.1, 1);
  for (let r = 0; r < n; r++) {
    const s = raw[r * dout] + raw[r * dout + 1] + raw[r * dout + 2];
    for (let j = 0; j < dout; j++) raw[r * dout + j] /= s;
  }
  const target = f64(raw, [n, dout]);
  type Params = typeof params;
  const loss = (ps: Params) => {
    const h = nn.gelu(nn.layerNorm(nn.linear(x, ps.fc1.weight, ps.fc1.bias), ps.norm.weight, ps.norm.bias));
    const probs = nn.softmax(nn.linear(h, ps.fc2.weight, ps.fc2.bias));
    return mean(nn.softCrossEntropy(target, probs));
  };
  const g = grad(loss)(params) as Params;
  const { leaves: ls, def } = tree.flatten<Tensor>(params);
  const gradLeaves = tree.leaves<Tensor>(g);
  const names = tree.paths(params).map(([path]) => path);
  assert.deepEqual(names, ["fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "fc2.weight", "fc2.bias"]);
  const values = await readAll(ls);
  const eps = 1e-5;
  const lossAt = async (k: number, j: number, delta: number) => {
    const leaves2 = ls.map((l, i) => {
      if (i !== k) return l;
      const d = Float64Array.from(values[i]);
      d[j] += delta;
      return f64(d, [...l.shape]);
    });
    return await loss(tree.unflatten<Params>(def, leaves2)).item();
  };
  for (let k = 0; k < ls.length; k++) {
    const analytic = await gradLeaves[k].data();
    assert.deepEqual(gradLeaves[k].shape, ls[k].shape, names[k]);
    const numeric = new Float64Array(ls[k].size);
    for (let j = 0; j < numeric.length; j++) {
      numeric[j] = ((await lossAt(k, j, eps)) - (await lossAt(k, j, -eps))) / (2 * eps);
    }
    let num = 0;
    let den = 0;
    for (let j = 0; j < numeric.length; j++) {
      num += (analytic[j] - numeric[j]) ** 2;
      den += numeric[j] ** 2;
    }
    const rel = Math.sqrt(num / den);
    assert.ok(rel < 1e-6, `${names[k]}: relative error ${rel.toExponential(2)}`);
    // Elementwise too, relative to the leaf's largest entry.
    const scale = Math.max(...Array.from(numeric, Math.abs));
    assertClose(analytic, numeric, 1e-6, 1e-6 * scale, names[k]);
  }
});
