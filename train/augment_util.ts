/**
 * Small tensor helpers shared by the augmentation modules (not exported from `augment`).
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import { tensor } from "../ops/create.ts";

export function rows(u: Tensor, start: number, n: number): Tensor {
  return api.slice(u, [start, 0], [start + n, u.shape[1]]);
}

export function row(u: Tensor, i: number): Tensor {
  return api.reshape(rows(u, i, 1), [u.shape[1]]);
}

/** A host constant on `like`'s backend. */
export function constant(
  like: Tensor,
  values: ArrayLike<number>,
  shape: readonly number[],
  dtype = like.dtype,
): Tensor {
  return tensor(values, { shape, dtype, backend: like.backend });
}

export function iota(like: Tensor, n: number, shape: readonly number[] = [n]): Tensor {
  return constant(like, Array.from({ length: n }, (_, i) => i), shape);
}

/** Per-image values [B] as [B, 1, 1, 1] for broadcasting over images. */
export function perImage(v: Tensor): Tensor {
  return api.reshape(v, [v.shape[0], 1, 1, 1]);
}

export function clamp01(x: Tensor): Tensor {
  return api.minimum(api.maximum(x, 0), 1);
}

/** Selects per image: `mask[b] ? a[b] : b[b]` (mask bool [B]). */
export function select(mask: Tensor, a: Tensor, b: Tensor): Tensor {
  return api.where(perImage(mask), a, b);
}
