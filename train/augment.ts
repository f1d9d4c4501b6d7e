/**
 * iBOT's multi-crop augmentation (spec §6), batched on the device and written only with engine ops, so it runs
 * identically on the CPU and WebGPU backends, is a pure function of a PRNG key and traces under `jit` (every
 * random number is drawn from the key inside; nothing is read back to the host).
 *
 * Per crop, in the official order: RandomResizedCrop (≤ `attempts` tries vectorised, the first valid one
 * chosen, else the centre-crop fallback) with the resampling done by two batched matmuls with per-image
 * separable weight matrices (Pillow's filter formulation: bilinear or bicubic, antialiased when downsampling,
 * the horizontal flip folded into the column weights) → colour jitter with probability p (brightness,
 * contrast, saturation, hue in a random order per image: brightness, contrast and saturation are one blend
 * with per-image factor and target, evaluated once per slot of the order; the hue shift is evaluated once,
 * between the slots before and after each image's hue slot) → grayscale → Gaussian blur (a true separable
 * Gaussian with per-image σ, `taps` taps, reflect padding, as two batched matmuls with banded per-image
 * matrices) → solarisation → normalisation.
 *
 * Values stay in [0, 1] until the normalisation; `normalize: false` skips it (for tests and visualisation).
 *
 * @example
 * ```ts
 * import { augment, random, zeros } from "./mod.ts";
 * const images = zeros([4, 1, 28, 28]);
 * const crops = augment.multiCrop(random.key(0), images, augment.AUGMENT_PRESETS["fmnist-tiny"]);
 * console.log(crops.map((c) => c.shape)); // 2 × [4,1,28,28], then 4 × [4,1,12,12]
 * ```
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { tidy } from "../ops/engine.ts";
import * as api from "../ops/api.ts";
import { assertKey, uniform } from "../ops/random.ts";
import { fmt } from "../ops/shape.ts";
import { type AugmentConfig, type CropSpec, cropSpecs, IMAGENET_AUGMENT } from "./augment_config.ts";
import { resizedCrop, sampleCropBoxes } from "./augment_crop.ts";
import { colorJitter, grayscale, normalize, solarize } from "./augment_color.ts";
import { gaussianBlur } from "./augment_blur.ts";
import { clamp01, constant, row, rows, select } from "./augment_util.ts";

export * from "./augment_config.ts";
export * from "./augment_crop.ts";
export * from "./augment_color.ts";
export * from "./augment_blur.ts";

// Random draws: one uniform tensor [rows, crops·B]; each crop reads fixed rows of its columns.

/** Rows of the per-crop uniform draws. */
function layout(attempts: number) {
  const a = attempts;
  return {
    scale: 0, // a rows
    logRatio: a, // a rows
    top: 2 * a,
    left: 2 * a + 1,
    flip: 2 * a + 2,
    jitter: 2 * a + 3,
    factors: 2 * a + 4, // brightness, contrast, saturation, hue
    order: 2 * a + 8, // 4 rows ranked into a permutation
    gray: 2 * a + 12,
    blur: 2 * a + 13,
    sigma: 2 * a + 14,
    solarize: 2 * a + 15,
    rows: 2 * a + 16,
  };
}

// ---------------------------------------------------------------------------------------------------------
// The pipeline

/**
 * Number of uniform rows one crop of every image consumes (`[rows, B]` per crop).
 *
 * @example
 * ```ts
 * import { augment } from "./mod.ts";
 * console.log(augment.cropUniformRows(10)); // 36
 * ```
 */
export function cropUniformRows(attempts: number): number {
  return layout(attempts).rows;
}

function checkImages(images: Tensor, cfg: { channels?: number }, where: string): void {
  if (images.rank !== 4) throw new RangeError(`${where}: images must be [B, C, H, W], got ${fmt(images.shape)}`);
  if (images.dtype !== "float32" && images.dtype !== "float64") {
    throw new TypeError(`${where}: images must be float, got ${images.dtype}`);
  }
  if (cfg.channels !== undefined && images.shape[1] !== cfg.channels) {
    throw new RangeError(`${where}: config expects ${cfg.channels} channels, images are ${fmt(images.shape)}`);
  }
}

