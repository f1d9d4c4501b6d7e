/**
 * A debug switch that finds the first eager op to produce a NaN or infinity. On the CPU the check is
 * immediate; on WebGPU each op's output is scanned by a small kernel that records the lowest op number with
 * a non-finite value, and `assertFinite()` reads that flag once (no per-op readback).
 */
import { setOutputHook } from "../ops/engine.ts";
import type { Tensor } from "../ops/tensor.ts";
import { isFloat } from "../ops/dtype.ts";
import { fmt } from "../ops/shape.ts";
import type { WebGpuBackend } from "../wgsl/backend.ts";

/**
 * Thrown when an op produced a non-finite value; names the op and its output.
 *
 * @example
 * ```ts
 * import { enableFiniteCheck, NonFiniteError, tensor } from "./mod.ts";
 * enableFiniteCheck(true);
 * try {
 *   tensor([-1]).log(); // on the cpu backend the check throws here
 * } catch (e) {
 *   console.log(e instanceof NonFiniteError); // true
 * }
 * enableFiniteCheck(false);
 * ```
 */
export class NonFiniteError extends Error {
  /** The error's name. */
  override name = "NonFiniteError";
}

let ops: string[] = [];
let gpuSeen: WebGpuBackend | null = null;

function describe(prim: string, t: Tensor, index: number): string {
  return `op #${index} '${prim}' produced a non-finite value (output ${t.dtype}${fmt(t.shape)})`;
}

/**
 * Turns the non-finite check on or off (off by default: it costs one extra kernel per op on the GPU).
 *
 * @example
 * ```ts
 * import { assertFinite, enableFiniteCheck, tensor } from "./mod.ts";
 * enableFiniteCheck(true);
 * try {
 *   tensor([-1]).log(); // on the cpu backend this throws NonFiniteError naming 'log'
 *   await assertFinite(); // on WebGPU the first non-finite op is reported here
 * } catch (e) {
 *   console.error((e as Error).message); // op #0 'log' produced a non-finite value (output float32[1])
 * }
 * enableFiniteCheck(false);
 * ```
 */
export function enableFiniteCheck(on = true): void {
  ops = [];
  setOutputHook(on, (prim, t) => {
    if (!isFloat(t.dtype)) return;
    const index = ops.length;
    ops.push(describe(prim, t, index));
    const src = t.source;
    if (src.kind !== "data" || src.ref === null) return;
    const backend = src.ref.backend;
    if (backend.name === "webgpu") {
      gpuSeen = backend as WebGpuBackend;
      gpuSeen.flagNonFinite(src.ref.handle, t.size, index);
      return;
    }
    const data = src.ref.handle as ArrayLike<number>; // the CPU backend's storage is the host array
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new NonFiniteError(ops[index]);
    }
  });
}

/**
 * Throws `NonFiniteError` naming the first checked op whose output was not finite (WebGPU: one readback).
 *
 * @example
 * ```ts
 * import { assertFinite, enableFiniteCheck, tensor } from "./mod.ts";
 * enableFiniteCheck(true);
 * tensor([4]).sqrt();
 * await assertFinite(); // resolves: every checked output was finite
 * enableFiniteCheck(false);
 * ```
 */
export async function assertFinite(): Promise<void> {
  if (!gpuSeen) return;
  const first = await gpuSeen.readNonFiniteFlag();
  if (first >= 0) throw new NonFiniteError(ops[first] ?? `op #${first} produced a non-finite value`);
}
