/**
 * The iBOT loss (spec §4): cross-view self-distillation on the CLS token plus same-view masked-patch
 * self-distillation, with the teacher centers updated from this step's raw teacher outputs. A pure function:
 * the old centers enter as data and the new ones come out, so one jitted plan serves every step (temperatures
 * and momenta may be numbers, which `jit` turns into scalar inputs, or scalar tensors). No host reads.
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import type { Operand } from "../ops/api.ts";
import { logSoftmax, softmax } from "../ops/nn.ts";
import { fmt } from "../ops/shape.ts";

/** Inputs of `ibotLoss`. Views are per crop, each `[B, ...]`; crop order: globals first, then locals. */
export interface IbotLossInput {
  /** Student CLS logits `[B, K]`, one per view (all global views, then all local views). */
  studentCls: readonly Tensor[];
  /** Student patch logits `[B, N, K]`, one per global view (from the masked input). May be empty (DINO mode). */
  studentPatch?: readonly Tensor[];
  /** Teacher CLS logits `[B, K]`, one per global view. */
  teacherCls: readonly Tensor[];
  /** Teacher patch logits `[B, N, K]`, one per global view (unmasked input). Empty iff `studentPatch` is. */
  teacherPatch?: readonly Tensor[];
  /** Masks (true = masked), bool (or 0/1 float) `[B, N]` or `[B, Gh, Gw]`, one per global view. Omitted: none masked. */
  masks?: readonly Tensor[];
  /**
   * Sparse MIM, instead of `studentPatch`/`teacherPatch`/`masks`: the logits at the masked patches only (the
   * only ones the MIM terms read), which spares the head and the loss the unmasked patches.
   */
  maskedPatches?: MaskedPatchLogits;
  /** CLS center `[1, K]`. */
  center: Tensor;
  /** Patch center `[1, 1, K]`. */
  center2: Tensor;
  /** Student temperature τs (0.1 officially). */
  studentTemp: Operand;
  /** Teacher CLS temperature for this epoch. */
  teacherTemp: Operand;
  /** Teacher patch temperature for this epoch. */
  teacherPatchTemp: Operand;
  /** CLS center momentum (default 0.9). */
  centerMomentum?: Operand;
  /** Patch center momentum (default 0.9). */
  centerMomentum2?: Operand;
  /** Weight of the CLS loss (default 1). */
  lambda1?: Operand;
  /** Weight of the MIM (patch) loss (default 1). */
  lambda2?: Operand;
}

/**
 * Patch logits at a selection of masked patches (all global views together), for `IbotLossInput.maskedPatches`.
 * Gives the same `patch` and `center2` as the dense form when `weight` is 1/max(#masked, 1) of each row's
 * image-view and `teacherMean` is the mean of the raw teacher patch logits over all patches of all views.
 */
export interface MaskedPatchLogits {
  /** Student logits at the selected patches `[C, K]` (from the masked input). */
  student: Tensor;
  /** Teacher logits at the same patches `[C, K]`. */
  teacher: Tensor;
  /** Row weights `[C]`: 1/max(#masked patches of the row's image-view, 1); 0 for padding rows. */
  weight: Tensor;
  /** Image-views the MIM mean runs over (global views × batch). */
  images: number;
  /** Mean of the raw teacher patch logits over all patches of all image-views, `[1, K]` (for `center2`). */
  teacherMean: Tensor;
}

/** Outputs of `ibotLoss`: scalar losses (only `loss` carries the gradient of interest) and the new centers. */
export interface IbotLossOutput {
  /** `cls + patch`, the loss to differentiate. */
  loss: Tensor;
  /** λ1 · mean of the cross-view CLS terms. */
  cls: Tensor;
  /** λ2 · mean of the same-view masked-patch terms. */
  patch: Tensor;
  /** `m·center + (1−m)·mean over rows of the raw teacher CLS logits` (no gradient). */
  center: Tensor;
  /** `m2·center2 + (1−m2)·mean over images of the mean over all patches of the raw teacher patch logits`. */
  center2: Tensor;
}

