import assert from "node:assert/strict";
import { knnAccuracy } from "../train/knn.ts";
import { cpu, tensor } from "../mod.ts";
import { gpu, rng } from "./util.ts";

/** Reference: exact DINO weighted k-NN on the host (sort, top-k, exp(sim/T) votes). */
function reference(
  train: number[][],
  trainY: number[],
  test: number[][],
  testY: number[],
  c: number,
  k: number,
  t: number,
) {
  const norm = (v: number[]) => {
    const s = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
    return v.map((x) => x / Math.max(s, 1e-12));
  };
  const tr = train.map(norm);
  let correct = 0;
  test.map(norm).forEach((q, i) => {
    const sims = tr.map((r, j) => [r.reduce((a, x, d) => a + x * q[d], 0), j]).sort((a, b) => b[0] - a[0]);
    const scores = new Array(c).fill(0);
    for (const [s, j] of sims.slice(0, k)) scores[trainY[j]] += Math.exp(s / t);
    if (scores.indexOf(Math.max(...scores)) === testY[i]) correct++;
  });
  return correct / test.length;
}

Deno.test("knn: matches an exact host top-k weighted vote on CPU and WebGPU", async () => {
  const r = rng(7);
  const c = 4, d = 8, n = 300, m = 90;
  const centers = Array.from({ length: c }, () => Array.from({ length: d }, () => r() * 2 - 1));
  const sample = (y: number) => centers[y].map((v) => v + (r() - 0.5) * 1.6);
  const trainY = Array.from({ length: n }, (_, i) => i % c);
  const testY = Array.from({ length: m }, () => Math.floor(r() * c));
  const train = trainY.map(sample);
  const test = testY.map(sample);
  for (const backend of [cpu, await gpu()]) {
    const acc = await knnAccuracy(
      tensor(train, { backend }),
      Int32Array.from(trainY),
      tensor(test, { backend }),
      Int32Array.from(testY),
      c,
      { ks: [1, 10, 20, 100], chunk: 32 },
    );
    for (const k of [1, 10, 20, 100]) {
      assert.equal(acc[k], reference(train, trainY, test, testY, c, k, 0.07), `${backend.name} k=${k}`);
    }
    assert.ok(acc[20] > 0.5, "separable clusters are mostly classified right");
  }
});

Deno.test("knn: shape errors name the shapes", async () => {
  await assert.rejects(
    knnAccuracy(
      tensor([[1, 0]], { backend: cpu }),
      new Int32Array([0]),
      tensor([[1, 0, 0]], { backend: cpu }),
      new Int32Array([0]),
      2,
    ),
    /knn: features must be \[N, D\] and \[M, D\], got \[1,2\] and \[1,3\]/,
  );
});
