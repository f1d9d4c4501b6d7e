/**
 * The Vision Transformer backbone of iBOT as pure functions over a params tree.
 *
 * `initVit(key, config)` builds a plain object whose `tree.paths` are exactly the official backbone state-dict
 * keys without the `backbone.` prefix (`cls_token`, `pos_embed`, `masked_embed`, `patch_embed.proj.weight`,
 * `blocks.0.attn.qkv.weight`, ..., `norm.bias`), so a converted official checkpoint loads with
 * `tree.fromPaths` and a tree saved with `saveSafetensors` has official names.
 *
 * `vit(params, images, opts)` runs the forward pass of the official `VisionTransformer` (spec §1): a strided
 * PxP convolution as a patch reshape and one matmul, the mask token that replaces masked patch embeddings,
 * the CLS token, the (bicubic-interpolated) position embedding, pre-norm blocks with fused-qkv attention and an
 * exact-GELU MLP, stochastic depth in training, and the final LayerNorm.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import * as nn from "../ops/nn.ts";
import * as random from "../ops/random.ts";
import { full } from "../ops/create.ts";
import type { DType } from "../ops/dtype.ts";
import { fmt } from "../ops/shape.ts";
import { fromPaths, leaves } from "../autograd/tree.ts";
import { remat } from "../autograd/remat.ts";

/** Architecture of a ViT backbone (spec §1.1). */
export interface VitConfig {
  /** Training image size; fixes `pos_embed` to `1 + (imgSize / patchSize)^2` rows. */
  imgSize: number;
  /** Patch size P of the PxP stride-P patch embedding. */
  patchSize: number;
  /** Input channels (3 for RGB, 1 for grey). */
  inChans: number;
  /** Embedding dimension D. */
  embedDim: number;
  /** Number of transformer blocks. */
  depth: number;
  /** Attention heads (D must be divisible by it). */
  numHeads: number;
  /** MLP hidden size as a multiple of D. */
  mlpRatio: number;
  /** Whether the fused qkv linear has a bias (true in every iBOT config). */
  qkvBias: boolean;
  /** Stochastic-depth rate of the last block; block i uses `i * rate / (depth - 1)` (linspace over depth). */
  dropPathRate: number;
  /** LayerNorm epsilon (1e-6 for every LN of the ViT). */
  layerNormEps: number;
  /** Whether the tree has the learnable mask token `masked_embed` (student: true; the teacher has none). */
  maskedEmbed: boolean;
  /**
   * Rematerialise each block (`remat`): under `grad`, only the blocks' inputs are kept and each block's
   * activations are recomputed in the backward pass (less memory, one more forward; same values).
   */
  remat: boolean;
}

/** Names of the preset architectures. */
export type VitArch = "vit_tiny" | "vit_small" | "vit_base" | "vit_large";

/** The official presets (spec §1.1): width, depth and heads; everything else takes the defaults. */
export const VIT_PRESETS: Readonly<Record<VitArch, Readonly<Pick<VitConfig, "embedDim" | "depth" | "numHeads">>>> =
  Object.freeze({
    vit_tiny: Object.freeze({ embedDim: 192, depth: 12, numHeads: 3 }),
    vit_small: Object.freeze({ embedDim: 384, depth: 12, numHeads: 6 }),
    vit_base: Object.freeze({ embedDim: 768, depth: 12, numHeads: 12 }),
    vit_large: Object.freeze({ embedDim: 1024, depth: 24, numHeads: 16 }),
  });

/** Defaults of the official `VisionTransformer` as used by iBOT. */
export const VIT_DEFAULTS: Readonly<VitConfig> = Object.freeze({
  imgSize: 224,
  patchSize: 16,
  inChans: 3,
  embedDim: 384,
  depth: 12,
  numHeads: 6,
  mlpRatio: 4,
  qkvBias: true,
  dropPathRate: 0,
  layerNormEps: 1e-6,
  maskedEmbed: true,
  remat: false,
});

/** A preset name with overrides (`{ arch: "vit_small", patchSize: 8 }`), or a custom partial config. */
export type VitConfigInput = VitArch | (Partial<VitConfig> & { arch?: VitArch });

