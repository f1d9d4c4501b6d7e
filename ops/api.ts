/**
 * The user-facing primitive operations: thin wrappers over `bind` that normalise arguments (numbers become
 * scalars of the other operand's dtype, negative axes, -1 in reshape) and name the op in every error.
 */
import { type Operand, Tensor } from "./tensor.ts";
import { bind, fromHost } from "./engine.ts";
import { type DType, isFloat, toHost } from "./dtype.ts";
import type { BinaryPrim, ComparePrim, ReducePrim, UnaryPrim } from "./prim.ts";
import { broadcastShapes, fmt, normAxes, sameShape, size } from "./shape.ts";

export type { Operand };

/**
 * Creates a scalar constant on `like`'s backend with `like`'s dtype.
 *
 * @example
 * ```ts
 * import { scalarLike, tensor } from "./mod.ts";
 * const s = scalarLike(3, tensor([1, 2], { dtype: "int32" }));
 * console.log(s.dtype, s.shape, await s.item()); // int32 [] 3
 * ```
 */
export function scalarLike(value: number, like: Tensor, dtype: DType = like.dtype): Tensor {
  return fromHost(like.backend, toHost(dtype, [value]), [], dtype);
}

function pair(op: string, x: Operand, y: Operand): [Tensor, Tensor] {
  if (x instanceof Tensor && y instanceof Tensor) return [x, y];
  if (x instanceof Tensor) return [x, scalarLike(y as number, x)];
  if (y instanceof Tensor) return [scalarLike(x, y), y];
  throw new TypeError(`${op}: at least one operand must be a Tensor`);
}

const unary = (p: UnaryPrim) => (x: Tensor): Tensor => bind(p, [x], {});
const binary = (p: BinaryPrim | ComparePrim) => (x: Operand, y: Operand): Tensor => bind(p, pair(p, x, y), {});

/** Elementwise `-x`. */
export const neg: (x: Tensor) => Tensor = unary("neg");
/** Elementwise `e^x`. */
export const exp: (x: Tensor) => Tensor = unary("exp");
/** Elementwise natural logarithm. */
export const log: (x: Tensor) => Tensor = unary("log");
/** Elementwise square root. */
export const sqrt: (x: Tensor) => Tensor = unary("sqrt");
/** Elementwise `1/sqrt(x)`. */
export const rsqrt: (x: Tensor) => Tensor = unary("rsqrt");
/** Elementwise `1/x`. */
export const reciprocal: (x: Tensor) => Tensor = unary("reciprocal");
/** Elementwise hyperbolic tangent. */
export const tanh: (x: Tensor) => Tensor = unary("tanh");
/** Elementwise error function. */
export const erf: (x: Tensor) => Tensor = unary("erf");
/** Elementwise absolute value. */
export const abs: (x: Tensor) => Tensor = unary("abs");
/** Elementwise sign (-1, 0, 1). */
export const sign: (x: Tensor) => Tensor = unary("sign");
/** Elementwise sine. */
export const sin: (x: Tensor) => Tensor = unary("sin");
/** Elementwise cosine. */
export const cos: (x: Tensor) => Tensor = unary("cos");
/** Elementwise floor. */
export const floor: (x: Tensor) => Tensor = unary("floor");

