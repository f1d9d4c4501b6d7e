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
import { tensor } from "../ops/create.ts";
import { assertKey, uniform } from "../ops/random.ts";
import { fmt } from "../ops/shape.ts";

/** Resampling filter of the resized crop. */
export type Interpolation = "bilinear" | "bicubic";

/** Colour jitter (torchvision `ColorJitter` wrapped in `RandomApply(p)`). */
export interface ColorJitterConfig {
  /** Probability of applying the jitter to an image. */
  p: number;
  /** Brightness factor range `[max(0, 1 − b), 1 + b]` (0 disables). */
  brightness: number;
  /** Contrast factor range `[max(0, 1 − c), 1 + c]` (0 disables). */
  contrast: number;
  /** Saturation factor range `[max(0, 1 − s), 1 + s]` (0 disables; a no-op on 1-channel images). */
  saturation: number;
  /** Hue shift range `[−h, h]` of a full turn, h ≤ 0.5 (0 disables; a no-op on 1-channel images). */
  hue: number;
}

/** One group of crops (global or local). */
export interface CropGroupConfig {
  /** How many crops of this kind per image. */
  number: number;
  /** Output side in pixels (crops are square). */
  size: number;
  /** Range of the crop's area as a fraction of the image area. */
  scale: readonly [number, number];
}

/** Gaussian blur (Pillow `GaussianBlur(radius=σ)`, here a true Gaussian). */
export interface BlurConfig {
  /** Probability for the first global crop (official 1.0). */
  pGlobal1: number;
  /** Probability for the other global crops (official 0.1). */
  pGlobalOther: number;
  /** Probability for the local crops (official 0.5). */
  pLocal: number;
  /** σ range in output pixels, drawn uniformly per image. */
  sigma: readonly [number, number];
  /** Kernel taps (odd); the kernel is `exp(−k²/2σ²)` for `|k| ≤ (taps−1)/2`, normalised. */
  taps: number;
}

/** Solarisation: values `≥ threshold` become `1 − x`. */
export interface SolarizeConfig {
  /** Probability for the first global crop (official 0). */
  pGlobal1: number;
  /** Probability for the other global crops (official 0.2). */
  pGlobalOther: number;
  /** Probability for the local crops (official 0). */
  pLocal: number;
  /** Threshold on [0, 1] values (0.5; Pillow's 8-bit threshold 128 is 0.502). */
  threshold: number;
}

/** Every parameter of the multi-crop augmentation. */
export interface AugmentConfig {
  /** Expected image channels (1 or 3); saturation, hue and grayscale act on 3 channels only. */
  channels: number;
  /** Per-channel normalisation mean. */
  mean: readonly number[];
  /** Per-channel normalisation std. */
  std: readonly number[];
  /** Apply `(x − mean) / std` at the end (false keeps [0, 1] values, for tests and visualisation). */
  normalize: boolean;
  /** Global crops (come first in the output). */
  globalCrops: CropGroupConfig;
  /** Local crops (follow the global ones). */
  localCrops: CropGroupConfig;
  /** Aspect-ratio range of RandomResizedCrop (sampled log-uniformly). */
  ratio: readonly [number, number];
  /** RandomResizedCrop attempts before the centre-crop fallback (torchvision: 10). */
  attempts: number;
  /** Resampling filter. */
  interpolation: Interpolation;
  /** Widen the filter when downsampling (Pillow's resize does; PyTorch's `antialias=False` does not). */
  antialias: boolean;
  /** Horizontal flip probability. */
  flipP: number;
  /** Colour jitter. */
  jitter: ColorJitterConfig;
  /** Random grayscale probability (luma `0.299R + 0.587G + 0.114B` replicated). */
  grayscaleP: number;
  /** Gaussian blur. */
  blur: BlurConfig;
  /** Solarisation. */
  solarize: SolarizeConfig;
}

/** The resolved parameters of one crop (what `augmentCrop` applies); shared settings come from the config. */
export interface CropSpec
  extends
    Pick<AugmentConfig, "ratio" | "attempts" | "interpolation" | "antialias" | "flipP" | "jitter" | "grayscaleP"> {
  /** `global` or `local`. */
  kind: "global" | "local";
  /** Position in the output list. */
  index: number;
  /** Output side in pixels. */
  size: number;
  /** Area fraction range. */
  scale: readonly [number, number];
  /** Blur probability of this crop. */
  blurP: number;
  /** Blur σ range. */
  sigma: readonly [number, number];
  /** Blur taps. */
  taps: number;
  /** Solarisation probability of this crop. */
  solarizeP: number;
  /** Solarisation threshold. */
  threshold: number;
}

