/**
 * One iBOT training iteration as a pure function over immutable trees (spec §0.1):
 * augment (optional) → teacher forward on the global crops → student forward (global crops with masks, local
 * crops without) → `ibotLoss` with the old centers → gradients → per-parameter clipping → AdamW (last layer
 * frozen by a 0/1 input) → `teacher = emaFold(teacher, student, m)`.
 *
 * The step is split at the gradient, so that a global batch can be processed in parts (gradient accumulation,
 * data-parallel ranks) with the semantics of one big step: `ibotGrads` (train/step_grads.ts) turns a batch, or
 * any part of one, into `IbotSums` — sums over its images of per-image quantities (the gradient of the loss,
 * the teacher outputs for the centers, the metrics) — parts are added leaf by leaf (`addIbotSums`, or an
 * all-reduce), and `ibotUpdate` (train/step_update.ts) divides the sums by their image count and applies
 * clipping, AdamW, the teacher EMA and the center EMA. `ibotStep` is the two fused over one whole batch.
 *
 * Randomness is per image, so that a part of the batch reproduces its images' draws: with
 * `[_, aug, drop] = split(state.key, 3)`, image g (its position in the global batch, `IbotBatch.index`) is
 * augmented from `foldIn(aug, g)` and its crop v's drop path uses `split(foldIn(drop, g), crops)[v]`; its
 * masks come from the host (`masking.sampleStepMasks` with `positions`). The next state's key is
 * `split(state.key, 3)[0]`.
 *
 * Hyperparameters (lr, wd, momentum, temperatures, the freeze flag) are numbers that `jit` turns into scalar
 * inputs: one compiled plan serves every iteration.
 */
import type { Tensor } from "../ops/tensor.ts";
import type { AdamWState } from "./optim.ts";
import { ibotGrads } from "./step_grads.ts";
import { ibotUpdate } from "./step_update.ts";

export { addIbotSums, ibotUpdate } from "./step_update.ts";
export { ibotGrads } from "./step_grads.ts";

/** A backbone + head pair of parameter trees (the official `backbone.*` / `head.*` names). */
export interface IbotNetwork<B = unknown, H = unknown> {
  /** Backbone parameters (e.g. `VitParams`). */
  backbone: B;
  /** Projection-head parameters (e.g. `HeadParams`). */
  head: H;
}

/** The whole training state: everything a step reads and writes. */
export interface IbotState<B = unknown, H = unknown> {
  /** The student network, trained by AdamW. */
  student: IbotNetwork<B, H>;
  /** The EMA teacher (same structure, minus student-only leaves such as `masked_embed`). */
  teacher: IbotNetwork<B, H>;
  /** AdamW state over the student. */
  opt: AdamWState<IbotNetwork<B, H>>;
  /** CLS center `[1, K]`. */
  center: Tensor;
  /** Patch center `[1, 1, K]`. */
  center2: Tensor;
  /** PRNG key (uint32[2]); split every step for augmentation and drop path (see the module doc). */
  key: Tensor;
}

/**
 * Per-iteration hyperparameters: numbers (jit scalar inputs). The one hyperparameter type: `hyperparamsAt`
 * (train/schedules.ts) computes it for an iteration of a run.
 */
export interface IbotHyper {
  /** The epoch of the iteration (for reports; the step does not read it). */
  epoch?: number;
  /** AdamW learning rate. */
  lr: number;
  /** AdamW weight decay (decoupled; biases and 1-D parameters are not decayed). */
  wd: number;
  /** Teacher EMA momentum. */
  momentum: number;
  /** Teacher temperature of the CLS distribution. */
  teacherTemp: number;
  /** Teacher temperature of the patch distributions. */
  teacherPatchTemp: number;
  /** 1 while the last layer is frozen, else 0. */
  freezeLastLayer: number;
}

/** One batch: crops (globals first) or raw images to augment, and one mask per global crop. */
export interface IbotBatch {
  /** `[B, C, H, W]` crops, global crops first. Omit when `augment` is configured and `images` is given. */
  crops?: Tensor[];
  /** Raw images in [0, 1] for the on-device augmentation. */
  images?: Tensor;
  /** Bool `[B, Gh, Gw]` per global crop (true = masked). */
  masks: Tensor[];
  /**
   * The masked patches as token rows (`masking.maskSelection` with one leading CLS token, uploaded): the head
   * and the MIM loss then run on these rows only instead of on every patch. Needs `headFeatures` and
   * `headPrototypes` in the step's config. The result equals the dense form up to rounding.
   */
  maskSelection?: { index: Tensor; weight: Tensor };
  /**
   * Int32 `[B]`: the positions of these images in the step's global batch (default `0..B−1`). A part of a batch
   * (a micro-batch, a rank's share) passes its positions so that its images get the augmentation and drop-path
   * draws they get in the whole batch.
   */
  index?: Tensor;
}

