/**
 * The multi-crop augmentation's parameters: the config types, the presets (`IMAGENET_AUGMENT`,
 * `AUGMENT_PRESETS`), overrides and validation, and the per-crop specs resolved from a config.
 *
 * @module
 */

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
 * - `embedded-small`: the embedded 32-px RGB motif-texture dataset (`train/data/embedded.ts`), the whole recipe of
 *   the `embedded-small` training preset: 2 global 32-px crops (scale 0.5–1) and 4 local 16-px crops (0.2–0.5),
 *   bilinear, flip p 0.5, the dataset's mean/std, and geometric views only: colour jitter, grayscale, blur and
 *   solarisation are off (probability 0; see the comment in the preset for why).
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
    // Crops large enough to keep several motifs in view.
    globalCrops: { number: 2, size: 32, scale: [0.5, 1] },
    localCrops: { number: 4, size: 16, scale: [0.2, 0.5] },
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
