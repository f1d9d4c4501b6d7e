/** The primitive set: names, parameters and abstract values. Each primitive is declared once in ops/table.ts. */
import type { DType } from "./dtype.ts";
import type { Shape } from "./shape.ts";

/** Shape and dtype of a value, known at trace time. */
export interface Aval {
  /** Dimensions. */
  readonly shape: Shape;
  /** Element type. */
  readonly dtype: DType;
}

/** Unary elementwise primitives. */
export const UNARY = [
  "neg",
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "reciprocal",
  "tanh",
  "erf",
  "abs",
  "sign",
  "sin",
  "cos",
  "floor",
] as const;
/** Binary elementwise primitives (NumPy broadcasting). */
export const BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"] as const;
/** Comparisons (broadcasting, result bool). */
export const COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"] as const;
/** Reductions over axes. */
export const REDUCE = ["sum", "max", "min"] as const;

/** A unary elementwise primitive. */
export type UnaryPrim = typeof UNARY[number];
/** A binary elementwise primitive. */
export type BinaryPrim = typeof BINARY[number];
/** A comparison primitive. */
export type ComparePrim = typeof COMPARE[number];
/** A reduction primitive. */
export type ReducePrim = typeof REDUCE[number];

/** Parameters of every primitive. The keys of this interface ARE the primitive set. */
export interface PrimParams
  extends
    Record<UnaryPrim, Record<never, never>>,
    Record<BinaryPrim, Record<never, never>>,
    Record<ComparePrim, Record<never, never>>,
    Record<ReducePrim, { axes: number[]; keepdims: boolean }> {
  /** `cond ? a : b` elementwise. */
  where: Record<never, never>;
  /** Conversion to `dtype`. */
  cast: { dtype: DType };
  /** Index of the first maximum along `axis`. */
  argmax: { axis: number; keepdims: boolean };
  /** `op(a) @ op(b)` where op transposes the last two dimensions when the flag is set. */
  matmul: { transA: boolean; transB: boolean };
  /** Same data, new shape (an alias: no copy). */
  reshape: { shape: number[] };
  /** Permutation of the axes. */
  transpose: { perm: number[] };
  /** NumPy broadcast to `shape`. */
  broadcastTo: { shape: number[] };
  /** `x[starts:ends]` per axis. */
  slice: { starts: number[]; ends: number[] };
  /** Constant padding by `lo`/`hi` per axis. */
  pad: { lo: number[]; hi: number[]; value: number };
  /** Joining operands along `axis`. */
  concat: { axis: number };
  /** Taking entries along `axis` at int32 indices (clamped). */
  gather: { axis: number };
  /** The transpose of gather: summing updates into `size` slots along `axis`. */
  scatterAdd: { axis: number; size: number };
  /** Threefry-2x32 bits of `shape` from a key. */
  randomBits: { shape: number[] };
  /** Identity whose cotangent is zero (an alias). */
  stopGradient: Record<never, never>;
}

/** A primitive's name. */
export type Prim = keyof PrimParams;

/** Every primitive, for runtime iteration (kept in step with `PrimParams` by the type below). */
export const PRIMS = [
  ...UNARY,
  ...BINARY,
  ...COMPARE,
  ...REDUCE,
  "where",
  "cast",
  "argmax",
  "matmul",
  "reshape",
  "transpose",
  "broadcastTo",
  "slice",
  "pad",
  "concat",
  "gather",
  "scatterAdd",
  "randomBits",
  "stopGradient",
] as const satisfies readonly Prim[];

// Compile-time check that PRIMS lists every key of PrimParams.
type Missing = Exclude<Prim, typeof PRIMS[number]>;
const _allListed: [Missing] extends [never] ? true : Missing = true;
void _allListed;
