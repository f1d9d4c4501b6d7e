/**
 * Counter-based PRNG keys (Threefry-2x32), JAX style: a key is a uint32[2] tensor; `split` and `foldIn` derive
 * new keys; every sampler is a pure function of its key. CPU and WebGPU produce the same bits.
 */
import type { Tensor } from "./tensor.ts";
import { bind } from "./engine.ts";
import type { Backend } from "./backend.ts";
import { defaultBackend } from "./backends.ts";
import { tensor } from "./create.ts";
import { seedWords } from "./host_random.ts";
import type { DType } from "./dtype.ts";
import * as api from "./api.ts";
import { checkShape, fmt } from "./shape.ts";

/**
 * Raw uint32 bits of `shape` from `key`. A batch of keys `[n, 2]` gives `[n, ...shape]`: row j holds the bits
 * key j alone would give (so a subset of the keys reproduces its rows).
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const bits = random.randomBits(random.key(0), [4]);
 * console.log(bits.dtype, bits.shape); // uint32 [4]
 * ```
 */
export function randomBits(key: Tensor, shape: readonly number[]): Tensor {
  checkShape(shape, "randomBits");
  const full = key.rank === 2 ? [key.shape[0], ...shape] : [...shape];
  return bind("randomBits", [key], { shape: full });
}

/**
 * A key from an integer seed.
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const [k1, k2] = random.split(random.key(0));
 * const x = random.normal(k1, [2, 3]);
 * ```
 */
export function key(seed: number, backend?: Backend): Tensor {
  if (!Number.isInteger(seed)) throw new TypeError(`random.key: seed must be an integer, got ${seed}`);
  return tensor(seedWords(seed), { dtype: "uint32", backend: backend ?? defaultBackend() });
}

/**
 * `n` independent keys derived from `key` (from a batch of keys `[m, 2]`: `n` batches, split key by key).
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const [kInit, kData, kDrop] = random.split(random.key(0), 3);
 * ```
 */
export function split(key: Tensor, n = 2): Tensor[] {
  const bits = randomBits(key, [n, 2]);
  if (key.rank === 2) {
    const m = key.shape[0];
    return Array.from({ length: n }, (_, i) => api.reshape(api.slice(bits, [0, i, 0], [m, i + 1, 2]), [m, 2]));
  }
  return Array.from({ length: n }, (_, i) => api.reshape(api.slice(bits, [i, 0], [i + 1, 2]), [2]));
}

/**
 * A key derived from `key` and an integer (a number, or a traced scalar such as the step counter). With a
 * vector of integers `[n]` (also for n = 1), or a batch of keys `[n, 2]`, it gives a batch of keys `[n, 2]`,
 * row j equal to `foldIn` of key j and integer j: e.g. one key per image, `foldIn(stepKey, imageIndices)`.
 *
 * @example
 * ```ts
 * import { random, tensor } from "./mod.ts";
 * const stepKey = random.foldIn(random.key(0), 7); // e.g. a key per iteration
 * const imageKeys = random.foldIn(stepKey, tensor([0, 1, 2], { dtype: "int32" })); // uint32 [3, 2]
 * ```
 */
export function foldIn(key: Tensor, data: number | Tensor): Tensor {
  let d = typeof data === "number"
    ? api.scalarLike(data >>> 0, key)
    : api.cast(data.dtype === "float32" ? api.floor(data) : data, "uint32");
  if (d.size === 1 && d.rank !== 1) d = api.reshape(d, []); // a vector, even of one, is one integer per key
  if (d.rank > 1 || (d.rank === 1 && key.rank === 2 && key.shape[0] !== d.shape[0])) {
    throw new RangeError(
      `foldIn: data must be a scalar or one integer per key, got ${fmt(d.shape)} for ${fmt(key.shape)}`,
    );
  }
  const rows = key.rank === 2 ? key.shape[0] : d.rank === 1 ? d.shape[0] : 0;
  if (rows === 0) {
    const offset = api.concat([api.scalarLike(0, key).reshape([1]), d.reshape([1])]);
    return randomBits(api.add(key, offset), [2]);
  }
  const column = api.broadcastTo(api.reshape(d, [d.rank === 0 ? 1 : rows, 1]), [rows, 1]);
  const offset = api.concat([api.zerosLike(column), column], 1); // [rows, 2]: (0, data_j)
  return randomBits(api.add(api.broadcastTo(key, [rows, 2]), offset), [2]);
}

