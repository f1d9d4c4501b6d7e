/**
 * The counter-based PRNG: Threefry-2x32 known answers, keys (key/split/foldIn, also traced under jit), the
 * samplers' determinism, CPU == WebGPU streams, and loose distribution checks.
 */
import assert from "node:assert/strict";
import { type Backend, cpu, jit, random, type Tensor, tensor } from "../mod.ts";
import { threefry2x32 } from "../ops/rules_random.ts";
import { assertClose, gpu, readAll } from "./util.ts";

const N = 10_000;

function stats(xs: ArrayLike<number>): { mean: number; std: number; min: number; max: number } {
  let s = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    s += xs[i];
    min = Math.min(min, xs[i]);
    max = Math.max(max, xs[i]);
  }
  const mean = s / xs.length;
  let v = 0;
  for (let i = 0; i < xs.length; i++) v += (xs[i] - mean) ** 2;
  return { mean, std: Math.sqrt(v / xs.length), min, max };
}

/** Standard normal CDF via erf by Simpson integration (independent of the library). */
function phi(x: number): number {
  const n = 400;
  const h = x / Math.SQRT2 / n;
  let s = 1 + Math.exp(-((x / Math.SQRT2) ** 2));
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return 0.5 * (1 + (s * h / 3) * 2 / Math.sqrt(Math.PI));
}

/** Kolmogorov-Smirnov distance between a sample and a CDF. */
function ksDistance(xs: ArrayLike<number>, cdf: (x: number) => number): number {
  const sorted = Float64Array.from(xs).sort();
  let d = 0;
  for (let i = 0; i < sorted.length; i++) {
    const f = cdf(sorted[i]);
    d = Math.max(d, Math.abs(f - i / sorted.length), Math.abs(f - (i + 1) / sorted.length));
  }
  return d;
}

const hex = (v: readonly number[]) => v.map((x) => `0x${(x >>> 0).toString(16).padStart(8, "0")}`);

Deno.test("threefry2x32 matches the Random123 known-answer vectors (20 rounds)", () => {
  const kat: [number[], number[], number[]][] = [
    [[0, 0], [0, 0], [0x6b200159, 0x99ba4efe]],
    [[0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x1cb996fc, 0xbb002be7]],
    [[0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3], [0xc4923a9c, 0x483df7a0]],
  ];
  for (const [[k0, k1], [c0, c1], want] of kat) {
    assert.deepEqual(hex(threefry2x32(k0, k1, c0, c1)), hex(want), `key ${hex([k0, k1])} counter ${hex([c0, c1])}`);
  }
});

Deno.test("randomBits is counter-based: element i is threefry(key, (i, 0))[0] on CPU and WebGPU", async () => {
  const g = await gpu();
  const shapes = [[7], [3, 5], [1000]];
  const seeds = [0, 1, 123456789, 2 ** 40 + 3];
  const pairs: [number, number[], Tensor, Tensor][] = [];
  for (const s of seeds) {
    for (const shape of shapes) {
      pairs.push([s, shape, random.randomBits(random.key(s), shape), random.randomBits(random.key(s, g), shape)]);
    }
  }
  const [c, w] = await Promise.all([readAll(pairs.map((p) => p[2])), readAll(pairs.map((p) => p[3]))]);
  pairs.forEach(([s, shape, ct], i) => {
    assert.equal(ct.dtype, "uint32");
    assert.deepEqual(ct.shape, shape);
    const k = [Math.floor(s / 2 ** 32) >>> 0, s >>> 0];
    const want = Array.from({ length: c[i].length }, (_, j) => threefry2x32(k[0], k[1], j, 0)[0]);
    assert.deepEqual(Array.from(c[i]), want, `cpu seed ${s} ${shape}`);
    assert.deepEqual(Array.from(w[i]), want, `webgpu seed ${s} ${shape}`);
  });
});

