/**
 * Swin backbone configuration: the hyperparameters, the official presets and the per-stage layout (windows,
 * shifts and sizes) they imply.
 *
 * @module
 */

// ---------------------------------------------------------------------------------------------------------
// Configuration

/** Hyperparameters of a Swin backbone. Window sizes and shifts per block follow from them (`swinLayout`). */
export interface SwinConfig {
  /** Image side used to build the model (224 officially): fixes each stage's window and shift. */
  imgSize: number;
  /** Patch side (4 for the iBOT recipes). */
  patchSize: number;
  /** Input channels. */
  inChans: number;
  /** Stage-1 width C; stage s has width C·2^s. */
  embedDim: number;
  /** Blocks per stage. */
  depths: readonly number[];
  /** Attention heads per stage. */
  numHeads: readonly number[];
  /** Window side requested (a stage whose resolution is ≤ it uses its resolution and no shift). */
  windowSize: number;
  /** MLP hidden width / width. */
  mlpRatio: number;
  /** LayerNorm epsilon of every norm (the official `SwinTransformer` uses 1e-6). */
  eps: number;
  /** Stochastic-depth rate of the last block; rates are `linspace(0, dropPathRate, sum(depths))`. */
  dropPathRate: number;
  /** Whether the model has `masked_embed` (the student does, the teacher does not). */
  maskedEmbed: boolean;
  /**
   * Rematerialise each block (`remat`): under `grad`, only the blocks' inputs are kept and each block's
   * activations are recomputed in the backward pass (less memory, one more forward; same values).
   */
  remat?: boolean;
}

/**
 * Swin-T (C 96, depths 2-2-6-2, heads 3-6-12-24, patch 4, 224 px) with window 7 or 14; `overrides` replace any
 * field (the student's official drop-path rate is 0.1, the teacher's 0).
 *
 * @example
 * ```ts
 * import { swinLayout, swinTiny } from "./mod.ts";
 * swinLayout(swinTiny(14)).map((s) => s.windowSize); // [14, 14, 14, 7]
 * ```
 */
export function swinTiny(windowSize: 7 | 14 = 7, overrides: Partial<SwinConfig> = {}): SwinConfig {
  return {
    imgSize: 224,
    patchSize: 4,
    inChans: 3,
    embedDim: 96,
    depths: [2, 2, 6, 2],
    numHeads: [3, 6, 12, 24],
    windowSize,
    mlpRatio: 4,
    eps: 1e-6,
    dropPathRate: 0.1,
    maskedEmbed: true,
    ...overrides,
  };
}

/**
 * A small config for tests: 32 px images, patch 4 (8x8 grid), C 16, two stages of 2 blocks, window 4.
 *
 * @example
 * ```ts
 * import { swinOutDim, swinTest } from "./mod.ts";
 * const config = swinTest({ depths: [2], numHeads: [2] }); // a single stage
 * console.log(swinOutDim(config)); // 16
 * ```
 */
export function swinTest(overrides: Partial<SwinConfig> = {}): SwinConfig {
  return {
    imgSize: 32,
    patchSize: 4,
    inChans: 3,
    embedDim: 16,
    depths: [2, 2],
    numHeads: [2, 4],
    windowSize: 4,
    mlpRatio: 2,
    eps: 1e-6,
    dropPathRate: 0,
    maskedEmbed: true,
    ...overrides,
  };
}

/** One stage as built: width, heads, construction resolution, effective window and the shift of each block. */
export interface SwinStage {
  /** Channels of the stage. */
  dim: number;
  /** Attention heads of the stage. */
  numHeads: number;
  /** Grid side at `config.imgSize`. */
  resolution: number;
  /** Window side of every block of the stage. */
  windowSize: number;
  /** Shift of each block (0 or floor(window/2); all 0 when resolution ≤ window). */
  shifts: number[];
  /** Drop-path rate of each block. */
  dropPath: number[];
  /** Whether a patch merging follows. */
  downsample: boolean;
}

/**
 * The per-stage layout of a config, by the official construction rules (spec §2.3).
 *
 * @example
 * ```ts
 * import { swinLayout, swinTest } from "./mod.ts";
 * console.log(swinLayout(swinTest()).map((s) => [s.dim, s.shifts])); // [[16, [0, 2]], [32, [0, 0]]]
 * ```
 */
export function swinLayout(config: SwinConfig): SwinStage[] {
  const { depths, numHeads } = config;
  if (depths.length !== numHeads.length || depths.length === 0) {
    throw new RangeError(`swin: depths [${depths}] and numHeads [${numHeads}] must be non-empty and of one length`);
  }
  const total = depths.reduce((a, b) => a + b, 0);
  const dpr = Array.from({ length: total }, (_, i) => (total > 1 ? (config.dropPathRate * i) / (total - 1) : 0));
  const grid = Math.floor(config.imgSize / config.patchSize);
  let start = 0;
  return depths.map((depth, s) => {
    const dim = config.embedDim * 2 ** s;
    if (dim % numHeads[s] !== 0) throw new RangeError(`swin: stage ${s} width ${dim} is not divisible by heads`);
    const resolution = Math.floor(grid / 2 ** s);
    const small = resolution <= config.windowSize;
    const windowSize = small ? resolution : config.windowSize;
    if (windowSize < 1) {
      throw new RangeError(`swin: stage ${s} has resolution ${resolution} at imgSize ${config.imgSize}`);
    }
    const shifts = Array.from({ length: depth }, (_, j) => (small || j % 2 === 0 ? 0 : Math.floor(windowSize / 2)));
    const stage = {
      dim,
      numHeads: numHeads[s],
      resolution,
      windowSize,
      shifts,
      dropPath: dpr.slice(start, start + depth),
      downsample: s < depths.length - 1,
    };
    start += depth;
    return stage;
  });
}

/**
 * The backbone's output width `C·2^(stages−1)`.
 *
 * @example
 * ```ts
 * import { swinOutDim, swinTiny } from "./mod.ts";
 * console.log(swinOutDim(swinTiny())); // 768
 * ```
 */
export function swinOutDim(config: SwinConfig): number {
  return config.embedDim * 2 ** (config.depths.length - 1);
}