/**
 * Resolves a preset name or partial config into a full, validated `VitConfig`.
 *
 * @example
 * ```ts
 * import { vitConfig } from "./mod.ts";
 * vitConfig({ arch: "vit_small", imgSize: 32, patchSize: 4 }).embedDim; // 384
 * ```
 */
export function vitConfig(input: VitConfigInput = {}): VitConfig {
  const given = typeof input === "string" ? { arch: input } : input;
  const { arch, ...rest } = given;
  if (arch !== undefined && !(arch in VIT_PRESETS)) {
    throw new RangeError(`vitConfig: unknown arch '${arch}' (one of ${Object.keys(VIT_PRESETS).join(", ")})`);
  }
  const defined = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
  const c: VitConfig = { ...VIT_DEFAULTS, ...(arch ? VIT_PRESETS[arch] : {}), ...defined };
  const posInt = (name: keyof VitConfig) => {
    const v = c[name] as number;
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`vitConfig: ${name} must be a positive integer, got ${v}`);
  };
  for (const k of ["imgSize", "patchSize", "inChans", "embedDim", "depth", "numHeads"] as const) posInt(k);
  if (c.embedDim % c.numHeads !== 0) {
    throw new RangeError(`vitConfig: embedDim ${c.embedDim} is not divisible by numHeads ${c.numHeads}`);
  }
  if (c.imgSize < c.patchSize) throw new RangeError(`vitConfig: imgSize ${c.imgSize} < patchSize ${c.patchSize}`);
  const hidden = c.embedDim * c.mlpRatio;
  if (!Number.isInteger(hidden) || hidden < 1) {
    throw new RangeError(`vitConfig: embedDim * mlpRatio = ${hidden} is not a positive integer`);
  }
  if (!(c.dropPathRate >= 0 && c.dropPathRate < 1)) {
    throw new RangeError(`vitConfig: dropPathRate ${c.dropPathRate} must be in [0, 1)`);
  }
  if (!(c.layerNormEps > 0)) throw new RangeError(`vitConfig: layerNormEps ${c.layerNormEps} must be > 0`);
  return c;
}

/** A Linear layer in PyTorch layout: weight `[out, in]`, bias `[out]`. */
export interface LinearParams {
  /** `[out, in]`. */
  weight: Tensor;
  /** `[out]`. */
  bias: Tensor;
}

/** An affine LayerNorm. */
export interface LayerNormParams {
  /** Scale `[D]` (init 1). */
  weight: Tensor;
  /** Shift `[D]` (init 0). */
  bias: Tensor;
}

/** One pre-norm transformer block (official names). */
export interface VitBlockParams {
  /** LayerNorm before attention. */
  norm1: LayerNormParams;
  /** Fused `qkv` (D -> 3D; bias unless `qkvBias` is false) and the output projection `proj` (D -> D). */
  attn: { qkv: LinearParams | { weight: Tensor }; proj: LinearParams };
  /** LayerNorm before the MLP. */
  norm2: LayerNormParams;
  /** `fc1` (D -> hidden), exact GELU, `fc2` (hidden -> D). */
  mlp: { fc1: LinearParams; fc2: LinearParams };
}

/** The backbone tree; `tree.paths` gives the official state-dict keys without `backbone.`. */
export interface VitParams {
  /** `[1, 1, D]`. */
  cls_token: Tensor;
  /** `[1, 1 + N0, D]`, row 0 for the CLS token. */
  pos_embed: Tensor;
  /** `[1, D]`, the mask token (student only). */
  masked_embed?: Tensor;
  /** The patch convolution: weight `[D, C, P, P]`, bias `[D]`. */
  patch_embed: { proj: { weight: Tensor; bias: Tensor } };
  /** The transformer blocks, in order. */
  blocks: VitBlockParams[];
  /** The final LayerNorm. */
  norm: LayerNormParams;
}

/** Options of `initVit`. */
export interface InitVitOptions {
  /** Parameter dtype (float32 by default; float64 for gradient checks on the CPU). */
  dtype?: DType;
}