const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

/**
 * Defaults per spec §6 with the released ViT-S/16 recipe: 2 global 224-px crops of scale (0.25, 1), 10 local
 * 96-px crops of scale (0.05, 0.25), bicubic, jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, blur p
 * 1.0/0.1/0.5 with σ ∈ U(0.1, 2) (13 taps, ±3σ at σ = 2), solarisation p 0.2 on the second global crop,
 * ImageNet mean/std.
 */
export const IMAGENET_AUGMENT: AugmentConfig = {
  channels: 3,
  mean: IMAGENET_MEAN,
  std: IMAGENET_STD,
  normalize: true,
  globalCrops: { number: 2, size: 224, scale: [0.25, 1] },
  localCrops: { number: 10, size: 96, scale: [0.05, 0.25] },
  ratio: [3 / 4, 4 / 3],
  attempts: 10,
  interpolation: "bicubic",
  antialias: true,
  flipP: 0.5,
  jitter: { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 },
  grayscaleP: 0.2,
  blur: { pGlobal1: 1, pGlobalOther: 0.1, pLocal: 0.5, sigma: [0.1, 2], taps: 13 },
  solarize: { pGlobal1: 0, pGlobalOther: 0.2, pLocal: 0, threshold: 0.5 },
};

/**
 * Presets:
 * - `imagenet`: `IMAGENET_AUGMENT`.
 * - `fmnist-tiny`: 28-px 1-channel images normalised with mean 0.2860, std 0.3530; 2 global 28-px crops
 *   (scale 0.25–1, ratio 3/4–4/3, bilinear) and 4 local 12-px crops (scale 0.05–0.25); flip p 0.5;
 *   brightness/contrast jitter 0.4/0.4 with p 0.8 in random order; Gaussian blur σ ∈ U(0.1, 1.0), 5 taps,
 *   reflect padding, p 1.0 / 0.1 / 0.5 for global 1 / global 2 / local; solarisation (x ≥ 0.5 → 1 − x)
 *   with p 0.2 on global 2.
 * - `embedded-small`: the embedded 32-px RGB motif-texture dataset (`train/data/embedded.ts`): 2 global 32-px
 *   crops (0.25–1), 6 local 16-px crops (0.05–0.25), bilinear, full colour jitter 0.4/0.4/0.2/0.1 p 0.8 and
 *   grayscale 0.2 (colour is a nuisance there), light blur (σ ∈ U(0.1, 1), 5 taps, as §11 advises for small
 *   images), solarisation p 0.2 on global 2, the dataset's mean/std.
 */
export const AUGMENT_PRESETS: Readonly<Record<"imagenet" | "fmnist-tiny" | "embedded-small", AugmentConfig>> = {
  imagenet: IMAGENET_AUGMENT,
  "fmnist-tiny": {
    channels: 1,
    mean: [0.2860],
    std: [0.3530],
    normalize: true,
    globalCrops: { number: 2, size: 28, scale: [0.25, 1] },
    localCrops: { number: 4, size: 12, scale: [0.05, 0.25] },
    ratio: [3 / 4, 4 / 3],
    attempts: 10,
    interpolation: "bilinear",
    antialias: true,
    flipP: 0.5,
    jitter: { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0, hue: 0 },
    grayscaleP: 0,
    blur: { pGlobal1: 1, pGlobalOther: 0.1, pLocal: 0.5, sigma: [0.1, 1.0], taps: 5 },
    solarize: { pGlobal1: 0, pGlobalOther: 0.2, pLocal: 0, threshold: 0.5 },
  },
  "embedded-small": {
    channels: 3,
    mean: [0.709, 0.693, 0.664], // the embedded training split (seed 0)
    std: [0.327, 0.307, 0.203],
    normalize: true,
    globalCrops: { number: 2, size: 32, scale: [0.25, 1] },
    localCrops: { number: 6, size: 16, scale: [0.05, 0.25] },
    ratio: [3 / 4, 4 / 3],
    attempts: 10,
    interpolation: "bilinear",
    antialias: true,
    flipP: 0.5,
    // Geometric views only. The embedded images have near-fixed colours, so jitter, grayscale, blur and
    // solarisation add no nuisance to become invariant to; they only make two views of one image differ more
    // (to a random ViT) than two images do, and short runs then drifted to a uniform teacher. k-NN@20 gains over
    // the initialisation in the CI-sized 40-step run (tests/e2e_test.ts): +3.4, +1.8 with them (seeds 0, 1),
    // +4.0, +4.7, +5.2 without (seeds 0-2).
    jitter: { p: 0, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 },
    grayscaleP: 0,
    blur: { pGlobal1: 0, pGlobalOther: 0, pLocal: 0, sigma: [0.1, 1.0], taps: 5 },
    solarize: { pGlobal1: 0, pGlobalOther: 0, pLocal: 0, threshold: 0.5 },
  },
};

