/** Small WGSL code-generation helpers shared by the kernel builders. Shapes are baked in as constants. */
import type { DType } from "../ops/dtype.ts";
import type { Shape } from "../ops/shape.ts";
import { PRELUDE, wgslType } from "./types.ts";

/** Default workgroup size of the simple per-element kernels. */
export const WG = 256;

/**
 * WGSL statements that map the flat index `flat` (u32, row-major over `shape`) to an offset
 * `sum(coord[d] * strides[d])` stored in a new `let` named `name`.
 */
export function offsetOf(name: string, flat: string, shape: Shape, strides: readonly number[]): string {
  if (shape.length === 0) return `let ${name} = 0u;`;
  const lines = [`var ${name}_r = ${flat};`, `var ${name} = 0u;`];
  for (let d = shape.length - 1; d >= 0; d--) {
    const c = d === 0 ? `${name}_r` : `(${name}_r % ${shape[d]}u)`;
    if (strides[d] !== 0) lines.push(`${name} += ${c} * ${strides[d]}u;`);
    if (d > 0) lines.push(`${name}_r = ${name}_r / ${shape[d]}u;`);
  }
  return lines.join("\n  ");
}

/** Storage binding declarations: inputs read-only at 0..n-1, the output read_write at n. */
export function bindings(inDtypes: readonly DType[], outDtype: DType): string {
  const ins = inDtypes.map((d, i) => `@group(0) @binding(${i}) var<storage, read> in${i}: array<${wgslType(d)}>;`);
  const out = `@group(0) @binding(${inDtypes.length}) var<storage, read_write> out: array<${wgslType(outDtype)}>;`;
  return [...ins, out].join("\n");
}

/**
 * A whole shader with one invocation per `threads` (2-D dispatch folded into a flat `gid`), running `body`
 * only for `gid < threads`.
 */
export function perThreadKernel(
  inDtypes: readonly DType[],
  outDtype: DType,
  threads: number,
  body: string,
  wg = WG,
): string {
  return `${PRELUDE}
${bindings(inDtypes, outDtype)}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let gid = g.x + g.y * nw.x * ${wg}u;
  if (gid >= ${threads}u) { return; }
  ${body}
}`;
}

/**
 * Workgroup size for a kernel of `threads` long-running invocations: smaller groups when there are few, so
 * that at least 8 groups exist to spread over the CPU cores of a software adapter (a group runs on one core).
 */
export function workgroupFor(threads: number): number {
  let wg = WG;
  while (wg > 8 && threads < 8 * wg) wg /= 2;
  return wg;
}

/** Elements each invocation of an elementwise kernel handles (contiguous runs vectorise better on lavapipe). */
export const ELEMENTS_PER_THREAD = 4;

/**
 * An elementwise kernel over `n` elements: each invocation runs `body` (which uses `gid` as the element index)
 * for `ELEMENTS_PER_THREAD` consecutive elements. Returns the code and the invocation count.
 */
export function elementwiseKernel(
  inDtypes: readonly DType[],
  outDtype: DType,
  n: number,
  body: string,
): { code: string; threads: number; workgroupSize: number } {
  const e = ELEMENTS_PER_THREAD;
  const threads = Math.ceil(n / e);
  const code = `${PRELUDE}
${bindings(inDtypes, outDtype)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let base = (g.x + g.y * nw.x * ${WG}u) * ${e}u;
  for (var ek = 0u; ek < ${e}u; ek++) {
    let gid = base + ek;
    if (gid >= ${n}u) { break; }
    ${body}
  }
}`;
  return { code, threads, workgroupSize: WG };
}
