/**
 * Colour and intensity ops of the augmentation, batched with per-image parameters: brightness, contrast,
 * saturation, hue, the random-order colour jitter, grayscale, solarisation and normalisation.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import { fmt } from "../ops/shape.ts";
import type { ColorJitterConfig } from "./augment_config.ts";
import { clamp01, constant, perImage, row, select } from "./augment_util.ts";

/**
 * Luma `0.299R + 0.587G + 0.114B` as [B, 1, H, W] (the image itself when it has one channel).
 *
 * @example
 * ```ts
 * import { augment, ones } from "./mod.ts";
 * console.log(augment.luma(ones([2, 3, 8, 8])).shape); // [2, 1, 8, 8]
 * ```
 */
export function luma(x: Tensor): Tensor {
  if (x.shape[1] === 1) return x;
  if (x.shape[1] !== 3) throw new RangeError(`luma: expected 1 or 3 channels, got ${fmt(x.shape)}`);
  const [b, , h, w] = x.shape;
  const ch = (c: number) => api.slice(x, [0, c, 0, 0], [b, c + 1, h, w]);
  return api.add(api.add(api.mul(ch(0), 0.299), api.mul(ch(1), 0.587)), api.mul(ch(2), 0.114));
}

/**
 * Brightness: blend with black, `clamp(f·x)`; `factor` per image [B].
 *
 * @example
 * ```ts
 * import { augment, full, tensor } from "./mod.ts";
 * const y = augment.adjustBrightness(full([2, 3, 4, 4], 0.5), tensor([0.5, 1.5])); // image 0 at 0.25, image 1 at 0.75
 * ```
 */
export function adjustBrightness(x: Tensor, factor: Tensor): Tensor {
  return clamp01(api.mul(x, perImage(factor)));
}

/**
 * Contrast: blend with the grey level of the image's mean luma rounded to 8 bits (Pillow's
 * `ImageEnhance.Contrast`), `clamp(f·x + (1 − f)·m)`.
 *
 * @example
 * ```ts
 * import { augment, random, tensor } from "./mod.ts";
 * const y = augment.adjustContrast(random.uniform(random.key(0), [2, 3, 4, 4]), tensor([0.8, 1.2]));
 * ```
 */
export function adjustContrast(x: Tensor, factor: Tensor): Tensor {
  const m = api.mean(luma(x), [1, 2, 3], true);
  const grey = api.div(api.floor(api.add(api.mul(m, 255), 0.5)), 255);
  const f = perImage(factor);
  return clamp01(api.add(api.mul(x, f), api.mul(grey, api.sub(1, f))));
}

/**
 * Saturation: blend with the luma image, `clamp(f·x + (1 − f)·luma)` (identity on 1 channel).
 *
 * @example
 * ```ts
 * import { augment, random, tensor } from "./mod.ts";
 * const y = augment.adjustSaturation(random.uniform(random.key(0), [2, 3, 4, 4]), tensor([0, 1.5])); // 0: grey
 * ```
 */
export function adjustSaturation(x: Tensor, factor: Tensor): Tensor {
  if (x.shape[1] === 1) return x;
  const f = perImage(factor);
  return clamp01(api.add(api.mul(x, f), api.mul(luma(x), api.sub(1, f))));
}

/** `x mod m` for floats (result in [0, m)). */
function fmod(x: Tensor, m: number): Tensor {
  return api.sub(x, api.mul(api.floor(api.div(x, m)), m));
}

/**
 * Hue: shifts the HSV hue by `shift[b]` of a full turn, wrapping around (identity on 1 channel). torchvision's
 * `_rgb2hsv` hue, then HSV → RGB in the closed form `c = v − v·s·clamp(min(k, 4 − k), 0, 1)` with
 * `k = (n + 6h) mod 6`, n = 5, 3, 1 for R, G, B (equal to `_hsv2rgb`'s sector table).
 *
 * @example
 * ```ts
 * import { augment, random, tensor } from "./mod.ts";
 * const y = augment.adjustHue(random.uniform(random.key(0), [2, 3, 4, 4]), tensor([0.1, -0.1]));
 * ```
 */
