/**
 * Separable Gaussian blur with a per-image σ and reflect padding, as two batched matmuls.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import { constant } from "./augment_util.ts";

/**
 * PyTorch `reflect` padding index (no edge repeat) of `i` on an axis of length `n`.
 *
 * @example
 * ```ts
 * import { augment } from "./mod.ts";
 * console.log(augment.reflectIndex(-1, 5), augment.reflectIndex(5, 5)); // 1 3
 * ```
 */
export function reflectIndex(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  const m = ((i % period) + period) % period;
  return m < n ? m : period - m;
}

/**
 * Normalised Gaussian taps `exp(−k²/2σ²)`, `|k| ≤ (taps−1)/2`, per image: `[B, taps]`.
 *
 * @example
 * ```ts
 * import { augment, tensor } from "./mod.ts";
 * console.log(augment.gaussianTaps(tensor([1, 2]), 5).shape); // [2, 5], each row summing to 1
 * ```
 */
export function gaussianTaps(sigma: Tensor, taps: number): Tensor {
  const r = (taps - 1) / 2;
  const k = constant(sigma, Array.from({ length: taps }, (_, i) => (i - r) ** 2), [1, taps]);
  const s = api.reshape(sigma, [sigma.shape[0], 1]);
  const e = api.exp(api.div(api.neg(k), api.mul(api.mul(s, s), 2)));
  return api.div(e, api.sum(e, 1, true));
}

/**
 * Per-image blur matrices `[B, n, n]` of an axis of length n: row o holds the taps at the reflect-padded
 * neighbours, `M[b, o, reflect(o + k − r)] += w[b, k]` (the one-hot gathers of the reflected indices are a
 * constant `[taps, n·n]`, so building M is one small matmul).
 *
 * @example
 * ```ts
 * import { augment, tensor } from "./mod.ts";
 * console.log(augment.blurMatrix(tensor([1]), 5, 8).shape); // [1, 8, 8]
 * ```
 */
export function blurMatrix(sigma: Tensor, taps: number, n: number): Tensor {
  const r = (taps - 1) / 2;
  const onehot = new Float32Array(taps * n * n);
  for (let k = 0; k < taps; k++) for (let o = 0; o < n; o++) onehot[(k * n + o) * n + reflectIndex(o + k - r, n)] += 1;
  const wts = gaussianTaps(sigma, taps);
  return api.reshape(api.matmul(wts, constant(sigma, onehot, [taps, n * n])), [sigma.shape[0], n, n]);
}

/**
 * Separable Gaussian blur with per-image σ [B], `taps` taps and reflect padding: `M_y · x · M_xᵀ` with the
 * banded per-image matrices of `blurMatrix` (two batched matmuls; several times faster here than gathering the
 * reflected neighbours and reducing over the taps).
 *
 * @example
 * ```ts
 * import { augment, random, tensor } from "./mod.ts";
 * const x = random.uniform(random.key(0), [2, 3, 16, 16]);
 * const y = augment.gaussianBlur(x, tensor([0.5, 2]), 9); // a per-image sigma
 * ```
 */
export function gaussianBlur(x: Tensor, sigma: Tensor, taps: number): Tensor {
  if (!(Number.isInteger(taps) && taps >= 1 && taps % 2 === 1)) {
    throw new RangeError(`gaussianBlur: taps must be a positive odd integer, got ${taps}`);
  }
  const [b, , h, w] = x.shape;
  const my = api.reshape(blurMatrix(sigma, taps, h), [b, 1, h, h]);
  const mx = h === w ? my : api.reshape(blurMatrix(sigma, taps, w), [b, 1, w, w]);
  return api.matmul(api.matmul(my, x), mx, { transB: true });
}