/** The fields crops must share to be augmented as one batch (all but the blur/solarise probabilities). */
function groupKey(s: CropSpec): string {
  const { kind: _k, index: _i, blurP: _b, solarizeP: _s, ...rest } = s;
  return JSON.stringify(rest);
}

/** Normalisation settings of `augmentCrops`. */
export interface NormalizeOptions {
  /** Apply the normalisation. */
  normalize: boolean;
  /** Per-channel mean. */
  mean: readonly number[];
  /** Per-channel std. */
  std: readonly number[];
}

/**
 * `specs.length` crops of every image as one batch [n·B, C, S, S] (crop-major), from the uniforms `u`
 * `[cropUniformRows(attempts), n·B]` (column `k·B + b` drives crop k of image b): crop → flip → jitter →
 * grayscale → blur → solarise → (normalise). The specs may differ only in their blur and solarisation
 * probabilities (which become per-image thresholds).
 *
 * @example
 * ```ts
 * import { augment, random, zeros } from "./mod.ts";
 * const cfg = augment.AUGMENT_PRESETS["fmnist-tiny"];
 * const specs = augment.cropSpecs(cfg).filter((s) => s.kind === "local");
 * const B = 2;
 * const u = random.uniform(random.key(0), [augment.cropUniformRows(cfg.attempts), specs.length * B]);
 * const crops = augment.augmentCrops(u, zeros([B, 1, 28, 28]), specs, cfg); // [specs.length · B, 1, S, S]
 * ```
 */
export function augmentCrops(u: Tensor, images: Tensor, specs: readonly CropSpec[], norm: NormalizeOptions): Tensor {
  const spec = specs[0];
  if (!spec || specs.some((s) => groupKey(s) !== groupKey(spec))) {
    throw new RangeError("augmentCrops: the crops of one batch must share all parameters but blurP/solarizeP");
  }
  const L = layout(spec.attempts);
  const [b, c, h, w] = images.shape;
  const n = specs.length;
  if (u.rank !== 2 || u.shape[0] !== L.rows || u.shape[1] !== n * b) {
    throw new RangeError(`augmentCrops: u must be [${L.rows}, ${n * b}], got ${fmt(u.shape)}`);
  }
  /** A probability per image: a number when all crops agree, else a [n·B] constant. */
  const perCrop = (get: (s: CropSpec) => number): number | Tensor => {
    const ps = specs.map(get);
    if (ps.every((p) => p === ps[0])) return ps[0];
    return constant(u, ps.flatMap((p) => Array(b).fill(p)), [n * b]);
  };
  const less = (i: number, p: number | Tensor) => api.less(row(u, i), p);
  const boxes = sampleCropBoxes(rows(u, 0, L.top + 2), h, w, spec.scale, spec.ratio, spec.attempts);
  const flip = spec.flipP > 0 ? less(L.flip, spec.flipP) : null;
  let x = resizedCrop(images, boxes, spec.size, { interpolation: spec.interpolation, antialias: spec.antialias, flip });
  const j = spec.jitter;
  if (j.p > 0 && (j.brightness > 0 || j.contrast > 0 || (c > 1 && (j.saturation > 0 || j.hue > 0)))) {
    const uf = rows(u, L.factors, 4);
    const lo = [1 - j.brightness, 1 - j.contrast, 1 - j.saturation, -j.hue].map((v, i) => (i < 3 ? Math.max(0, v) : v));
    const hi = [1 + j.brightness, 1 + j.contrast, 1 + j.saturation, j.hue];
    const factors = api.add(
      api.mul(uf, constant(u, lo.map((l, i) => hi[i] - l), [4, 1])),
      constant(u, lo, [4, 1]),
    );
    x = colorJitter(x, factors, rows(u, L.order, 4), less(L.jitter, j.p), j);
  }
  if (spec.grayscaleP > 0 && c > 1) x = select(less(L.gray, spec.grayscaleP), grayscale(x), x);
  const blurP = perCrop((s) => s.blurP);
  if (typeof blurP !== "number" || blurP > 0) {
    const sigma = api.add(api.mul(row(u, L.sigma), spec.sigma[1] - spec.sigma[0]), spec.sigma[0]);
    const blurred = gaussianBlur(x, sigma, spec.taps);
    // Pillow-based iBOT tests `random() <= p` for the blur (so p = 1 always blurs).
    x = blurP === 1 ? blurred : select(api.lessEqual(row(u, L.blur), blurP), blurred, x);
  }
  const solP = perCrop((s) => s.solarizeP);
  if (typeof solP !== "number" || solP > 0) x = select(less(L.solarize, solP), solarize(x, spec.threshold), x);
  x = clamp01(x); // the weighted sums above may leave 1 + ulp
  return norm.normalize ? normalize(x, norm.mean, norm.std) : x;
}

