/**
 * Swin Transformer backbone as used by iBOT (spec §2): patch embedding (a PxP stride-P convolution written as a
 * reshape and a matmul) with LayerNorm, the MIM mask token, stages of window-attention blocks with shifted
 * windows and relative-position bias, patch merging, final norm, and the official output (the mean-pooled token
 * followed by the final tokens).
 *
 * Pure functions: `initSwin(key, config)` makes a parameter tree whose dotted paths are the official state-dict
 * keys (without `backbone.`); `swin(params, images, opts)` runs the model. The `relative_position_index` buffers
 * and the shift masks are host constants computed here, never parameters.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { fromHost } from "../ops/engine.ts";
import * as api from "../ops/api.ts";
import * as nn from "../ops/nn.ts";
import * as random from "../ops/random.ts";
import { allocHost, type DType } from "../ops/dtype.ts";
import { full } from "../ops/create.ts";
import { fmt } from "../ops/shape.ts";
import { remat } from "../autograd/remat.ts";
import { ParamSpec } from "./spec.ts";

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

// ---------------------------------------------------------------------------------------------------------
// Parameters

/** LayerNorm or Linear parameters. */
export interface SwinAffine<L = Tensor> {
  /** Weight (Linear: `[out, in]`). */
  weight: L;
  /** Bias. */
  bias: L;
}

/** Parameters of one Swin block (official names). */
export interface SwinBlockParams<L = Tensor> {
  /** LayerNorm before attention. */
  norm1: SwinAffine<L>;
  /** Window attention: relative-position table `[(2ws−1)², heads]`, fused qkv, output projection. */
  attn: { relative_position_bias_table: L; qkv: SwinAffine<L>; proj: SwinAffine<L> };
  /** LayerNorm before the MLP. */
  norm2: SwinAffine<L>;
  /** MLP `C → ratio·C → C` with GELU. */
  mlp: { fc1: SwinAffine<L>; fc2: SwinAffine<L> };
}

/** Parameters of a patch merging (official names; the reduction has no bias). */
export interface PatchMergingParams<L = Tensor> {
  /** Linear `4C → 2C` without bias. */
  reduction: { weight: L };
  /** LayerNorm over `4C`. */
  norm: SwinAffine<L>;
}

/** Parameters of a stage. */
export interface SwinLayerParams<L = Tensor> {
  /** The stage's blocks. */
  blocks: SwinBlockParams<L>[];
  /** Patch merging after the stage (all stages but the last). */
  downsample?: PatchMergingParams<L>;
}

/** The whole backbone; `tree.paths` gives the official state-dict keys without `backbone.`. */
export interface SwinParams<L = Tensor> {
  /** Patch projection (conv weight `[C, inChans, P, P]`) and its LayerNorm. */
  patch_embed: { proj: SwinAffine<L>; norm: SwinAffine<L> };
  /** Stages. */
  layers: SwinLayerParams<L>[];
  /** Final LayerNorm. */
  norm: SwinAffine<L>;
  /** Mask token `[1, C]` (student only). */
  masked_embed?: L;
}

/** Options of `initSwin` (the parameters live on the key's backend). */
export interface InitOptions {
  /** Parameter dtype (float32 by default; float64 on the CPU for gradient checks). */
  dtype?: DType;
}

/** How a leaf is initialised. */
type InitKind = "trunc" | "zeros" | "ones" | "conv";

/** Builds the parameter tree of a config with leaves from `make` (in official state-dict order). */
function buildSwin<L>(config: SwinConfig, make: (kind: InitKind, shape: number[]) => L): SwinParams<L> {
  const layout = swinLayout(config);
  const linear = (outF: number, inF: number): SwinAffine<L> => ({
    weight: make("trunc", [outF, inF]),
    bias: make("zeros", [outF]),
  });
  const norm = (n: number): SwinAffine<L> => ({ weight: make("ones", [n]), bias: make("zeros", [n]) });
  const C = config.embedDim;
  const P = config.patchSize;
  const params: SwinParams<L> = {
    patch_embed: {
      proj: { weight: make("conv", [C, config.inChans, P, P]), bias: make("conv", [C]) },
      norm: norm(C),
    },
    layers: layout.map((st) => {
      const c = st.dim;
      const hidden = Math.floor(c * config.mlpRatio);
      const layer: SwinLayerParams<L> = {
        blocks: st.shifts.map(() => ({
          norm1: norm(c),
          attn: {
            relative_position_bias_table: make("trunc", [(2 * st.windowSize - 1) ** 2, st.numHeads]),
            qkv: linear(3 * c, c),
            proj: linear(c, c),
          },
          norm2: norm(c),
          mlp: { fc1: linear(hidden, c), fc2: linear(c, hidden) },
        })),
      };
      if (st.downsample) layer.downsample = { reduction: { weight: make("trunc", [2 * c, 4 * c]) }, norm: norm(4 * c) };
      return layer;
    }),
    norm: norm(C * 2 ** (layout.length - 1)),
  };
  if (config.maskedEmbed) params.masked_embed = make("zeros", [1, C]);
  return params;
}

