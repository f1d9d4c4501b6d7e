/** Batched matrix multiplication with NumPy-broadcast batch dimensions. */
import { allocHost, isFloat } from "./dtype.ts";
import type { Aval } from "./prim.ts";
import type { Rule } from "./rule.ts";
import { broadcastStrides, fmt, size } from "./shape.ts";
import { forEachIndex } from "./cpu_util.ts";
import * as api from "./api.ts";
import { offsetOf, perThreadKernel, WG } from "../wgsl/codegen.ts";
import { blockedApplies, blockedMatmul } from "../wgsl/matmul.ts";

interface MatmulDims {
  batch: number[];
  m: number;
  k: number;
  n: number;
}

/** Validates operands `[..., M, K]` and `[..., K, N]` and returns the dimensions. */
export function matmulDims(a: Aval, b: Aval): MatmulDims {
  const msg = () => `matmul: cannot multiply ${a.dtype}${fmt(a.shape)} by ${b.dtype}${fmt(b.shape)}`;
  if (a.shape.length < 2 || b.shape.length < 2) throw new RangeError(`${msg()}: both need rank >= 2`);
  if (a.dtype !== b.dtype) throw new TypeError(`${msg()}: dtypes differ`);
  if (!isFloat(a.dtype)) throw new TypeError(`${msg()}: needs float operands`);
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) throw new RangeError(`${msg()}: inner dimensions ${k} and ${k2} differ`);
  const batch = api.broadcastShapeOf("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2));
  return { batch, m, k, n };
}

/** Per-batch element offsets of an operand (0 stride along broadcast batch dims). */
function batchStrides(x: Aval, batch: number[]): number[] {
  const bs = x.shape.slice(0, -2);
  const mat = x.shape[x.shape.length - 1] * x.shape[x.shape.length - 2];
  return broadcastStrides(bs, batch).map((s) => s * mat);
}

export const matmulRule: Rule<"matmul"> = {
  arity: 2,
  shape: ([a, b]) => {
    const { batch, m, n } = matmulDims(a, b);
    return { shape: [...batch, m, n], dtype: a.dtype };
  },
  cpu: ([x, y], [a, b], _p, out) => {
    const { batch, m, k, n } = matmulDims(a, b);
    const res = allocHost(out.dtype, size(out.shape));
    const sa = batchStrides(a, batch);
    const sb = batchStrides(b, batch);
    const row = new Float64Array(n);
    forEachIndex(batch, (bi, idx) => {
      let oa = 0, ob = 0;
      for (let d = 0; d < idx.length; d++) {
        oa += idx[d] * sa[d];
        ob += idx[d] * sb[d];
      }
      const oo = bi * m * n;
      for (let i = 0; i < m; i++) {
        row.fill(0);
        for (let p = 0; p < k; p++) {
          const av = x[oa + i * k + p];
          const brow = ob + p * n;
          for (let j = 0; j < n; j++) row[j] += av * y[brow + j];
        }
        for (let j = 0; j < n; j++) res[oo + i * n + j] = row[j];
      }
    });
    return res;
  },
  vjp: (g, [a, b]) => [
    api.sumToShape(api.matmul(g, api.mT(b)), a.shape),
    api.sumToShape(api.matmul(api.mT(a), g), b.shape),
  ],
  wgsl: {
    kind: "kernel",
    build: ([a, b], out) => {
      const { batch, m, k, n } = matmulDims(a, b);
      if (a.dtype === "float32" && blockedApplies(n)) return blockedMatmul(a, b, batch, m, k, n);
      const total = size(out.shape);
      const body = `
  let j = gid % ${n}u;
  let i = (gid / ${n}u) % ${m}u;
  let bi = gid / ${m * n}u;
  ${offsetOf("oa", "bi", batch, batchStrides(a, batch))}
  ${offsetOf("ob", "bi", batch, batchStrides(b, batch))}
  var acc = 0.0;
  for (var p = 0u; p < ${k}u; p++) {
    acc = fma(in0[oa + i * ${k}u + p], in1[ob + p * ${n}u + j], acc);
  }
  out[gid] = acc;`;
      return { code: perThreadKernel([a.dtype, b.dtype], out.dtype, total, body), threads: total, workgroupSize: WG };
    },
  },
};