/**
 * One augmented crop of every image, [B, C, size, size], with its own draws from `key`.
 *
 * @example
 * ```ts
 * import { augment, random, zeros } from "./mod.ts";
 * const cfg = augment.AUGMENT_PRESETS["fmnist-tiny"];
 * const local = augment.augmentCrop(random.key(0), zeros([2, 1, 28, 28]), augment.cropSpecs(cfg)[2], cfg);
 * ```
 */
export function augmentCrop(key: Tensor, images: Tensor, spec: CropSpec, cfg: AugmentConfig): Tensor {
  assertKey(key, "augmentCrop");
  checkImages(images, cfg, "augmentCrop");
  return tidy(() => {
    const u = api.cast(uniform(key, [cropUniformRows(spec.attempts), images.shape[0]]), images.dtype);
    return augmentCrops(u, images, [spec], cfg);
  });
}

/**
 * iBOT's multi-crop augmentation of a batch: `images` [B, C, H, W] with values in [0, 1]; returns the global
 * crops then the local crops, each [B, C, size, size] (normalised unless `cfg.normalize` is false). A pure
 * function of `key`: every random number comes from one `uniform(key, [rows, crops·B])` draw (column
 * `k·B + b` drives crop k of image b). With a batch of keys `[B, 2]`, one per image, image b's crops draw from
 * its own key instead (`uniform(key_b, [rows, crops])`), so any subset of the images, augmented with their
 * keys, gets the crops it gets in the whole batch. Crops of one kind are augmented together as one batch. Jit
 * it with the config closed over: `jit((k, x) => multiCrop(k, x, cfg))`.
 *
 * @example
 * ```ts
 * import { augment, jit, random, zeros } from "./mod.ts";
 * const cfg = augment.AUGMENT_PRESETS["fmnist-tiny"];
 * const aug = jit((k: any, x: any) => augment.multiCrop(k, x, cfg));
 * const crops = aug(random.key(1), zeros([8, 1, 28, 28]));
 * ```
 */
export function multiCrop(key: Tensor, images: Tensor, cfg: AugmentConfig = IMAGENET_AUGMENT): Tensor[] {
  assertKey(key, "multiCrop", true);
  checkImages(images, cfg, "multiCrop");
  const specs = cropSpecs(cfg);
  const nRows = cropUniformRows(cfg.attempts);
  const b = images.shape[0];
  if (key.rank === 2 && key.shape[0] !== b) {
    throw new RangeError(`multiCrop: ${key.shape[0]} image keys for ${b} images`);
  }
  return tidy(() => {
    const n = specs.length;
    const drawn = key.rank === 2
      ? api.reshape(api.transpose(uniform(key, [nRows, n]), [1, 2, 0]), [nRows, n * b]) // [B, rows, n] → column k·B + b
      : uniform(key, [nRows, n * b]);
    const all = api.cast(drawn, images.dtype);
    const out: Tensor[] = [];
    for (const kind of ["global", "local"] as const) {
      const group = specs.filter((s) => s.kind === kind);
      if (group.length === 0) continue;
      const first = group[0].index;
      const u = api.slice(all, [0, first * b], [nRows, (first + group.length) * b]);
      const x = augmentCrops(u, images, group, cfg);
      const [, c, s] = x.shape;
      group.forEach((_, k) => out.push(api.slice(x, [k * b, 0, 0, 0], [(k + 1) * b, c, s, s])));
    }
    return out;
  });
}
