/**
 * The gradient half of an iBOT step (see train/step.ts): teacher and student forwards and the loss on a batch
 * or a part of one, returned as `IbotSums`, sums over the part's images, ready to be added to the other parts'.
 */
import type { Tensor } from "../ops/tensor.ts";
import { valueAndGrad } from "../autograd/vjp.ts";
import * as api from "../ops/api.ts";
import { fromTyped } from "../ops/create.ts";
import { logSoftmax, softmax } from "../ops/nn.ts";
import * as random from "../ops/random.ts";
import { ibotLoss, type IbotLossInput } from "./loss.ts";
import type { IbotBatch, IbotHyper, IbotNetwork, IbotState, IbotStepConfig, IbotSums } from "./step.ts";

/** Splits `[n·B, ...]` into n views of `[B, ...]`. */
function views(x: Tensor, n: number): Tensor[] {
  const b = x.shape[0] / n;
  return Array.from({ length: n }, (_, i) => api.slice(x, [i * b], [(i + 1) * b]));
}

/** `0..b−1` as int32 on the key's backend: the positions of a batch that is a whole global batch. */
function positions(b: number, like: Tensor): Tensor {
  return fromTyped(Int32Array.from({ length: b }, (_, i) => i), [b], "int32", like.backend);
}

/**
 * Builds the pure function `(state, batch, hyper) => IbotSums`: the forwards, the loss with the old centers,
 * and the gradient with respect to the student, all as sums over the batch's images (the batch's loss times
 * its size). Reads `state.student`, `state.teacher`, the centers and the key; changes nothing. Jit it once:
 * every part of equal size reuses the plan.
 *
 * @example
 * ```ts ignore
 * const grads = jit(ibotGrads({ backbone, head, globalCrops: 2 }));
 * const update = jit(ibotUpdate({}), { donate: [0] });
 * let sums = grads(state, part0, hp); // part0.index: the images' positions in the global batch
 * sums = addIbotSums(sums, grads(state, part1, hp));
 * const { state: next, metrics } = update(state, sums, hp);
 * ```
 */
