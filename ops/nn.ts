/**
 * Composite operations: built from primitives, so their gradients come from the primitives' rules.
 */
import type { Tensor } from "./tensor.ts";
import { fromHost } from "./engine.ts";
import { allocHost } from "./dtype.ts";
import * as api from "./api.ts";
import { bernoulli } from "./random.ts";
import { fmt } from "./shape.ts";

/**
 * Softmax along `axis` (max-shifted for stability).
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * nn.softmax(tensor([1, 2, 3]));
 * ```
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  const e = api.exp(api.sub(x, api.stopGradient(api.max(x, axis, true))));
  return api.div(e, api.sum(e, axis, true));
}

/**
 * Log-softmax along `axis`.
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * const logp = nn.logSoftmax(tensor([[1, 2, 3]])); // log(nn.softmax(x)), computed stably
 * ```
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const shifted = api.sub(x, api.stopGradient(api.max(x, axis, true)));
  return api.sub(shifted, api.log(api.sum(api.exp(shifted), axis, true)));
}

/**
 * Mean and biased variance over `axes`.
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * const [mu, v] = nn.moments(tensor([[1, 2, 3]]));
 * console.log(await mu.toArray(), await v.toArray()); // [2] [~0.6667]
 * ```
 */
export function moments(x: Tensor, axes: number | number[] = -1, keepdims = false): [Tensor, Tensor] {
  const mu = api.mean(x, axes, true);
  const d = api.sub(x, mu);
  const v = api.mean(api.mul(d, d), axes, keepdims);
  return [keepdims ? mu : api.mean(x, axes, false), v];
}

/**
 * Biased variance over `axes` (PyTorch `unbiased=False`).
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * console.log(await nn.variance(tensor([1, 2, 3, 4]), 0).item()); // 1.25
 * ```
 */
export function variance(x: Tensor, axes: number | number[] = -1, keepdims = false): Tensor {
  return moments(x, axes, keepdims)[1];
}

/**
 * Layer normalisation over the last axis, with optional affine weight and bias (PyTorch semantics).
 *
 * @example
 * ```ts
 * import { nn, ones, tensor, zeros } from "./mod.ts";
 * const y = nn.layerNorm(tensor([[1, 2, 3, 4]]), ones([4]), zeros([4])); // zero mean, unit variance per row
 * ```
 */
export function layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-6): Tensor {
  const mu = api.mean(x, -1, true);
  const d = api.sub(x, mu);
  const v = api.mean(api.mul(d, d), -1, true);
  let y = api.mul(d, api.rsqrt(api.add(v, eps)));
  if (weight) y = api.mul(y, weight);
  if (bias) y = api.add(y, bias);
  return y;
}

/**
 * Exact GELU: `x * (1 + erf(x / sqrt 2)) / 2`.
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * console.log(await nn.gelu(tensor([-1, 0, 1])).toArray()); // [~-0.1587, 0, ~0.8413]
 * ```
 */
export function gelu(x: Tensor): Tensor {
  return api.mul(api.mul(x, 0.5), api.add(api.erf(api.mul(x, Math.SQRT1_2)), 1));
}

/**
 * `x / max(||x||_2, eps)` along `axis` (PyTorch `F.normalize`).
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * console.log(await nn.l2Normalize(tensor([[3, 4]])).toArray()); // [[0.6, 0.8]]
 * ```
 */
export function l2Normalize(x: Tensor, axis = -1, eps = 1e-12): Tensor {
  // The inner clamp at eps^2 keeps sqrt's derivative finite, so a zero vector gets the gradient 1/eps (as in
  // PyTorch) instead of NaN; the outer one keeps the value exact if eps^2 underflows.
  const norm = api.sqrt(api.maximum(api.sum(api.mul(x, x), axis, true), eps * eps));
  return api.div(x, api.maximum(norm, eps));
}

/**
 * Cross-entropy with soft targets: `sum(-target * logSoftmax(logits))` along `axis`.
 *
 * @example
 * ```ts
 * import { nn, tensor } from "./mod.ts";
 * console.log(await nn.softCrossEntropy(tensor([[0, 1]]), tensor([[0, 0]])).toArray()); // [~0.6931] (ln 2)
 * ```
 */
export function softCrossEntropy(target: Tensor, logits: Tensor, axis = -1): Tensor {
  return api.neg(api.sum(api.mul(target, logSoftmax(logits, axis)), axis));
}

