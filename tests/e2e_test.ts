/**
 * End to end: a short iBOT run on the embedded data (the main job's data) through the public loop. The loss must
 * fall clearly, and the trained teacher's k-NN@20 is compared with the random network `pretrain` reports and with
 * the run's own initialisation (the same network before training).
 *
 * Not yet asserted: that training beats the initialisation's k-NN. At this size it does not: k-NN@20 gains over
 * the run's own initialisation were +0.4, 0.0 and -1.3 points (seeds 0, 1, 2; 40 steps) and +1.3, +1.8, +0.1
 * (62 steps, teacher 0.04 / student 0.1). Comparing with a different random network instead is misleading here:
 * random ViTs of this size vary from 0.37 to 0.56 k-NN@20 on these 1000 test images between initialisations.
 * The test only guards against training destroying the features (at most `KNN_TOLERANCE` below the init).
 *
 * `IBOT_E2E_SEED` picks another seed (default 0).
 */
import assert from "node:assert/strict";
import { evaluateKnn, initState, pretrain } from "../train/pretrain.ts";
import { PRESETS, type PretrainConfig } from "../train/presets.ts";
import { resolveBackbone } from "../train/backbone.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import * as random from "../ops/random.ts";
import { gpu } from "./util.ts";

/** How far below its initialisation the trained teacher's k-NN@20 may end (worst of seeds 0–2: -0.013). */
const KNN_TOLERANCE = 0.04;

Deno.test("e2e: 40 iBOT steps on the embedded data lower the loss; k-NN is not destroyed", async () => {
  const backend = await gpu();
  const seed = Number(Deno.env.get("IBOT_E2E_SEED") ?? 0);
  const base = PRESETS["embedded-small"];
  // Smaller than the preset to keep CI short (about 0.5 s a step on a 2-core software adapter).
  const cfg: PretrainConfig = {
    ...base,
    backbone: { ...base.backbone, embedDim: 48, depth: 2 },
    head: { hiddenDim: 64, bottleneckDim: 32, outDim: 128, normLastLayer: true },
    augment: { ...base.augment, localCrops: { ...base.augment.localCrops, number: 2 } },
    batchSize: 32,
    epochs: 2,
    lr: 4e-3,
    warmupEpochs: 0.3,
    // A sharper teacher and a softer student than the preset: over these few steps the teacher's CLS
    // distribution stays peaked (entropy well below log K) and the loss falls steadily (with 0.04 / 0.1 it
    // falls for ~20 steps and then climbs back as the teacher's entropy drifts towards log K).
    studentTemp: 0.2,
    teacherTemp: { start: 0.02, end: 0.02, perIteration: true },
  };
  // 1000 training images (31 steps an epoch), 1000 test images (k-NN noise about ±1.5 points).
  const ds = embeddedDataset({ seed: 0, trainPerClass: 100, testPerClass: 100 });
  const losses: number[] = [];
  const result = await pretrain(cfg, ds, {
    backend,
    seed,
    steps: 40, // of the 62-step schedule
    logEvery: 3,
    knnKs: [20],
    onProgress: (p) => losses.push(p.loss),
  });
  // The run's own initialisation: pretrain's state before the first step.
  const vc = resolveBackbone(cfg, ds);
  const init = initState(cfg, vc, random.key(seed, backend));
  const knnInit = (await evaluateKnn(init.teacher.backbone, vc, ds, cfg, backend, [20]))[20];
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(losses.slice(0, 2));
  const last = mean(losses.slice(-4));
  const [knn, knnRandom] = [result.knn[20], result.knnRandom[20]];
  console.log(
    `  seed ${seed}: losses ${losses.map((l) => l.toFixed(2)).join(" ")}; k-NN@20 ${knn.toFixed(3)} vs random ` +
      `${knnRandom.toFixed(3)} and init ${knnInit.toFixed(3)}`,
  );
  assert.equal(result.steps, 40);
  assert.ok(losses.every(Number.isFinite));
  // Seeds 0, 1, 2: first two 6.43, 5.53, 5.67 -> last four 4.38, 3.86, 4.57 (a fall of 1.1 to 2.0).
  assert.ok(last < first - 0.7, `the loss should fall: first ${first}, mean of the last four ${last}`);
  for (const v of [knn, knnRandom, knnInit]) assert.ok(v >= 0 && v <= 1);
  assert.ok(knn >= knnInit - KNN_TOLERANCE, `trained k-NN@20 ${knn} fell below the initialisation's ${knnInit}`);
});