/** `x + y` with broadcasting. */
export const add: (x: Operand, y: Operand) => Tensor = binary("add");
/** `x - y` with broadcasting. */
export const sub: (x: Operand, y: Operand) => Tensor = binary("sub");
/** `x * y` with broadcasting. */
export const mul: (x: Operand, y: Operand) => Tensor = binary("mul");
/** `x / y` with broadcasting (truncating for integers). */
export const div: (x: Operand, y: Operand) => Tensor = binary("div");
/** `x ** y` with broadcasting (floats). */
export const pow: (x: Operand, y: Operand) => Tensor = binary("pow");
/** Elementwise maximum with broadcasting. */
export const maximum: (x: Operand, y: Operand) => Tensor = binary("maximum");
/** Elementwise minimum with broadcasting. */
export const minimum: (x: Operand, y: Operand) => Tensor = binary("minimum");
/** `x == y` (bool). */
export const equal: (x: Operand, y: Operand) => Tensor = binary("eq");
/** `x != y` (bool). */
export const notEqual: (x: Operand, y: Operand) => Tensor = binary("ne");
/** `x < y` (bool). */
export const less: (x: Operand, y: Operand) => Tensor = binary("lt");
/** `x <= y` (bool). */
export const lessEqual: (x: Operand, y: Operand) => Tensor = binary("le");
/** `x > y` (bool). */
export const greater: (x: Operand, y: Operand) => Tensor = binary("gt");
/** `x >= y` (bool). */
export const greaterEqual: (x: Operand, y: Operand) => Tensor = binary("ge");

/**
 * `cond ? x : y` elementwise with broadcasting; `cond` is bool.
 *
 * @example
 * ```ts
 * import { greater, tensor, where } from "./mod.ts";
 * const x = tensor([1, -2, 3]);
 * console.log(await where(greater(x, 0), x, 0).toArray()); // [1, 0, 3]
 * ```
 */
export function where(cond: Tensor, x: Operand, y: Operand): Tensor {
  const [a, b] = pair("where", x, y);
  return bind("where", [cond, a, b], {});
}

/**
 * Converts to `dtype` (floats truncate toward zero when cast to integers).
 *
 * @example
 * ```ts
 * import { cast, tensor } from "./mod.ts";
 * console.log(await cast(tensor([1.7, -1.7]), "int32").toArray()); // [1, -1]
 * ```
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  return x.dtype === dtype ? x : bind("cast", [x], { dtype });
}

function reducer(p: ReducePrim) {
  return (x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor =>
    reduceInStages(p, x, normAxes(axes as number[] | number | undefined, x.rank, p), keepdims);
}

/**
 * Most elements one reduction folds into one output. llvmpipe (lavapipe) silently ends a shader invocation's loops
 * after 65,535 iterations in all, which truncated the sum of a [2, 128, 1024] loss tensor to its first 64 Ki
 * elements; a longer reduction therefore runs in stages (also more parallel on any device).
 */
export const MAX_FOLD = 32768;

/** The fold's identity, used to pad an axis that is split into whole chunks. */
function foldIdentity(p: ReducePrim, dtype: DType): number {
  if (p === "sum") return 0;
  const [lowest, highest] = dtype === "int32"
    ? [-(2 ** 31), 2 ** 31 - 1]
    : dtype === "uint32"
    ? [0, 2 ** 32 - 1]
    : [-Infinity, Infinity];
  return p === "max" ? lowest : highest;
}

/** `p` over `axes` as reductions of at most `MAX_FOLD` elements each: innermost axes first, a long axis in chunks. */
function reduceInStages(p: ReducePrim, x: Tensor, axes: number[], keepdims: boolean): Tensor {
  if (axes.reduce((a, i) => a * x.shape[i], 1) <= MAX_FOLD) return bind(p, [x], { axes, keepdims });
  const kept = x.shape.filter((_, i) => !axes.includes(i));
  const inner: number[] = [];
  for (let j = axes.length - 1, n = 1; j >= 0 && n * x.shape[axes[j]] <= MAX_FOLD; j--) {
    inner.unshift(axes[j]);
    n *= x.shape[axes[j]];
  }
  let partial: Tensor;
  if (inner.length > 0) {
    partial = bind(p, [x], { axes: inner, keepdims: true });
  } else {
    // The innermost reduced axis alone is too long: pad it to whole chunks and fold each chunk first.
    const a = axes[axes.length - 1];
    const len = x.shape[a];
    const chunks = Math.ceil(len / MAX_FOLD);
    const hi = x.shape.map((_, i) => (i === a ? chunks * MAX_FOLD - len : 0));
    const padded = pad(x, x.shape.map(() => 0), hi, foldIdentity(p, x.dtype));
    const split = reshape(padded, [...x.shape.slice(0, a), chunks, MAX_FOLD, ...x.shape.slice(a + 1)]);
    partial = bind(p, [split], { axes: [a + 1], keepdims: false });
  }
  const rest = axes.filter((a) => !inner.includes(a) && partial.shape[a] > 1);
  const out = rest.length > 0 ? reduceInStages(p, partial, rest, true) : partial;
  return keepdims ? reshape(out, x.shape.map((d, i) => (axes.includes(i) ? 1 : d))) : reshape(out, kept);
}
/** Sum over `axes` (all when omitted). */
export const sum: (x: Tensor, axes?: number | readonly number[], keepdims?: boolean) => Tensor = reducer("sum");
/** Maximum over `axes` (all when omitted). */
export const max: (x: Tensor, axes?: number | readonly number[], keepdims?: boolean) => Tensor = reducer("max");
/** Minimum over `axes` (all when omitted). */
export const min: (x: Tensor, axes?: number | readonly number[], keepdims?: boolean) => Tensor = reducer("min");