/** Drop-path rate of each block: `torch.linspace(0, rate, depth)`. */
export function dropPathRates(rate: number, depth: number): number[] {
  return Array.from({ length: depth }, (_, i) => (depth === 1 ? 0 : (rate * i) / (depth - 1)));
}

/**
 * The official backbone state-dict keys (without `backbone.`) and shapes, in state-dict order: `cls_token`,
 * `pos_embed`, `masked_embed` (when `config.maskedEmbed`), `patch_embed.proj.{weight,bias}`,
 * `blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}`, `norm.{weight,bias}`.
 * Useful to validate a converted checkpoint before loading it.
 *
 * @example
 * ```ts
 * import { vitParamShapes } from "./mod.ts";
 * console.log(vitParamShapes({ arch: "vit_tiny", depth: 1 })[0]); // ["cls_token", [1, 1, 192]]
 * ```
 */
export function vitParamShapes(config: VitConfigInput = {}): [string, number[]][] {
  const c = vitConfig(config);
  const D = c.embedDim;
  const hidden = D * c.mlpRatio;
  const grid = Math.floor(c.imgSize / c.patchSize);
  const out: [string, number[]][] = [
    ["cls_token", [1, 1, D]],
    ["pos_embed", [1, 1 + grid * grid, D]],
  ];
  if (c.maskedEmbed) out.push(["masked_embed", [1, D]]);
  out.push(["patch_embed.proj.weight", [D, c.inChans, c.patchSize, c.patchSize]], ["patch_embed.proj.bias", [D]]);
  const lin = (name: string, o: number, i: number, bias = true) => {
    out.push([`${name}.weight`, [o, i]]);
    if (bias) out.push([`${name}.bias`, [o]]);
  };
  for (let b = 0; b < c.depth; b++) {
    const p = `blocks.${b}`;
    out.push([`${p}.norm1.weight`, [D]], [`${p}.norm1.bias`, [D]]);
    lin(`${p}.attn.qkv`, 3 * D, D, c.qkvBias);
    lin(`${p}.attn.proj`, D, D);
    out.push([`${p}.norm2.weight`, [D]], [`${p}.norm2.bias`, [D]]);
    lin(`${p}.mlp.fc1`, hidden, D);
    lin(`${p}.mlp.fc2`, D, hidden);
  }
  out.push(["norm.weight", [D]], ["norm.bias", [D]]);
  return out;
}

/**
 * Initialises a backbone as the official code does (spec §1.7): truncated normal std 0.02 (absolute ±2) for
 * `cls_token`, `pos_embed` and every Linear weight; zero Linear biases; LayerNorm weight 1, bias 0; the patch
 * convolution keeps PyTorch's default Conv2d init, uniform(±1/sqrt(C·P·P)) for weight and bias; `masked_embed`
 * zeros. Parameters live on the key's backend; every leaf is a fresh tensor. The leaves follow
 * `vitParamShapes(config)`, each drawn from its own key `random.split(key, n)[i]`.
 *
 * The samplers are composites of many primitives: on the CPU backend a ViT-S takes tens of seconds.
 *
 * @example
 * ```ts
 * import { initVit, random, tree } from "./mod.ts";
 * const params = initVit(random.key(0), { arch: "vit_tiny", imgSize: 32, patchSize: 8 });
 * tree.paths(params).map(([p]) => p).slice(0, 3); // ["cls_token", "pos_embed", "masked_embed"]
 * ```
 */
export function initVit(key: Tensor, config: VitConfigInput = {}, opts: InitVitOptions = {}): VitParams {
  random.assertKey(key, "initVit");
  const c = vitConfig(config);
  const dtype = opts.dtype ?? "float32";
  const backend = key.backend;
  const bound = 1 / Math.sqrt(c.inChans * c.patchSize * c.patchSize);
  const shapes = vitParamShapes(c);
  const keys = random.split(key, shapes.length);
  const leaf = ([name, shape]: [string, number[]], i: number): [string, Tensor] => {
    let t: Tensor;
    if (name.startsWith("patch_embed.")) {
      t = random.uniform(keys[i], shape, { dtype, min: -bound, max: bound });
    } else if (name === "cls_token" || name === "pos_embed" || (name.endsWith(".weight") && shape.length === 2)) {
      t = random.truncatedNormal(keys[i], shape, { std: 0.02, lower: -2, upper: 2, dtype });
    } else {
      // LayerNorm weights are 1; Linear and LayerNorm biases and masked_embed are 0.
      const isNormWeight = /(^|\.)norm[12]?\.weight$/.test(name);
      t = full(shape, isNormWeight ? 1 : 0, { dtype, backend });
    }
    return [name, t];
  };
  return fromPaths(shapes.map(leaf)) as unknown as VitParams;
}

