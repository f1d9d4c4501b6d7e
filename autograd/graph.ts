/**
 * The graph IR that `jit` traces into: numbered variables, constants captured from the enclosing scope, and a
 * list of primitive equations in execution order. Printed like a jaxpr.
 */
import type { DataRef } from "../ops/tensor.ts";
import type { Aval, Prim, PrimParams } from "../ops/prim.ts";

/** One primitive application: `out = prim(inputs...)`. */
export interface Eqn<P extends Prim = Prim> {
  /** The primitive applied. */
  readonly prim: P;
  /** Variable ids of the operands. */
  readonly inputs: readonly number[];
  /** The primitive's parameters. */
  readonly params: PrimParams[P];
  /** Variable id of the result. */
  readonly out: number;
}

/** A traced program. Variable ids index `avals`. */
export interface Graph {
  /** Aval of every variable. */
  readonly avals: Aval[];
  /** Variables bound to the flattened arguments, in order. */
  readonly inputs: number[];
  /** Constants captured during tracing (the graph holds a reference on each). */
  readonly consts: { id: number; ref: DataRef }[];
  /** Equations in execution order. */
  readonly eqns: Eqn[];
  /** Variables returned, in flattened output order. */
  outputs: number[];
}

const SHORT: Record<string, string> = { float32: "f32", float64: "f64", int32: "i32", uint32: "u32", bool: "bool" };

function name(id: number): string {
  let s = "";
  let n = id;
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return s;
}

/**
 * Renders a graph as text, one equation per line.
 *
 * @example
 * ```ts
 * import { type Graph, printGraph } from "./mod.ts";
 * // Usually reached through `jit(f).graph(...args)`, which prints the traced graph.
 * const g: Graph = {
 *   avals: [{ shape: [2], dtype: "float32" }, { shape: [2], dtype: "float32" }],
 *   inputs: [0],
 *   consts: [],
 *   eqns: [{ prim: "exp", inputs: [0], params: {}, out: 1 }],
 *   outputs: [1],
 * };
 * console.log(printGraph(g));
 * // { lambda  ; a:f32[2] .
 * //     b:f32[2] = exp a
 * //   in (b) }
 * ```
 */
export function printGraph(g: Graph): string {
  const v = (id: number) => `${name(id)}:${SHORT[g.avals[id].dtype]}[${g.avals[id].shape}]`;
  const params = (p: object) => {
    const s = Object.entries(p).map(([k, x]) => `${k}=${JSON.stringify(x)}`).join(" ");
    return s ? `[${s}]` : "";
  };
  const lines = [
    `{ lambda ${g.consts.map((c) => v(c.id)).join(" ")} ; ${g.inputs.map(v).join(" ")} .`,
    ...g.eqns.map((e) => `    ${v(e.out)} = ${e.prim}${params(e.params)} ${e.inputs.map(name).join(" ")}`),
    `  in (${g.outputs.map(name).join(", ")}) }`,
  ];
  return lines.join("\n");
}

/** For each variable, the index of the last equation reading it (-1 if none). */
export function lastUses(g: Graph): Int32Array {
  const last = new Int32Array(g.avals.length).fill(-1);
  g.eqns.forEach((e, i) => {
    for (const id of e.inputs) last[id] = i;
  });
  return last;
}

/** Removes equations whose outputs no output depends on (e.g. a loss value computed but not returned). */
export function eliminateDeadCode(g: Graph): Graph {
  const live = new Set(g.outputs);
  const kept: Eqn[] = [];
  for (let i = g.eqns.length - 1; i >= 0; i--) {
    const e = g.eqns[i];
    if (!live.has(e.out)) continue;
    kept.push(e);
    for (const id of e.inputs) live.add(id);
  }
  kept.reverse();
  return { ...g, eqns: kept, consts: g.consts.filter((c) => live.has(c.id)), outputs: g.outputs };
}

/** True when `perm` swaps the last two axes and keeps the others. */
function swapsLastTwo(perm: readonly number[]): boolean {
  const r = perm.length;
  return r >= 2 && perm[r - 2] === r - 1 && perm[r - 1] === r - 2 && perm.slice(0, -2).every((p, i) => p === i);
}

/**
 * Folds `transpose` of the last two axes into the transpose flags of the matmuls that read it, so kernels
 * index the original operand. The transpose itself disappears when nothing else reads it (dead-code pass).
 */
export function foldTransposesIntoMatmul(g: Graph): Graph {
  const producer = new Map<number, Eqn>();
  for (const e of g.eqns) producer.set(e.out, e);
  const uses = new Map<number, number>();
  for (const e of g.eqns) for (const id of e.inputs) uses.set(id, (uses.get(id) ?? 0) + 1);
  for (const id of g.outputs) uses.set(id, (uses.get(id) ?? 0) + 1);
  const eqns = g.eqns.map((e) => {
    // (op(A) op(B))^T = op'(B) op'(A): a transpose of a matmul read only here becomes a swapped matmul.
    if (e.prim === "transpose" && swapsLastTwo((e.params as { perm: number[] }).perm)) {
      const p = producer.get(e.inputs[0]);
      if (p && p.prim === "matmul" && uses.get(p.out) === 1) {
        const { transA, transB } = p.params as { transA: boolean; transB: boolean };
        return {
          prim: "matmul",
          inputs: [p.inputs[1], p.inputs[0]],
          params: { transA: !transB, transB: !transA },
          out: e.out,
        } as Eqn;
      }
      return e;
    }
    if (e.prim !== "matmul") return e;
    const params = { ...(e.params as { transA: boolean; transB: boolean }) };
    const inputs = e.inputs.map((id, i) => {
      const p = producer.get(id);
      if (!p || p.prim !== "transpose" || !swapsLastTwo((p.params as { perm: number[] }).perm)) return id;
      if (i === 0) params.transA = !params.transA;
      else params.transB = !params.transB;
      return p.inputs[0];
    });
    return { ...e, inputs, params } as Eqn;
  });
  return eliminateDeadCode({ ...g, eqns });
}