export function adjustHue(x: Tensor, shift: Tensor): Tensor {
  if (x.shape[1] === 1) return x;
  if (x.shape[1] !== 3) throw new RangeError(`adjustHue: expected 1 or 3 channels, got ${fmt(x.shape)}`);
  const [b, , h, w] = x.shape;
  const ch = (c: number) => api.slice(x, [0, c, 0, 0], [b, c + 1, h, w]);
  const [r, g, bl] = [ch(0), ch(1), ch(2)];
  const v = api.maximum(api.maximum(r, g), bl);
  const chroma = api.sub(v, api.minimum(api.minimum(r, g), bl)); // v·s
  const cd = api.where(api.greater(chroma, 0), chroma, 1);
  const hue6 = api.where(
    api.equal(v, r),
    api.div(api.sub(g, bl), cd),
    api.where(api.equal(v, g), api.add(api.div(api.sub(bl, r), cd), 2), api.add(api.div(api.sub(r, g), cd), 4)),
  );
  const shifted = fmod(api.add(hue6, api.mul(perImage(shift), 6)), 6);
  const channel = (n: number) => {
    const k = fmod(api.add(shifted, n), 6);
    return api.sub(v, api.mul(chroma, clamp01(api.minimum(k, api.sub(4, k)))));
  };
  return api.concat([channel(5), channel(3), channel(1)], 1);
}

/**
 * Grayscale: the luma replicated to every channel (identity on 1 channel).
 *
 * @example
 * ```ts
 * import { augment, random } from "./mod.ts";
 * console.log(augment.grayscale(random.uniform(random.key(0), [2, 3, 4, 4])).shape); // [2, 3, 4, 4]
 * ```
 */
export function grayscale(x: Tensor): Tensor {
  if (x.shape[1] === 1) return x;
  return api.broadcastTo(luma(x), x.shape);
}

/**
 * Colour jitter on a batch: `factors` `[4, B]` (brightness, contrast, saturation factors and the hue shift),
 * `order` `[4, B]` uniforms whose per-image ranks order the enabled ops, `apply` bool [B]. Ops whose strength
 * is 0 in `cfg` (and saturation/hue on 1 channel) are left out.
 *
 * Brightness, contrast and saturation are one blend `clamp(a·y + (1 − a)·G)` with a per-image factor `a` and
 * target G (black, the mean-luma grey, the luma image), so each slot of the order costs one blend whichever op
 * an image has there. Hue is evaluated once: the blends of the slots before each image's hue slot, the hue
 * shift, then the blends of the slots after it.
 *
 * @example
 * ```ts
 * import { augment, random, tensor } from "./mod.ts";
 * const x = random.uniform(random.key(0), [2, 3, 8, 8]);
 * const factors = tensor([[1.2, 0.8], [1.1, 0.9], [1.0, 1.3], [0.05, -0.05]]); // [4, B]
 * const order = random.uniform(random.key(1), [4, 2]);
 * const apply = tensor([true, false], { dtype: "bool" }); // image 1 is left unchanged
 * const y = augment.colorJitter(x, factors, order, apply, augment.IMAGENET_AUGMENT.jitter);
 * ```
 */