Deno.test("key, split and foldIn", async (t) => {
  await t.step("key(seed) is uint32[2] [hi, lo]", async () => {
    const k = random.key(2 ** 33 + 5);
    assert.equal(k.dtype, "uint32");
    assert.deepEqual(k.shape, [2]);
    assert.deepEqual(Array.from(await k.data()), [2, 5]);
    assert.deepEqual(Array.from(await random.key(0).data()), [0, 0]);
    assert.throws(() => random.key(1.5), /random.key: seed must be an integer/);
  });
  await t.step("split is deterministic, gives distinct keys, and is a prefix of split with more keys", async () => {
    const k = random.key(7);
    const a = await readAll(random.split(k, 4));
    const b = await readAll(random.split(k, 4));
    assert.deepEqual(a, b);
    const flat = a.map((x) => Array.from(x).join(","));
    assert.equal(new Set([...flat, Array.from(await k.data()).join(",")]).size, 5, "four new keys, none the parent");
    const two = await readAll(random.split(k));
    assert.equal(two.length, 2);
    for (const x of two) assert.deepEqual(x.length, 2);
    assert.deepEqual(two, a.slice(0, 2));
    // Different parents give different children.
    assert.notDeepEqual(await readAll(random.split(random.key(8), 4)), a);
  });
  await t.step("foldIn is deterministic and depends on the data", async () => {
    const k = random.key(3);
    const vals = await readAll([0, 1, 2, 1000, 2 ** 31].map((d) => random.foldIn(k, d)));
    assert.equal(new Set(vals.map((v) => Array.from(v).join(","))).size, 5);
    assert.notDeepEqual(Array.from(vals[0]), Array.from(await k.data()));
    assert.deepEqual(await random.foldIn(k, 1000).data(), vals[3]);
    // A tensor step (int32, uint32 or an integral float32) folds in like the number.
    for (const dtype of ["int32", "uint32", "float32"] as const) {
      assert.deepEqual(await random.foldIn(k, tensor(1000, { dtype })).data(), vals[3], dtype);
    }
  });
  await t.step("foldIn with a traced step under jit equals the eager fold, without retracing", async () => {
    const fold = jit((k: Tensor, s: number) => random.foldIn(k, s));
    const k = random.key(11);
    const steps = [0, 1, 2, 17, 4096, 123456];
    const got = await readAll(steps.map((s) => fold(k, s)));
    const want = await readAll(steps.map((s) => random.foldIn(k, s)));
    assert.deepEqual(got, want);
    assert.equal(fold.stats().traces, 1);
  });
  await t.step("split and foldIn agree on CPU and WebGPU", async () => {
    const g = await gpu();
    const ks = [random.key(5), random.key(5, g)];
    const outs = ks.map((k) => [...random.split(k, 3), random.foldIn(k, 99), random.foldIn(random.split(k)[1], 7)]);
    const [c, w] = await Promise.all(outs.map(readAll));
    assert.deepEqual(w.map((x) => Array.from(x)), c.map((x) => Array.from(x)));
  });
});

/** Every sampler with fixed arguments, as a function of the key. */
const SAMPLERS: Record<string, { f: (k: Tensor) => Tensor; exact: boolean }> = {
  uniform: { f: (k) => random.uniform(k, [64, 64]), exact: true },
  uniformRange: { f: (k) => random.uniform(k, [4096], { min: -3, max: 5 }), exact: false },
  normal: { f: (k) => random.normal(k, [64, 64]), exact: false },
  normalScaled: { f: (k) => random.normal(k, [4096], { mean: 2, std: 0.5 }), exact: false },
  truncatedNormal: {
    f: (k) => random.truncatedNormal(k, [4096], { std: 0.02, lower: -0.04, upper: 0.04 }),
    exact: false,
  },
  bernoulli: { f: (k) => random.bernoulli(k, 0.3, [4096]), exact: true },
  randint: { f: (k) => random.randint(k, -5, 12, [4096]), exact: true },
  permutation: { f: (k) => random.permutation(k, 64), exact: true },
};

