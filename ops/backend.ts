/** The seam between the engine and a device: a handful of methods, one implementation per backend. */
import type { DType, HostArray } from "./dtype.ts";
import type { Aval, Prim, PrimParams } from "./prim.ts";

/** Opaque device storage of one tensor, owned by a backend. */
export type Handle = unknown;

/** A backend runs primitives on its own storage. The engine owns lifetimes; the backend only allocates and frees. */
export interface Backend {
  /** `cpu` or `webgpu`. */
  readonly name: "cpu" | "webgpu";
  /** Whether the backend can hold this dtype (float64 is CPU only). */
  supports(dtype: DType): boolean;
  /** Copies host data into new device storage. */
  upload(data: HostArray, aval: Aval): Handle;
  /** Reads device storage back to the host. The only await in the engine. */
  read(handle: Handle, aval: Aval): Promise<HostArray>;
  /** Runs one primitive (never an alias primitive) and returns new storage for its output. */
  run<P extends Prim>(
    prim: P,
    ins: readonly Handle[],
    inAvals: readonly Aval[],
    params: PrimParams[P],
    out: Aval,
  ): Handle;
  /** Returns storage to the backend (a pool on the GPU). Called exactly once per handle by the engine. */
  release(handle: Handle): void;
}
