/**
 * Reverse-mode differentiation. `vjp` runs a function on tracers that record, per call, a graph of nodes
 * (each with its parents and a backward closure built from the primitive's VJP rule). The backward pass walks
 * that graph in reverse creation order. VJP rules are ordinary differentiable ops, so a vjp nested in another
 * records its backward pass on the outer trace: grad of grad works.
 */
import { Tensor } from "../ops/tensor.ts";
import { type ActiveTrace, bind, tidy, topTrace, withTrace } from "../ops/engine.ts";
import { flatten, type TreeDef, unflatten } from "./tree.ts";
import { RULES } from "../ops/table.ts";
import type { Prim, PrimParams } from "../ops/prim.ts";
import { isFloat } from "../ops/dtype.ts";
import * as api from "../ops/api.ts";
import { fmt, sameShape } from "../ops/shape.ts";

/** A node of the backward graph. */
export interface Node {
  readonly id: number;
  readonly parents: readonly (Node | null)[];
  /** Operand cotangents from the output cotangent; null for inputs (leaves). */
  readonly backward: ((ct: Tensor) => readonly (Tensor | null)[]) | null;
  /** Its cotangent only signals that `backward` must run (several outputs of one `remat`): never summed. */
  readonly trigger?: boolean;
}

interface Payload {
  primal: Tensor;
  node: Node;
}

let nextId = 0;

/** The trace of one `vjp` call. */
export class VjpTrace implements ActiveTrace {
  readonly kind = "vjp";
  alive = true;
  constructor(readonly level: number) {}

  /** Wraps a primal value as a tracer of this trace. */
  tracer(primal: Tensor, node: Node): Tensor {
    return new Tensor(primal.shape, primal.dtype, primal.backend, {
      kind: "tracer",
      trace: this,
      payload: { primal, node },
    });
  }

  /** A new input (leaf) tracer. */
  input(primal: Tensor): Tensor {
    return this.tracer(primal, { id: nextId++, parents: [], backward: null });
  }

  owns(t: Tensor): boolean {
    return t.source.kind === "tracer" && t.source.trace === this;
  }

  /** The value underneath this trace's tracer (other values unchanged). */
  primal(t: Tensor): Tensor {
    return this.owns(t) ? (t.source as { payload: Payload }).payload.primal : t;
  }

  node(t: Tensor): Node | null {
    return this.owns(t) ? (t.source as { payload: Payload }).payload.node : null;
  }

  process<P extends Prim>(prim: P, args: readonly Tensor[], params: PrimParams[P]): Tensor {
    const primals = args.map((a) => this.primal(a));
    const out = bind(prim, primals, params);
    const parents = args.map((a) => this.node(a));
    if (parents.every((p) => p === null) || !isFloat(out.dtype)) return out;
    const rule = RULES[prim];
    return this.tracer(out, {
      id: nextId++,
      parents,
      backward: (ct) => rule.vjp(ct, primals, out, params),
    });
  }
}

/** @internal A new backward node, later than every existing one (the backward pass runs in reverse id order). */
export function makeNode(
  parents: readonly (Node | null)[],
  backward: (ct: Tensor) => readonly (Tensor | null)[],
  trigger = false,
): Node {
  return { id: nextId++, parents, backward, trigger };
}

/** Propagates cotangents from output nodes back to every reachable node. */
function backward(seeds: [Node, Tensor][]): Map<Node, Tensor> {
  const cts = new Map<Node, Tensor>();
  const accumulate = (n: Node, g: Tensor) => {
    const prev = cts.get(n);
    if (prev && n.trigger) return;
    cts.set(n, prev ? api.add(prev, g) : g);
  };
  const seen = new Set<Node>();
  const stack = seeds.map(([n]) => n);
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const p of n.parents) if (p && !seen.has(p)) stack.push(p);
  }
  for (const [n, g] of seeds) accumulate(n, g);
  const order = [...seen].sort((a, b) => b.id - a.id);
  for (const n of order) {
    const g = cts.get(n);
    if (!g || !n.backward) continue;
    const ins = n.backward(g);
    n.parents.forEach((p, i) => {
      const gi = ins[i];
      if (p && gi) accumulate(p, gi);
    });
  }
  return cts;
}

/** A pullback: maps an output cotangent tree to the cotangents of every argument (as trees). */
export type Pullback = (ct: unknown) => unknown[];