/**
 * The position embedding for a `gh x gw` patch grid (spec §1.4). When the grid has the stored number of
 * patches and the input is square it is returned as is; otherwise the CLS row is kept and the square grid of
 * patch rows is resampled with PyTorch's bicubic interpolation (align_corners=False, A=-0.75) at the scale
 * factors `((gh + 0.1) / sqrt(N0), (gw + 0.1) / sqrt(N0))`, the source coordinate using those given factors.
 * `square` says whether the input image is square (the official test is on image sizes; by default `gh === gw`).
 *
 * @example
 * ```ts
 * import { interpolatePosEmbed, zeros } from "./mod.ts";
 * // A position embedding stored for a 4x4 grid, used on a 6x6 grid (bicubic resampling of the patch rows).
 * console.log(interpolatePosEmbed(zeros([1, 1 + 16, 8]), 6, 6).shape); // [1, 37, 8]
 * ```
 */
export function interpolatePosEmbed(posEmbed: Tensor, gh: number, gw: number, square = gh === gw): Tensor {
  const [one, rows, D] = posEmbed.shape;
  const n0 = rows - 1;
  if (posEmbed.rank !== 3 || one !== 1 || n0 < 1) {
    throw new RangeError(`interpolatePosEmbed: pos_embed must be [1, 1 + N0, D], got ${fmt(posEmbed.shape)}`);
  }
  if (gh * gw === n0 && square) return posEmbed;
  const side = Math.round(Math.sqrt(n0));
  if (side * side !== n0) throw new RangeError(`interpolatePosEmbed: ${n0} patch rows do not form a square grid`);
  const sh = (gh + 0.1) / Math.sqrt(n0);
  const sw = (gw + 0.1) / Math.sqrt(n0);
  const outH = Math.floor(side * sh);
  const outW = Math.floor(side * sw);
  if (outH !== gh || outW !== gw) {
    throw new Error(`interpolatePosEmbed: scale factors give a ${outH}x${outW} grid, not ${gh}x${gw}`);
  }
  const cls = api.slice(posEmbed, [0, 0, 0], [1, 1, D]);
  const grid = api.transpose(api.reshape(api.slice(posEmbed, [0, 1, 0]), [side, side, D]), [2, 0, 1]);
  const resized = nn.resizeBicubic(grid, gh, gw, [sh, sw]); // [D, gh, gw]
  const patches = api.reshape(api.transpose(resized, [1, 2, 0]), [1, gh * gw, D]);
  return api.concat([cls, patches], 1);
}

/** The PxP stride-P convolution as a patch reshape plus one matmul: `[B, C, H, W]` -> `[B, Gh*Gw, D]`. */
export function patchEmbed(proj: { weight: Tensor; bias: Tensor }, images: Tensor): Tensor {
  const [D, C, P, P2] = proj.weight.shape;
  if (images.rank !== 4 || images.shape[1] !== C || P !== P2) {
    throw new RangeError(
      `patchEmbed: images ${fmt(images.shape)} do not fit the patch weight ${fmt(proj.weight.shape)} ` +
        "([B, C, H, W] with the weight's C; square patches)",
    );
  }
  const [B, , H, W] = images.shape;
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);
  if (gh < 1 || gw < 1) throw new RangeError(`patchEmbed: images ${H}x${W} are smaller than one ${P}x${P} patch`);
  // The strided convolution drops leftover border pixels.
  const x = api.slice(images, [0, 0, 0, 0], [B, C, gh * P, gw * P]);
  const patches = api.reshape(
    api.transpose(api.reshape(x, [B, C, gh, P, gw, P]), [0, 2, 4, 1, 3, 5]),
    [B, gh * gw, C * P * P],
  );
  return nn.linear(patches, api.reshape(proj.weight, [D, C * P * P]), proj.bias);
}

