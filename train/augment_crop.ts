/**
 * RandomResizedCrop on the device: box sampling vectorised over images and attempts, and the resampling as
 * two batched matmuls with Pillow's separable filter weights.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import type { Interpolation } from "./augment_config.ts";
import { clamp01, iota, row, rows } from "./augment_util.ts";
import { pyRound } from "../ops/host_random.ts";

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