/** Overrides of an `AugmentConfig` (nested objects merge one level deep). */
export type AugmentOverrides = {
  [K in keyof AugmentConfig]?: AugmentConfig[K] extends readonly unknown[] ? AugmentConfig[K]
    : AugmentConfig[K] extends object ? Partial<AugmentConfig[K]>
    : AugmentConfig[K];
};

/**
 * A validated config: a preset (by name or value) with overrides merged in.
 *
 * @example
 * ```ts
 * import { augment } from "./mod.ts";
 * const cfg = augment.augmentConfig("fmnist-tiny", { normalize: false, localCrops: { number: 6 } });
 * ```
 */
export function augmentConfig(
  base: keyof typeof AUGMENT_PRESETS | AugmentConfig = "imagenet",
  overrides: AugmentOverrides = {},
): AugmentConfig {
  const b = typeof base === "string" ? AUGMENT_PRESETS[base] : base;
  if (!b) throw new RangeError(`augmentConfig: unknown preset ${base} (${Object.keys(AUGMENT_PRESETS).join(", ")})`);
  const out: Record<string, unknown> = { ...b };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    const cur = (b as unknown as Record<string, unknown>)[k];
    out[k] = v !== null && typeof v === "object" && !Array.isArray(v) && cur !== null && typeof cur === "object"
      ? { ...cur, ...v }
      : v;
  }
  validateAugmentConfig(out as unknown as AugmentConfig);
  return out as unknown as AugmentConfig;
}

/**
 * Throws a `RangeError` naming the first bad parameter.
 *
 * @example
 * ```ts ignore
 * import { augment } from "./mod.ts";
 * augment.validateAugmentConfig(augment.IMAGENET_AUGMENT); // passes
 * augment.validateAugmentConfig({ ...augment.IMAGENET_AUGMENT, flipP: 2 }); // throws a RangeError naming flipP
 * ```
 */
export function validateAugmentConfig(cfg: AugmentConfig): void {
  const fail = (what: string) => {
    throw new RangeError(`augment config: ${what}`);
  };
  const prob = (name: string, p: number) => (p >= 0 && p <= 1) || fail(`${name} = ${p} is not a probability`);
  const range = (name: string, r: readonly [number, number], lo: number) =>
    (r.length === 2 && r[0] > lo && r[0] <= r[1]) || fail(`${name} = [${r}] must satisfy ${lo} < lo ≤ hi`);
  if (!(cfg.channels >= 1 && Number.isInteger(cfg.channels))) fail(`channels = ${cfg.channels}`);
  if (cfg.mean.length !== cfg.channels || cfg.std.length !== cfg.channels) {
    fail(`mean/std need ${cfg.channels} values, got ${cfg.mean.length}/${cfg.std.length}`);
  }
  if (cfg.std.some((s) => !(s > 0))) fail(`std must be positive, got [${cfg.std}]`);
  for (const [name, g] of [["globalCrops", cfg.globalCrops], ["localCrops", cfg.localCrops]] as const) {
    if (!(Number.isInteger(g.number) && g.number >= 0)) fail(`${name}.number = ${g.number}`);
    if (!(Number.isInteger(g.size) && g.size >= 1)) fail(`${name}.size = ${g.size}`);
    range(`${name}.scale`, g.scale, 0);
  }
  if (cfg.globalCrops.number < 1) fail("at least one global crop is needed");
  range("ratio", cfg.ratio, 0);
  if (!(Number.isInteger(cfg.attempts) && cfg.attempts >= 1)) fail(`attempts = ${cfg.attempts}`);
  if (cfg.interpolation !== "bilinear" && cfg.interpolation !== "bicubic") fail(`interpolation ${cfg.interpolation}`);
  prob("flipP", cfg.flipP);
  prob("jitter.p", cfg.jitter.p);
  for (const k of ["brightness", "contrast", "saturation"] as const) {
    if (!(cfg.jitter[k] >= 0)) fail(`jitter.${k} = ${cfg.jitter[k]} must be ≥ 0`);
  }
  if (!(cfg.jitter.hue >= 0 && cfg.jitter.hue <= 0.5)) fail(`jitter.hue = ${cfg.jitter.hue} must be in [0, 0.5]`);
  prob("grayscaleP", cfg.grayscaleP);
  prob("blur.pGlobal1", cfg.blur.pGlobal1);
  prob("blur.pGlobalOther", cfg.blur.pGlobalOther);
  prob("blur.pLocal", cfg.blur.pLocal);
  range("blur.sigma", cfg.blur.sigma, 0);
  if (!(Number.isInteger(cfg.blur.taps) && cfg.blur.taps >= 1 && cfg.blur.taps % 2 === 1)) {
    fail(`blur.taps = ${cfg.blur.taps} must be a positive odd integer`);
  }
  prob("solarize.pGlobal1", cfg.solarize.pGlobal1);
  prob("solarize.pGlobalOther", cfg.solarize.pGlobalOther);
  prob("solarize.pLocal", cfg.solarize.pLocal);
}