/**
 * Official initialisation: Linear weights and relative-position tables truncated normal (std 0.02, cut at
 * ±2), biases 0, LayerNorms 1/0, the patch convolution PyTorch's default (uniform ±1/sqrt(fan_in) for weight
 * and bias), `masked_embed` zeros. Key order follows the official state dict.
 *
 * @example
 * ```ts
 * import { initSwin, random, swinTest, tree } from "./mod.ts";
 * const params = initSwin(random.key(0), swinTest());
 * tree.paths(params)[0][0]; // "patch_embed.proj.weight"
 * ```
 */
export function initSwin(key: Tensor, config: SwinConfig, opts: InitOptions = {}): SwinParams {
  random.assertKey(key, "initSwin");
  const dtype = opts.dtype ?? "float32";
  const backend = key.backend;
  let counter = 0;
  const bound = 1 / Math.sqrt(config.inChans * config.patchSize ** 2);
  return buildSwin(config, (kind, shape) => {
    switch (kind) {
      case "trunc":
        return random.truncatedNormal(random.foldIn(key, counter++), shape, { std: 0.02, dtype });
      case "conv":
        return random.uniform(random.foldIn(key, counter++), shape, { min: -bound, max: bound, dtype });
      default:
        return full(shape, kind === "ones" ? 1 : 0, { dtype, backend });
    }
  });
}

/**
 * The parameter tree of a config with `ParamSpec` leaves (shape and dtype, no data): what `loadIntoModel`
 * needs to load a checkpoint without initialising the model.
 *
 * @example
 * ```ts
 * import { swinSpec, swinTest, tree } from "./mod.ts";
 * const [name, spec] = tree.paths(swinSpec(swinTest()))[0];
 * console.log(name, String(spec)); // patch_embed.proj.weight float32[16,3,4,4]
 * ```
 */
export function swinSpec(config: SwinConfig, dtype: DType = "float32"): SwinParams<ParamSpec> {
  return buildSwin(config, (_kind, shape) => new ParamSpec(shape, dtype));
}

// ---------------------------------------------------------------------------------------------------------
// Host constants

const indexCache = new Map<number, Int32Array>();

/**
 * The official `relative_position_index` of a `ws x ws` window, `[ws², ws²]` row-major:
 * `(ya − yb + ws − 1)·(2ws − 1) + (xa − xb + ws − 1)` for query token a and key token b.
 *
 * @example
 * ```ts
 * import { relativePositionIndex } from "./mod.ts";
 * console.log(relativePositionIndex(2).slice(0, 4)); // Int32Array [4, 3, 1, 0] (16 entries in all)
 * ```
 */
export function relativePositionIndex(ws: number): Int32Array {
  let idx = indexCache.get(ws);
  if (idx) return idx;
  const n = ws * ws;
  idx = new Int32Array(n * n);
  for (let a = 0; a < n; a++) {
    for (let b = 0; b < n; b++) {
      const dy = Math.floor(a / ws) - Math.floor(b / ws) + ws - 1;
      const dx = (a % ws) - (b % ws) + ws - 1;
      idx[a * n + b] = dy * (2 * ws - 1) + dx;
    }
  }
  indexCache.set(ws, idx);
  return idx;
}

/**
 * The shifted-window attention mask `[nW, ws², ws²]` (0 within a region, −100 across regions) of a padded
 * `hp x wp` map, windows row-major over the window grid (spec §2.3).
 *
 * @example
 * ```ts
 * import { shiftAttnMask } from "./mod.ts";
 * console.log(shiftAttnMask(8, 8, 4, 2).length); // 4 windows · 16 · 16 = 1024
 * ```
 */
