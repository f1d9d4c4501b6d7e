/**
 * The update half of an iBOT step (see train/step.ts): from the `IbotSums` of a whole global batch, the mean
 * gradient, per-parameter clipping, AdamW, the teacher EMA and the center EMAs, and the step's metrics.
 */
import type { Tensor } from "../ops/tensor.ts";
import { emaFold, map as treeMap } from "../autograd/tree.ts";
import * as api from "../ops/api.ts";
import * as random from "../ops/random.ts";
import { momentumUpdate } from "./loss.ts";
import { adamwUpdate, clipGradsPerParam } from "./optim.ts";
import type { IbotHyper, IbotMetrics, IbotNetwork, IbotState, IbotStepConfig, IbotSums } from "./step.ts";

/** Momentum of both center EMAs (the official `center_momentum`). */
const CENTER_MOMENTUM = 0.9;

/**
 * Adds two `IbotSums` leaf by leaf (two parts of one global batch; null gradient leaves stay null). Jit it
 * donating the first argument to accumulate in place.
 *
 * @example
 * ```ts ignore
 * const add = jit(addIbotSums, { donate: [0] });
 * let sums = grads(state, part0, hp);
 * sums = add(sums, grads(state, part1, hp));
 * ```
 */
export function addIbotSums<S extends IbotSums>(a: S, b: S): S {
  return treeMap((x: Tensor | null, y: Tensor | null) => (x && y ? api.add(x, y) : x ?? y), a, b) as unknown as S;
}

/**
 * Builds the pure update `(state, sums, hyper) => { state, metrics }`: divides every leaf of `sums` by
 * `sums.images` (the global batch), clips the mean gradient per parameter, takes the AdamW step, folds the
 * teacher towards the new student, moves the centers towards the batch means and advances the key
 * (`split(state.key, 3)[0]`). Only `trainable` and `clipGrad` of the step config matter. Jit it donating the
 * state.
 *
 * @example
 * ```ts ignore
 * const update = jit(ibotUpdate({ clipGrad: 3 }), { donate: [0] });
 * const { state: next, metrics } = update(state, sums, hp);
 * ```
 */
export function ibotUpdate<B, H>(
  cfg: Pick<IbotStepConfig<B, H>, "clipGrad" | "trainable">,
): (state: IbotState<B, H>, sums: IbotSums<B, H>, hp: IbotHyper) => { state: IbotState<B, H>; metrics: IbotMetrics } {
  const clip = cfg.clipGrad ?? 3.0;
  return (state, sums, hp) => {
    const mean = (t: Tensor) => api.div(t, sums.images);
    const grads = treeMap((g: Tensor | null) => (g ? mean(g) : g), sums.grads) as unknown as IbotNetwork<B, H>;
    const clipped = clip > 0 ? clipGradsPerParam(grads, clip) : grads;
    const { params: student, state: opt } = adamwUpdate(clipped, state.opt, state.student, {
      lr: hp.lr,
      wd: hp.wd,
      freezeLastLayer: hp.freezeLastLayer,
      trainable: cfg.trainable,
    });
    const teacher = emaFold(state.teacher, student, hp.momentum);
    const center = api.stopGradient(momentumUpdate(state.center, mean(sums.center), CENTER_MOMENTUM));
    const center2 = api.stopGradient(momentumUpdate(state.center2, mean(sums.center2), CENTER_MOMENTUM));
    const [nextKey] = random.split(state.key, 3);
    return {
      state: { student, teacher, opt, center, center2, key: nextKey },
      metrics: {
        loss: mean(sums.loss),
        cls: mean(sums.cls),
        patch: mean(sums.patch),
        teacherEntropy: mean(sums.teacherEntropy),
        agreement: mean(sums.agreement),
      },
    };
  };
}