/** Multi-head self-attention with a fused qkv linear; returns the output and the attention probabilities. */
export function attention(
  p: VitBlockParams["attn"],
  x: Tensor,
  numHeads: number,
): { out: Tensor; probs: Tensor } {
  const [B, T, D] = x.shape;
  const hd = D / numHeads;
  if (!Number.isInteger(hd)) throw new RangeError(`attention: width ${D} is not divisible by ${numHeads} heads`);
  const qkv = nn.linear(x, p.qkv.weight, "bias" in p.qkv ? p.qkv.bias : null);
  // [B, T, 3, H, hd] -> [3, B, H, T, hd]
  const heads = api.transpose(api.reshape(qkv, [B, T, 3, numHeads, hd]), [2, 0, 3, 1, 4]);
  const part = (i: number) => api.reshape(api.slice(heads, [i], [i + 1]), [B, numHeads, T, hd]);
  const [q, k, v] = [part(0), part(1), part(2)];
  const logits = api.mul(api.matmul(q, api.mT(k)), hd ** -0.5);
  const probs = nn.softmax(logits, -1);
  const ctx = api.reshape(api.transpose(api.matmul(probs, v), [0, 2, 1, 3]), [B, T, D]);
  return { out: nn.linear(ctx, p.proj.weight, p.proj.bias), probs };
}

/** Options of `vit`: the architecture facts not stored in the params, plus per-call switches. */
export interface VitOptions {
  /** Attention heads (not derivable from the params). A `VitConfig` can be spread in. */
  numHeads: number;
  /** LayerNorm epsilon (1e-6). */
  layerNormEps?: number;
  /** Stochastic-depth rate of the last block (linear rule over depth); used only when `train` is set. */
  dropPathRate?: number;
  /** Bool `[B, Gh, Gw]`, true = masked: `masked_embed` replaces those patch embeddings (student, global crops). */
  masks?: Tensor | null;
  /** Return all `[B, 1 + N, D]` tokens after the final norm; otherwise only the CLS token `[B, D]`. */
  returnAllTokens?: boolean;
  /** Also return the last block's attention probabilities `[B, heads, T, T]`. */
  returnAttention?: boolean;
  /** Training mode: enables drop path (needs `key` when the rate is non-zero). */
  train?: boolean;
  /** PRNG key for drop path. */
  key?: Tensor | null;
  /** Rematerialise each block under `grad` (see `VitConfig.remat`). */
  remat?: boolean;
}

/** One pre-norm block: attention and MLP residuals, each through drop path when its key is given. */
function vitBlock(
  b: VitBlockParams,
  x: Tensor,
  keys: [Tensor | null, Tensor | null],
  rate: number,
  numHeads: number,
  eps: number,
): { x: Tensor; probs: Tensor } {
  const a = attention(b.attn, nn.layerNorm(x, b.norm1.weight, b.norm1.bias, eps), numHeads);
  x = api.add(x, keys[0] ? nn.dropPath(keys[0], a.out, rate, true) : a.out);
  const h = nn.layerNorm(x, b.norm2.weight, b.norm2.bias, eps);
  const m = nn.linear(nn.gelu(nn.linear(h, b.mlp.fc1.weight, b.mlp.fc1.bias)), b.mlp.fc2.weight, b.mlp.fc2.bias);
  return { x: api.add(x, keys[1] ? nn.dropPath(keys[1], m, rate, true) : m), probs: a.probs };
}

/** `vitBlock`'s output tokens only, rematerialised. */
const rematBlock = remat((...args: Parameters<typeof vitBlock>) => vitBlock(...args).x);

/** The result of `vit` with `returnAttention`. */
export interface VitOutput {
  /** Tokens after the final norm: `[B, 1 + N, D]` or the CLS token `[B, D]`. */
  tokens: Tensor;
  /** Softmax attention of the last block, `[B, heads, T, T]`. */
  attention: Tensor;
}

