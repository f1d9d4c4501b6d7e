/** What one primitive declaration consists of. ops/table.ts holds one `Rule<P>` for every `P`. */
import type { DType, HostArray } from "./dtype.ts";
import type { Aval, Prim, PrimParams } from "./prim.ts";
import type { Tensor } from "./tensor.ts";

/**
 * A complete WGSL compute shader for one primitive application. Bindings: operand `i` at
 * `@group(0) @binding(i)` (read-only storage), the output at `@binding(n)`. Entry point `main`.
 */
export interface KernelSource {
  code: string;
  /** Number of invocations the kernel expects; the backend turns it into workgroup counts. */
  threads: number;
  /** Workgroup size declared by the kernel (`@workgroup_size(N)`). */
  workgroupSize: number;
}

/**
 * How a primitive lowers to WGSL:
 * - `map`: a pure expression of the operands' values at the output element (elementwise, fusable);
 * - `reduce`: a fold over `params.axes` given by its initial value and step (a prologue can be fused in);
 * - `kernel`: a whole shader;
 * - `alias`: no dispatch, the output shares the operand's storage.
 */
export type WgslLowering<P extends Prim> =
  | { kind: "map"; expr(args: string[], ins: readonly Aval[], out: Aval, params: PrimParams[P]): string }
  | { kind: "reduce"; init(dtype: DType): string; step(acc: string, v: string): string }
  | { kind: "kernel"; build(ins: readonly Aval[], out: Aval, params: PrimParams[P]): KernelSource }
  | { kind: "alias" };

/** The vector-Jacobian product: cotangents for each operand (null where it has none, e.g. indices). */
export type VjpRule<P extends Prim> = (
  ct: Tensor,
  ins: readonly Tensor[],
  out: Tensor,
  params: PrimParams[P],
) => (Tensor | null)[];

/** The one declaration of a primitive. */
export interface Rule<P extends Prim> {
  /** Operand count, or "variadic" (concat). */
  arity: number | "variadic";
  /** The output shares the first operand's storage (reshape, stopGradient): no kernel runs. */
  alias?: boolean;
  /** Shape/dtype rule: validates operands and names the op and shapes in any error. */
  shape(ins: readonly Aval[], params: PrimParams[P]): Aval;
  /** Reference implementation on host arrays (float32/float64/int/bool). */
  cpu(ins: readonly HostArray[], inAvals: readonly Aval[], params: PrimParams[P], out: Aval): HostArray;
  /** Reverse-mode derivative, written with differentiable ops so it can itself be differentiated. */
  vjp: VjpRule<P>;
  /** WGSL lowering. */
  wgsl: WgslLowering<P>;
}

/** The exhaustive table type: a missing primitive is a type error. */
export type RuleTable = { [P in Prim]: Rule<P> };