export function shiftAttnMask(hp: number, wp: number, ws: number, shift: number): Float32Array {
  const label = (i: number, n: number) => (i < n - ws ? 0 : i < n - shift ? 1 : 2);
  const nh = hp / ws;
  const nw = wp / ws;
  const n = ws * ws;
  const out = new Float32Array(nh * nw * n * n);
  const lab = new Int32Array(n);
  for (let wi = 0; wi < nh; wi++) {
    for (let wj = 0; wj < nw; wj++) {
      for (let t = 0; t < n; t++) {
        lab[t] = label(wi * ws + Math.floor(t / ws), hp) * 3 + label(wj * ws + (t % ws), wp);
      }
      const base = (wi * nw + wj) * n * n;
      for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) out[base + a * n + b] = lab[a] === lab[b] ? 0 : -100;
    }
  }
  return out;
}

function constant(like: Tensor, data: ArrayLike<number>, shape: number[], dtype: DType = like.dtype): Tensor {
  const host = allocHost(dtype, data.length);
  host.set(data);
  return fromHost(like.backend, host, shape, dtype);
}

// ---------------------------------------------------------------------------------------------------------
// Layers

/** `torch.roll(x, shift, axis)`: `out[i] = x[(i − shift) mod n]`, as a slice and a concat. */
export function roll(x: Tensor, shift: number, axis: number): Tensor {
  const ax = axis < 0 ? axis + x.rank : axis;
  const n = x.shape[ax];
  const s = ((shift % n) + n) % n;
  if (s === 0) return x;
  const at = (lo: number, hi: number) => {
    const st = x.shape.map(() => 0);
    const en = [...x.shape];
    st[ax] = lo;
    en[ax] = hi;
    return api.slice(x, st, en);
  };
  return api.concat([at(n - s, n), at(0, n - s)], ax);
}

/**
 * `[B, H, W, C]` → `[B·nW, ws², C]`, windows row-major, tokens row-major inside a window.
 *
 * @example
 * ```ts
 * import { windowPartition, zeros } from "./mod.ts";
 * console.log(windowPartition(zeros([1, 8, 8, 16]), 4).shape); // [4, 16, 16]
 * ```
 */
export function windowPartition(x: Tensor, ws: number): Tensor {
  const [B, H, W, C] = x.shape;
  const y = api.reshape(x, [B, H / ws, ws, W / ws, ws, C]);
  return api.reshape(api.transpose(y, [0, 1, 3, 2, 4, 5]), [-1, ws * ws, C]);
}

/**
 * The inverse of `windowPartition` for a `[B, H, W, C]` map.
 *
 * @example
 * ```ts
 * import { windowPartition, windowReverse, zeros } from "./mod.ts";
 * const windows = windowPartition(zeros([1, 8, 8, 16]), 4);
 * console.log(windowReverse(windows, 4, 8, 8).shape); // [1, 8, 8, 16]
 * ```
 */
export function windowReverse(windows: Tensor, ws: number, H: number, W: number): Tensor {
  const C = windows.shape[windows.rank - 1];
  const y = api.reshape(windows, [-1, H / ws, W / ws, ws, ws, C]);
  return api.reshape(api.transpose(y, [0, 1, 3, 2, 4, 5]), [-1, H, W, C]);
}

/**
 * Window multi-head self-attention on `[B·nW, N, C]` windows with the relative-position bias, plus the shift
 * mask `[nW, N, N]` when given.
 *
 * @example
 * ```ts
 * import { initSwin, random, swinTest, windowAttention, zeros } from "./mod.ts";
 * const p = initSwin(random.key(0), swinTest());
 * const out = windowAttention(p.layers[0].blocks[0].attn, zeros([4, 16, 16]), 2, 4, null);
 * console.log(out.shape); // [4, 16, 16]
 * ```
 */
