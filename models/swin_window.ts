/**
 * Swin window helpers: the host constants (relative-position index, shifted-window mask) and the window
 * partition, reverse and cyclic shift on the device.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";

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
