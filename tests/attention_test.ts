/**
 * examples/attention.ts logic on the CPU backend with a small random ViT: the [CLS] -> patch attention maps
 * (shape, a distribution per head minus the [CLS] share), the overlay and the per-head strip (sizes, opaque
 * pixels, colours that come from the heads), the mass threshold, and channel conversion.
 */
import assert from "node:assert/strict";
import { cpu, initVit, random, vit, vitConfig, type VitParams } from "../mod.ts";
import {
  attentionOverlay,
  attentionStrip,
  type ClsAttention,
  clsAttention,
  headColors,
  headWeights,
  toChannels,
} from "../examples/attention.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { fromTyped } from "../ops/create.ts";
import { assertClose } from "./util.ts";

const NORM = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };

function smallModel() {
  const config = vitConfig({ imgSize: 32, patchSize: 8, embedDim: 16, depth: 2, numHeads: 2, mlpRatio: 2 });
  const { masked_embed: _m, ...params } = initVit(random.key(3, cpu), config);
  return { config, params: params as VitParams };
}

Deno.test("attention: [CLS] attention maps of a random ViT, overlay and strip images", async () => {
  const { config, params } = smallModel();
  const ds = embeddedDataset({ seed: 0, trainPerClass: 0, testPerClass: 1 });
  const image = ds.test.images.slice(0, 3 * 32 * 32);
  const att = await clsAttention(params, config, image, [3, 32, 32], NORM, cpu);
  assert.deepEqual([att.heads, att.gh, att.gw, att.patch, att.maps.length], [2, 4, 4, 8, 32]);
  for (let h = 0; h < 2; h++) {
    const s = att.maps.subarray(h * 16, (h + 1) * 16).reduce((a, v) => a + v, 0);
    assert.ok(s > 0 && s < 1, `head ${h}: patch share ${s} (the rest is on [CLS])`);
  }
  // The same row of vit(..., returnAttention) on the normalised image.
  const x = fromTyped(image.map((v) => (v - 0.5) / 0.25), [1, 3, 32, 32], "float32", cpu);
  const full = await vit(params, x, { ...config, returnAttention: true }).attention.data();
  const want = Float32Array.from({ length: 32 }, (_, i) => full[Math.floor(i / 16) * 17 * 17 + 1 + (i % 16)]);
  assertClose(att.maps, want, 1e-5, 1e-6, "CLS row");

  const overlay = attentionOverlay(image, [3, 32, 32], att, { scale: 4 });
  assert.deepEqual([overlay.width, overlay.height, overlay.data.length], [128, 128, 128 * 128 * 4]);
  for (let i = 3; i < overlay.data.length; i += 4) assert.equal(overlay.data[i], 255);
  const strip = attentionStrip(image, [3, 32, 32], att, { scale: 2, threshold: 0.6 });
  assert.equal(strip.width, 4 * 64 + 5 * 4, "input, overlay, 2 heads, 4-px gaps");
  assert.equal(strip.height, 64 + 2 * 4 + 6 + 2);
  // The per-head panel of head 0 is tinted towards its colour where it attends most.
  const weights = headWeights(att);
  const peak = weights.subarray(0, 16).indexOf(1);
  const [px, py] = [(peak % 4) * 8 + 4, Math.floor(peak / 4) * 8 + 4]; // centre of the peak patch
  const solo = attentionOverlay(image, [3, 32, 32], att, { scale: 1, only: 0 });
  const o = (py * 32 + px) * 4;
  const c = headColors(2)[0].map((v) => v * 255);
  const dist = (a: number[]) => Math.hypot(a[0] - c[0], a[1] - c[1], a[2] - c[2]);
  const grey = 0.15 * 255 + 0.55 * 255 * 0.5; // a mid-grey of the dimmed base
  assert.ok(dist([...solo.data.subarray(o, o + 3)]) < dist([grey, grey, grey]), "peak pixel leans to head 0's colour");
});

Deno.test("attention: head weights (min-max and mass threshold), colours, channel conversion", () => {
  const att: ClsAttention = {
    maps: new Float32Array([0.5, 0.3, 0.1, 0.05, 0.25, 0.25, 0.25, 0.2]),
    heads: 2,
    gh: 2,
    gw: 2,
    patch: 4,
  };
  const w = headWeights(att);
  assertClose(w.subarray(0, 4), [1, 0.25 / 0.45, 0.05 / 0.45, 0], 1e-6, 1e-6, "min-max");
  assert.deepEqual([...headWeights(att, 0.6).subarray(0, 4)], [1, 1, 0, 0], "0.5 + 0.3 reaches 60% of 0.95");
  assert.deepEqual([...headWeights(att, 0.1).subarray(0, 4)], [1, 0, 0, 0]);
  const cs = headColors(6);
  assert.equal(new Set(cs.map((c) => c.join())).size, 6);
  assert.ok(cs.flat().every((v) => v >= 0 && v <= 1));
  const grey = toChannels(new Float32Array([1, 0, 0, 1, 0, 0]), 3, 1, 2, 1);
  assertClose(grey, [0.299, 0.587], 1e-6, 1e-7);
  assert.deepEqual([...toChannels(new Float32Array([0.5]), 1, 1, 1, 3)], [0.5, 0.5, 0.5]);
});
