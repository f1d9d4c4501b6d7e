/**
 * `ParamSpec`: the shape and dtype of a parameter without its data. A tree of specs describes a model for
 * checkpoint loading without initialising it (a class instance, so pytrees treat it as a leaf).
 *
 * @module
 */
import type { DType } from "../ops/dtype.ts";

/**
 * Shape and dtype of a parameter, as a pytree leaf.
 *
 * @example
 * ```ts
 * import { ParamSpec } from "./mod.ts";
 * const spec = new ParamSpec([96, 3, 4, 4]);
 * console.log(spec.size, String(spec)); // 4608 float32[96,3,4,4]
 * ```
 */
export class ParamSpec {
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** A spec of `shape` and `dtype`. */
  constructor(shape: readonly number[], dtype: DType = "float32") {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** e.g. `float32[96,3,4,4]`. */
  toString(): string {
    return `${this.dtype}[${this.shape.join(",")}]`;
  }
}