/**
 * @internal `vjp` on flat leaves: `f` maps input leaves to output leaves; float tensor leaves are differentiated.
 * The pullback takes one cotangent (or null) per output leaf and returns one per input leaf: null for leaves that
 * are not differentiated or that the seeded outputs do not reach.
 */
export function vjpLeaves(
  f: (ins: unknown[]) => unknown[],
  leaves: readonly unknown[],
): [unknown[], (cts: readonly (Tensor | null)[]) => (Tensor | null)[]] {
  return withTrace((level) => new VjpTrace(level), (trace) => {
    const inputs = leaves.map((l) => (l instanceof Tensor && isFloat(l.dtype) ? trace.input(l) : l));
    const outLeaves = f(inputs);
    const outNodes = outLeaves.map((l) => (l instanceof Tensor ? trace.node(l) : null));
    const outPrimals = outLeaves.map((l) => (l instanceof Tensor ? trace.primal(l) : l));
    const pullback = (ctLeaves: readonly (Tensor | null)[]) => {
      const seeds: [Node, Tensor][] = [];
      outNodes.forEach((n, i) => {
        const g = ctLeaves[i];
        if (!n || !g) return;
        const o = outPrimals[i] as Tensor;
        if (!sameShape(g.shape, o.shape) || g.dtype !== o.dtype) {
          throw new TypeError(
            `vjp: cotangent ${g.dtype}${fmt(g.shape)} does not match output ${o.dtype}${fmt(o.shape)}`,
          );
        }
        seeds.push([n, g]);
      });
      const cts = backward(seeds);
      return inputs.map((t) => (t instanceof Tensor && trace.owns(t) ? cts.get(trace.node(t)!) ?? null : null));
    };
    return [outPrimals, pullback];
  });
}

/**
 * Evaluates `f(...primals)` and returns its output with a pullback. Float tensor leaves of the arguments are
 * differentiated; the pullback returns, per argument, a tree of cotangents (zeros where the output does not
 * depend on a leaf, null for non-float leaves).
 *
 * @example
 * ```ts
 * import { type Tensor, tensor, vjp } from "./mod.ts";
 * const [y, pullback] = vjp((x: Tensor) => x.mul(x), tensor([3]));
 * const [dx] = pullback(tensor([1])); // [6]
 * ```
 */
export function vjp<R = Tensor>(f: (...args: never[]) => R, ...primals: unknown[]): [R, Pullback] {
  const flats = primals.map((p) => flatten<unknown>(p));
  let outDef: TreeDef | null = null;
  const [outLeaves, pull] = vjpLeaves((ins) => {
    let k = 0;
    const args = flats.map(({ def, leaves }) => unflatten(def, ins.slice(k, k += leaves.length)));
    const out = flatten<unknown>((f as (...a: unknown[]) => unknown)(...args));
    outDef = out.def;
    return out.leaves;
  }, flats.flatMap((fl) => fl.leaves));
  const pullback: Pullback = (ct) => {
    const { leaves: ctLeaves, def: ctDef } = flatten<unknown>(ct);
    if (JSON.stringify(ctDef) !== JSON.stringify(outDef)) {
      throw new TypeError("vjp: the cotangent does not have the structure of the output");
    }
    const cts = pull(ctLeaves.map((g) => (g instanceof Tensor ? g : null)));
    let k = 0;
    return flats.map(({ def, leaves }) =>
      unflatten(
        def,
        leaves.map((l) => {
          const g = cts[k++];
          if (!(l instanceof Tensor) || !isFloat(l.dtype)) return null;
          return g ?? api.zerosLike(l);
        }),
      )
    );
  };
  return [unflatten<R>(outDef!, outLeaves), pullback];
}

/** Options of `grad` and `valueAndGrad`. */
export interface GradOptions {
  /** Which positional arguments to differentiate (default 0). */
  argnums?: number | number[];
  /** `f` returns `[loss, aux]`; aux is passed through undifferentiated. */
  hasAux?: boolean;
}

/**
 * Returns a function computing `[value, grads]` of a scalar-valued `f`. With `hasAux`, value is
 * `[loss, aux]`. Grads mirror the selected arguments' trees (one tree, or an array for several argnums).
 *
 * @example
 * ```ts
 * import { valueAndGrad, tensor } from "./mod.ts";
 * const [loss, g] = valueAndGrad((p: { w: any }) => p.w.mul(p.w).sum())({ w: tensor([1, 2]) });
 * ```
 */