/** Options of the float samplers. */
export interface SampleOptions {
  /** Float dtype of the samples (float32 by default). */
  dtype?: DType;
}

/**
 * Uniform floats in `[min, max)` (24 random bits per value).
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const u = random.uniform(random.key(0), [2, 2], { min: -1, max: 1 }); // float32 in [-1, 1)
 * ```
 */
export function uniform(
  key: Tensor,
  shape: readonly number[],
  opts: SampleOptions & { min?: number; max?: number } = {},
): Tensor {
  const dtype = opts.dtype ?? "float32";
  const bits = randomBits(key, shape);
  const u = api.mul(api.cast(api.div(bits, 256), dtype), 2 ** -24);
  const lo = opts.min ?? 0;
  const hi = opts.max ?? 1;
  return lo === 0 && hi === 1 ? u : api.add(api.mul(u, hi - lo), lo);
}

/**
 * Inverse error function (Giles' single-precision approximation), a composite of differentiable ops.
 *
 * @example
 * ```ts
 * import { random, tensor } from "./mod.ts";
 * console.log(await random.erfinv(tensor([0, 0.5])).toArray()); // [0, ~0.4769]
 * ```
 */
export function erfinv(x: Tensor): Tensor {
  const w = api.neg(api.log(api.mul(api.sub(1, x), api.add(1, x))));
  const horner = (t: Tensor, cs: number[]) =>
    cs.slice(2).reduce((p: Tensor, c) => api.add(api.mul(p, t), c), api.add(api.mul(t, cs[0]), cs[1]));
  const small = horner(api.sub(w, 2.5), [
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
  ]);
  const large = horner(api.sub(api.sqrt(api.maximum(w, 5)), 3), [
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
  ]);
  return api.mul(api.where(api.less(w, 5), small, large), x);
}

/**
 * Standard normal samples (inverse-CDF method), scaled by `std` and shifted by `mean`.
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const x = random.normal(random.key(0), [3], { mean: 1, std: 0.1 });
 * ```
 */
export function normal(
  key: Tensor,
  shape: readonly number[],
  opts: SampleOptions & { mean?: number; std?: number } = {},
): Tensor {
  // u in (-1, 1): offset by half a step so that erfinv never sees +-1.
  const u = api.sub(api.mul(api.add(uniform(key, shape, opts), 2 ** -25), 2), 1);
  const z = api.mul(erfinv(u), Math.SQRT2);
  const std = opts.std ?? 1;
  const mean = opts.mean ?? 0;
  return std === 1 && mean === 0 ? z : api.add(api.mul(z, std), mean);
}

function normCdf(x: number): number {
  // Via erf of the float64 oracle (imported lazily to keep this module light).
  return 0.5 * (1 + erfApprox(x / Math.SQRT2));
}

function erfApprox(x: number): number {
  // Abramowitz-Stegun 7.1.26 is ample for truncation bounds.
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t *
      Math.exp(-x * x);
  return x < 0 ? -y : y;
}

/**
 * Normal samples truncated to `[lower, upper]` (absolute bounds, as PyTorch's `trunc_normal_`), by the inverse
 * CDF, then clamped.
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const w = random.truncatedNormal(random.key(0), [64, 64], { std: 0.02, lower: -2, upper: 2 });
 * ```
 */