/**
 * Mean over `axes` (all when omitted).
 *
 * @example
 * ```ts
 * import { mean, tensor } from "./mod.ts";
 * console.log(await mean(tensor([[1, 2], [3, 4]]), 0).toArray()); // [2, 3]
 * ```
 */
export function mean(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  const ax = normAxes(axes as number[] | number | undefined, x.rank, "mean");
  const n = ax.reduce((a, i) => a * x.shape[i], 1);
  return div(sum(x, ax, keepdims), n);
}

/**
 * Index of the first maximum along `axis` (int32).
 *
 * @example
 * ```ts
 * import { argmax, tensor } from "./mod.ts";
 * console.log(await argmax(tensor([[1, 5, 2], [7, 0, 7]])).toArray()); // [1, 0]
 * ```
 */
export function argmax(x: Tensor, axis = -1, keepdims = false): Tensor {
  return bind("argmax", [x], { axis: normAxes(axis, x.rank, "argmax")[0], keepdims });
}

/** Options of `matmul`: read an operand transposed (last two dims swapped) without materialising it. */
export interface MatmulOptions {
  /** Use `a` with its last two axes swapped. */
  transA?: boolean;
  /** Use `b` with its last two axes swapped. */
  transB?: boolean;
}

/**
 * Matrix product `op(a)[..., M, K] x op(b)[..., K, N]` with broadcast batch dimensions; `op` transposes the
 * last two dimensions when `transA`/`transB` is set (read in place by the kernels).
 *
 * @example
 * ```ts
 * import { matmul, ones } from "./mod.ts";
 * const y = matmul(ones([2, 3]), ones([4, 3]), { transB: true });
 * console.log(y.shape, await y.toArray()); // [2, 4], every entry 3
 * ```
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  return bind("matmul", [a, b], { transA: opts.transA ?? false, transB: opts.transB ?? false });
}

/**
 * Same data under a new shape; one dimension may be -1.
 *
 * @example
 * ```ts
 * import { arange, reshape } from "./mod.ts";
 * console.log(await reshape(arange(6), [2, -1]).toArray()); // [[0, 1, 2], [3, 4, 5]]
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const s = [...shape];
  const hole = s.indexOf(-1);
  if (hole >= 0) {
    const known = s.reduce((a, d, i) => (i === hole ? a : a * d), 1);
    if (known === 0 || x.size % known !== 0) {
      throw new RangeError(`reshape: cannot reshape ${fmt(x.shape)} to ${fmt(shape)}`);
    }
    s[hole] = x.size / known;
  }
  if (sameShape(s, x.shape)) return x;
  return bind("reshape", [x], { shape: s });
}

/**
 * Permutes dimensions; reverses them when `perm` is omitted.
 *
 * @example
 * ```ts
 * import { transpose, zeros } from "./mod.ts";
 * console.log(transpose(zeros([2, 3, 4]), [2, 0, 1]).shape); // [4, 2, 3]
 * ```
 */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm ? perm.map((a) => (a < 0 ? a + x.rank : a)) : [...Array(x.rank).keys()].reverse();
  if (p.every((a, i) => a === i) && p.length === x.rank) return x;
  return bind("transpose", [x], { perm: p });
}