export function windowAttention(
  p: SwinBlockParams["attn"],
  x: Tensor,
  numHeads: number,
  ws: number,
  mask: Tensor | null,
): Tensor {
  const [Bw, N, C] = x.shape;
  if (N !== ws * ws) throw new RangeError(`windowAttention: ${N} tokens per window for window ${ws}`);
  const T = (2 * ws - 1) ** 2;
  const table = p.relative_position_bias_table;
  if (table.rank !== 2 || table.shape[0] !== T || table.shape[1] !== numHeads) {
    throw new RangeError(
      `windowAttention: relative_position_bias_table is ${
        fmt(table.shape)
      }, expected [${T},${numHeads}] for window ${ws}`,
    );
  }
  const hd = C / numHeads;
  const qkv = api.transpose(api.reshape(nn.linear(x, p.qkv.weight, p.qkv.bias), [Bw, N, 3, numHeads, hd]), [
    2,
    0,
    3,
    1,
    4,
  ]);
  const part = (i: number) => api.reshape(api.slice(qkv, [i], [i + 1]), [Bw, numHeads, N, hd]);
  const q = api.mul(part(0), hd ** -0.5);
  let attn = api.matmul(q, api.mT(part(1))); // [Bw, h, N, N]
  // Bias [h, N, N]: gather the transposed table [h, T] at the host-computed index [N, N].
  const index = constant(table, relativePositionIndex(ws), [N, N], "int32");
  attn = api.add(attn, api.gather(api.transpose(table, [1, 0]), index, 1));
  if (mask) {
    const nW = mask.shape[0];
    attn = api.reshape(
      api.add(api.reshape(attn, [Bw / nW, nW, numHeads, N, N]), api.reshape(mask, [nW, 1, N, N])),
      [Bw, numHeads, N, N],
    );
  }
  const out = api.matmul(nn.softmax(attn, -1), part(2)); // [Bw, h, N, hd]
  return nn.linear(api.reshape(api.transpose(out, [0, 2, 1, 3]), [Bw, N, C]), p.proj.weight, p.proj.bias);
}

/** Options of `swinBlock`. */
export interface SwinBlockOptions {
  /** Attention heads. */
  numHeads: number;
  /** The block's window (as built). */
  windowSize: number;
  /** The block's shift (as built; 0 for W-MSA). */
  shiftSize: number;
  /** LayerNorm epsilon (the official SwinTransformer: 1e-6; a bare `SwinTransformerBlock`: 1e-5). */
  eps?: number;
  /** Grid `[H, W]` of the `L` tokens; square `floor(sqrt(L))` by default, as the official code assumes. */
  hw?: readonly [number, number];
  /** Stochastic-depth rate of this block (used when `train` and `key` are given). */
  dropPath?: number;
  /** Whether stochastic depth is active. */
  train?: boolean;
  /** PRNG key of stochastic depth. */
  key?: Tensor;
}

/**
 * One official Swin block on `[B, L, C]`: LN1, zero padding to multiples of the window (padded tokens are not
 * masked), cyclic shift with the −100 mask, window attention, reverse shift, crop, residual; LN2, MLP, residual.
 *
 * @example
 * ```ts
 * import { initSwin, random, swinBlock, swinTest, zeros } from "./mod.ts";
 * const p = initSwin(random.key(0), swinTest());
 * const y = swinBlock(p.layers[0].blocks[1], zeros([1, 64, 16]), { numHeads: 2, windowSize: 4, shiftSize: 2 });
 * console.log(y.shape); // [1, 64, 16]
 * ```
 */
export function swinBlock(p: SwinBlockParams, x: Tensor, opts: SwinBlockOptions): Tensor {
  const { numHeads, windowSize: ws, shiftSize: shift, eps = 1e-6 } = opts;
  const [B, L, C] = x.shape;
  const side = Math.floor(Math.sqrt(L));
  const [H, W] = opts.hw ?? [side, side];
  if (H * W !== L) throw new RangeError(`swinBlock: ${L} tokens do not form a ${H}x${W} grid`);
  if (!(shift >= 0 && shift < ws)) throw new RangeError(`swinBlock: shift ${shift} must be in [0, ${ws})`);
  const [k1, k2] = opts.train && opts.dropPath && opts.key ? random.split(opts.key) : [null, null];
  const drop = (k: Tensor | null, y: Tensor) => (k ? nn.dropPath(k, y, opts.dropPath!, true) : y);

  let h = api.reshape(nn.layerNorm(x, p.norm1.weight, p.norm1.bias, eps), [B, H, W, C]);
  const padB = (ws - (H % ws)) % ws;
  const padR = (ws - (W % ws)) % ws;
  h = api.pad(h, [0, 0, 0, 0], [0, padB, padR, 0]);
  const Hp = H + padB;
  const Wp = W + padR;
  let mask: Tensor | null = null;
  if (shift > 0) {
    h = roll(roll(h, -shift, 1), -shift, 2);
    mask = constant(x, shiftAttnMask(Hp, Wp, ws, shift), [(Hp / ws) * (Wp / ws), ws * ws, ws * ws]);
  }
  const attn = windowAttention(p.attn, windowPartition(h, ws), numHeads, ws, mask);
  h = windowReverse(attn, ws, Hp, Wp);
  if (shift > 0) h = roll(roll(h, shift, 1), shift, 2);
  h = api.reshape(api.slice(h, [0, 0, 0, 0], [B, H, W, C]), [B, L, C]);
  const y = api.add(x, drop(k1, h));
  const m = nn.linear(
    nn.gelu(nn.linear(nn.layerNorm(y, p.norm2.weight, p.norm2.bias, eps), p.mlp.fc1.weight, p.mlp.fc1.bias)),
    p.mlp.fc2.weight,
    p.mlp.fc2.bias,
  );
  return api.add(y, drop(k2, m));
}