export function truncatedNormal(
  key: Tensor,
  shape: readonly number[],
  opts: SampleOptions & { mean?: number; std?: number; lower?: number; upper?: number } = {},
): Tensor {
  const mean = opts.mean ?? 0;
  const std = opts.std ?? 1;
  const lower = opts.lower ?? -2;
  const upper = opts.upper ?? 2;
  if (!(lower < upper)) throw new RangeError(`truncatedNormal: lower ${lower} must be below upper ${upper}`);
  const l = normCdf((lower - mean) / std);
  const h = normCdf((upper - mean) / std);
  const u = uniform(key, shape, { ...opts, min: 2 * l - 1, max: 2 * h - 1 });
  const clampedU = api.minimum(api.maximum(u, -1 + 1e-7), 1 - 1e-7);
  const x = api.add(api.mul(erfinv(clampedU), std * Math.SQRT2), mean);
  return api.minimum(api.maximum(x, lower), upper);
}

/**
 * Booleans that are true with probability `p`.
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const keep = random.bernoulli(random.key(0), 0.3, [10]); // bool [10], each true with probability 0.3
 * ```
 */
export function bernoulli(key: Tensor, p: number | Tensor, shape: readonly number[]): Tensor {
  return api.less(uniform(key, shape), p);
}

/**
 * Integers uniform in `[low, high)` (int32).
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * const labels = random.randint(random.key(0), 0, 10, [5]); // int32 in [0, 10)
 * ```
 */
export function randint(key: Tensor, low: number, high: number, shape: readonly number[]): Tensor {
  if (!(Number.isInteger(low) && Number.isInteger(high) && low < high)) {
    throw new RangeError(`randint: need integers low < high, got ${low}, ${high}`);
  }
  const u = uniform(key, shape, { dtype: "float32" });
  const v = api.floor(api.add(api.mul(u, high - low), low));
  return api.minimum(api.cast(v, "int32"), high - 1);
}

/**
 * A random permutation of `0..n-1` (int32), by ranking random bits (O(n^2) work; meant for n up to a few
 * thousand, e.g. a batch).
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * console.log(await random.permutation(random.key(0), 5).toArray()); // a shuffle of [0, 1, 2, 3, 4]
 * ```
 */
export function permutation(key: Tensor, n: number): Tensor {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`permutation: n must be a positive integer, got ${n}`);
  if (n > 8192) throw new RangeError(`permutation: n = ${n} is too large for the O(n^2) ranking (max 8192)`);
  assertKey(key, "permutation");
  const bits = randomBits(key, [n]);
  const idx = tensor(Array.from({ length: n }, (_, i) => i), { dtype: "int32", backend: key.backend });
  const bi = api.reshape(bits, [n, 1]);
  const bj = api.reshape(bits, [1, n]);
  const ii = api.reshape(idx, [n, 1]);
  const jj = api.reshape(idx, [1, n]);
  // rank_i = #{j : b_j < b_i or (b_j == b_i and j < i)}
  const int = (b: Tensor) => api.cast(b, "int32");
  const before = api.add(int(api.less(bj, bi)), api.mul(int(api.equal(bj, bi)), int(api.less(jj, ii))));
  const rank = api.sum(before, 1);
  return api.scatterAdd(idx, rank, 0, n);
}

/**
 * Checks that a tensor looks like a key (uint32[2]; with `batched`, also a batch of keys uint32[n, 2]).
 *
 * @example
 * ```ts
 * import { random } from "./mod.ts";
 * random.assertKey(random.key(0), "myFn"); // passes; anything but a uint32[2] throws a TypeError naming myFn
 * ```
 */
export function assertKey(k: Tensor, where: string, batched = false): void {
  const ok = k.dtype === "uint32" && k.shape[k.rank - 1] === 2 && (k.rank === 1 || (batched && k.rank === 2));
  if (!ok) {
    const want = batched ? "uint32[2] or a batch uint32[n,2]" : "uint32[2]";
    throw new TypeError(`${where}: expected a key (${want}), got ${k.dtype}${fmt(k.shape)}`);
  }
}