Deno.test("samplers: same key same values, other keys other values, CPU == WebGPU", async () => {
  const g = await gpu();
  const jobs: { name: string; a: Tensor; b: Tensor; other: Tensor; onGpu: Tensor }[] = [];
  for (const [name, { f }] of Object.entries(SAMPLERS)) {
    jobs.push({ name, a: f(random.key(1)), b: f(random.key(1)), other: f(random.key(2)), onGpu: f(random.key(1, g)) });
  }
  const [a, b, other, onGpu] = await Promise.all(
    (["a", "b", "other", "onGpu"] as const).map((k) => readAll(jobs.map((j) => j[k]))),
  );
  jobs.forEach(({ name }, i) => {
    assert.deepEqual(b[i], a[i], `${name}: deterministic`);
    assert.notDeepEqual(other[i], a[i], `${name}: another key differs`);
    if (SAMPLERS[name].exact) assert.deepEqual(Array.from(onGpu[i]), Array.from(a[i]), `${name}: webgpu == cpu`);
    else assertClose(onGpu[i], a[i], 1e-5, 1e-6, `${name}: webgpu ~ cpu`);
  });
});

Deno.test("samplers: distributions (10k samples)", async (t) => {
  const k = random.key(2024);
  // Tolerances are 5 standard errors (or a loose KS bound), so a correct sampler fails with negligible probability
  // and these fixed keys are deterministic anyway.
  const se = 5 / Math.sqrt(N);
  await t.step("uniform in [0, 1) and [min, max)", async () => {
    const u = random.uniform(k, [N]);
    assert.equal(u.dtype, "float32");
    const s = stats(await u.data());
    assert.ok(s.min >= 0 && s.max < 1, `range [${s.min}, ${s.max}]`);
    assert.ok(Math.abs(s.mean - 0.5) < se * Math.sqrt(1 / 12), `mean ${s.mean}`);
    assert.ok(Math.abs(s.std - Math.sqrt(1 / 12)) < 0.01, `std ${s.std}`);
    assert.ok(ksDistance(await u.data(), (x) => Math.min(Math.max(x, 0), 1)) < 2 / Math.sqrt(N));
    const r = stats(await random.uniform(k, [N], { min: -3, max: 5 }).data());
    assert.ok(r.min >= -3 && r.max < 5 && Math.abs(r.mean - 1) < se * 8 * Math.sqrt(1 / 12), `${JSON.stringify(r)}`);
    const u64 = random.uniform(k, [5], { dtype: "float64" });
    assert.equal(u64.dtype, "float64");
    assertClose(await u64.data(), Array.from(await random.uniform(k, [5]).data()), 0, 0, "float64 = float32 values");
  });
  await t.step("normal: mean, std, KS distance to the normal CDF", async () => {
    const z = await random.normal(k, [N]).data();
    const s = stats(z);
    assert.ok(Math.abs(s.mean) < se, `mean ${s.mean}`);
    assert.ok(Math.abs(s.std - 1) < 0.03, `std ${s.std}`);
    assert.ok(ksDistance(z, phi) < 2 / Math.sqrt(N), `KS ${ksDistance(z, phi)}`);
    assert.ok(z.every(Number.isFinite));
    const y = stats(await random.normal(random.key(9), [N], { mean: 2, std: 0.5 }).data());
    assert.ok(Math.abs(y.mean - 2) < 0.5 * se && Math.abs(y.std - 0.5) < 0.015, JSON.stringify(y));
  });
  await t.step("truncatedNormal stays within its bounds with the truncated moments", async () => {
    const z = await random.truncatedNormal(k, [N]).data();
    const s = stats(z);
    assert.ok(s.min >= -2 && s.max <= 2, `range [${s.min}, ${s.max}]`);
    assert.ok(Math.abs(s.mean) < se, `mean ${s.mean}`);
    // Var of N(0,1) truncated to [-2, 2]: 1 - 2*2*pdf(2) / (cdf(2) - cdf(-2)).
    const pdf2 = Math.exp(-2) / Math.sqrt(2 * Math.PI);
    const want = Math.sqrt(1 - 4 * pdf2 / (phi(2) - phi(-2)));
    assert.ok(Math.abs(s.std - want) < 0.02, `std ${s.std} vs ${want}`);
    // ViT init: std 0.02 with absolute bounds +-0.04; and an asymmetric window.
    const v = stats(await random.truncatedNormal(k, [N], { std: 0.02, lower: -0.04, upper: 0.04 }).data());
    assert.ok(v.min >= -0.04 && v.max <= 0.04 && Math.abs(v.std / 0.02 - want) < 0.02, JSON.stringify(v));
    const w = stats(await random.truncatedNormal(k, [N], { mean: 1, std: 1, lower: 0.5, upper: 3 }).data());
    assert.ok(w.min >= 0.5 && w.max <= 3 && w.mean > 1, JSON.stringify(w));
    assert.throws(() => random.truncatedNormal(k, [2], { lower: 1, upper: 1 }), /truncatedNormal: lower 1/);
  });
  await t.step("bernoulli frequency", async () => {
    for (const p of [0.1, 0.5, 0.9]) {
      const b = random.bernoulli(k, p, [N]);
      assert.equal(b.dtype, "bool");
      const m = stats(await b.data()).mean;
      assert.ok(Math.abs(m - p) < se * Math.sqrt(p * (1 - p)), `p ${p}: ${m}`);
    }
    const none = stats(await random.bernoulli(k, 0, [N]).data());
    const all = stats(await random.bernoulli(k, 1, [N]).data());
    assert.deepEqual([none.max, all.min], [0, 1]);
  });
  await t.step("randint in [low, high), every value hit, roughly uniform", async () => {
    const [low, high] = [-5, 12];
    const r = random.randint(k, low, high, [N]);
    assert.equal(r.dtype, "int32");
    const xs = await r.data();
    const counts = new Map<number, number>();
    for (const x of xs) {
      assert.ok(Number.isInteger(x) && x >= low && x < high, `${x}`);
      counts.set(x, (counts.get(x) ?? 0) + 1);
    }
    assert.equal(counts.size, high - low);
    const e = N / (high - low);
    const chi2 = [...counts.values()].reduce((a, c) => a + (c - e) ** 2 / e, 0);
    assert.ok(chi2 < 50, `chi^2 ${chi2} with 16 degrees of freedom`);
    assert.deepEqual(Array.from(await random.randint(k, 3, 4, [10]).data()), new Array(10).fill(3));
    assert.throws(() => random.randint(k, 2, 2, [1]), /randint: need integers low < high/);
  });
  await t.step("permutation is a permutation of 0..n-1", async () => {
    for (const n of [1, 2, 10, 257]) {
      const p = random.permutation(random.key(n), n);
      assert.equal(p.dtype, "int32");
      const xs = Array.from(await p.data());
      assert.deepEqual([...xs].sort((a, b) => a - b), [...Array(n).keys()], `n = ${n}`);
      if (n >= 10) assert.notDeepEqual(xs, [...Array(n).keys()], "not the identity");
    }
    // Position of element 0 over many keys is roughly uniform.
    const counts = new Array(4).fill(0);
    const perms = await readAll(Array.from({ length: 400 }, (_, i) => random.permutation(random.key(i), 4)));
    for (const p of perms) counts[Array.from(p).indexOf(0)]++;
    for (const c of counts) assert.ok(Math.abs(c - 100) < 5 * Math.sqrt(400 * 0.25 * 0.75), `${counts}`);
    assert.throws(() => random.permutation(k, 0), /permutation: n must be a positive integer/);
  });
});

Deno.test("a key on one backend samples on that backend", async () => {
  const g: Backend = await gpu();
  for (const b of [cpu, g]) {
    const x = random.normal(random.key(0, b), [3]);
    assert.equal(x.backend, b);
  }
});
