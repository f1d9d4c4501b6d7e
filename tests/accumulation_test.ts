/**
 * Gradient accumulation (`pretrain({ microBatch })`): a step of B images run as B/M micro-batches is the step of
 * the whole batch, because every image keeps its own augmentation, mask and drop-path draws (per-image keys)
 * and the micro-batches' sums (gradients, center sums, metrics) are added before one update.
 */
import assert from "node:assert/strict";
import { pretrain } from "../train/pretrain.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { parseSafetensors } from "../models/safetensors.ts";
import * as random from "../ops/random.ts";
import * as api from "../ops/api.ts";
import { fromTyped } from "../ops/create.ts";
import { dropPath } from "../ops/nn.ts";
import { multiCrop } from "../train/augment.ts";
import type { Backend } from "../ops/backend.ts";
import type { PretrainConfig } from "../train/presets.ts";
import { assertSameState, cpu, gpu, readAll, tinyPretrainConfig } from "./util.ts";

const ds = embeddedDataset({ seed: 3, trainPerClass: 8, testPerClass: 2 });

/** The tiny config with 2 blocks (drop path is 0 in a 1-block ViT) and a batch of 8. */
function config(): PretrainConfig {
  const cfg = tinyPretrainConfig();
  return { ...cfg, backbone: { ...cfg.backbone, depth: 2 }, batchSize: 8, dropPath: 0.3, warmupEpochs: 0 };
}

async function run(backend: Backend, opts: { steps: number; microBatch?: number; out: string; resume?: boolean }) {
  await pretrain(config(), ds, { backend, seed: 7, logEvery: 1, evaluate: false, ...opts });
  const lines = (await Deno.readTextFile(`${opts.out}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  const tensors = parseSafetensors(await Deno.readFile(`${opts.out}/checkpoint.safetensors`)).tensors;
  return { losses: lines.filter((l) => "loss" in l).map((l) => l.loss as number), tensors };
}

/** The largest lr of the two steps (no warm-up): base lr · batch / 256. */
const LR = (config().lr * 8) / 256;

Deno.test("accumulation: 4 micro-batches of 2 (and 8 of 1 on CPU) equal one batch of 8 for 2 steps (CPU and WebGPU); resume mid-run is bit-exact", async () => {
  for (const backend of [cpu, await gpu()]) {
    const dirs = await Promise.all([0, 1, 2].map(() => Deno.makeTempDir()));
    const whole = await run(backend, { steps: 2, out: dirs[0] });
    const micro = await run(backend, { steps: 2, microBatch: 2, out: dirs[1] });
    assert.equal(whole.losses.length, 2);
    whole.losses.forEach((l, i) => assert.ok(Math.abs(micro.losses[i] - l) <= 1e-5 * Math.abs(l), `loss ${i}`));
    assertSameState(micro.tensors, whole.tensors, LR, `${backend.name} micro vs whole`);
    if (backend === cpu) {
      // Micro-batches of one image (batches of one key) too.
      const dir = await Deno.makeTempDir();
      const single = await run(backend, { steps: 2, microBatch: 1, out: dir });
      whole.losses.forEach((l, i) => assert.ok(Math.abs(single.losses[i] - l) <= 1e-5 * Math.abs(l), `loss ${i}`));
      assertSameState(single.tensors, whole.tensors, LR, "cpu micro-batch 1 vs whole");
      await Deno.remove(dir, { recursive: true });
      // Interrupted after step 1 and resumed with micro-batches: identical to the uninterrupted accumulated run
      // (the loop is backend-independent; tests/pretrain_test.ts checks resume on WebGPU).
      await run(backend, { steps: 1, microBatch: 2, out: dirs[2] });
      const resumed = await run(backend, { steps: 2, microBatch: 2, out: dirs[2], resume: true });
      assert.deepEqual(resumed.losses, micro.losses, "bit-exact losses");
      for (const [name, t] of micro.tensors) {
        assert.deepEqual(Array.from(resumed.tensors.get(name)!.data), Array.from(t.data), `bit-exact ${name}`);
      }
    }
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("accumulation: a micro-batch that does not divide the batch is refused naming both sizes", async () => {
  await assert.rejects(
    pretrain(config(), ds, { backend: cpu, seed: 0, steps: 1, evaluate: false, microBatch: 3 }),
    /micro-batch 3 must be a positive divisor of the batch size 8/,
  );
});

Deno.test("per-image keys: a subset of the images gets the draws it gets in the whole batch (CPU and WebGPU)", async () => {
  for (const backend of [cpu, await gpu()]) {
    const step = random.key(11, backend);
    const idx = (xs: number[]) => fromTyped(Int32Array.from(xs), [xs.length], "int32", backend);
    const all = random.foldIn(step, idx([0, 1, 2, 3]));
    const some = random.foldIn(step, idx([2, 3]));
    // foldIn by a vector = foldIn by each integer; a batch of keys draws row j as key j alone would.
    const [allK, someK, one, batchOfOne] = await readAll([
      all,
      some,
      random.foldIn(step, 3),
      random.foldIn(step, idx([3])),
    ]);
    assert.deepEqual(Array.from(someK), Array.from(allK).slice(4));
    assert.deepEqual(Array.from(one), Array.from(allK).slice(6));
    assert.deepEqual(random.foldIn(step, idx([3])).shape, [1, 2], "a vector of one integer gives a batch of one key");
    assert.deepEqual(Array.from(batchOfOne), Array.from(one));
    const [bitsAll, bitsSome, bitsOne] = await readAll([
      random.randomBits(all, [5]),
      random.randomBits(some, [5]),
      random.randomBits(random.foldIn(step, 3), [5]),
    ]);
    assert.deepEqual(Array.from(bitsSome), Array.from(bitsAll).slice(10));
    assert.deepEqual(Array.from(bitsOne), Array.from(bitsAll).slice(15));
    const [sAll, sSome] = await readAll([random.split(all, 3)[1], random.split(some, 3)[1]]);
    assert.deepEqual(Array.from(sSome), Array.from(sAll).slice(4));
    // Drop path and multi-crop with per-image keys.
    const x = api.add(fromTyped(new Float32Array(4 * 3).fill(1), [4, 3], "float32", backend), 0);
    const [dAll, dSome] = await readAll([dropPath(all, x, 0.5, true), dropPath(some, api.slice(x, [2]), 0.5, true)]);
    assert.deepEqual(Array.from(dSome), Array.from(dAll).slice(6));
    const cfg = config().augment;
    const images = random.uniform(random.key(1, backend), [4, 3, 32, 32]);
    const cropsAll = multiCrop(all, images, cfg);
    const cropsSome = multiCrop(some, api.slice(images, [2]), cfg);
    const got = await readAll(cropsSome);
    const want = await readAll(cropsAll.map((c) => api.slice(c, [2])));
    got.forEach((g, k) => assert.deepEqual(Array.from(g), Array.from(want[k]), `crop ${k}`));
  }
});
