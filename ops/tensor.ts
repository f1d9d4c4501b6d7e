/** The immutable Tensor value. One class for concrete values and for tracers; transforms tell them apart. */
import type { DType, HostArray } from "./dtype.ts";
import type { Backend, Handle } from "./backend.ts";
import type { Aval } from "./prim.ts";
import { fmt } from "./shape.ts";
import * as api from "./api.ts";

/** Reference-counted device storage shared by a tensor and its aliases (reshape, stopGradient). */
export interface DataRef {
  /** The backend that owns the storage. */
  readonly backend: Backend;
  /** The backend's storage object. */
  readonly handle: Handle;
  /** Tensors and plans holding this storage; it is released when this reaches 0. */
  refs: number;
}

/** A transform that intercepts primitive applications (vjp, jit). */
export interface Trace {
  /** Nesting depth; the innermost transform has the highest level. */
  readonly level: number;
  /** False once the transform has returned; using its tracers afterwards is an error. */
  alive: boolean;
  /** What this trace is, for error messages. */
  readonly kind: string;
}

/** Where a tensor's value lives: device storage, or a tracer of some transform with trace-specific payload. */
export type Source =
  | { readonly kind: "data"; ref: DataRef | null }
  | { readonly kind: "tracer"; readonly trace: Trace; readonly payload: unknown };

/** A tensor, or a JS number that takes the other operand's dtype and backend. */
export type Operand = Tensor | number;

/**
 * An immutable n-dimensional array. Created by `tensor`, `zeros`, ... or by operations; read back with
 * `await t.data()`. Eager tensors on the GPU are freed by `dispose()` or by the enclosing `tidy`.
 *
 * @example
 * ```ts
 * import { tensor } from "./mod.ts";
 * const x = tensor([[1, 2], [3, 4]]);
 * console.log(await x.add(1).sum().item()); // 14
 * ```
 */
export class Tensor implements Aval {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Backend that holds (or will hold) the value. */
  readonly backend: Backend;
  /** @internal */
  readonly source: Source;

  /** @internal Use the creation functions (`tensor`, `zeros`, ...) instead. */
  constructor(shape: readonly number[], dtype: DType, backend: Backend, source: Source) {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.backend = backend;
    this.source = source;
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** True when the storage has been released. */
  get disposed(): boolean {
    return this.source.kind === "data" && this.source.ref === null;
  }

  /** Reads the values back as a flat typed array (bool as 0/1 bytes). */
  async data(): Promise<HostArray> {
    const src = this.source;
    if (src.kind === "tracer") {
      throw new Error(`data(): cannot read a traced value of shape ${fmt(this.shape)} inside ${src.trace.kind}`);
    }
    if (src.ref === null) throw new Error(`data(): tensor ${fmt(this.shape)} ${this.dtype} was disposed`);
    return await src.ref.backend.read(src.ref.handle, this);
  }

  /** Reads the values back as nested JS arrays (a number for a scalar). */
  async toArray(): Promise<NestedArray> {
    const flat = Array.from(await this.data(), Number);
    if (this.dtype === "bool") return nest(flat.map((v) => v !== 0), this.shape) as NestedArray;
    return nest(flat, this.shape);
  }

  /** Reads a one-element tensor as a number. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): tensor has shape ${fmt(this.shape)}, not one element`);
    return Number((await this.data())[0]);
  }

  /** Releases the storage now (idempotent). Tracers are not disposable and are ignored. */
  dispose(): void {
    const src = this.source;
    if (src.kind !== "data" || src.ref === null) return;
    const ref = src.ref;
    src.ref = null;
    if (--ref.refs === 0) ref.backend.release(ref.handle);
  }

  /** Shape and dtype, e.g. `float32[2,3]`. */
  toString(): string {
    return `Tensor(${this.dtype}${fmt(this.shape)}${
      this.source.kind === "tracer" ? ` traced by ${this.source.trace.kind}` : ""
    })`;
  }

  /** `this + y` with broadcasting. */
  add(y: Operand): Tensor {
    return api.add(this, y);
  }
  /** `this - y` with broadcasting. */
  sub(y: Operand): Tensor {
    return api.sub(this, y);
  }
  /** `this * y` with broadcasting. */
  mul(y: Operand): Tensor {
    return api.mul(this, y);
  }
  /** `this / y` with broadcasting. */
  div(y: Operand): Tensor {
    return api.div(this, y);
  }
  /** `this ** y` with broadcasting. */
  pow(y: Operand): Tensor {
    return api.pow(this, y);
  }
  /** `-this`. */
  neg(): Tensor {
    return api.neg(this);
  }
  /** Elementwise `e^x`. */
  exp(): Tensor {
    return api.exp(this);
  }
  /** Elementwise natural log. */
  log(): Tensor {
    return api.log(this);
  }
  /** Elementwise square root. */
  sqrt(): Tensor {
    return api.sqrt(this);
  }
  /** Sum over axes (all by default). */
  sum(axes?: number | number[], keepdims = false): Tensor {
    return api.sum(this, axes, keepdims);
  }
  /** Mean over axes (all by default). */
  mean(axes?: number | number[], keepdims = false): Tensor {
    return api.mean(this, axes, keepdims);
  }
  /** Maximum over axes (all by default). */
  max(axes?: number | number[], keepdims = false): Tensor {
    return api.max(this, axes, keepdims);
  }
  /** Matrix product with broadcast batch dimensions. */
  matmul(y: Tensor): Tensor {
    return api.matmul(this, y);
  }
  /** Same data, new shape (one dimension may be -1). */
  reshape(shape: readonly number[]): Tensor {
    return api.reshape(this, shape);
  }
  /** Permutes dimensions (reverses them by default). */
  transpose(perm?: readonly number[]): Tensor {
    return api.transpose(this, perm);
  }
  /** Converts to another dtype. */
  cast(dtype: DType): Tensor {
    return api.cast(this, dtype);
  }
}

/** Nested JS arrays as returned by `toArray()`. */
export type NestedArray = number | boolean | NestedArray[];

function nest(flat: (number | boolean)[], shape: readonly number[]): NestedArray {
  if (shape.length === 0) return flat[0];
  const [d, ...rest] = shape;
  const step = rest.reduce((a, b) => a * b, 1);
  return Array.from({ length: d }, (_, i) => nest(flat.slice(i * step, (i + 1) * step), rest));
}
