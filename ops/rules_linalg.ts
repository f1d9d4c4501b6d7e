/** Batched matrix multiplication with broadcast batch dimensions and transposed operands read in place. */
import { allocHost, isFloat } from "./dtype.ts";
import type { Aval, PrimParams } from "./prim.ts";
import type { Rule } from "./rule.ts";
import { fmt, size } from "./shape.ts";
import { forEachIndex } from "./cpu_util.ts";
import * as api from "./api.ts";
import type { Tensor } from "./tensor.ts";
import { batchStrides, matmulKernel, type MatmulProblem } from "../wgsl/matmul.ts";

/** Validates `op(a)[..., M, K]` and `op(b)[..., K, N]` and returns the problem's dimensions. */
export function matmulProblem(a: Aval, b: Aval, { transA, transB }: PrimParams["matmul"]): MatmulProblem {
  const msg = () =>
    `matmul: cannot multiply ${a.dtype}${fmt(a.shape)}${transA ? "^T" : ""} by ${b.dtype}${fmt(b.shape)}${
      transB ? "^T" : ""
    }`;
  if (a.shape.length < 2 || b.shape.length < 2) throw new RangeError(`${msg()}: both need rank >= 2`);
  if (a.dtype !== b.dtype) throw new TypeError(`${msg()}: dtypes differ`);
  if (!isFloat(a.dtype)) throw new TypeError(`${msg()}: needs float operands`);
  const [a0, a1] = a.shape.slice(-2);
  const [b0, b1] = b.shape.slice(-2);
  const [m, k] = transA ? [a1, a0] : [a0, a1];
  const [k2, n] = transB ? [b1, b0] : [b0, b1];
  if (k !== k2) throw new RangeError(`${msg()}: inner dimensions ${k} and ${k2} differ`);
  const batch = api.broadcastShapeOf("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2));
  return { a, b, transA, transB, batch, m, k, n };
}

/**
 * Cotangents of `C = op(A) op(B)`, each again a matmul with transpose flags:
 * plain: dA = g B^T, dB = A^T g; transA: dA = B g^T, dB = A g; transB: dA = g B, dB = g^T A;
 * both: dA = B^T g^T, dB = g^T A^T.
 */
function matmulVjp(g: Tensor, a: Tensor, b: Tensor, tA: boolean, tB: boolean) {
  const mm = api.matmul;
  if (!tA && !tB) return [mm(g, b, { transB: true }), mm(a, g, { transA: true })];
  if (tA && !tB) return [mm(b, g, { transB: true }), mm(a, g)];
  if (!tA && tB) return [mm(g, b), mm(g, a, { transA: true })];
  return [mm(b, g, { transA: true, transB: true }), mm(g, a, { transA: true, transB: true })];
}

export const matmulRule: Rule<"matmul"> = {
  arity: 2,
  shape: ([a, b], params) => {
    const { batch, m, n } = matmulProblem(a, b, params);
    return { shape: [...batch, m, n], dtype: a.dtype };
  },
  cpu: ([x, y], [a, b], params, out) => {
    const { batch, m, k, n, transA, transB } = matmulProblem(a, b, params);
    const res = allocHost(out.dtype, size(out.shape));
    const sa = batchStrides(a, batch);
    const sb = batchStrides(b, batch);
    // Element strides of op(A) along (i, p) and op(B) along (p, j).
    const [ai, ap] = transA ? [1, m] : [k, 1];
    const [bp, bj] = transB ? [1, k] : [n, 1];
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
          const av = x[oa + i * ai + p * ap];
          const brow = ob + p * bp;
          for (let j = 0; j < n; j++) row[j] += av * y[brow + j * bj];
        }
        for (let j = 0; j < n; j++) res[oo + i * n + j] = row[j];
      }
    });
    return res;
  },
  vjp: (g, [a, b], _y, { transA, transB }) => {
    const [ga, gb] = matmulVjp(g, a, b, transA, transB);
    return [api.sumToShape(ga, a.shape), api.sumToShape(gb, b.shape)];
  },
  wgsl: { kind: "kernel", build: ([a, b], _out, params) => matmulKernel(matmulProblem(a, b, params)) },
};
