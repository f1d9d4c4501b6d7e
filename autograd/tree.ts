/**
 * Pytrees: plain nested objects and arrays whose leaves are tensors (or other non-container values).
 * Flattening follows insertion order of object keys and array order.
 */
import { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";

/** A nested structure of plain objects and arrays with leaves of type `L`. */
export type Tree<L = Tensor> = L | readonly Tree<L>[] | { readonly [k: string]: Tree<L> };

/** The structure of a tree without its leaves; `JSON.stringify` of it is a stable signature. */
export type TreeDef =
  | { kind: "leaf" }
  | { kind: "array"; children: TreeDef[] }
  | { kind: "object"; keys: string[]; children: TreeDef[] };

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== "object" || x instanceof Tensor) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/**
 * Splits a tree into its leaves (in order) and its structure.
 *
 * @example
 * ```ts
 * import { tensor, tree } from "./mod.ts";
 * const { leaves, def } = tree.flatten({ w: tensor([1]), b: [tensor([2]), tensor([3])] });
 * console.log(leaves.length); // 3
 * const rebuilt = tree.unflatten(def, leaves); // the same structure again
 * ```
 */
export function flatten<L = Tensor>(t: unknown): { leaves: L[]; def: TreeDef } {
  const leaves: L[] = [];
  const walk = (x: unknown): TreeDef => {
    if (Array.isArray(x)) return { kind: "array", children: x.map(walk) };
    if (isPlainObject(x)) {
      const keys = Object.keys(x);
      return { kind: "object", keys, children: keys.map((k) => walk(x[k])) };
    }
    leaves.push(x as L);
    return { kind: "leaf" };
  };
  const def = walk(t);
  return { leaves, def };
}

/**
 * Rebuilds a tree of structure `def` from leaves in flatten order.
 *
 * @example
 * ```ts
 * import { tree } from "./mod.ts";
 * const { def } = tree.flatten({ a: 0, b: [0, 0] });
 * console.log(tree.unflatten(def, [1, 2, 3])); // { a: 1, b: [2, 3] }
 * ```
 */
export function unflatten<T = unknown>(def: TreeDef, leaves: readonly unknown[]): T {
  let i = 0;
  const build = (d: TreeDef): unknown => {
    if (d.kind === "leaf") return leaves[i++];
    if (d.kind === "array") return d.children.map(build);
    const o: Record<string, unknown> = {};
    d.keys.forEach((k, j) => (o[k] = build(d.children[j])));
    return o;
  };
  const out = build(def);
  if (i !== leaves.length) throw new RangeError(`tree.unflatten: ${leaves.length} leaves for a structure of ${i}`);
  return out as T;
}

/**
 * The leaves of a tree, in order.
 *
 * @example
 * ```ts
 * import { tree, tensor } from "./mod.ts";
 * tree.leaves({ w: tensor([1]), b: [tensor([2])] }).length; // 2
 * ```
 */
export function leaves<L = Tensor>(t: unknown): L[] {
  return flatten<L>(t).leaves;
}

/**
 * `[dottedPath, leaf]` pairs, e.g. `blocks.0.attn.qkv.weight`.
 *
 * @example
 * ```ts
 * import { tensor, tree } from "./mod.ts";
 * console.log(tree.paths({ blocks: [{ w: tensor([1]) }], norm: { b: tensor([0]) } }).map(([p]) => p));
 * // ["blocks.0.w", "norm.b"]
 * ```
 */
export function paths<L = Tensor>(t: unknown, prefix = ""): [string, L][] {
  const out: [string, L][] = [];
  const walk = (x: unknown, p: string) => {
    if (Array.isArray(x)) x.forEach((v, i) => walk(v, p ? `${p}.${i}` : `${i}`));
    else if (isPlainObject(x)) { for (const [k, v] of Object.entries(x)) walk(v, p ? `${p}.${k}` : k); }
    else out.push([p, x as L]);
  };
  walk(t, prefix);
  return out;
}