/**
 * Swaps the last two dimensions.
 *
 * @example
 * ```ts
 * import { mT, zeros } from "./mod.ts";
 * console.log(mT(zeros([5, 2, 3])).shape); // [5, 3, 2]
 * ```
 */
export function mT(x: Tensor): Tensor {
  const perm = [...Array(x.rank).keys()];
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return transpose(x, perm);
}

/**
 * Broadcasts to `shape` by NumPy rules.
 *
 * @example
 * ```ts
 * import { broadcastTo, tensor } from "./mod.ts";
 * console.log(await broadcastTo(tensor([1, 2]), [3, 2]).toArray()); // [[1, 2], [1, 2], [1, 2]]
 * ```
 */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  return bind("broadcastTo", [x], { shape: [...shape] });
}

/**
 * Sums a broadcast cotangent back to `shape` (the transpose of broadcasting).
 *
 * @example
 * ```ts
 * import { ones, sumToShape } from "./mod.ts";
 * console.log(await sumToShape(ones([3, 2]), [1, 2]).toArray()); // [[3, 3]]
 * ```
 */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  return reshape(axes.length ? sum(g, axes) : g, shape);
}

/**
 * `x[starts:ends]` per dimension (ends exclusive; omitted trailing dims are taken whole).
 *
 * @example
 * ```ts
 * import { arange, reshape, slice } from "./mod.ts";
 * const x = reshape(arange(6), [2, 3]);
 * console.log(await slice(x, [0, 1], [2, 3]).toArray()); // [[1, 2], [4, 5]]
 * ```
 */
export function slice(x: Tensor, starts: readonly number[], ends?: readonly number[]): Tensor {
  const st = x.shape.map((_, i) => starts[i] ?? 0);
  const en = x.shape.map((d, i) => ends?.[i] ?? d);
  if (st.every((s) => s === 0) && en.every((e, i) => e === x.shape[i])) return x;
  return bind("slice", [x], { starts: st, ends: en });
}

/**
 * Constant padding: `lo[i]` before and `hi[i]` after dimension i.
 *
 * @example
 * ```ts
 * import { pad, tensor } from "./mod.ts";
 * console.log(await pad(tensor([1, 2]), [1], [2]).toArray()); // [0, 1, 2, 0, 0]
 * ```
 */
export function pad(x: Tensor, lo: readonly number[], hi: readonly number[], value = 0): Tensor {
  if (lo.every((v) => v === 0) && hi.every((v) => v === 0)) return x;
  return bind("pad", [x], { lo: [...lo], hi: [...hi], value });
}

/**
 * Joins tensors along `axis`.
 *
 * @example
 * ```ts
 * import { concat, tensor } from "./mod.ts";
 * console.log(await concat([tensor([1]), tensor([2, 3])]).toArray()); // [1, 2, 3]
 * ```
 */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new RangeError("concat: needs at least one tensor");
  if (xs.length === 1) return xs[0];
  const ax = normAxes(axis, xs[0].rank, "concat")[0];
  // One WGSL kernel binds every operand as a storage buffer (adapters allow 8 to ~32 per stage): join at most
  // MAX_CONCAT_INPUTS at a time.
  if (xs.length > MAX_CONCAT_INPUTS) {
    const groups: Tensor[] = [];
    for (let i = 0; i < xs.length; i += MAX_CONCAT_INPUTS) groups.push(concat(xs.slice(i, i + MAX_CONCAT_INPUTS), ax));
    return concat(groups, ax);
  }
  return bind("concat", xs, { axis: ax });
}

/** Most operands of one `concat` primitive (larger joins are nested). */
const MAX_CONCAT_INPUTS = 7;