/** The model functions and constants the step is built from. */
export interface IbotStepConfig<B, H> {
  /** Backbone forward: all tokens `[B, 1 + N, D]` after the final norm. */
  backbone(params: B, images: Tensor, opts: { masks?: Tensor; train: boolean; key?: Tensor }): Tensor;
  /** Head forward on tokens `[..., D]`. */
  head(params: H, tokens: Tensor): Tensor;
  /** The head up to its (linear, bias-free) prototype layer (`headFeatures`); needed by `maskSelection`. */
  headFeatures?(params: H, tokens: Tensor): Tensor;
  /** The head's prototype layer (`headPrototypes`); `head = headPrototypes ∘ headFeatures`. */
  headPrototypes?(params: H, features: Tensor): Tensor;
  /**
   * Which student parameters AdamW trains (default: all but `last_layer.weight_g`, the official
   * `norm_last_layer` setting; pass `() => true` with a head whose `weight_g` learns).
   */
  trainable?: (path: string, shape: readonly number[]) => boolean;
  /** Number of global crops (2). */
  globalCrops: number;
  /** Student temperature (0.1). */
  studentTemp?: number;
  /** Per-parameter gradient clip (3.0; 0 disables). */
  clipGrad?: number;
  /** Weight of the CLS (DINO) loss term (1.0). */
  lambda1?: number;
  /** Weight of the masked-patch (MIM) loss term (1.0). */
  lambda2?: number;
  /** On-device multi-crop augmentation of raw images (globals first), with one key per image (`[B, 2]`). */
  augment?: (keys: Tensor, images: Tensor) => Tensor[];
}

/** Scalars reported by a step (tensors; read them back only when logging). */
export interface IbotMetrics {
  /** Total loss `cls + patch` (what is differentiated). */
  loss: Tensor;
  /** CLS (DINO) cross-entropy term, weighted by `lambda1`. */
  cls: Tensor;
  /** Masked-patch (MIM) cross-entropy term, weighted by `lambda2`. */
  patch: Tensor;
  /** Mean entropy of the teacher's centred, sharpened CLS distribution. */
  teacherEntropy: Tensor;
  /** Fraction of images where the teacher's argmax on global crop 0 equals the student's on global crop 1. */
  agreement: Tensor;
}

/**
 * What `ibotGrads` returns for a batch or a part of one: every leaf is a sum over the part's images of a
 * per-image quantity, so that the parts of a global batch combine by adding leaf by leaf (`addIbotSums`, or an
 * MPI all-reduce with SUM), and `ibotUpdate` divides by `images` once. The per-image loss is
 * `λ1·Σ CLS terms / #CLS terms + λ2·Σ MIM terms / #global views` (the batch means of `ibotLoss` without the
 * division by the batch), so `grads / images` is the gradient of the whole batch's loss.
 */
export interface IbotSums<B = unknown, H = unknown> {
  /** Σ over images of the gradient of the per-image loss with respect to the student (before clipping). */
  grads: IbotNetwork<B, H>;
  /** `[1, K]`: Σ over images of the mean over the global views of the raw teacher CLS logits. */
  center: Tensor;
  /** `[1, 1, K]`: Σ over images of the mean over the global views and patches of the raw teacher patch logits. */
  center2: Tensor;
  /** Σ of the per-image total loss. */
  loss: Tensor;
  /** Σ of the per-image CLS term. */
  cls: Tensor;
  /** Σ of the per-image MIM term. */
  patch: Tensor;
  /** Σ over images of the entropy of the teacher's centred, sharpened CLS distribution (global crop 0). */
  teacherEntropy: Tensor;
  /** Number of images whose teacher argmax (crop 0) equals the student's (crop 1). */
  agreement: Tensor;
  /** Number of images summed (a float32 scalar): the divisor of every other leaf. */
  images: Tensor;
}

/**
 * Builds the pure step `(state, batch, hyper) => { state, metrics }` over one whole batch: `ibotUpdate` of
 * `ibotGrads` (see the module doc). Wrap it in `jit` (donating the state) to compile it once.
 *
 * @example
 * ```ts ignore
 * const step = jit(ibotStep({ backbone, head, globalCrops: 2 }), { donate: [0] });
 * const { state: next, metrics } = step(state, batch, hyper);
 * ```
 */
export function ibotStep<B, H>(
  cfg: IbotStepConfig<B, H>,
): (state: IbotState<B, H>, batch: IbotBatch, hp: IbotHyper) => { state: IbotState<B, H>; metrics: IbotMetrics } {
  const grads = ibotGrads(cfg);
  const update = ibotUpdate<B, H>(cfg);
  return (state, batch, hp) => update(state, grads(state, batch, hp), hp);
}
