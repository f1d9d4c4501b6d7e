/**
 * End to end: a short iBOT run on the embedded dataset (the main job's data) through the public loop: the loss
 * must fall, and the run must report k-NN accuracies for the trained teacher and a random network.
 */
import assert from "node:assert/strict";
import { pretrain } from "../train/pretrain.ts";
import { PRESETS, type PretrainConfig } from "../train/presets.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { gpu } from "./util.ts";

Deno.test("e2e: 24 iBOT steps on the embedded data lower the loss; k-NN is reported", async () => {
  const backend = await gpu();
  const base = PRESETS["embedded-small"];
  // Smaller than the preset to keep CI short; a constant teacher temperature, so the loss reflects learning only.
  const cfg: PretrainConfig = {
    ...base,
    backbone: { ...base.backbone, embedDim: 48, depth: 2 },
    head: { hiddenDim: 64, bottleneckDim: 32, outDim: 128, normLastLayer: true },
    augment: { ...base.augment, localCrops: { ...base.augment.localCrops, number: 2 } },
    batchSize: 32,
    epochs: 3,
    lr: 4e-3,
    warmupEpochs: 0.3,
    teacherTemp: { start: 0.04, end: 0.04, perIteration: true },
  };
  const ds = embeddedDataset({ seed: 0, trainPerClass: 30, testPerClass: 10 });
  const losses: number[] = [];
  const result = await pretrain(cfg, ds, {
    backend,
    seed: 0,
    steps: 24,
    logEvery: 3,
    knnKs: [10, 20],
    onProgress: (p) => losses.push(p.loss),
  });
  const first = losses[0];
  const last = losses.slice(-3).reduce((a, b) => a + b, 0) / 3;
  console.log(
    `  losses ${losses.map((l) => l.toFixed(3)).join(" ")}; k-NN ${JSON.stringify(result.knn)} vs random ${
      JSON.stringify(result.knnRandom)
    }`,
  );
  assert.equal(result.steps, 24);
  assert.ok(losses.every(Number.isFinite));
  assert.ok(last < first - 0.2, `the loss should fall: first ${first}, mean of the last three ${last}`);
  for (const k of [10, 20]) {
    assert.ok(result.knn[k] >= 0 && result.knn[k] <= 1 && result.knnRandom[k] >= 0 && result.knnRandom[k] <= 1);
  }
});
