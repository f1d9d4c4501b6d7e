/**
 * The optimiser side of an iBOT step (spec §7.1, §7.3) as pure functions over pytrees: per-parameter
 * gradient clipping, and AdamW (`adamwInit` / `adamwUpdate`, PyTorch semantics) with the official decay
 * groups, per-parameter step counts and last-layer freezing expressed as data. Everything that changes
 * between steps (lr, weight decay, the freeze flag) may be a scalar tensor, so one jitted plan serves all
 * steps, frozen or not.
 */
import type { Tensor } from "../ops/tensor.ts";
import { flatten, paths, unflatten } from "../autograd/tree.ts";
import * as api from "../ops/api.ts";
import type { Operand } from "../ops/api.ts";

/**
 * The official decay rule (`get_params_groups`): no weight decay for names ending in `.bias` and for 1-D
 * parameters; everything else (including `cls_token`, `pos_embed`, `masked_embed`, `last_layer.weight_v`) is
 * decayed.
 *
 * @example
 * ```ts
 * import { decays } from "./mod.ts";
 * console.log(decays("blocks.0.attn.qkv.weight", [576, 192]), decays("norm.bias", [192])); // true false
 * ```
 */
export function decays(path: string, shape: readonly number[]): boolean {
  return !(path === "bias" || path.endsWith(".bias") || shape.length === 1);
}

/**
 * Default trainability: everything except the weight-norm gains `last_layer*.weight_g` (frozen when normLastLayer).
 *
 * @example
 * ```ts
 * import { defaultTrainable } from "./mod.ts";
 * console.log(defaultTrainable("head.last_layer.weight_g"), defaultTrainable("head.mlp.0.weight")); // false true
 * ```
 */
export function defaultTrainable(path: string): boolean {
  return !/(^|\.)last_layer2?\.weight_g$/.test(path);
}

/**
 * Parameters that `freezeLastLayer` freezes: the official rule, every name containing `last_layer`.
 *
 * @example
 * ```ts
 * import { isLastLayer } from "./mod.ts";
 * console.log(isLastLayer("head.last_layer.weight_v"), isLastLayer("head.mlp.0.weight")); // true false
 * ```
 */
export function isLastLayer(path: string): boolean {
  return path.includes("last_layer");
}

/**
 * Per-parameter gradient clipping (official `clip_gradients`): for each leaf, `coef = clip / (‖g‖₂ + 1e-6)`
 * and `g ← g·coef` when `coef < 1`. Not a global-norm clip. `clip = 0` disables it. Null leaves stay null.
 *
 * @example
 * ```ts
 * import { tensor } from "./mod.ts";
 * import { clipGradsPerParam } from "./train/optim.ts";
 * const g = clipGradsPerParam({ w: tensor([3, 4]) }, 1); // w ≈ [0.6, 0.8]
 * ```
 */
export function clipGradsPerParam<T>(grads: T, clip: Operand): T {
  if (clip === 0) return grads;
  const { leaves, def } = flatten<Tensor | null>(grads);
  const out = leaves.map((g) => {
    if (g === null || g === undefined) return g;
    const norm = api.sqrt(api.sum(api.mul(g, g)));
    const coef = api.div(typeof clip === "number" ? clip : api.cast(clip, g.dtype), api.add(norm, 1e-6));
    return api.mul(g, api.minimum(coef, 1));
  });
  return unflatten<T>(def, out);
}

/** AdamW state: per-parameter step counts (scalars) and first/second moments, each a tree like the params. */
export interface AdamWState<T = unknown> {
  /** Steps taken per parameter (float scalars; frozen steps do not count). */
  count: T;
  /** First moments. */
  m: T;
  /** Second moments. */
  v: T;
}

/** Options shared by `adamwInit` and `adamwUpdate`. */
export interface AdamWGroups {
  /** Which parameters are trained (default: all but `last_layer.weight_g`). Untrained ones never change. */
  trainable?: (path: string, shape: readonly number[]) => boolean;
  /** Which parameters are weight-decayed (default: the official rule `decays`). */
  decay?: (path: string, shape: readonly number[]) => boolean;
  /** Which parameters `freezeLastLayer` freezes (default: names containing `last_layer`). */
  frozenByFlag?: (path: string) => boolean;
}

