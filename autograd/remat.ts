/**
 * `remat(f)` (rematerialisation, `jax.checkpoint`): differentiating through `f` keeps only its inputs; the
 * backward pass recomputes `f`'s intermediates from them. Trades one more forward of `f` for the memory of its
 * activations, e.g. per transformer block.
 */
import { Tensor } from "../ops/tensor.ts";
import { tidy, tidyConcrete, topTrace } from "../ops/engine.ts";
import { flatten, unflatten } from "./tree.ts";
import { makeNode, type Node, vjpLeaves, VjpTrace } from "./vjp.ts";
import { isFloat } from "../ops/dtype.ts";
import { fmt } from "../ops/shape.ts";

/**
 * Wraps `f` so that, under `vjp`/`grad`, its forward pass records nothing for the backward pass but its
 * arguments: the backward pass runs `f` again on them and differentiates that recomputation. Values and gradients
 * are those of `f` (bit-identical on the CPU backend when `f`'s inputs are used only by `f`: otherwise their
 * cotangents may be summed in another order); only memory and time change. Under `jit` the recomputation is a
 * separate part of the graph placed where the backward pass needs it, so the plan's liveness frees `f`'s forward
 * intermediates right after the forward. Under nested differentiation (grad of grad) the outer transform records
 * `f`'s forward in any case, so there `f` simply runs as is (same values, bit for bit).
 *
 * Arguments and results are pytrees. Everything `f` differentiates must be an argument: a closed-over tensor
 * that a `grad` is tracing is an error. Random functions inside `f` recompute the same values as long as their
 * keys are arguments (or closed-over constants).
 *
 * @example
 * ```ts
 * import { grad, nn, remat, tensor, type Tensor } from "./mod.ts";
 * const block = remat((w: Tensor, x: Tensor) => nn.gelu(x.matmul(w)).add(x));
 * const loss = (w: Tensor, x: Tensor) => block(w, block(w, x)).pow(2).sum();
 * const g = grad(loss)(tensor([[1, 0], [0, 1]]), tensor([[0.5, -1]])); // as without remat
 * ```
 */
export function remat<A extends unknown[], R>(f: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    const { leaves, def } = flatten<unknown>(args);
    const top = topTrace(leaves.filter((l): l is Tensor => l instanceof Tensor));
    if (!(top instanceof VjpTrace)) return f(...args);
    const primals = leaves.map((l) => (l instanceof Tensor ? top.primal(l) : l));
    const below = topTrace(primals.filter((l): l is Tensor => l instanceof Tensor));
    // Under an outer differentiation (grad of grad), the outer vjp records f's forward anyway: recomputing would
    // save nothing and would sum the outer cotangents in another order, so f runs as is.
    if (below instanceof VjpTrace) return f(...args);
    const call = (ins: readonly unknown[]) => f(...unflatten<A>(def, ins));
    // The forward on the primals: this vjp records none of f's operations. On concrete values the
    // intermediates are freed at once.
    const out = below === null ? tidyConcrete(() => call(primals)) : call(primals);
    const { leaves: outLeaves, def: outDef } = flatten<unknown>(out);
    for (const o of outLeaves) {
      if (o instanceof Tensor && top.owns(o)) {
        throw new Error(
          `remat: the result ${o.dtype}${fmt(o.shape)} depends on a closed-over value that is being ` +
            "differentiated; pass it to the function as an argument",
        );
      }
    }
    const tensorAt = leaves.flatMap((l, i) => (l instanceof Tensor ? [i] : []));
    const parents = tensorAt.map((i) => top.node(leaves[i] as Tensor));
    const differentiable = outLeaves.flatMap((o, i) => (o instanceof Tensor && isFloat(o.dtype) ? [i] : []));
    if (parents.every((p) => p === null) || differentiable.length === 0) return out;

    // Cotangents of the outputs, gathered before the recomputation runs.
    const cts: (Tensor | null)[] = outLeaves.map(() => null);
    const recompute = (): (Tensor | null)[] =>
      tidy(() => {
        const seeds = [...cts];
        cts.fill(null); // a later backward pass (another pullback call) gathers its own
        const [, pull] = vjpLeaves((ins) => flatten<unknown>(call(ins)).leaves, primals);
        const grads = pull(seeds);
        return tensorAt.map((i) => grads[i]);
      });
    const wrapped = [...outLeaves];
    if (differentiable.length === 1) {
      const i = differentiable[0];
      const node = makeNode(parents, (ct) => {
        cts[i] = ct;
        return recompute();
      });
      wrapped[i] = top.tracer(outLeaves[i] as Tensor, node);
    } else {
      // One joint node runs the recomputation once; each output's node stores its cotangent and triggers it.
      // The joint node is older, so the backward pass reaches it after every output node.
      const joint: Node = makeNode(parents, () => recompute(), true);
      for (const i of differentiable) {
        const node = makeNode([joint], (ct) => {
          cts[i] = ct;
          return [ct];
        });
        wrapped[i] = top.tracer(outLeaves[i] as Tensor, node);
      }
    }
    return unflatten<R>(outDef, wrapped);
  };
}
