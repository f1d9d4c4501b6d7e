/**
 * The k-NN evaluation of a pretrained backbone: teacher features of a dataset split (jitted, in batches) and
 * the weighted k-NN top-1 of the test split against the train split.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { jit } from "../autograd/jit.ts";
import type { Backend } from "../ops/backend.ts";
import type { VitConfig } from "../models/vit.ts";
import { asBackboneSpec, backboneFeatures, type BackboneParams, type BackboneSpec } from "./backbone.ts";
import { normalize } from "./augment.ts";
import type { PretrainConfig } from "./presets.ts";
import { knnAccuracy } from "./knn.ts";
import { splitFeatures as mapSplit } from "./features.ts";
import type { Dataset } from "./data/dataset.ts";

/**
 * Teacher features of a split, `[n, D]`: the CLS token (ViT) or the average-pooled token (Swin) after the final
 * norm, of the images normalised as in training.
 */
export async function knnFeatures(
  params: BackboneParams,
  b: VitConfig | BackboneSpec,
  ds: Dataset,
  split: "train" | "test",
  cfg: Pick<PretrainConfig, "augment">,
  backend: Backend,
  limit?: number,
): Promise<Tensor> {
  const spec = asBackboneSpec(b);
  const { mean, std } = cfg.augment;
  const fwd = jit((p: BackboneParams, x: Tensor) => backboneFeatures(spec, p, normalize(x, mean, std)));
  try {
    return await mapSplit(ds, split, backend, (x) => fwd(params, x), limit);
  } finally {
    fwd.dispose();
  }
}

/** k-NN top-1 of a backbone (ViT or Swin) on a dataset (features of the train split against the test split). */
export async function evaluateKnn(
  params: BackboneParams,
  vc: VitConfig | BackboneSpec,
  ds: Dataset,
  cfg: Pick<PretrainConfig, "augment">,
  backend: Backend,
  ks: number[],
  testLimit?: number,
): Promise<Record<number, number>> {
  const train = await knnFeatures(params, vc, ds, "train", cfg, backend);
  const test = await knnFeatures(params, vc, ds, "test", cfg, backend, testLimit);
  const n = Math.min(ds.test.n, testLimit ?? ds.test.n);
  const acc = await knnAccuracy(train, ds.train.labels, test, ds.test.labels.subarray(0, n), ds.numClasses, {
    ks: ks.filter((k) => k <= ds.train.n),
  });
  train.dispose();
  test.dispose();
  return acc;
}