/**
 * Stacks same-shaped tensors along a new axis.
 *
 * @example
 * ```ts
 * import { stack, tensor } from "./mod.ts";
 * console.log(await stack([tensor([1, 2]), tensor([3, 4])], 1).toArray()); // [[1, 3], [2, 4]]
 * ```
 */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new RangeError("stack: needs at least one tensor");
  const ax = axis < 0 ? axis + xs[0].rank + 1 : axis;
  return concat(xs.map((x) => reshape(x, [...x.shape.slice(0, ax), 1, ...x.shape.slice(ax)])), ax);
}

/**
 * Takes entries of `x` along `axis` at int32 `indices` (clamped to range); result dims: x[:axis] + indices + x[axis+1:].
 *
 * @example
 * ```ts
 * import { gather, tensor } from "./mod.ts";
 * const idx = tensor([2, 0], { dtype: "int32" });
 * console.log(await gather(tensor([10, 20, 30]), idx).toArray()); // [30, 10]
 * ```
 */
export function gather(x: Tensor, indices: Tensor, axis = 0): Tensor {
  return bind("gather", [x, indices], { axis: normAxes(axis, x.rank, "gather")[0] });
}

/**
 * Adds `updates` into a zero tensor of size `size` along `axis` at `indices` (the transpose of gather).
 *
 * @example
 * ```ts
 * import { scatterAdd, tensor } from "./mod.ts";
 * const idx = tensor([0, 2, 0], { dtype: "int32" });
 * console.log(await scatterAdd(tensor([1, 2, 3]), idx, 0, 3).toArray()); // [4, 0, 2]
 * ```
 */
export function scatterAdd(updates: Tensor, indices: Tensor, axis: number, size: number): Tensor {
  return bind("scatterAdd", [updates, indices], { axis, size });
}

/**
 * Blocks gradients: the value passes, its cotangent is zero.
 *
 * @example
 * ```ts
 * import { grad, stopGradient, type Tensor, tensor } from "./mod.ts";
 * const f = (x: Tensor) => x.mul(stopGradient(x)).sum(); // d/dx treats the second factor as a constant
 * console.log(await grad(f)(tensor([3])).toArray()); // [3]
 * ```
 */
export function stopGradient(x: Tensor): Tensor {
  return bind("stopGradient", [x], {});
}

/**
 * A tensor of zeros shaped and typed like `x` on its backend.
 *
 * @example
 * ```ts
 * import { tensor, zerosLike } from "./mod.ts";
 * const z = zerosLike(tensor([1, 2], { dtype: "int32" }));
 * console.log(z.dtype, await z.toArray()); // int32 [0, 0]
 * ```
 */
export function zerosLike(x: Tensor): Tensor {
  return broadcastTo(scalarLike(0, x), x.shape);
}

/**
 * Output shape of broadcasting several shapes; throws naming `op`.
 *
 * @example
 * ```ts
 * import { broadcastShapeOf } from "./mod.ts";
 * console.log(broadcastShapeOf("myOp", [2, 1], [3])); // [2, 3]; incompatible shapes throw naming myOp
 * ```
 */
export function broadcastShapeOf(op: string, ...shapes: (readonly number[])[]): number[] {
  const s = broadcastShapes(...shapes);
  if (!s) throw new RangeError(`${op}: shapes ${shapes.map(fmt).join(" and ")} do not broadcast`);
  return s;
}

/**
 * Checks a float operand, naming the op.
 *
 * @example
 * ```ts
 * import { requireFloat, tensor } from "./mod.ts";
 * requireFloat("myOp", tensor([1.5])); // passes; an int32 tensor would throw a TypeError naming myOp
 * ```
 */
export function requireFloat(op: string, x: Tensor): void {
  if (!isFloat(x.dtype)) throw new TypeError(`${op}: expected a float tensor, got ${x.dtype}${fmt(x.shape)}`);
}

/** Number of elements of a shape. */
export { size };