/**
 * The per-crop parameters in output order: global crop 1, the other global crops, then the local crops.
 *
 * @example
 * ```ts
 * import { augment } from "./mod.ts";
 * const specs = augment.cropSpecs(augment.AUGMENT_PRESETS.imagenet);
 * console.log(specs.length, specs[0].kind, specs[2].kind); // 12 global local (2 global crops, then 10 local)
 * ```
 */
export function cropSpecs(cfg: AugmentConfig): CropSpec[] {
  const specs: CropSpec[] = [];
  const common = {
    ratio: cfg.ratio,
    attempts: cfg.attempts,
    interpolation: cfg.interpolation,
    antialias: cfg.antialias,
    flipP: cfg.flipP,
    jitter: cfg.jitter,
    grayscaleP: cfg.grayscaleP,
    sigma: cfg.blur.sigma,
    taps: cfg.blur.taps,
    threshold: cfg.solarize.threshold,
  };
  for (let i = 0; i < cfg.globalCrops.number; i++) {
    specs.push({
      ...common,
      kind: "global",
      index: specs.length,
      size: cfg.globalCrops.size,
      scale: cfg.globalCrops.scale,
      blurP: i === 0 ? cfg.blur.pGlobal1 : cfg.blur.pGlobalOther,
      solarizeP: i === 0 ? cfg.solarize.pGlobal1 : cfg.solarize.pGlobalOther,
    });
  }
  for (let i = 0; i < cfg.localCrops.number; i++) {
    specs.push({
      ...common,
      kind: "local",
      index: specs.length,
      size: cfg.localCrops.size,
      scale: cfg.localCrops.scale,
      blurP: cfg.blur.pLocal,
      solarizeP: cfg.solarize.pLocal,
    });
  }
  return specs;
}

// ---------------------------------------------------------------------------------------------------------
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

function rows(u: Tensor, start: number, n: number): Tensor {
  return api.slice(u, [start, 0], [start + n, u.shape[1]]);
}

function row(u: Tensor, i: number): Tensor {
  return api.reshape(rows(u, i, 1), [u.shape[1]]);
}

/** A host constant on `like`'s backend. */
function constant(like: Tensor, values: ArrayLike<number>, shape: readonly number[], dtype = like.dtype): Tensor {
  return tensor(values, { shape, dtype, backend: like.backend });
}

function iota(like: Tensor, n: number, shape: readonly number[] = [n]): Tensor {
  return constant(like, Array.from({ length: n }, (_, i) => i), shape);
}

/** Per-image values [B] as [B, 1, 1, 1] for broadcasting over images. */
function perImage(v: Tensor): Tensor {
  return api.reshape(v, [v.shape[0], 1, 1, 1]);
}

function clamp01(x: Tensor): Tensor {
  return api.minimum(api.maximum(x, 0), 1);
}

/** Selects per image: `mask[b] ? a[b] : b[b]` (mask bool [B]). */
function select(mask: Tensor, a: Tensor, b: Tensor): Tensor {
  return api.where(perImage(mask), a, b);
}

// ---------------------------------------------------------------------------------------------------------
// RandomResizedCrop

