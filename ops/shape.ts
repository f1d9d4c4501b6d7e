/** Shape arithmetic shared by the rules, the backends and the kernels. */
export type Shape = readonly number[];

/**
 * Number of elements of a shape (1 for a scalar).
 *
 * @example
 * ```ts
 * import { size } from "./mod.ts";
 * console.log(size([2, 3, 4]), size([])); // 24 1
 * ```
 */
export function size(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a contiguous array. */
export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Formats a shape as `[2,3]` for error messages. */
export function fmt(shape: Shape): string {
  return `[${shape.join(",")}]`;
}

/** Equality of two shapes. */
export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** NumPy broadcasting of several shapes; returns null when they are incompatible. */
export function broadcastShapes(...shapes: Shape[]): number[] | null {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) return null;
    }
  }
  return out;
}

/**
 * Strides for reading an input of shape `inShape` at the coordinates of a broadcast output of rank
 * `outRank`: broadcast dimensions get stride 0, missing leading dimensions too.
 */
export function broadcastStrides(inShape: Shape, outShape: Shape): number[] {
  const inStrides = stridesOf(inShape);
  const out = new Array<number>(outShape.length).fill(0);
  const off = outShape.length - inShape.length;
  for (let i = 0; i < inShape.length; i++) {
    out[off + i] = inShape[i] === 1 && outShape[off + i] !== 1 ? 0 : inStrides[i];
  }
  return out;
}

/** Normalises possibly negative axes against a rank; throws naming the op on out-of-range axes. */
export function normAxes(axes: readonly number[] | number | undefined, rank: number, op: string): number[] {
  const list = axes === undefined ? [...Array(rank).keys()] : typeof axes === "number" ? [axes] : [...axes];
  const out = list.map((a) => {
    const n = a < 0 ? a + rank : a;
    if (!Number.isInteger(n) || n < 0 || n >= rank) {
      throw new RangeError(`${op}: axis ${a} is out of range for rank ${rank}`);
    }
    return n;
  });
  if (new Set(out).size !== out.length) throw new RangeError(`${op}: repeated axis in [${list}]`);
  return out.sort((x, y) => x - y);
}

/** Validates a shape given by a user. */
export function checkShape(shape: Shape, op: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${op}: invalid shape ${fmt(shape)}`);
  }
}

/**
 * Drops unit dimensions and merges neighbours that the source walks contiguously (stride of d = size of d+1 ×
 * stride of d+1), so that an index computation spends fewer divisions per element.
 */
export function mergeDims(
  shape: readonly number[],
  strides: readonly number[],
): { shape: number[]; strides: number[] } {
  const sh: number[] = [];
  const st: number[] = [];
  shape.forEach((d, i) => {
    if (d === 1) return;
    const k = sh.length - 1;
    if (k >= 0 && st[k] === strides[i] * d) {
      sh[k] *= d;
      st[k] = strides[i];
    } else {
      sh.push(d);
      st.push(strides[i]);
    }
  });
  return { shape: sh, strides: st };
}