/** `swinBlock` rematerialised under `grad` (`SwinConfig.remat`). */
const rematSwinBlock = remat(swinBlock);

/**
 * Patch merging on `[B, H·W, C]`: zero-pad to even sides, concatenate the (even, even), (odd, even),
 * (even, odd), (odd, odd) sub-grids along channels, LayerNorm(4C), Linear 4C → 2C without bias.
 * Returns the merged tokens and the new grid.
 *
 * @example
 * ```ts
 * import { initSwin, patchMerging, random, swinTest, zeros } from "./mod.ts";
 * const p = initSwin(random.key(0), swinTest());
 * const [y, grid] = patchMerging(p.layers[0].downsample!, zeros([1, 64, 16]), [8, 8]);
 * console.log(y.shape, grid); // [1, 16, 32] [4, 4]
 * ```
 */
export function patchMerging(
  p: PatchMergingParams,
  x: Tensor,
  hw: readonly [number, number],
  eps = 1e-6,
): [Tensor, [number, number]] {
  const [B, , C] = x.shape;
  const [H, W] = hw;
  const h = api.pad(api.reshape(x, [B, H, W, C]), [0, 0, 0, 0], [0, H % 2, W % 2, 0]);
  const H2 = (H + (H % 2)) / 2;
  const W2 = (W + (W % 2)) / 2;
  // [B, H2, 2(row parity), W2, 2(col parity), C] → [B, H2, W2, colParity, rowParity, C] gives x0, x1, x2, x3.
  const y = api.transpose(api.reshape(h, [B, H2, 2, W2, 2, C]), [0, 1, 3, 4, 2, 5]);
  const merged = api.reshape(y, [B, H2 * W2, 4 * C]);
  const out = nn.linear(nn.layerNorm(merged, p.norm.weight, p.norm.bias, eps), p.reduction.weight);
  return [out, [H2, W2]];
}

/**
 * The patch embedding: Conv2d(inChans → C, kernel = stride = P) as a reshape and a matmul, then LayerNorm.
 * `[B, inChans, H, W]` → `[B, (H/P)·(W/P), C]` (row-major grid); extra pixels beyond a multiple of P are dropped.
 *
 * @example
 * ```ts
 * import { initSwin, random, swinPatchEmbed, swinTest, zeros } from "./mod.ts";
 * const p = initSwin(random.key(0), swinTest());
 * const [tokens, grid] = swinPatchEmbed(p.patch_embed, zeros([1, 3, 32, 32]), 4);
 * console.log(tokens.shape, grid); // [1, 64, 16] [8, 8]
 * ```
 */
export function patchEmbed(
  p: SwinParams["patch_embed"],
  images: Tensor,
  patchSize: number,
  eps = 1e-6,
): [Tensor, [number, number]] {
  if (images.rank !== 4) throw new RangeError(`patchEmbed: images must be [B, C, H, W], got ${fmt(images.shape)}`);
  const [B, Cin, Hi, Wi] = images.shape;
  const [C, wc] = [p.proj.weight.shape[0], p.proj.weight.shape[1]];
  if (wc !== Cin) throw new RangeError(`patchEmbed: ${Cin} image channels for a ${wc}-channel projection`);
  const P = patchSize;
  const gh = Math.floor(Hi / P);
  const gw = Math.floor(Wi / P);
  const img = api.slice(images, [0, 0, 0, 0], [B, Cin, gh * P, gw * P]);
  const cols = api.reshape(
    api.transpose(api.reshape(img, [B, Cin, gh, P, gw, P]), [0, 2, 4, 1, 3, 5]),
    [B, gh * gw, Cin * P * P],
  );
  const x = nn.linear(cols, api.reshape(p.proj.weight, [C, Cin * P * P]), p.proj.bias);
  return [nn.layerNorm(x, p.norm.weight, p.norm.bias, eps), [gh, gw]];
}

