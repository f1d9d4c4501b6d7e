/**
 * Reduction kernels: one invocation per output element folds the reduced elements in row-major order.
 * The element read can be replaced by a fused elementwise prologue (jit), so `sum(exp(x - m))` reads `x`
 * and `m` directly instead of a materialised `exp(x - m)`.
 */
import type { DType } from "../ops/dtype.ts";
import type { Aval } from "../ops/prim.ts";
import type { KernelSource } from "../ops/rule.ts";
import { mergeDims, size, stridesOf } from "../ops/shape.ts";
import { offsetOf, perThreadKernel, workgroupFor } from "./codegen.ts";
import { PRELUDE, wgslType } from "./types.ts";

/** How the reduced element is produced from its flat index `e` in the reduction input. */
export interface ElementSource {
  /** Dtypes of the kernel's bindings before the output. */
  inputs: DType[];
  /** WGSL statements that may read `e`, and the expression of the element's value. */
  code: string;
  value: string;
}

/** Plain element source: `in0[e]`. */
export function directElement(dtype: DType): ElementSource {
  return { inputs: [dtype], code: "", value: "in0[e]" };
}

/** The reduction kernel of `x` over `axes` with fold `init`/`step` (WGSL expressions). */
export function reduceKernel(
  x: Aval,
  axes: readonly number[],
  out: Aval,
  init: string,
  step: (acc: string, v: string) => string,
  element: ElementSource = directElement(x.dtype),
): KernelSource {
  const strides = stridesOf(x.shape);
  const kept = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const n = size(out.shape);
  const redCount = axes.reduce((a, i) => a * x.shape[i], 1);
  const { code, value } = element;
  // Merged dimensions: reducing the leading axes of [B, N, D] walks one stride-D axis, not two.
  const keptDims = mergeDims(kept.map((i) => x.shape[i]), kept.map((i) => strides[i]));
  const redDims = mergeDims(axes.map((i) => x.shape[i]), axes.map((i) => strides[i]));
  const k = keptDims.shape.length - 1;
  const columns = element.code === "" && element.value === "in0[e]" && k >= 0 && keptDims.strides[k] === 1 &&
    keptDims.shape[k] % 4 === 0 && keptDims.strides.slice(0, k).every((d) => d % 4 === 0) &&
    redDims.strides.every((d) => d % 4 === 0);
  if (columns) return columnReduceKernel(x, out, keptDims, redDims, redCount, init, step);
  const body = `
  ${offsetOf("base", "gid", keptDims.shape, keptDims.strides)}
  var acc: ${wgslType(out.dtype)} = ${init};
  for (var r = 0u; r < ${redCount}u; r++) {
    ${offsetOf("ro", "r", redDims.shape, redDims.strides)}
    let e = base + ro;
    ${code}
    let v = ${value};
    acc = ${step("acc", "v")};
  }
  out[gid] = acc;`;
  const wg = workgroupFor(n);
  return { code: perThreadKernel(element.inputs, out.dtype, n, body, wg), threads: n, workgroupSize: wg };
}

type Dims = { shape: number[]; strides: number[] };

/**
 * A reduction whose kept innermost dimension is contiguous (column sums such as bias gradients): each
 * invocation folds 4 neighbouring outputs from vec4 loads, with one scalar accumulator per component.
 */
function columnReduceKernel(
  x: Aval,
  out: Aval,
  kept: Dims,
  reduced: Dims,
  redCount: number,
  init: string,
  step: (acc: string, v: string) => string,
): KernelSource {
  const n = size(out.shape);
  const t = wgslType(x.dtype);
  const ot = wgslType(out.dtype);
  const cs = [0, 1, 2, 3];
  const wg = workgroupFor(n / 4);
  const code = `${PRELUDE}
@group(0) @binding(0) var<storage, read> in0: array<vec4<${t}>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<${ot}>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let gid = g.x + g.y * nw.x * ${wg}u;
  if (gid >= ${n / 4}u) { return; }
  ${offsetOf("base", "gid * 4u", kept.shape, kept.strides)}
  ${cs.map((c) => `var acc${c}: ${ot} = ${init};`).join("\n  ")}
  for (var r = 0u; r < ${redCount}u; r++) {
    ${offsetOf("ro", "r", reduced.shape, reduced.strides)}
    let v = in0[(base + ro) / 4u];
    ${cs.map((c) => `acc${c} = ${step(`acc${c}`, `v[${c}]`)};`).join("\n    ")}
  }
  out[gid] = vec4<${ot}>(${cs.map((c) => `acc${c}`).join(", ")});
}`;
  return { code, threads: n / 4, workgroupSize: wg };
}