/** Integer-valued crop boxes per image (float tensors [B]). */
export interface CropBoxes {
  /** First row of each crop. */
  top: Tensor;
  /** First column of each crop. */
  left: Tensor;
  /** Rows of each crop. */
  height: Tensor;
  /** Columns of each crop. */
  width: Tensor;
}

/** Python's `round` on the host (ties to even), for the static fallback box. */
function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

/**
 * torchvision's centre-crop fallback box for an `h × w` image (static: it depends only on the sizes).
 *
 * @example
 * ```ts
 * import { augment } from "./mod.ts";
 * console.log(augment.fallbackBox(100, 300, [3 / 4, 4 / 3])); // [0, 83, 100, 133]
 * ```
 */
export function fallbackBox(h: number, w: number, ratio: readonly [number, number]): [number, number, number, number] {
  const inRatio = w / h;
  let cw = w;
  let ch = h;
  if (inRatio < ratio[0]) ch = pyRound(w / ratio[0]);
  else if (inRatio > ratio[1]) cw = pyRound(h * ratio[1]);
  return [Math.floor((h - ch) / 2), Math.floor((w - cw) / 2), ch, cw];
}

/**
 * RandomResizedCrop's box sampling, vectorised over images and attempts: `u` holds the uniforms
 * `[2·attempts + 2, B]` (area fractions, log-ratios, top, left). Attempt k proposes `A = H·W·U(scale)`,
 * `r = exp(U(ln ratio))`, `w = round(√(A r))`, `h = round(√(A / r))`; the first attempt that fits is taken
 * with a top-left corner uniform over the valid positions, else the centre-crop fallback.
 *
 * @example
 * ```ts
 * import { augment, random } from "./mod.ts";
 * const u = random.uniform(random.key(0), [2 * 10 + 2, 4]); // 10 attempts, 4 images
 * const boxes = augment.sampleCropBoxes(u, 28, 28, [0.4, 1], [3 / 4, 4 / 3], 10);
 * console.log(boxes.height.shape); // [4]
 * ```
 */
export function sampleCropBoxes(
  u: Tensor,
  height: number,
  width: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
  attempts: number,
): CropBoxes {
  const b = u.shape[1];
  const uScale = rows(u, 0, attempts);
  const uRatio = rows(u, attempts, attempts);
  const area = api.mul(api.add(api.mul(uScale, scale[1] - scale[0]), scale[0]), height * width);
  const [lr0, lr1] = [Math.log(ratio[0]), Math.log(ratio[1])];
  const r = api.exp(api.add(api.mul(uRatio, lr1 - lr0), lr0));
  const round = (x: Tensor) => api.floor(api.add(x, 0.5));
  const w = round(api.sqrt(api.mul(area, r)));
  const h = round(api.sqrt(api.div(area, r)));
  const f = (c: Tensor) => api.cast(c, u.dtype);
  const valid = api.mul(
    api.mul(f(api.lessEqual(w, width)), f(api.lessEqual(h, height))),
    api.mul(f(api.greater(w, 0)), f(api.greater(h, 0))),
  );
  const first = api.argmax(valid, 0); // the first valid attempt (0 when none is)
  const pick = f(api.equal(iota(u, attempts, [attempts, 1]), api.cast(api.reshape(first, [1, b]), u.dtype)));
  const anyValid = api.greater(api.max(valid, 0), 0);
  const [ft, fl, fh, fw] = fallbackBox(height, width, ratio);
  const hSel = api.where(anyValid, api.sum(api.mul(pick, h), 0), fh);
  const wSel = api.where(anyValid, api.sum(api.mul(pick, w), 0), fw);
  const corner = (uu: Tensor, extent: Tensor, size: number) =>
    api.minimum(api.floor(api.mul(uu, api.sub(size + 1, extent))), api.sub(size, extent));
  const top = api.where(anyValid, corner(row(u, 2 * attempts), hSel, height), ft);
  const left = api.where(anyValid, corner(row(u, 2 * attempts + 1), wSel, width), fl);
  return { top, left, height: hSel, width: wSel };
}

/** Pillow's bicubic kernel (a = −0.5). */
function cubic(d: Tensor): Tensor {
  const a = -0.5;
  const x = api.abs(d);
  const x2 = api.mul(x, x);
  const near = api.add(api.mul(api.sub(api.mul(x, a + 2), a + 3), x2), 1);
  const far = api.sub(api.mul(api.add(api.mul(api.sub(api.mul(x, a), 5 * a), x), 8 * a), x), 4 * a);
  return api.where(api.less(x, 1), near, api.where(api.less(x, 2), far, 0));
}