/** A number stays a number; a scalar tensor is cast to the logits' dtype (jit passes numbers as float32). */
function asOperand(x: Operand, dtype: Tensor["dtype"]): Operand {
  return typeof x === "number" ? x : api.cast(x, dtype);
}

/**
 * `m·old + (1−m)·batch`, literally as the official code writes it (the center updates).
 *
 * @example
 * ```ts
 * import { tensor } from "./mod.ts";
 * import { momentumUpdate } from "./train/loss.ts";
 * const c = momentumUpdate(tensor([1]), tensor([0]), 0.9); // [0.9]
 * ```
 */
export function momentumUpdate(old: Tensor, batch: Tensor, m: Operand): Tensor {
  return api.add(api.mul(old, m), api.mul(batch, typeof m === "number" ? 1 - m : api.sub(1, m)));
}

function checkViews(what: string, xs: readonly Tensor[], shape: readonly number[]): void {
  xs.forEach((x, i) => {
    if (x.shape.join() !== shape.join()) {
      throw new RangeError(`ibotLoss: ${what}[${i}] is ${fmt(x.shape)}, expected ${fmt(shape)}`);
    }
  });
}

/**
 * The iBOT loss of one step (official `iBOTLoss.forward` plus its center update).
 *
 * For every teacher (global) view q and student view v: when v ≠ q a CLS term, the batch mean of
 * `−Σ_k softmax((t_q − center)/τt)_k · log_softmax(s_v/τs)_k`; when v = q a MIM term, per image the sum over
 * masked patches of the same cross-entropy between `softmax((tp_q − center2)/τtp)` and
 * `log_softmax(sp_v/τs)`, divided by max(#masked, 1), then the mean over the B images (an image with nothing
 * masked contributes 0 and still counts). `cls = λ1 · Σ CLS terms / #CLS terms`, `patch = λ2 · Σ MIM terms /
 * #MIM terms`, `loss = cls + patch`. Teacher outputs and centers are constants (stopGradient). The new
 * centers come from this step's raw teacher outputs; the loss used the old ones.
 *
 * With no masks (or all-false masks) `patch` is exactly 0 and this is the DINO loss, while `center2` is still
 * updated. With no patch outputs at all, `patch` is 0 and `center2` is returned unchanged.
 *
 * Implementation: the `ng·(nc−1)` CLS terms are summed in one pass as `Σ_q T_q · (Σ_v S_v − S_q)`
 * (mathematically identical to the double loop; a few large element-wise ops instead of 2·(nc−1) small ones).
 *
 * @example
 * ```ts
 * import { tensor, zeros } from "./mod.ts";
 * import { ibotLoss } from "./train/loss.ts";
 * const s = [tensor([[1, 0]]), tensor([[0, 1]])];
 * const t = [tensor([[0.5, 0]]), tensor([[0, 0.5]])];
 * const { loss, center } = ibotLoss({
 *   studentCls: s, teacherCls: t, center: zeros([1, 2]), center2: zeros([1, 1, 2]),
 *   studentTemp: 0.1, teacherTemp: 0.04, teacherPatchTemp: 0.07,
 * });
 * ```
 */