/**
 * Builds a nested tree from `[dottedPath, leaf]` pairs (numeric segments become array indices).
 *
 * @example
 * ```ts
 * import { tree } from "./mod.ts";
 * console.log(tree.fromPaths([["blocks.0.w", 1], ["norm.b", 2]])); // { blocks: [{ w: 1 }], norm: { b: 2 } }
 * ```
 */
export function fromPaths<L = Tensor>(entries: Iterable<readonly [string, L]>): Tree<L> {
  const root: Record<string, unknown> = {};
  for (const [path, leaf] of entries) {
    const parts = path.split(".");
    let node: Record<string, unknown> = root;
    parts.forEach((part, i) => {
      if (i === parts.length - 1) node[part] = leaf;
      else node = (node[part] ??= {}) as Record<string, unknown>;
    });
  }
  const arrayify = (x: unknown): unknown => {
    if (!isPlainObject(x)) return x;
    const keys = Object.keys(x);
    const numeric = keys.length > 0 && keys.every((k, i) => k === String(i));
    const vals = keys.map((k) => arrayify(x[k]));
    return numeric ? vals : Object.fromEntries(keys.map((k, i) => [k, vals[i]]));
  };
  return arrayify(root) as Tree<L>;
}

/**
 * True when two structures are identical.
 *
 * @example
 * ```ts
 * import { tree } from "./mod.ts";
 * console.log(tree.sameStructure(tree.flatten({ a: 1 }).def, tree.flatten({ a: 2 }).def)); // true
 * ```
 */
export function sameStructure(a: TreeDef, b: TreeDef): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Applies `f` leafwise over one or more trees of the same structure (a map and a zip in one).
 *
 * @example
 * ```ts
 * import { tree, tensor } from "./mod.ts";
 * const sum = tree.map((a, b) => a.add(b), { w: tensor([1]) }, { w: tensor([2]) });
 * ```
 */
export function map<R = Tensor, L = Tensor>(f: (...leaves: L[]) => R, first: unknown, ...rest: unknown[]): Tree<R> {
  const base = flatten<L>(first);
  const others = rest.map((t, k) => {
    const o = flatten<L>(t);
    if (!sameStructure(base.def, o.def)) {
      throw new TypeError(`tree.map: tree ${k + 1} does not have the structure of tree 0`);
    }
    return o.leaves;
  });
  const out = base.leaves.map((leaf, i) => f(leaf, ...others.map((l) => l[i])));
  return unflatten(base.def, out);
}

/**
 * The EMA fold of the teacher towards the student: `m * teacher + (1 - m) * student` for every teacher leaf,
 * taking the student's leaf at the same path (student-only leaves such as `masked_embed` are ignored).
 *
 * @example
 * ```ts
 * import { emaFold, tensor } from "./mod.ts";
 * const teacher = emaFold({ w: tensor([1]) }, { w: tensor([0]), masked_embed: tensor([5]) }, 0.9); // w = 0.9
 * ```
 */
export function emaFold<T>(teacher: T, student: unknown, m: number | Tensor): T {
  const studentLeaves = new Map(paths<unknown>(student));
  const { leaves: tl, def } = flatten<Tensor>(teacher);
  const tp = paths<Tensor>(teacher);
  const out = tl.map((t, i) => {
    const s = studentLeaves.get(tp[i][0]);
    if (!(s instanceof Tensor)) throw new TypeError(`emaFold: the student has no tensor at '${tp[i][0]}'`);
    if (s.shape.join() !== t.shape.join()) {
      throw new RangeError(`emaFold: '${tp[i][0]}' is [${t.shape}] in the teacher but [${s.shape}] in the student`);
    }
    // m*t + (1-m)*s written as t + (1-m)*(s - t) would differ in rounding from the official form; keep it literal.
    return api.add(api.mul(t, m), api.mul(s, typeof m === "number" ? 1 - m : api.sub(1, m)));
  });
  return unflatten<T>(def, out);
}
