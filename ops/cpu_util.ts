/** Loops shared by the CPU reference implementations. Plain and obvious: this backend is the oracle. */
import { allocHost, type HostArray } from "./dtype.ts";
import type { Aval } from "./prim.ts";
import { broadcastStrides, type Shape, size, stridesOf } from "./shape.ts";

/** Evaluates `f` at every output element, reading each input through broadcast strides. */
export function mapBroadcast(
  ins: readonly HostArray[],
  inAvals: readonly Aval[],
  out: Aval,
  f: (...v: number[]) => number,
): HostArray {
  const n = size(out.shape);
  const res = allocHost(out.dtype, n);
  const sizes = inAvals.map((a) => size(a.shape));
  // Fast paths without argument spreading: same-size operands, or a scalar second/first operand.
  if (ins.length === 1 && sizes[0] === n) {
    const [x] = ins;
    const g = f as (a: number) => number;
    for (let i = 0; i < n; i++) res[i] = g(x[i]);
    return res;
  }
  if (ins.length === 2 && (sizes[0] === n || sizes[0] === 1) && (sizes[1] === n || sizes[1] === 1)) {
    const [x, y] = ins;
    const g = f as (a: number, b: number) => number;
    if (sizes[0] === n && sizes[1] === n) { for (let i = 0; i < n; i++) res[i] = g(x[i], y[i]); }
    else if (sizes[0] === n) { for (let i = 0, b = y[0]; i < n; i++) res[i] = g(x[i], b); }
    else if (sizes[1] === n) { for (let i = 0, a = x[0]; i < n; i++) res[i] = g(a, y[i]); }
    else res.fill(g(x[0], y[0]));
    return res;
  }
  const same = sizes.every((s) => s === n);
  const vals = new Array<number>(ins.length);
  if (same) {
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < ins.length; k++) vals[k] = ins[k][i];
      res[i] = f(...vals);
    }
    return res;
  }
  const strides = inAvals.map((a) => broadcastStrides(a.shape, out.shape));
  forEachIndex(out.shape, (i, idx) => {
    for (let k = 0; k < ins.length; k++) {
      let off = 0;
      for (let d = 0; d < idx.length; d++) off += idx[d] * strides[k][d];
      vals[k] = ins[k][off];
    }
    res[i] = f(...vals);
  });
  return res;
}

/** Calls `fn(flatIndex, coords)` for every element of `shape` in row-major order (coords reused). */
export function forEachIndex(shape: Shape, fn: (flat: number, idx: number[]) => void): void {
  const n = size(shape);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    fn(i, idx);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

/**
 * Reduces `x` over `axes`: for every output element, folds the reduced elements in row-major order.
 * `init` starts the fold; `step(acc, value, position)` returns the new accumulator.
 */
export function reduceAxes(
  x: HostArray,
  shape: Shape,
  axes: readonly number[],
  out: Aval,
  init: number,
  step: (acc: number, v: number, pos: number) => number,
): HostArray {
  const kept = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const strides = stridesOf(shape);
  const redShape = axes.map((a) => shape[a]);
  const redStrides = axes.map((a) => strides[a]);
  const keptShape = kept.map((a) => shape[a]);
  const keptStrides = kept.map((a) => strides[a]);
  const res = allocHost(out.dtype, size(keptShape));
  const redOffsets: number[] = [];
  forEachIndex(redShape, (_, idx) => {
    let o = 0;
    for (let d = 0; d < idx.length; d++) o += idx[d] * redStrides[d];
    redOffsets.push(o);
  });
  forEachIndex(keptShape, (i, idx) => {
    let base = 0;
    for (let d = 0; d < idx.length; d++) base += idx[d] * keptStrides[d];
    let acc = init;
    for (let r = 0; r < redOffsets.length; r++) acc = step(acc, x[base + redOffsets[r]], r);
    res[i] = acc;
  });
  return res;
}

/** High-precision erf for the float64 oracle: Taylor series near 0, continued fraction for erfc in the tails. */
export function erf64(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  // Taylor below 2 (its cancellation costs ~200 ulps near 3); the continued fraction is within an ulp from 1.75.
  if (ax < 2) {
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated backwards.
  let f = ax;
  for (let k = 60; k >= 1; k--) f = ax + (k / 2) / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return x < 0 ? erfc - 1 : 1 - erfc;
}
