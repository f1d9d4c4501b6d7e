/** Element types. `float64` exists on the CPU backend only (the gradient-check oracle). */
export type DType = "float32" | "float64" | "int32" | "uint32" | "bool";

/** Every dtype, for exhaustive iteration in tests and validation. */
export const DTYPES: readonly DType[] = ["float32", "float64", "int32", "uint32", "bool"];

/** Host storage of one dtype. Booleans are stored as 0/1 bytes. */
export type HostArray = Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array;

const CTORS = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  uint32: Uint32Array,
  bool: Uint8Array,
} as const;

/** Allocates a zeroed host array of `n` elements of `dtype`. */
export function allocHost(dtype: DType, n: number): HostArray {
  return new CTORS[dtype](n);
}

/** Copies arbitrary numbers into a host array of `dtype` (wrapping integers as typed arrays do). */
export function toHost(dtype: DType, values: ArrayLike<number | boolean>): HostArray {
  const out = allocHost(dtype, values.length);
  for (let i = 0; i < values.length; i++) out[i] = Number(values[i]);
  return out;
}

/** True for float32 and float64. */
export function isFloat(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float64";
}

/** True for int32 and uint32. */
export function isInt(dtype: DType): boolean {
  return dtype === "int32" || dtype === "uint32";
}

/** Checks that a string names a dtype, with an error that lists the valid ones. */
export function assertDType(dtype: string, where: string): asserts dtype is DType {
  if (!(DTYPES as readonly string[]).includes(dtype)) {
    throw new TypeError(`${where}: unknown dtype '${dtype}' (expected one of ${DTYPES.join(", ")})`);
  }
}
