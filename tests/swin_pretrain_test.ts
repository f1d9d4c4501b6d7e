/** Swin backbones in pretraining: the small-image layout, the mask grid, the state's groups, a run and its resume. */
import assert from "node:assert/strict";
import { pretrain } from "../train/pretrain.ts";
import { initState } from "../train/pretrain.ts";
import { hyperAt, PRESETS, type PretrainConfig } from "../train/presets.ts";
import { maskGrid, resolveBackbone, smallSwin } from "../train/backbone.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { decays } from "../train/optim.ts";
import { paths } from "../autograd/tree.ts";
import * as random from "../ops/random.ts";
import { parseSafetensors } from "../models/safetensors.ts";
import { cpu, gpu } from "./util.ts";

/** A tiny Swin on embedded-small: 2 stages (8x8 → 4x4 tokens at 32 px), C 16, window 4; 2 local crops. */
function tinySwin(): PretrainConfig {
  const base = PRESETS["embedded-small"];
  return {
    ...base,
    swin: {
      arch: "swin_tiny",
      patchSize: 4,
      embedDim: 16,
      depths: [1, 1],
      numHeads: [1, 2],
      windowSize: 4,
      mlpRatio: 2,
    },
    head: { hiddenDim: 32, bottleneckDim: 16, outDim: 64, normLastLayer: true },
    augment: { ...base.augment, localCrops: { ...base.augment.localCrops, number: 2 } },
    // MIM from the first step, with a masked fraction on every image.
    masking: { shape: "block", predRatio: 0.3, predRatioVar: 0.1, predStartEpoch: 0 },
    batchSize: 8,
    epochs: 1,
  };
}

const ds = embeddedDataset({ seed: 3, trainPerClass: 8, testPerClass: 2 });

Deno.test("swin: Swin-T is laid out for 224, 32 and 28 px crops; impossible sizes name the sizes", () => {
  assert.deepEqual(smallSwin("swin_tiny", 224), {
    arch: "swin_tiny",
    patchSize: 4,
    embedDim: 96,
    depths: [2, 2, 6, 2],
    numHeads: [3, 6, 12, 24],
    windowSize: 7,
    mlpRatio: 4,
    dropPathRate: 0.1,
  });
  const s32 = smallSwin("swin_tiny", 32);
  assert.deepEqual([s32.patchSize, s32.depths, s32.numHeads, s32.windowSize], [4, [2, 2], [3, 6], 4]);
  const s28 = smallSwin("swin_tiny", 28);
  assert.deepEqual([s28.patchSize, s28.depths, s28.windowSize], [2, [2, 2], 7]);
  assert.throws(() => smallSwin("swin_tiny", 6), /6-px global crops/); // a 3x3 grid at best
  // The mask grid is the last stage's: 224 px → 7x7 (32-px cells), 32 px → 4x4, 28 px (patch 2) → 7x7.
  for (const [crop, grid] of [[224, 7], [32, 4], [28, 7]] as const) {
    const cfg = { ...PRESETS["embedded-small"], swin: { arch: "swin_tiny" as const } };
    cfg.augment = { ...cfg.augment, globalCrops: { ...cfg.augment.globalCrops, size: crop } };
    assert.deepEqual(maskGrid(resolveBackbone(cfg, { channels: 3, size: crop }), crop), [grid, grid]);
  }
  // An explicit Swin whose last stage does not tile the crop is refused, naming the sizes.
  const bad = tinySwin();
  bad.augment = { ...bad.augment, globalCrops: { ...bad.augment.globalCrops, size: 28 } };
  assert.throws(
    () => resolveBackbone(bad, ds),
    /28-px global crops are not a multiple of the mask cell \(patch 4 x 2\^1 = 8 px/,
  );
});

Deno.test("swin: the state's teacher has no masked_embed; AdamW decays tables and masked_embed, not norms", () => {
  const spec = resolveBackbone(tinySwin(), ds);
  assert.equal(spec.kind, "swin");
  const state = initState(tinySwin(), spec, random.key(0, cpu));
  const student = paths(state.student.backbone).map(([p]) => p);
  const teacher = paths(state.teacher.backbone).map(([p]) => p);
  assert.ok(student.includes("masked_embed"));
  assert.deepEqual(teacher, student.filter((p) => p !== "masked_embed"));
  assert.ok(paths(state.opt.m).some(([p]) => p === "backbone.masked_embed"), "AdamW state covers masked_embed");
  const shapes = new Map(paths<{ shape: number[] }>(state.student.backbone).map(([p, t]) => [p, t.shape]));
  const d = (p: string) => decays(p, shapes.get(p)!);
  assert.equal(d("masked_embed"), true);
  assert.equal(d("layers.0.blocks.0.attn.relative_position_bias_table"), true);
  assert.equal(d("layers.0.downsample.reduction.weight"), true);
  assert.equal(d("patch_embed.proj.weight"), true);
  assert.equal(d("patch_embed.norm.weight"), false);
  assert.equal(d("layers.1.blocks.0.attn.qkv.bias"), false);
  // pred_start_epoch holds the patch teacher temperature at its start value (official Swin recipe).
  const late = { ...tinySwin(), epochs: 10, teacherTemp: { start: 0.04, end: 0.07, warmupEpochs: 2 } };
  const cfg = { ...late, masking: { ...late.masking, predStartEpoch: 5 } };
  assert.deepEqual([hyperAt(cfg, 40, 10, 100).teacherTemp, hyperAt(cfg, 40, 10, 100).teacherPatchTemp], [0.07, 0.04]);
  assert.equal(hyperAt(cfg, 60, 10, 100).teacherPatchTemp, 0.07);
});

async function losses(dir: string): Promise<number[]> {
  const lines = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  return lines.filter((l) => "loss" in l).map((l) => l.loss);
}

Deno.test("swin: pretrain() trains a tiny Swin (finite loss, MIM on) and resumes bit-exactly", async () => {
  const backend = await gpu();
  const [a, b] = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const common = { backend, seed: 2, logEvery: 1, evaluate: false };
  const full = await pretrain(tinySwin(), ds, { ...common, steps: 4, out: a });
  await pretrain(tinySwin(), ds, { ...common, steps: 2, out: b });
  await pretrain(tinySwin(), ds, { ...common, steps: 4, out: b, resume: true });
  const [la, lb] = [await losses(a), await losses(b)];
  assert.equal(la.length, 4);
  assert.ok(la.every(Number.isFinite), `finite losses ${la}`);
  assert.ok(Number.isFinite(full.lastLoss));
  const patch = (await Deno.readTextFile(`${a}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l).patch);
  assert.ok(patch.some((p) => p > 0), `the MIM term is active: ${patch}`);
  assert.deepEqual(lb, la, "bit-exact losses after resuming");
  // The checkpoint holds a Swin state: the student's mask token, none in the teacher.
  const names = [...parseSafetensors(await Deno.readFile(`${b}/checkpoint.safetensors`)).tensors.keys()];
  assert.ok(names.includes("student.backbone.masked_embed"));
  assert.ok(names.includes("teacher.backbone.layers.1.blocks.0.attn.relative_position_bias_table"));
  assert.ok(!names.includes("teacher.backbone.masked_embed"));
  for (const d of [a, b]) await Deno.remove(d, { recursive: true });
});