export function valueAndGrad<A extends unknown[], R>(
  f: (...args: A) => R,
  opts: GradOptions = {},
): (...args: A) => [R, any] {
  const argnums = opts.argnums ?? 0;
  const nums = typeof argnums === "number" ? [argnums] : argnums;
  return (...args: A) =>
    tidy(() => {
      const selected = nums.map((i) => {
        if (i < 0 || i >= args.length) {
          throw new RangeError(`grad: argnum ${i} out of range for ${args.length} arguments`);
        }
        return args[i];
      });
      const call = (...sel: unknown[]) => {
        const full = [...args] as unknown[];
        nums.forEach((n, k) => (full[n] = sel[k]));
        return (f as (...a: unknown[]) => unknown)(...full);
      };
      // aux is returned through vjp (as part of the output) so that its float tensors come back as values, not
      // as tracers of the finished trace; its cotangent leaves are null.
      const [out, pullback] = vjp((...sel: never[]) => {
        const r = call(...sel);
        if (!opts.hasAux) return r as Tensor;
        if (!Array.isArray(r) || r.length !== 2) throw new TypeError("grad: with hasAux, f must return [loss, aux]");
        return [r[0], r[1]];
      }, ...selected);
      const [loss, aux] = opts.hasAux ? out as [unknown, unknown] : [out, undefined];
      if (!(loss instanceof Tensor) || loss.size !== 1 || !isFloat(loss.dtype)) {
        throw new TypeError(`grad: f must return a float scalar, got ${String(loss)}`);
      }
      const seed = api.scalarLike(1, loss).reshape(loss.shape);
      const { leaves: auxLeaves, def: auxDef } = flatten<unknown>(aux);
      const grads = pullback(opts.hasAux ? [seed, unflatten(auxDef, auxLeaves.map(() => null))] : seed);
      const value = (opts.hasAux ? [loss, aux] : loss) as R;
      return [value, typeof argnums === "number" ? grads[0] : grads] as [R, any];
    });
}

/**
 * Returns a function computing the gradient of a scalar-valued `f` with respect to argument 0 (or `argnums`).
 *
 * @example
 * ```ts
 * import { grad, tensor } from "./mod.ts";
 * const df = grad((x: any) => x.mul(x).sum());
 * await df(tensor([1, 2])).data(); // [2, 4]
 * ```
 */
export function grad<A extends unknown[]>(f: (...args: A) => unknown, opts: GradOptions = {}): (...args: A) => any {
  const vg = valueAndGrad(f, opts);
  return (...args: A) => {
    const [value, g] = vg(...args);
    const loss = opts.hasAux ? (value as unknown[])[0] : value;
    if (loss instanceof Tensor) loss.dispose();
    return opts.hasAux ? [g, (value as unknown[])[1]] : g;
  };
}

/**
 * Defines a function with a hand-written VJP: `fwd` returns `[output, residuals]` and `bwd(residuals, ct)`
 * returns one cotangent (or null) per argument. Without an active vjp, `f` runs as is.
 *
 * @example
 * ```ts
 * import { customVjp, tensor } from "./mod.ts";
 * const clipGrad = customVjp((x: any) => x, (x: any) => [x, null], (_r, g: any) => [g.maximum(-1).minimum(1)]);
 * ```
 */
export function customVjp<A extends Tensor[], Res>(
  f: (...args: A) => Tensor,
  fwd: (...args: A) => [Tensor, Res],
  bwd: (residuals: Res, ct: Tensor) => (Tensor | null)[],
): (...args: A) => Tensor {
  const wrapped = (...args: A): Tensor => {
    const top = topTrace(args);
    if (!(top instanceof VjpTrace)) return f(...args);
    const primals = args.map((a) => top.primal(a)) as A;
    const [out, res] = fwd(...primals);
    const parents = args.map((a) => top.node(a));
    return top.tracer(out, {
      id: nextId++,
      parents,
      backward: (ct) => {
        const gs = bwd(res, ct);
        if (gs.length !== args.length) {
          throw new TypeError(`customVjp: bwd returned ${gs.length} cotangents for ${args.length} arguments`);
        }
        return gs;
      },
    });
  };
  return wrapped;
}
