/**
 * Swin Transformer backbone as used by iBOT (spec §2): patch embedding (a PxP stride-P convolution written as a
 * reshape and a matmul) with LayerNorm, the MIM mask token, stages of window-attention blocks with shifted
 * windows and relative-position bias, patch merging, final norm, and the official output (the mean-pooled token
 * followed by the final tokens).
 *
 * Pure functions: `initSwin(key, config)` makes a parameter tree whose dotted paths are the official state-dict
 * keys (without `backbone.`); `swin(params, images, opts)` runs the model. The `relative_position_index` buffers
 * and the shift masks are host constants (`swin_window.ts`), never parameters.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import * as random from "../ops/random.ts";
import type { DType } from "../ops/dtype.ts";
import { tensor } from "../ops/create.ts";
import * as nn from "../ops/nn.ts";
import { fmt } from "../ops/shape.ts";
import { remat } from "../autograd/remat.ts";
import { type SwinConfig, swinLayout } from "./swin_config.ts";
import type { PatchMergingParams, SwinBlockParams, SwinParams } from "./swin_params.ts";
import { relativePositionIndex, roll, shiftAttnMask, windowPartition, windowReverse } from "./swin_window.ts";

export * from "./swin_config.ts";
export * from "./swin_params.ts";
export * from "./swin_window.ts";

/** A host constant on `like`'s backend. */
function constant(like: Tensor, data: ArrayLike<number>, shape: number[], dtype: DType = like.dtype): Tensor {
  return tensor(data, { shape, dtype, backend: like.backend });
}

// ---------------------------------------------------------------------------------------------------------
// Layers

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
