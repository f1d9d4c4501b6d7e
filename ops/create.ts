/** Creating tensors from host data, and moving them between backends. */
import type { Tensor } from "./tensor.ts";
import { fromHost } from "./engine.ts";
import type { Backend } from "./backend.ts";
import { defaultBackend, webgpu } from "./backends.ts";
import { cpu } from "./cpu.ts";
import { allocHost, assertDType, type DType, type HostArray, toHost } from "./dtype.ts";
import { checkShape, fmt, size } from "./shape.ts";

/** Options shared by the creation functions. */
export interface CreateOptions {
  /** Element type (float32 by default). */
  dtype?: DType;
  /** Backend to create on (the default backend otherwise). */
  backend?: Backend;
}

/** Nested arrays of numbers or booleans. */
export type NestedInput = number | boolean | NestedInput[];

function inferShape(data: NestedInput): number[] {
  const shape: number[] = [];
  let x: NestedInput = data;
  while (Array.isArray(x)) {
    shape.push(x.length);
    x = x[0];
  }
  return shape;
}

/**
 * Creates a tensor from nested arrays, a flat typed array (with `shape`), or a number.
 *
 * @example
 * ```ts
 * import { tensor } from "./mod.ts";
 * const a = tensor([[1, 2], [3, 4]]);
 * const b = tensor(new Float32Array(6), { shape: [2, 3] });
 * ```
 */
export function tensor(
  data: NestedInput | ArrayLike<number>,
  opts: CreateOptions & { shape?: readonly number[] } = {},
): Tensor {
  const dtype = opts.dtype ?? "float32";
  assertDType(dtype, "tensor");
  let flat: ArrayLike<number | boolean>;
  let shape: readonly number[];
  if (typeof data === "number" || typeof data === "boolean") {
    flat = [data];
    shape = opts.shape ?? [];
  } else if (Array.isArray(data)) {
    shape = inferShape(data as NestedInput);
    flat = (data as unknown[]).flat(Infinity) as (number | boolean)[];
    if (flat.length !== size(shape)) throw new RangeError(`tensor: ragged nested array (expected ${fmt(shape)})`);
    if (opts.shape) {
      if (size(opts.shape) !== flat.length) {
        throw new RangeError(`tensor: ${flat.length} values do not fill ${fmt(opts.shape)}`);
      }
      shape = opts.shape;
    }
  } else {
    flat = data as ArrayLike<number>;
    shape = opts.shape ?? [flat.length];
    if (size(shape) !== flat.length) throw new RangeError(`tensor: ${flat.length} values do not fill ${fmt(shape)}`);
  }
  checkShape(shape, "tensor");
  return fromHost(opts.backend ?? defaultBackend(), toHost(dtype, flat), shape, dtype);
}

/**
 * A tensor filled with `value`.
 *
 * @example
 * ```ts
 * import { full } from "./mod.ts";
 * console.log(await full([2, 2], 7).toArray()); // [[7, 7], [7, 7]]
 * ```
 */
export function full(shape: readonly number[], value: number, opts: CreateOptions = {}): Tensor {
  checkShape(shape, "full");
  const dtype = opts.dtype ?? "float32";
  const data = allocHost(dtype, size(shape));
  data.fill(value);
  return fromHost(opts.backend ?? defaultBackend(), data, shape, dtype);
}

/**
 * A tensor of zeros.
 *
 * @example
 * ```ts
 * import { zeros } from "./mod.ts";
 * const z = zeros([2, 3], { dtype: "int32" });
 * console.log(z.dtype, z.shape); // int32 [2, 3]
 * ```
 */
export function zeros(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 0, opts);
}

/**
 * A tensor of ones.
 *
 * @example
 * ```ts
 * import { ones } from "./mod.ts";
 * console.log(await ones([3]).toArray()); // [1, 1, 1]
 * ```
 */
export function ones(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/**
 * `[start, start+step, ...)` below `stop`; with one argument, `[0, n)`.
 *
 * @example
 * ```ts
 * import { arange } from "./mod.ts";
 * console.log(await arange(4).toArray()); // [0, 1, 2, 3]
 * console.log(await arange(1, 2, 0.25).toArray()); // [1, 1.25, 1.5, 1.75]
 * ```
 */
export function arange(start: number, stop?: number, step = 1, opts: CreateOptions = {}): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new RangeError("arange: step must not be 0");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const data = allocHost(opts.dtype ?? "float32", n);
  for (let i = 0; i < n; i++) data[i] = start + i * step;
  return fromHost(opts.backend ?? defaultBackend(), data, [n], opts.dtype ?? "float32");
}

/**
 * Uploads a host array as a tensor (no copy semantics are promised; the array may be reused).
 *
 * @example
 * ```ts
 * import { fromTyped } from "./mod.ts";
 * const t = fromTyped(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3], "float32");
 * console.log(await t.toArray()); // [[1, 2, 3], [4, 5, 6]]
 * ```
 */
export function fromTyped(data: HostArray, shape: readonly number[], dtype: DType, backend?: Backend): Tensor {
  return fromHost(backend ?? defaultBackend(), data, shape, dtype);
}

/**
 * Copies a tensor to another backend (float64 becomes float32 on the GPU).
 *
 * @example
 * ```ts
 * import { tensor, toBackend } from "./mod.ts";
 * const onCpu = await toBackend(tensor([1, 2]), "cpu");
 * ```
 */
export async function toBackend(t: Tensor, target: "cpu" | "webgpu" | Backend): Promise<Tensor> {
  const backend = typeof target === "string" ? (target === "cpu" ? cpu : await webgpu()) : target;
  if (t.backend === backend) return t;
  const data = await t.data();
  const dtype: DType = !backend.supports(t.dtype) && t.dtype === "float64" ? "float32" : t.dtype;
  return fromHost(backend, dtype === t.dtype ? data : toHost(dtype, data), t.shape, dtype);
}
