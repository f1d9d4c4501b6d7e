/**
 * examples/linear.ts and examples/lib/model.ts: intermediate block outputs agree with the ViT forward pass, the
 * probe features have the §8.2 shapes, and the parallel linear-probe sweep learns a separable problem (the
 * largest learning rates may diverge without harming the others).
 */
import assert from "node:assert/strict";
import { cpu, initVit, random, vit, vitConfig, type VitParams } from "../mod.ts";
import { blockOutputs, defaultProbeMode, probeFeatures } from "../examples/lib/model.ts";
import { linearProbe, OFFICIAL_LRS } from "../examples/linear.ts";
import { fromTyped } from "../ops/create.ts";
import { assertClose, randArray, rng } from "./util.ts";

Deno.test("linear: block outputs end with vit()'s tokens; probe features are last-4 CLS or CLS + mean patch", async () => {
  const config = vitConfig({ imgSize: 16, patchSize: 8, embedDim: 8, depth: 4, numHeads: 2, mlpRatio: 2 });
  const { masked_embed: _m, ...p } = initVit(random.key(1, cpu), config);
  const params = p as VitParams;
  const x = fromTyped(Float32Array.from(randArray(5, 2 * 3 * 16 * 16)), [2, 3, 16, 16], "float32", cpu);
  const outs = blockOutputs(params, x, config, 4);
  assert.equal(outs.length, 4);
  const ref = await vit(params, x, { ...config, returnAllTokens: true }).data();
  assertClose(await outs[3].data(), ref, 1e-5, 1e-6, "last block");
  const f = probeFeatures(params, x, config, { nLastBlocks: 4, avgpool: false });
  assert.deepEqual(f.shape, [2, 32]);
  const fd = await f.data();
  const cls2 = await outs[2].data(); // [2, 5, 8]: CLS of block 2 is features 16..23
  assertClose(fd.slice(16, 24), cls2.slice(0, 8), 1e-6, 1e-7, "CLS of the third-to-last block");
  const g = probeFeatures(params, x, config, { nLastBlocks: 1, avgpool: true });
  assert.deepEqual(g.shape, [2, 16]);
  const gd = await g.data();
  const meanPatch = Array.from({ length: 8 }, (_, d) => (ref[8 + d] + ref[16 + d] + ref[24 + d] + ref[32 + d]) / 4);
  assertClose(gd.slice(8, 16), meanPatch, 1e-5, 1e-6, "mean patch token");
  assert.deepEqual(defaultProbeMode({ embedDim: 384, depth: 12 }), { nLastBlocks: 4, avgpool: false });
  assert.deepEqual(defaultProbeMode({ embedDim: 768, depth: 12 }), { nLastBlocks: 1, avgpool: true });
  assert.throws(() => blockOutputs(params, x, config, 5), /depth/);
});

Deno.test("linear: the parallel sweep learns Gaussian blobs; official grid has 45 rates", async () => {
  assert.equal(OFFICIAL_LRS.length, 45);
  assert.deepEqual([OFFICIAL_LRS[0], OFFICIAL_LRS[9], OFFICIAL_LRS[44]], [1e-4, 1e-3, 9]);
  const r = rng(11);
  const C = 3, F = 6, n = 240, m = 90;
  const centers = Array.from({ length: C }, () => Array.from({ length: F }, () => 4 * (r() - 0.5)));
  const make = (k: number) => {
    const labels = Int32Array.from({ length: k }, (_, i) => i % C);
    const x = new Float32Array(k * F);
    labels.forEach((y, i) => centers[y].forEach((c, d) => (x[i * F + d] = c + (r() - 0.5))));
    return { x: fromTyped(x, [k, F], "float32", cpu), labels };
  };
  const train = make(n);
  const test = make(m);
  const res = await linearProbe(train.x, train.labels, test.x, test.labels, C, {
    lrs: [1e-4, 0.1, 1],
    epochs: 8,
    batchSize: 32,
  });
  assert.equal(res.steps, 8 * Math.floor(n / 32));
  assert.deepEqual(res.lrs, [1e-4 / 8, 0.1 / 8, 1 / 8], "scaled by batch/256");
  assert.ok(res.top1[2] > 0.95, `lr 1: top-1 ${res.top1[2]}`);
  assert.ok(res.best.top1 >= res.top1[0] && res.best.top1 > 0.95);
  assert.ok(res.top1[0] < res.best.top1, "a tiny lr learns less in 8 epochs");
  assert.ok(res.bestOverEpochs.top1 >= res.best.top1);
});