/** Hyperparameters of one AdamW step. */
export interface AdamWOptions extends AdamWGroups {
  /** Learning rate (both groups). A number or a scalar tensor (a jit input). */
  lr: Operand;
  /** Weight decay of the decayed group. A number or a scalar tensor. */
  wd: Operand;
  /** First-moment decay (default 0.9). */
  beta1?: number;
  /** Second-moment decay (default 0.999). */
  beta2?: number;
  /** Denominator epsilon (default 1e-8). */
  eps?: number;
  /**
   * 1 (or true) while the last layer is frozen: those parameters get no update, no decay and no state step,
   * as when the official code sets their gradient to None. 0 otherwise. A number or a scalar tensor, so frozen
   * and unfrozen steps share one jitted plan. Default 0.
   */
  freezeLastLayer?: Operand | boolean;
}

/**
 * Fresh AdamW state: zero moments and zero step counts for every parameter (untrained ones included, so
 * that all trees share one structure).
 *
 * @example
 * ```ts
 * import { tensor } from "./mod.ts";
 * import { adamwInit } from "./train/optim.ts";
 * const state = adamwInit({ w: tensor([1, 2]) });
 * ```
 */
export function adamwInit<T>(params: T): AdamWState<T> {
  const { leaves, def } = flatten<Tensor>(params);
  return {
    count: unflatten<T>(def, leaves.map((p) => api.scalarLike(0, p))),
    m: unflatten<T>(def, leaves.map((p) => api.zerosLike(p))),
    v: unflatten<T>(def, leaves.map((p) => api.zerosLike(p))),
  };
}

/**
 * `1 − β^t` for a step-count tensor t, accurately: `−expm1(t·ln β)` with `ln β` in float64 on the host and
 * expm1 by its Taylor series near 0 (PyTorch computes `1 − β**t` in float64; a float32 `1 − pow(β, t)` would
 * lose ~1e-5 relative for β = 0.999).
 */
function oneMinusPow(beta: number, t: Tensor): Tensor {
  const x = api.mul(t, Math.log(beta)); // ≤ 0
  // expm1(x) = x(1 + x/2(1 + x/3(1 + x/4(1 + x/5(1 + x/6))))) for |x| < 0.1 (error < 2e-10 relative).
  let series: Tensor = api.add(api.mul(x, 1 / 6), 1);
  for (const k of [5, 4, 3, 2]) series = api.add(api.mul(api.mul(x, series), 1 / k), 1);
  series = api.mul(x, series);
  const expm1 = api.where(api.greater(x, -0.1), series, api.sub(api.exp(x), 1));
  return api.neg(expm1);
}

function asScalar(x: Operand | boolean, like: Tensor): Operand {
  if (typeof x === "boolean") return x ? 1 : 0;
  return typeof x === "number" ? x : api.cast(api.reshape(x, []), like.dtype);
}

/**
 * One AdamW step (PyTorch `AdamW`, decoupled decay) over trees: for every trainable parameter with its own
 * step count `t ← t + 1`: `p ← p·(1 − lr·wd)` (decayed group only), `m ← β1·m + (1−β1)·g`,
 * `v ← β2·v + (1−β2)·g²`, `p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)`. Parameters frozen by
 * `freezeLastLayer` keep their values and state (including `t`), so their first real step uses `t = 1`.
 * Returns the new params and state; the inputs are untouched.
 *
 * @example
 * ```ts
 * import { tensor } from "./mod.ts";
 * import { adamwInit, adamwUpdate } from "./train/optim.ts";
 * const params = { w: tensor([[1, 2]]) };
 * const grads = { w: tensor([[0.5, -0.5]]) };
 * const { params: next, state } = adamwUpdate(grads, adamwInit(params), params, { lr: 1e-2, wd: 0.04 });
 * ```
 */