/**
 * Per-image 1-D resampling weights `[B, out, len]`: output pixel o of image b reads the input pixels
 * `start[b] .. start[b] + extent[b] − 1` of an axis of length `len`, with Pillow's filter formulation
 * (`centre = (o + ½)·extent/out`, tap weight `filter((i + ½ − centre)/s)`, `s = max(1, extent/out)` when
 * antialiasing, taps outside the crop dropped, rows normalised). For upsampling this is exactly PyTorch's
 * `align_corners=False` bilinear/bicubic with clamped edges. `flip[b]` reverses the outputs.
 *
 * @example
 * ```ts
 * import { augment, tensor } from "./mod.ts";
 * // One image: the whole 4-pixel axis upsampled to 8 pixels.
 * console.log(augment.resampleWeights(tensor([0]), tensor([4]), 4, 8).shape); // [1, 8, 4]
 * ```
 */
export function resampleWeights(
  start: Tensor,
  extent: Tensor,
  len: number,
  out: number,
  opts: { interpolation?: Interpolation; antialias?: boolean; flip?: Tensor | null } = {},
): Tensor {
  const b = start.shape[0];
  const o = iota(start, out, [1, out, 1]);
  const i = iota(start, len, [1, 1, len]);
  const st = api.reshape(start, [b, 1, 1]);
  const ex = api.reshape(extent, [b, 1, 1]);
  const scale = api.div(ex, out);
  const oEff = opts.flip ? api.where(api.reshape(opts.flip, [b, 1, 1]), api.sub(out - 1, o), o) : o;
  const centre = api.mul(api.add(oEff, 0.5), scale);
  const local = api.sub(i, st);
  let d = api.sub(api.add(local, 0.5), centre);
  if (opts.antialias ?? true) d = api.div(d, api.maximum(scale, 1));
  const filt = (opts.interpolation ?? "bilinear") === "bicubic" ? cubic(d) : api.maximum(api.sub(1, api.abs(d)), 0);
  const inside = api.mul(
    api.cast(api.greaterEqual(local, 0), start.dtype),
    api.cast(api.less(local, ex), start.dtype),
  );
  const w = api.mul(filt, inside);
  return api.div(w, api.sum(w, -1, true));
}

/**
 * Crops `boxes` out of `images` [B, C, H, W] and resamples each to `size × size` (two batched matmuls with the
 * per-image weights of `resampleWeights`); `flip[i]` mirrors crop i horizontally. There may be n·B boxes (n
 * crops of every image, crop-major: box `k·B + b` is cut from image b); the result is then [n·B, C, size, size].
 * Results are clamped to [0, 1] (bicubic overshoots; bilinear rows sum to 1 up to rounding).
 *
 * @example
 * ```ts
 * import { augment, tensor, zeros } from "./mod.ts";
 * const t = (v: number[]) => tensor(v);
 * const boxes = { top: t([0, 4]), left: t([0, 2]), height: t([28, 20]), width: t([28, 20]) };
 * console.log(augment.resizedCrop(zeros([2, 1, 28, 28]), boxes, 16).shape); // [2, 1, 16, 16]
 * ```
 */
export function resizedCrop(
  images: Tensor,
  boxes: CropBoxes,
  size: number,
  opts: { interpolation?: Interpolation; antialias?: boolean; flip?: Tensor | null } = {},
): Tensor {
  const [b, c, h, w] = images.shape;
  const nb = boxes.top.shape[0];
  if (nb % b !== 0) throw new RangeError(`resizedCrop: ${nb} boxes for ${b} images`);
  const n = nb / b;
  const wy = resampleWeights(boxes.top, boxes.height, h, size, { ...opts, flip: null });
  const wx = resampleWeights(boxes.left, boxes.width, w, size, opts);
  const rowsOut = api.reshape(api.matmul(api.reshape(wy, [n, b, 1, size, h]), images), [nb, c, size, w]);
  return clamp01(api.matmul(rowsOut, api.reshape(wx, [nb, 1, size, w]), { transB: true }));
}

// ---------------------------------------------------------------------------------------------------------
// Colour

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

// ---------------------------------------------------------------------------------------------------------
// Blur, solarisation, normalisation

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