export function colorJitter(
  x: Tensor,
  factors: Tensor,
  order: Tensor,
  apply: Tensor,
  cfg: ColorJitterConfig,
): Tensor {
  const nb = x.shape[0];
  const color = x.shape[1] > 1;
  const enabled = [cfg.brightness > 0, cfg.contrast > 0, cfg.saturation > 0 && color, cfg.hue > 0 && color];
  const which = [0, 1, 2, 3].filter((k) => enabled[k]);
  const n = which.length;
  if (n === 0) return x;
  // Ranks of the enabled ops' order draws, rank_j = #{k : o_k < o_j or (o_k == o_j and k < j)}: a uniformly
  // random permutation of the enabled ops.
  const o = api.gather(order, constant(order, which, [n], "int32"), 0);
  const oj = api.reshape(o, [n, 1, nb]);
  const ok = api.reshape(o, [1, n, nb]);
  const tie = constant(order, Array.from({ length: n * n }, (_, i) => (i % n < Math.floor(i / n) ? 1 : 0)), [n, n, 1]);
  const before = api.add(
    api.cast(api.less(ok, oj), order.dtype),
    api.mul(api.cast(api.equal(ok, oj), order.dtype), tie),
  );
  const rank = api.sum(before, 1); // [n, B]
  const slot = (op: number) => row(rank, which.indexOf(op));
  const fac = (op: number) => row(factors, op);
  const f = (c: Tensor) => api.cast(c, x.dtype);
  const hueSlot = enabled[3] ? slot(3) : null;
  /** The blend of the ops at slot `p`, for the images where `when(p)` holds (identity elsewhere). */
  const blendAt = (y: Tensor, p: number, when?: (hue: Tensor) => Tensor): Tensor => {
    const mask = when && hueSlot ? f(when(hueSlot)) : null;
    const at = (op: number) => {
      const m = f(api.equal(slot(op), p));
      return mask ? api.mul(m, mask) : m;
    };
    const blends = [0, 1, 2].filter((k) => enabled[k]);
    const isOp = blends.map(at);
    // a = 1 + Σ_k [op k at p] (f_k − 1): the factor of whichever blend is at slot p, 1 when none is.
    const a = isOp.slice(1).reduce(
      (acc: Tensor, m, i) => api.add(acc, api.mul(m, api.sub(fac(blends[i + 1]), 1))),
      api.add(api.mul(isOp[0], api.sub(fac(blends[0]), 1)), 1),
    );
    let target: Tensor | null = null;
    if (enabled[1] || enabled[2]) {
      const l = luma(y);
      if (enabled[1]) {
        const m = api.mean(l, [1, 2, 3], true);
        const grey = api.div(api.floor(api.add(api.mul(m, 255), 0.5)), 255); // Pillow: the rounded mean luma
        target = api.mul(grey, perImage(isOp[blends.indexOf(1)]));
      }
      if (enabled[2]) {
        const t = api.mul(l, perImage(isOp[blends.indexOf(2)]));
        target = target ? api.add(target, t) : t;
      }
    }
    const a4 = perImage(a);
    const blended = api.mul(y, a4);
    return clamp01(target ? api.add(blended, api.mul(target, api.sub(1, a4))) : blended);
  };
  let y = x;
  if (!hueSlot) {
    for (let p = 0; p < n; p++) y = blendAt(y, p);
  } else {
    for (let p = 0; p < n - 1; p++) y = blendAt(y, p, (hs) => api.less(p, hs));
    y = adjustHue(y, fac(3));
    for (let p = 1; p < n; p++) y = blendAt(y, p, (hs) => api.greater(p, hs));
  }
  return select(apply, y, x);
}

/**
 * Solarisation: `x ≥ threshold → 1 − x`.
 *
 * @example
 * ```ts
 * import { augment, tensor } from "./mod.ts";
 * console.log(await augment.solarize(tensor([0.2, 0.75])).toArray()); // [0.2, 0.25]
 * ```
 */
export function solarize(x: Tensor, threshold = 0.5): Tensor {
  return api.where(api.greaterEqual(x, threshold), api.sub(1, x), x);
}

/**
 * `(x − mean[c]) / std[c]` over the channel axis 1.
 *
 * @example
 * ```ts
 * import { augment, full } from "./mod.ts";
 * const y = augment.normalize(full([1, 3, 2, 2], 0.5), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]); // all zeros
 * ```
 */
export function normalize(x: Tensor, mean: readonly number[], std: readonly number[]): Tensor {
  const c = x.shape[1];
  const m = constant(x, mean, [1, c, 1, 1]);
  const s = constant(x, std.map((v) => 1 / v), [1, c, 1, 1]);
  return api.mul(api.sub(x, m), s);
}
