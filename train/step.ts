/**
 * One iBOT training iteration as a pure function over immutable trees (spec §0.1):
 * augment (optional) → teacher forward on the global crops → student forward (global crops with masks, local
 * crops without) → `ibotLoss` with the old centers → gradients → per-parameter clipping → AdamW (last layer
 * frozen by a 0/1 input) → `teacher = emaFold(teacher, student, m)`.
 *
 * Hyperparameters (lr, wd, momentum, temperatures, the freeze flag) are numbers that `jit` turns into scalar
 * inputs: one compiled plan serves every iteration.
 */
import type { Tensor } from "../autograd/tensor.ts";
import { valueAndGrad } from "../autograd/vjp.ts";
import { emaFold } from "../autograd/tree.ts";
import * as api from "../ops/api.ts";
import { logSoftmax, softmax } from "../ops/nn.ts";
import * as random from "../ops/random.ts";
import { ibotLoss, type IbotLossInput } from "./loss.ts";
import { type AdamWState, adamwUpdate, clipGradsPerParam } from "./optim.ts";

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
  /** PRNG key (uint32[2]); split every step for augmentation and drop path. */
  key: Tensor;
}

/** Per-iteration hyperparameters: numbers (jit scalar inputs). */
export interface IbotHyper {
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
  /** On-device multi-crop augmentation of raw images (globals first). */
  augment?: (key: Tensor, images: Tensor) => Tensor[];
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

/** Splits `[n·B, ...]` into n views of `[B, ...]`. */
function views(x: Tensor, n: number): Tensor[] {
  const b = x.shape[0] / n;
  return Array.from({ length: n }, (_, i) => api.slice(x, [i * b], [(i + 1) * b]));
}

/**
 * Builds the pure step `(state, batch, hyper) => { state, metrics }`. Wrap it in `jit` (donating the state)
 * to compile it once.
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
  const studentTemp = cfg.studentTemp ?? 0.1;
  const clip = cfg.clipGrad ?? 3.0;
  const ng = cfg.globalCrops;
  return (
    state: IbotState<B, H>,
    batch: IbotBatch,
    hp: IbotHyper,
  ): { state: IbotState<B, H>; metrics: IbotMetrics } => {
    const [nextKey, augKey, dropKey] = random.split(state.key, 3);
    const crops = batch.crops ?? (cfg.augment && batch.images ? cfg.augment(augKey, batch.images) : null);
    if (!crops) throw new Error("ibotStep: the batch needs `crops`, or `images` with an `augment` function");
    if (batch.masks.length !== ng) throw new RangeError(`ibotStep: ${batch.masks.length} masks for ${ng} global crops`);
    const globals = api.concat(crops.slice(0, ng), 0);
    const locals = crops.length > ng ? api.concat(crops.slice(ng), 0) : null;
    const masks = api.concat(batch.masks, 0);

    // The head runs on the CLS tokens and on the patch tokens separately, so that nothing slices the large
    // [2B, 1+N, K] head output (a slice's gradient is a full-size padded copy). The patch loss is a mean over
    // images, so both global views can stay concatenated: one [2B, N, K] view with the concatenated masks.
    const clsOf = (tokens: Tensor) =>
      api.reshape(api.slice(tokens, [0, 0, 0], [tokens.shape[0], 1, tokens.shape[2]]), [tokens.shape[0], -1]);
    const patchesOf = (tokens: Tensor) => api.slice(tokens, [0, 1, 0]);
    const rowsOf = (tokens: Tensor) => api.reshape(tokens, [-1, tokens.shape[tokens.rank - 1]]);

    // Teacher: global crops, no masks, no gradient.
    const tTokens = api.stopGradient(cfg.backbone(state.teacher.backbone, globals, { train: false }));
    const sel = batch.maskSelection;
    let teacherCls: Tensor[];
    // The MIM inputs of the loss, given the student's global tokens.
    let patchInputs: (sTokens: Tensor, student: IbotNetwork<B, H>) => Partial<IbotLossInput>;
    if (sel) {
      // Sparse MIM: the teacher's head features on every token (the patch center needs the mean over all
      // patches, which the linear, bias-free prototype layer lets us take before it), its prototypes only on
      // CLS and masked rows; the student's head only on its masked rows.
      const { headFeatures, headPrototypes } = cfg;
      if (!headFeatures || !headPrototypes) {
        throw new Error("ibotStep: batch.maskSelection needs headFeatures and headPrototypes in the step config");
      }
      const z = headFeatures(state.teacher.head, tTokens); // [2B, 1+N, bottleneck]
      teacherCls = views(headPrototypes(state.teacher.head, clsOf(z)), ng);
      const teacher = headPrototypes(state.teacher.head, api.gather(rowsOf(z), sel.index, 0));
      const teacherMean = headPrototypes(state.teacher.head, api.mean(rowsOf(patchesOf(z)), 0, true));
      patchInputs = (sTokens, student) => ({
        maskedPatches: {
          student: cfg.head(student.head, api.gather(rowsOf(sTokens), sel.index, 0)),
          teacher,
          teacherMean,
          weight: sel.weight,
          images: globals.shape[0],
        },
      });
    } else {
      teacherCls = views(cfg.head(state.teacher.head, clsOf(tTokens)), ng);
      const teacherPatch = [cfg.head(state.teacher.head, patchesOf(tTokens))];
      patchInputs = (sTokens, student) => ({
        studentPatch: [cfg.head(student.head, patchesOf(sTokens))],
        teacherPatch,
        masks: [masks],
      });
    }

    const [dk1, dk2] = random.split(dropKey, 2);
    const lossOf = (student: IbotNetwork<B, H>) => {
      const sTokens = cfg.backbone(student.backbone, globals, { masks, train: true, key: dk1 });
      const sCls = views(cfg.head(student.head, clsOf(sTokens)), ng);
      let localCls: Tensor[] = [];
      if (locals) {
        const lTokens = cfg.backbone(student.backbone, locals, { train: true, key: dk2 });
        localCls = views(cfg.head(student.head, clsOf(lTokens)), crops.length - ng);
      }
      const out = ibotLoss({
        studentCls: [...sCls, ...localCls],
        teacherCls,
        ...patchInputs(sTokens, student),
        center: state.center,
        center2: state.center2,
        studentTemp,
        teacherTemp: hp.teacherTemp,
        teacherPatchTemp: hp.teacherPatchTemp,
        lambda1: cfg.lambda1,
        lambda2: cfg.lambda2,
      });
      return [out.loss, { ...out, studentCls0: sCls[Math.min(1, ng - 1)] }] as [
        Tensor,
        typeof out & { studentCls0: Tensor },
      ];
    };
    const [[loss, aux], grads] = valueAndGrad(lossOf, { hasAux: true })(state.student);
    const clipped = clip > 0 ? clipGradsPerParam(grads, clip) : grads;
    const { params: student, state: opt } = adamwUpdate(clipped, state.opt, state.student, {
      lr: hp.lr,
      wd: hp.wd,
      freezeLastLayer: hp.freezeLastLayer,
      trainable: cfg.trainable,
    });
    const teacher = emaFold(state.teacher, student, hp.momentum);

    // Monitors: teacher entropy and student/teacher agreement (official "acc": teacher crop 0 vs student crop 1).
    const tLogits = api.div(api.sub(teacherCls[0], state.center), hp.teacherTemp);
    const tProbs = softmax(tLogits);
    const teacherEntropy = api.mean(api.neg(api.sum(api.mul(tProbs, logSoftmax(tLogits)), -1)));
    const agree = api.equal(api.argmax(teacherCls[0], -1), api.argmax(aux.studentCls0, -1));
    const agreement = api.mean(api.cast(agree, "float32"));

    return {
      state: { student, teacher, opt, center: aux.center, center2: aux.center2, key: nextKey },
      metrics: { loss, cls: aux.cls, patch: aux.patch, teacherEntropy, agreement },
    };
  };
}