/** Options of `swin`. */
export interface SwinOptions {
  /** The model's config (the same one its params were built with). */
  config: SwinConfig;
  /**
   * MIM masks `[B, mh, mw]` (bool, true = masked), on the patch grid or a coarser grid whose cells are repeated
   * (nearest neighbour) by the integer ratio; masked positions take `masked_embed` after the patch LayerNorm.
   */
  masks?: Tensor | null;
  /** Whether stochastic depth is active (needs `key`). */
  train?: boolean;
  /** PRNG key for stochastic depth. */
  key?: Tensor;
  /** Mean-pooled token followed by all final tokens `[B, 1 + L, D]` (default), else only the pooled `[B, D]`. */
  returnAllTokens?: boolean;
}

/** Expands `[B, mh, mw]` masks to the `[gh, gw]` grid by repeating each cell (PyTorch `repeat_interleave`). */
function expandMask(masks: Tensor, gh: number, gw: number): Tensor {
  if (masks.rank !== 3) throw new RangeError(`swin: masks must be [B, h, w], got ${fmt(masks.shape)}`);
  const [B, mh, mw] = masks.shape;
  if (mh === gh && mw === gw) return masks;
  const rh = Math.floor(gh / mh);
  const rw = Math.floor(gw / mw);
  if (rh * mh !== gh || rw * mw !== gw) {
    throw new RangeError(`swin: a ${mh}x${mw} mask does not tile the ${gh}x${gw} patch grid`);
  }
  const m = api.broadcastTo(api.reshape(masks, [B, mh, 1, mw, 1]), [B, mh, rh, mw, rw]);
  return api.reshape(m, [B, gh, gw]);
}

/**
 * The Swin backbone: `[B, inChans, H, W]` images → `[B, 1 + L, D]` (mean-pooled token, then the final tokens
 * after the last LayerNorm), or `[B, D]` with `returnAllTokens: false`.
 *
 * @example
 * ```ts
 * import { initSwin, random, swin, swinTest, zeros } from "./mod.ts";
 * const config = swinTest();
 * const out = swin(initSwin(random.key(0), config), zeros([1, 3, 32, 32]), { config }); // [1, 17, 32]
 * ```
 */
export function swin(params: SwinParams, images: Tensor, opts: SwinOptions): Tensor {
  const { config } = opts;
  const layout = swinLayout(config);
  if (params.layers.length !== layout.length) {
    throw new RangeError(`swin: ${params.layers.length} stages in the params, ${layout.length} in the config`);
  }
  const eps = config.eps;
  let [x, hw] = patchEmbed(params.patch_embed, images, config.patchSize, eps);
  if (opts.masks) {
    if (!params.masked_embed) throw new TypeError("swin: masks given but the params have no masked_embed");
    const [B, L] = x.shape;
    const m = api.reshape(expandMask(opts.masks, hw[0], hw[1]), [B, L, 1]);
    x = api.where(api.cast(m, "bool"), params.masked_embed, x);
  }
  const train = opts.train ?? false;
  if (train && config.dropPathRate > 0 && !opts.key) {
    throw new TypeError(`swin: training with dropPathRate ${config.dropPathRate} needs a PRNG key`);
  }
  let blockIndex = 0;
  const block = config.remat ? rematSwinBlock : swinBlock;
  layout.forEach((st, s) => {
    const lp = params.layers[s];
    if (lp.blocks.length !== st.shifts.length) {
      throw new RangeError(`swin: stage ${s} has ${lp.blocks.length} blocks in the params, ${st.shifts.length} built`);
    }
    lp.blocks.forEach((bp, j) => {
      const key = train && opts.key ? random.foldIn(opts.key, blockIndex) : undefined;
      blockIndex++;
      x = block(bp, x, {
        numHeads: st.numHeads,
        windowSize: st.windowSize,
        shiftSize: st.shifts[j],
        eps,
        hw,
        dropPath: st.dropPath[j],
        train,
        key,
      });
    });
    if (st.downsample) {
      if (!lp.downsample) throw new TypeError(`swin: stage ${s} has no downsample params`);
      [x, hw] = patchMerging(lp.downsample, x, hw, eps);
    }
  });
  const region = nn.layerNorm(x, params.norm.weight, params.norm.bias, eps);
  const pooled = api.mean(region, 1, true);
  if (opts.returnAllTokens === false) return api.reshape(pooled, [pooled.shape[0], pooled.shape[2]]);
  return api.concat([pooled, region], 1);
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