export function adamwUpdate<T>(
  grads: T,
  state: AdamWState<T>,
  params: T,
  opts: AdamWOptions,
): { params: T; state: AdamWState<T> } {
  const beta1 = opts.beta1 ?? 0.9;
  const beta2 = opts.beta2 ?? 0.999;
  const eps = opts.eps ?? 1e-8;
  const trainable = opts.trainable ?? defaultTrainable;
  const decay = opts.decay ?? decays;
  const frozenByFlag = opts.frozenByFlag ?? isLastLayer;
  const { leaves: ps, def } = flatten<Tensor>(params);
  const names = paths<Tensor>(params).map(([p]) => p);
  const leavesLike = (t: unknown, what: string) => {
    const f = flatten<Tensor | null>(t);
    if (JSON.stringify(f.def) !== JSON.stringify(def)) {
      throw new TypeError(`adamwUpdate: ${what} does not have the structure of the params`);
    }
    return f.leaves;
  };
  const gs = leavesLike(grads, "grads");
  const cs = leavesLike(state.count, "state.count");
  const ms = leavesLike(state.m, "state.m");
  const vs = leavesLike(state.v, "state.v");
  const freeze = opts.freezeLastLayer ?? 0;

  const outP: Tensor[] = ps.slice();
  const outC: Tensor[] = cs.map((c) => c!);
  const outM: Tensor[] = ms.map((m) => m!);
  const outV: Tensor[] = vs.map((v) => v!);
  // Pass 1: which leaves update, under which flag (statically true, or a bool scalar tensor), with t = count + 1.
  const todo: { i: number; active: true | Tensor; t: Tensor }[] = [];
  ps.forEach((p, i) => {
    const g = gs[i];
    if (!trainable(names[i], p.shape) || g === null || g === undefined) return;
    let active: boolean | Tensor = true;
    if (frozenByFlag(names[i])) {
      const f = asScalar(freeze, p);
      active = typeof f === "number" ? f < 0.5 : api.less(f, 0.5);
    }
    if (active !== false) todo.push({ i, active, t: api.add(cs[i]!, 1) });
  });
  // The bias corrections of all leaves of one dtype in one vector op (not ~30 scalar ops per leaf).
  const corrections = new Map<number, { stepSize: Tensor; bc2Sqrt: Tensor }>();
  for (const dtype of new Set(todo.map(({ i }) => ps[i].dtype))) {
    const group = todo.filter(({ i }) => ps[i].dtype === dtype);
    const T = api.concat(group.map(({ t }) => api.reshape(t, [1])), 0);
    const lr = asScalar(opts.lr, ps[group[0].i]);
    const stepSizes = api.div(lr, oneMinusPow(beta1, T));
    const bc2Sqrts = api.sqrt(oneMinusPow(beta2, T));
    const at = (x: Tensor, k: number) => api.reshape(group.length === 1 ? x : api.slice(x, [k], [k + 1]), []);
    group.forEach(({ i }, k) => corrections.set(i, { stepSize: at(stepSizes, k), bc2Sqrt: at(bc2Sqrts, k) }));
  }
  // Pass 2: the element-wise updates.
  for (const { i, active, t } of todo) {
    const [p, m, v, g] = [ps[i], ms[i]!, vs[i]!, gs[i]!];
    const { stepSize, bc2Sqrt } = corrections.get(i)!;
    const lr = asScalar(opts.lr, p);
    const wd = asScalar(opts.wd, p);
    let p1 = p;
    if (decay(names[i], p.shape) && wd !== 0) {
      p1 = api.mul(p, typeof lr === "number" && typeof wd === "number" ? 1 - lr * wd : api.sub(1, api.mul(lr, wd)));
    }
    const m1 = api.add(api.mul(m, beta1), api.mul(g, 1 - beta1));
    const v1 = api.add(api.mul(v, beta2), api.mul(api.mul(g, g), 1 - beta2));
    const denom = api.add(api.div(api.sqrt(v1), bc2Sqrt), eps);
    const p2 = api.sub(p1, api.mul(api.div(m1, denom), stepSize));
    if (active === true) {
      [outP[i], outC[i], outM[i], outV[i]] = [p2, t, m1, v1];
    } else {
      outP[i] = api.where(active, p2, p);
      outC[i] = api.where(active, t, cs[i]!);
      outM[i] = api.where(active, m1, m);
      outV[i] = api.where(active, v1, v);
    }
  }
  return {
    params: unflatten<T>(def, outP),
    state: { count: unflatten<T>(def, outC), m: unflatten<T>(def, outM), v: unflatten<T>(def, outV) },
  };
}