/**
 * `x @ weight^T + bias`, with PyTorch's `[out, in]` weight layout.
 *
 * @example
 * ```ts
 * import { nn, ones, zeros } from "./mod.ts";
 * const y = nn.linear(ones([2, 3]), ones([4, 3]), zeros([4])); // [2, 4], every entry 3
 * ```
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (weight.rank !== 2 || x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new RangeError(`linear: input ${fmt(x.shape)} does not fit weight ${fmt(weight.shape)} ([out, in])`);
  }
  const lead = x.shape.slice(0, -1);
  const y = api.matmul(api.reshape(x, [-1, weight.shape[1]]), weight, { transB: true });
  const out = api.reshape(y, [...lead, weight.shape[0]]);
  return bias ? api.add(out, bias) : out;
}

/**
 * Inverted dropout: zeroes with probability `rate` and rescales the rest; identity when not training.
 *
 * @example
 * ```ts
 * import { nn, ones, random } from "./mod.ts";
 * const y = nn.dropout(random.key(0), ones([8]), 0.5, true); // entries 0 or 2
 * ```
 */
export function dropout(key: Tensor, x: Tensor, rate: number, train: boolean): Tensor {
  if (!train || rate === 0) return x;
  if (!(rate >= 0 && rate < 1)) throw new RangeError(`dropout: rate ${rate} must be in [0, 1)`);
  const keep = bernoulli(key, 1 - rate, x.shape);
  return api.where(keep, api.div(x, 1 - rate), 0);
}

/**
 * Stochastic depth: drops whole samples (axis 0) with probability `rate`, rescaling the kept ones. `key` is one
 * key, or a batch of keys `[B, 2]` with one key per sample (then a sample's draw depends on its key only).
 *
 * @example
 * ```ts
 * import { nn, ones, random } from "./mod.ts";
 * const y = nn.dropPath(random.key(0), ones([4, 16, 8]), 0.1, true); // each sample zeroed or scaled by 1/0.9
 * ```
 */
export function dropPath(key: Tensor, x: Tensor, rate: number, train: boolean): Tensor {
  if (!train || rate === 0) return x;
  if (!(rate >= 0 && rate < 1)) throw new RangeError(`dropPath: rate ${rate} must be in [0, 1)`);
  const ones = x.shape.slice(1).map(() => 1);
  if (key.rank === 2 && key.shape[0] !== x.shape[0]) {
    throw new RangeError(`dropPath: ${key.shape[0]} keys for ${x.shape[0]} samples`);
  }
  const keep = key.rank === 2 ? bernoulli(key, 1 - rate, ones) : bernoulli(key, 1 - rate, [x.shape[0], ...ones]);
  return api.mul(x, api.div(api.cast(keep, x.dtype), 1 - rate));
}

/** PyTorch's cubic convolution weights with `A = -0.75` for the taps at floor(src)-1 .. floor(src)+2. */
function cubicWeights(t: number, A = -0.75): number[] {
  const near = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [far(t + 1), near(t), near(1 - t), far(2 - t)];
}

/**
 * The `[outSize, inSize]` matrix of 1-D bicubic resampling with `align_corners=False`, the source coordinate
 * `(dst + 0.5) / scale - 0.5` (no clamping of the coordinate, clamped tap indices), as PyTorch computes it
 * when given a scale factor.
 *
 * @example
 * ```ts
 * import { nn } from "./mod.ts";
 * const m = nn.bicubicMatrix(4, 8); // [8, 4] row-major: 2x upsampling weights, each row summing to 1
 * ```
 */
export function bicubicMatrix(inSize: number, outSize: number, scale = outSize / inSize): Float64Array {
  const m = new Float64Array(outSize * inSize);
  for (let d = 0; d < outSize; d++) {
    const src = (d + 0.5) / scale - 0.5;
    const f = Math.floor(src);
    const w = cubicWeights(src - f);
    for (let k = 0; k < 4; k++) {
      const i = Math.min(Math.max(f - 1 + k, 0), inSize - 1);
      m[d * inSize + i] += w[k];
    }
  }
  return m;
}

/**
 * Bicubic resize of the last two (spatial) dimensions of `x` to `[outH, outW]`, exactly as
 * `F.interpolate(mode="bicubic", align_corners=False, scale_factor=...)`. `scale` gives the factors passed to
 * PyTorch (iBOT passes `(G + 0.1) / sqrt(N)`); by default they are `out / in`. Separable: two matmuls.
 *
 * @example
 * ```ts
 * import { nn, zeros } from "./mod.ts";
 * console.log(nn.resizeBicubic(zeros([1, 3, 14, 14]), 16, 16).shape); // [1, 3, 16, 16]
 * ```
 */
export function resizeBicubic(x: Tensor, outH: number, outW: number, scale?: [number, number]): Tensor {
  if (x.rank < 2) throw new RangeError(`resizeBicubic: needs [..., H, W], got ${fmt(x.shape)}`);
  const [h, w] = x.shape.slice(-2);
  const asTensor = (m: Float64Array, rows: number, cols: number) => {
    const data = allocHost(x.dtype, m.length);
    data.set(m);
    return fromHost(x.backend, data, [rows, cols], x.dtype);
  };
  const mh = asTensor(bicubicMatrix(h, outH, scale?.[0]), outH, h);
  const mw = asTensor(bicubicMatrix(w, outW, scale?.[1]), outW, w);
  return api.matmul(api.matmul(mh, x), mw, { transB: true });
}
