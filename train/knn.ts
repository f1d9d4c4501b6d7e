/**
 * Weighted k-NN evaluation (DINO protocol, ibot-spec §8.1): l2-normalised features, cosine similarity to every
 * training feature, the top-k neighbours vote with weight `exp(sim / T)`, prediction = argmax of class scores.
 *
 * Everything runs on the device in chunks of test rows. There is no sort primitive, so each row's k-th largest
 * similarity is found by a bisection on a threshold (counting `sim >= t` per row, ~30 halvings of [-1, 1] reach
 * float32 resolution); the neighbours are then the entries at or above the threshold. Exact up to ties at the
 * k-th value.
 */
import type { Tensor } from "../autograd/tensor.ts";
import { jit } from "../autograd/jit.ts";
import * as api from "../ops/api.ts";
import { tensor } from "../ops/create.ts";
import { l2Normalize } from "../ops/nn.ts";
import { fmt } from "../ops/shape.ts";

/** Options of the k-NN evaluation. */
export interface KnnOptions {
  /** Neighbour counts to evaluate (default 10, 20, 100, 200 as DINO/iBOT). */
  ks?: number[];
  /** Vote temperature (default 0.07). */
  temperature?: number;
  /** Test rows per device chunk (default 128). */
  chunk?: number;
  /** Bisection steps for the k-th similarity (default 30). */
  steps?: number;
}

/** Row-wise threshold `t` such that exactly about `k` entries of `sim` are `>= t` (sim in [-1, 1]). */
function kthLargest(sim: Tensor, k: number, steps: number): Tensor {
  const rows = sim.shape[0];
  let lo = api.broadcastTo(api.scalarLike(-1.0001, sim), [rows, 1]);
  let hi = api.broadcastTo(api.scalarLike(1.0001, sim), [rows, 1]);
  for (let i = 0; i < steps; i++) {
    const mid = api.mul(api.add(lo, hi), 0.5);
    const count = api.sum(api.cast(api.greaterEqual(sim, mid), "float32"), 1, true);
    const enough = api.greaterEqual(count, k);
    lo = api.where(enough, mid, lo);
    hi = api.where(enough, hi, mid);
  }
  return lo; // count(sim >= lo) >= k and count(sim >= hi) < k
}

/** Class scores `[rows, C]` of the top-k weighted vote for one chunk. */
function votes(test: Tensor, train: Tensor, onehot: Tensor, k: number, temperature: number, steps: number): Tensor {
  const sim = api.matmul(test, train, { transB: true }); // [rows, N]
  const t = kthLargest(sim, k, steps);
  const w = api.where(api.greaterEqual(sim, t), api.exp(api.div(sim, temperature)), 0);
  return api.matmul(w, onehot); // [rows, C]
}

/**
 * Top-1 accuracy of weighted k-NN for every `k`, features given row-wise (they are l2-normalised here).
 *
 * @example
 * ```ts
 * import { knnAccuracy, tensor } from "./mod.ts";
 * const train = tensor([[1, 0], [0, 1]]);
 * const acc = await knnAccuracy(train, new Int32Array([0, 1]), tensor([[0.9, 0.1]]), new Int32Array([0]), 2, { ks: [1] });
 * console.log(acc[1]); // 1
 * ```
 */
export async function knnAccuracy(
  trainFeatures: Tensor,
  trainLabels: Int32Array,
  testFeatures: Tensor,
  testLabels: Int32Array,
  numClasses: number,
  opts: KnnOptions = {},
): Promise<Record<number, number>> {
  const ks = opts.ks ?? [10, 20, 100, 200];
  const temperature = opts.temperature ?? 0.07;
  const chunk = opts.chunk ?? 128;
  const steps = opts.steps ?? 30;
  const [n, d] = trainFeatures.shape;
  if (trainFeatures.rank !== 2 || testFeatures.rank !== 2 || testFeatures.shape[1] !== d) {
    throw new RangeError(
      `knn: features must be [N, D] and [M, D], got ${fmt(trainFeatures.shape)} and ${fmt(testFeatures.shape)}`,
    );
  }
  if (trainLabels.length !== n || testLabels.length !== testFeatures.shape[0]) {
    throw new RangeError(
      `knn: ${trainLabels.length}/${testLabels.length} labels for ${n}/${testFeatures.shape[0]} features`,
    );
  }
  const backend = trainFeatures.backend;
  const onehotData = new Float32Array(n * numClasses);
  trainLabels.forEach((c, i) => (onehotData[i * numClasses + c] = 1));
  const onehot = tensor(onehotData, { shape: [n, numClasses], backend });
  const train = l2Normalize(trainFeatures);
  const validKs = ks.map((k) => Math.min(k, n));
  const predict = jit((test: Tensor, tr: Tensor, oh: Tensor) =>
    validKs.map((k) => api.argmax(votes(l2Normalize(test), tr, oh, k, temperature, steps), 1))
  );
  const correct = new Array<number>(ks.length).fill(0);
  const m = testFeatures.shape[0];
  const pending: Promise<void>[] = [];
  for (let start = 0; start < m; start += chunk) {
    const end = Math.min(m, start + chunk);
    let rows = api.slice(testFeatures, [start, 0], [end, d]);
    if (end - start < chunk && m > chunk) rows = api.pad(rows, [0, 0], [chunk - (end - start), 0]); // one plan
    const preds = predict(rows, train, onehot);
    pending.push(
      Promise.all(preds.map((p) => p.data())).then((datas) => {
        datas.forEach((p, j) => {
          for (let i = start; i < end; i++) if (p[i - start] === testLabels[i]) correct[j]++;
        });
        preds.forEach((p) => p.dispose());
      }),
    );
    if (rows !== testFeatures) rows.dispose();
  }
  await Promise.all(pending);
  predict.dispose();
  train.dispose();
  onehot.dispose();
  return Object.fromEntries(ks.map((k, j) => [k, correct[j] / m]));
}