/**
 * The ViT forward pass (spec §1.2-§1.6) on `[B, C, H, W]` images of any size at least one patch: patch
 * embedding, optional mask-token substitution, CLS token, interpolated position embedding, `depth` pre-norm
 * blocks (drop path only in training), final LayerNorm.
 *
 * @example
 * ```ts
 * import { initVit, random, vit, vitConfig, zeros } from "./mod.ts";
 * const config = vitConfig({ arch: "vit_tiny", imgSize: 32, patchSize: 8, depth: 2 });
 * const params = initVit(random.key(0), config);
 * const cls = vit(params, zeros([2, 3, 32, 32]), config); // [2, 192]
 * const all = vit(params, zeros([2, 3, 16, 16]), { ...config, returnAllTokens: true }); // [2, 5, 192]
 * ```
 */
export function vit(params: VitParams, images: Tensor, opts: VitOptions & { returnAttention: true }): VitOutput;
/** The tokens only (`[B, 1 + N, D]` with `returnAllTokens`, else `[B, D]`). */
export function vit(params: VitParams, images: Tensor, opts: VitOptions & { returnAttention?: false }): Tensor;
/** The tokens, or `{ tokens, attention }` with `returnAttention`. */
export function vit(params: VitParams, images: Tensor, opts: VitOptions): Tensor | VitOutput;
export function vit(params: VitParams, images: Tensor, opts: VitOptions): Tensor | VitOutput {
  const { numHeads, masks, train = false } = opts;
  const eps = opts.layerNormEps ?? 1e-6;
  const depth = params.blocks.length;
  const P = params.patch_embed.proj.weight.shape[2];
  const [B, , H, W] = images.shape;
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);

  let x = patchEmbed(params.patch_embed.proj, images); // [B, N, D]
  const D = x.shape[2];
  if (masks) {
    if (masks.dtype !== "bool" || masks.shape.join() !== [B, gh, gw].join()) {
      throw new TypeError(`vit: masks must be bool [${B}, ${gh}, ${gw}], got ${masks.dtype}${fmt(masks.shape)}`);
    }
    if (!params.masked_embed) throw new Error("vit: masks given but the params have no masked_embed (a teacher?)");
    x = api.where(api.reshape(masks, [B, gh * gw, 1]), params.masked_embed, x);
  }
  const cls = api.broadcastTo(params.cls_token, [B, 1, D]);
  x = api.concat([cls, x], 1);
  x = api.add(x, interpolatePosEmbed(params.pos_embed, gh, gw, H === W));

  const rates = dropPathRates(opts.dropPathRate ?? 0, depth);
  const dropping = train && rates.some((r) => r > 0);
  if (dropping && !opts.key) throw new Error("vit: train with a non-zero dropPathRate needs a key");
  const keys = dropping ? random.split(opts.key!, 2 * depth) : [];
  let probs: Tensor | null = null;
  params.blocks.forEach((b, i) => {
    const blockKeys: [Tensor | null, Tensor | null] = dropping ? [keys[2 * i], keys[2 * i + 1]] : [null, null];
    if (opts.remat && !(opts.returnAttention && i === depth - 1)) {
      x = rematBlock(b, x, blockKeys, rates[i], numHeads, eps);
    } else {
      const out = vitBlock(b, x, blockKeys, rates[i], numHeads, eps);
      x = out.x;
      if (i === depth - 1) probs = out.probs;
    }
  });
  x = nn.layerNorm(x, params.norm.weight, params.norm.bias, eps);
  const tokens = opts.returnAllTokens ? x : api.reshape(api.slice(x, [0, 0, 0], [B, 1, D]), [B, D]);
  if (opts.returnAttention) {
    if (probs === null) throw new Error("vit: returnAttention needs at least one block");
    return { tokens, attention: probs };
  }
  return tokens;
}

/**
 * Number of scalar parameters in a tree of tensors.
 *
 * @example
 * ```ts
 * import { countParams, zeros } from "./mod.ts";
 * console.log(countParams({ w: zeros([3, 4]), b: zeros([4]) })); // 16
 * ```
 */
export function countParams(params: unknown): number {
  return leaves<Tensor>(params).reduce((n, t) => n + t.size, 0);
}