export function ibotLoss(input: IbotLossInput): IbotLossOutput {
  const { studentCls, teacherCls } = input;
  const studentPatch = input.studentPatch ?? [];
  const teacherPatch = input.teacherPatch ?? [];
  const ng = teacherCls.length;
  const nc = studentCls.length;
  if (ng === 0) throw new RangeError("ibotLoss: needs at least one teacher (global) view");
  if (nc < ng) throw new RangeError(`ibotLoss: ${nc} student views but ${ng} teacher views (globals come first)`);
  if (nc === 1) throw new RangeError("ibotLoss: one view gives no cross-view CLS term (need nc ≥ 2)");
  const [B, K] = teacherCls[0].shape;
  if (teacherCls[0].rank !== 2) {
    throw new RangeError(`ibotLoss: teacherCls[0] must be [B, K], got ${fmt(teacherCls[0].shape)}`);
  }
  checkViews("teacherCls", teacherCls, [B, K]);
  checkViews("studentCls", studentCls, [B, K]);
  if (input.center.shape.join() !== [1, K].join()) {
    throw new RangeError(`ibotLoss: center is ${fmt(input.center.shape)}, expected [1,${K}]`);
  }
  const dtype = teacherCls[0].dtype;
  const op = (x: Operand | undefined, dflt: number) => asOperand(x ?? dflt, dtype);
  const tauS = op(input.studentTemp, 0.1);
  const tauT = op(input.teacherTemp, 0.04);
  const tauTP = op(input.teacherPatchTemp, 0.07);
  const lambda1 = op(input.lambda1, 1);
  const lambda2 = op(input.lambda2, 1);

  // ---- CLS: teacher targets T_q, student log-probabilities S_v.
  const center = api.stopGradient(input.center);
  const tCls = api.stopGradient(api.concat(teacherCls, 0)); // [ng·B, K]
  const T = softmax(api.div(api.sub(tCls, center), tauT), -1); // [ng·B, K]
  const S = logSoftmax(api.div(api.concat(studentCls, 0), tauS), -1); // [nc·B, K]
  const S3 = api.reshape(S, [nc, B, K]);
  const sumAll = api.sum(S3, 0); // Σ_v S_v: [B, K]
  const others = api.sub(api.reshape(sumAll, [1, B, K]), api.slice(S3, [0, 0, 0], [ng, B, K])); // [ng, B, K]
  const nCls = ng * (nc - 1);
  const clsSum = api.neg(api.sum(api.mul(api.reshape(T, [ng, B, K]), others)));
  const cls = api.mul(api.div(clsSum, B * nCls), lambda1);
  const newCenter = momentumUpdate(input.center, api.mean(tCls, 0, true), op(input.centerMomentum, 0.9));
  const centerOut = api.stopGradient(newCenter);

  // ---- MIM: same-view masked-patch distillation over the global views.
  if (input.maskedPatches) {
    return withPatch(cls, centerOut, maskedPatchTerm(input.maskedPatches, input, { tauS, tauTP, lambda2, dtype }));
  }
  if (studentPatch.length === 0 && teacherPatch.length === 0) {
    return withPatch(cls, centerOut, { patch: api.zerosLike(cls), center2: api.stopGradient(input.center2) });
  }
  // Patch views come one per global view, or already concatenated along the batch as a single [ng·B, N, K]
  // view (with one [ng·B, ...] mask): the MIM term is a mean over images, so the two forms are equal.
  const joined = ng > 1 && studentPatch.length === 1 && teacherPatch.length === 1 &&
    teacherPatch[0].shape[0] === ng * B;
  const nv = joined ? 1 : ng;
  const VB = joined ? ng * B : B;
  if (studentPatch.length !== nv || teacherPatch.length !== nv) {
    throw new RangeError(
      `ibotLoss: need one student and one teacher patch tensor per global view (${ng}), or one of each for ` +
        `all global views joined along the batch; got ${studentPatch.length} and ${teacherPatch.length}`,
    );
  }
  const [, N, KP] = teacherPatch[0].shape;
  checkViews("teacherPatch", teacherPatch, [VB, N, KP]);
  checkViews("studentPatch", studentPatch, [VB, N, KP]);
  checkCenter2(input.center2, KP);
  const tPatch = api.stopGradient(api.concat(teacherPatch, 0)); // [ng·B, N, K]
  let patch: Tensor;
  const masks = input.masks ?? [];
  if (masks.length === 0) {
    patch = api.zerosLike(cls); // nothing masked: every MIM term is 0
  } else {
    const ce = patchCrossEntropy(tPatch, api.concat(studentPatch, 0), input.center2, tauTP, tauS); // [ng·B, N]
    if (masks.length < nv) throw new RangeError(`ibotLoss: ${masks.length} masks for ${ng} global views`);
    const m = api.concat(
      masks.slice(0, nv).map((mk, i) => {
        if (mk.size !== VB * N || mk.shape[0] !== VB) {
          throw new RangeError(`ibotLoss: masks[${i}] is ${fmt(mk.shape)}, expected [${VB},${N}] or [${VB},Gh,Gw]`);
        }
        return api.reshape(api.cast(mk, dtype), [VB, N]);
      }),
      0,
    ); // [ng·B, N]
    const perImage = api.div(api.sum(api.mul(ce, m), -1), api.maximum(api.sum(m, -1), 1)); // [ng·B]
    patch = api.mean(perImage); // = Σ_q mean_b(...) / ng
  }
  patch = api.mul(patch, lambda2);
  const batchCenter2 = api.reshape(api.mean(api.mean(tPatch, 1), 0, true), [1, 1, KP]);
  const center2 = momentumUpdate(input.center2, batchCenter2, op(input.centerMomentum2, 0.9));
  return withPatch(cls, centerOut, { patch, center2: api.stopGradient(center2) });
}

