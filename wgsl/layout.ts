/**
 * Operand layouts that the WebGPU matmul kernels run fastest on, chosen by rewriting the graph before it is
 * compiled (measured on lavapipe with `deno task bench ibot_step`):
 *
 * - `x · Wᵀ` with a small 2-D `W` (every linear layer: PyTorch stores `W` as `[out, in]`) reads `W` across its
 *   rows, 4 gathered scalars per vec4; transposing `W` once (a tiny copy) lets the kernel read contiguous vec4
 *   rows instead: about 1.5× faster for the `[B·T, D] × [D, 4D]` shapes of a ViT.
 * - `Aᵀ · B` with a long reduction and a narrow-by-wide output (weight gradients `dYᵀ · X` of `[D, 4D]`) runs
 *   about 2× faster as `(Bᵀ · A)ᵀ`, whose output is wide-by-narrow; the final transpose is a tiny copy.
 */
import type { Eqn, Graph } from "../autograd/graph.ts";
import type { Aval } from "../ops/prim.ts";
import { size } from "../ops/shape.ts";

/** Rewrites the matmuls of a graph into the faster operand layouts; returns the graph unchanged when none applies. */
export function preferMatmulLayouts(graph: Graph): Graph {
  const avals = [...graph.avals];
  const eqns: Eqn[] = [];
  const fresh = (aval: Aval) => avals.push(aval) - 1;
  const transposed = new Map<number, number>(); // weight id -> id of its transpose
  let changed = false;
  for (const e of graph.eqns) {
    if (e.prim !== "matmul") {
      eqns.push(e);
      continue;
    }
    const { transA, transB } = e.params as { transA: boolean; transB: boolean };
    const [a, b] = e.inputs.map((id) => graph.avals[id]);
    const out = graph.avals[e.out];
    const [m, n] = out.shape.slice(-2);
    const k = transA ? a.shape[a.shape.length - 2] : a.shape[a.shape.length - 1];
    const work = m * n * k;
    if (a.dtype !== "float32") {
      eqns.push(e);
      continue;
    }
    if (transA && !transB && a.shape.length === 2 && b.shape.length === 2 && m < n && k >= 8 * n && work >= 1 << 22) {
      // Aᵀ·B, narrow-by-wide output, long reduction: compute (Bᵀ·A)ᵀ.
      const swapped = fresh({ shape: [n, m], dtype: out.dtype });
      eqns.push({ prim: "matmul", inputs: [e.inputs[1], e.inputs[0]], params: e.params, out: swapped } as Eqn);
      eqns.push({ prim: "transpose", inputs: [swapped], params: { perm: [1, 0] }, out: e.out } as Eqn);
      changed = true;
    } else if (transB && b.shape.length === 2 && work >= 1 << 22 && size(b.shape) * 16 <= m * n) {
      // op(A)·Wᵀ with a small 2-D W: read a transposed copy of W instead.
      let wt = transposed.get(e.inputs[1]);
      if (wt === undefined) {
        wt = fresh({ shape: [b.shape[1], b.shape[0]], dtype: b.dtype });
        eqns.push({ prim: "transpose", inputs: [e.inputs[1]], params: { perm: [1, 0] }, out: wt } as Eqn);
        transposed.set(e.inputs[1], wt);
      }
      eqns.push({ ...e, inputs: [e.inputs[0], wt], params: { ...e.params, transB: false } } as Eqn);
      changed = true;
    } else eqns.push(e);
  }
  return changed ? { ...graph, avals, eqns } : graph;
}