export function ibotGrads<B, H>(
  cfg: IbotStepConfig<B, H>,
): (state: IbotState<B, H>, batch: IbotBatch, hp: IbotHyper) => IbotSums<B, H> {
  const studentTemp = cfg.studentTemp ?? 0.1;
  const ng = cfg.globalCrops;
  return (state: IbotState<B, H>, batch: IbotBatch, hp: IbotHyper): IbotSums<B, H> => {
    const [, augKey, dropKey] = random.split(state.key, 3);
    const b = (batch.images ?? batch.crops?.[0])?.shape[0];
    if (b === undefined) throw new Error("ibotGrads: the batch needs `crops`, or `images` with an `augment` function");
    const index = batch.index ?? positions(b, state.key);
    if (index.rank !== 1 || index.shape[0] !== b) {
      throw new RangeError(`ibotGrads: batch.index is [${index.shape}] for a batch of ${b} images`);
    }
    const crops = batch.crops ??
      (cfg.augment && batch.images ? cfg.augment(random.foldIn(augKey, index), batch.images) : null);
    if (!crops) throw new Error("ibotGrads: the batch needs `crops`, or `images` with an `augment` function");
    if (batch.masks.length !== ng) {
      throw new RangeError(`ibotGrads: ${batch.masks.length} masks for ${ng} global crops`);
    }
    const globals = api.concat(crops.slice(0, ng), 0);
    const locals = crops.length > ng ? api.concat(crops.slice(ng), 0) : null;
    const masks = api.concat(batch.masks, 0);
    // One drop-path key per crop of each image: the rows of the global and the local forward (crop-major).
    const cropKeys = random.split(random.foldIn(dropKey, index), crops.length);
    const globalKeys = api.concat(cropKeys.slice(0, ng), 0);
    const localKeys = locals ? api.concat(cropKeys.slice(ng), 0) : null;

    // The head runs on the CLS tokens and on the patch tokens separately, so that nothing slices the large
    // [2B, 1+N, K] head output (a slice's gradient is a full-size padded copy). The patch loss is a mean over
    // images, so both global views can stay concatenated: one [2B, N, K] view with the concatenated masks.
    const clsOf = (tokens: Tensor) =>
      api.reshape(api.slice(tokens, [0, 0, 0], [tokens.shape[0], 1, tokens.shape[2]]), [tokens.shape[0], -1]);
    const patchesOf = (tokens: Tensor) => api.slice(tokens, [0, 1, 0]);
    const rowsOf = (tokens: Tensor) => api.reshape(tokens, [-1, tokens.shape[tokens.rank - 1]]);

    // Teacher: global crops, no masks, no gradient.
    const tTokens = api.stopGradient(cfg.backbone(state.teacher.backbone, globals, { train: false }));
    const patches = tTokens.shape[1] - 1;
    const sel = batch.maskSelection;
    let teacherCls: Tensor[];
    // Σ over the teacher's patch rows of its raw patch logits, [1, K] (for the patch center).
    let teacherPatchSum: Tensor;
    // The MIM inputs of the loss, given the student's global tokens.
    let patchInputs: (sTokens: Tensor, student: IbotNetwork<B, H>) => Partial<IbotLossInput>;
    if (sel) {
      // Sparse MIM: the teacher's head features on every token (the patch center needs the sum over all
      // patches, which the linear, bias-free prototype layer lets us take before it), its prototypes only on
      // CLS and masked rows; the student's head only on its masked rows.
      const { headFeatures, headPrototypes } = cfg;
      if (!headFeatures || !headPrototypes) {
        throw new Error("ibotGrads: batch.maskSelection needs headFeatures and headPrototypes in the step config");
      }
      const z = headFeatures(state.teacher.head, tTokens); // [2B, 1+N, bottleneck]
      teacherCls = views(headPrototypes(state.teacher.head, clsOf(z)), ng);
      const teacher = headPrototypes(state.teacher.head, api.gather(rowsOf(z), sel.index, 0));
      teacherPatchSum = headPrototypes(state.teacher.head, api.sum(rowsOf(patchesOf(z)), 0, true));
      const teacherMean = api.div(teacherPatchSum, globals.shape[0] * patches);
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
      teacherPatchSum = api.sum(rowsOf(teacherPatch[0]), 0, true);
      patchInputs = (sTokens, student) => ({
        studentPatch: [cfg.head(student.head, patchesOf(sTokens))],
        teacherPatch,
        masks: [masks],
      });
    }

    const lossOf = (student: IbotNetwork<B, H>) => {
      const sTokens = cfg.backbone(student.backbone, globals, { masks, train: true, key: globalKeys });
      const sCls = views(cfg.head(student.head, clsOf(sTokens)), ng);
      let localCls: Tensor[] = [];
      if (locals) {
        const lTokens = cfg.backbone(student.backbone, locals, { train: true, key: localKeys! });
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
      // The batch means times the batch size: the sum of the per-image losses.
      return [api.mul(out.loss, b), { ...out, studentCls0: sCls[Math.min(1, ng - 1)] }] as [
        Tensor,
        typeof out & { studentCls0: Tensor },
      ];
    };
    const [[loss, aux], grads] = valueAndGrad(lossOf, { hasAux: true })(state.student);

    // Monitors: teacher entropy and student/teacher agreement (official "acc": teacher crop 0 vs student crop 1).
    const tLogits = api.div(api.sub(teacherCls[0], state.center), hp.teacherTemp);
    const entropy = api.neg(api.sum(api.mul(softmax(tLogits), logSoftmax(tLogits)), -1));
    const agree = api.equal(api.argmax(teacherCls[0], -1), api.argmax(aux.studentCls0, -1));
    const tCls = api.concat(teacherCls, 0); // [ng·B, K]
    return {
      grads,
      center: api.div(api.sum(tCls, 0, true), ng),
      center2: api.reshape(api.div(teacherPatchSum, ng * patches), [1, 1, -1]),
      loss,
      cls: api.mul(aux.cls, b),
      patch: api.mul(aux.patch, b),
      teacherEntropy: api.sum(entropy),
      agreement: api.sum(api.cast(agree, "float32")),
      images: api.scalarLike(b, aux.cls),
    };
  };
}