function withPatch(cls: Tensor, center: Tensor, p: { patch: Tensor; center2: Tensor }): IbotLossOutput {
  return { loss: api.add(cls, p.patch), cls, patch: p.patch, center, center2: p.center2 };
}

function checkCenter2(center2: Tensor, K: number): void {
  if (center2.shape.join() !== [1, 1, K].join()) {
    throw new RangeError(`ibotLoss: center2 is ${fmt(center2.shape)}, expected [1,1,${K}]`);
  }
}

/** `−Σ_k softmax((t − center2)/τtp)_k · log_softmax(s/τs)_k` over the last axis (teacher and center constant). */
function patchCrossEntropy(teacher: Tensor, student: Tensor, center2: Tensor, tauTP: Operand, tauS: Operand): Tensor {
  const K = teacher.shape[teacher.rank - 1];
  const c2 = api.reshape(api.stopGradient(center2), [K]);
  const TP = softmax(api.div(api.sub(api.stopGradient(teacher), c2), tauTP), -1);
  const SP = logSoftmax(api.div(student, tauS), -1);
  return api.neg(api.sum(api.mul(TP, SP), -1));
}

/** The MIM term and new patch center from logits at the masked patches only (`IbotLossInput.maskedPatches`). */
function maskedPatchTerm(
  mp: MaskedPatchLogits,
  input: IbotLossInput,
  o: { tauS: Operand; tauTP: Operand; lambda2: Operand; dtype: Tensor["dtype"] },
): { patch: Tensor; center2: Tensor } {
  const [C, K] = mp.teacher.shape;
  if (mp.teacher.rank !== 2 || mp.student.shape.join() !== [C, K].join() || mp.weight.shape.join() !== `${C}`) {
    throw new RangeError(
      `ibotLoss: maskedPatches needs student and teacher [C, K] and weight [C]; got ${fmt(mp.student.shape)}, ` +
        `${fmt(mp.teacher.shape)} and ${fmt(mp.weight.shape)}`,
    );
  }
  if (mp.teacherMean.shape.join() !== [1, K].join()) {
    throw new RangeError(`ibotLoss: maskedPatches.teacherMean is ${fmt(mp.teacherMean.shape)}, expected [1,${K}]`);
  }
  if (!(Number.isInteger(mp.images) && mp.images > 0)) {
    throw new RangeError(`ibotLoss: maskedPatches.images must be a positive integer, got ${mp.images}`);
  }
  checkCenter2(input.center2, K);
  const ce = patchCrossEntropy(mp.teacher, mp.student, input.center2, o.tauTP, o.tauS); // [C]
  const weighted = api.sum(api.mul(ce, api.cast(mp.weight, o.dtype)));
  const patch = api.mul(api.div(weighted, mp.images), o.lambda2);
  const batchCenter2 = api.reshape(api.stopGradient(mp.teacherMean), [1, 1, K]);
  const center2 = momentumUpdate(input.center2, batchCenter2, asOperand(input.centerMomentum2 ?? 0.9, o.dtype));
  return { patch, center2: api.stopGradient(center2) };
}
