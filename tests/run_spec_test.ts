/**
 * The resolved run (train/run_spec.ts): the hyperparameters training feeds its step, for every preset, against
 * the official schedules written from the spec; the preset changes the CLI's flags make; what `resolveRun`
 * derives once.
 */
import assert from "node:assert/strict";
import { PRESETS, type PretrainConfig } from "../train/presets.ts";
import { hyperAt as presetsHyperAt } from "../train/presets.ts";
import {
  configureRun,
  FLAG_OF_FIELD,
  hyperAt,
  MAX_BATCH,
  resolveRun,
  RunChangeError,
  runHyperparams,
} from "../train/run_spec.ts";
import { maskGrid, resolveBackbone } from "../train/backbone.ts";
import { assertAllFields, officialArrays } from "./schedule_reference.ts";

/** A dataset of `n` training images shaped for `cfg` (no pixels: resolving a run reads only the sizes). */
function fakeData(cfg: PretrainConfig, n: number, testN = 10) {
  const split = (k: number) => ({ images: new Float32Array(0), labels: new Int32Array(0), n: k });
  return {
    name: `fake-${n}`,
    channels: cfg.augment.channels,
    size: cfg.backbone.imgSize ?? 224,
    train: split(n),
    test: split(testN),
  };
}

Deno.test("training's hyperparameters equal the official schedules at every iteration, for every preset", () => {
  for (const [name, preset] of Object.entries(PRESETS)) {
    // A few iterations per epoch: 3 keeps ImageNet's 800 epochs at 2,400 iterations; 7 makes a 0.5-epoch
    // warm-up fractional (3.5 iterations, rounded to 4).
    for (const niter of [3, 7]) {
      for (const predStart of [undefined, 2]) {
        const cfg = { ...preset, masking: { ...preset.masking, predStartEpoch: predStart } };
        const run = resolveRun(cfg, fakeData(cfg, niter * cfg.batchSize + 1));
        assert.equal(run.itersPerEpoch, niter);
        const total = cfg.epochs * niter;
        const got = Array.from({ length: total }, (_, it) => runHyperparams(run, it));
        const tt = cfg.teacherTemp;
        const S = predStart ?? 0;
        if (tt.perIteration) {
          // Not official: a per-iteration ramp over the run's first fraction (the short runs' presets).
          const R = Math.max(1, Math.round((tt.warmupFraction ?? 0.3) * total));
          const ramp = (delay: number) =>
            Array.from({ length: total }, (_, it) => {
              const j = it - delay;
              return j < 0 ? tt.start : j < R ? tt.start + (tt.end - tt.start) * j / R : tt.end;
            });
          assert.deepEqual(got.map((h) => h.teacherTemp), ramp(0), `${name}: CLS temperature ramp`);
          assert.deepEqual(got.map((h) => h.teacherPatchTemp), ramp(S * niter), `${name}: patch temperature ramp`);
        }
        const want = officialArrays({
          epochs: cfg.epochs,
          niter,
          peakLr: cfg.lr * cfg.batchSize / 256,
          minLr: cfg.minLr,
          warmIters: Math.round(cfg.warmupEpochs * niter),
          wd: cfg.weightDecay,
          momentum: cfg.momentum,
          temp: [tt.start, tt.end],
          // (per-iteration ramps: checked above, so no per-epoch ramp here)
          tempEpochs: tt.perIteration ? 0 : tt.warmupEpochs ?? 30,
          predStart: tt.perIteration ? 0 : S,
          freeze: cfg.freezeLastLayerEpochs,
        });
        if (tt.perIteration) {
          want.teacherTemp = got.map((h) => h.teacherTemp);
          want.teacherPatchTemp = got.map((h) => h.teacherPatchTemp);
        }
        assertAllFields(got, want, `${name} (${niter} it/epoch, MIM from ${S})`);
        // The deprecated per-preset entry point is the same implementation.
        for (const it of [0, 1, total >> 1, total - 1]) {
          assert.deepEqual(hyperAt(cfg, it, niter, total), got[it]);
          assert.deepEqual(presetsHyperAt(cfg, it, niter, total), got[it]);
        }
      }
    }
  }
});

Deno.test("resolveRun: the backbone, mask grid, iterations and steps, derived once", () => {
  const cfg = PRESETS["embedded-small"];
  const ds = fakeData(cfg, 4000);
  const run = resolveRun(cfg, ds, { steps: 100 });
  assert.deepEqual(run.backbone, resolveBackbone(cfg, ds));
  assert.deepEqual(run.maskGrid, [4, 4]);
  assert.deepEqual(run.maskGrid, maskGrid(run.backbone, cfg.augment.globalCrops.size));
  assert.deepEqual(
    [run.itersPerEpoch, run.scheduleSteps, run.totalSteps, run.globalCrops, run.batchSize],
    [62, 186, 100, 2, 64],
  );
  assert.equal(resolveRun(cfg, ds, { steps: 10_000 }).totalSteps, 186, "steps stop early, never late");
  assert.deepEqual(run.data, { name: "fake-4000", channels: 3, size: 32, trainImages: 4000, testImages: 10 });
  assert.ok(Object.isFrozen(run) && Object.isFrozen(run.schedule));
  assert.throws(() => resolveRun(cfg, fakeData(cfg, 63)), /63 training images give no batch of 64; lower --batch-size/);
  // A Swin run: its mask grid is the last stage's.
  const swin = resolveRun(configureRun(cfg, { arch: "swin_tiny" }), ds);
  assert.equal(swin.backbone.kind, "swin");
  assert.deepEqual(swin.maskGrid, [4, 4]);
});

Deno.test("configureRun: the flags' changes to a preset, on a copy", () => {
  const base = PRESETS["embedded-small"];
  const before = JSON.stringify(base);
  const swin = configureRun(base, { arch: "swin_tiny", epochs: 12 });
  assert.equal(JSON.stringify(base), before, "the preset is not modified");
  assert.deepEqual([swin.swin?.depths, swin.swin?.windowSize, swin.epochs], [[2, 2], 4, 12]);
  assert.equal(swin.masking.predStartEpoch, 2, "a Swin starts MIM at epochs/6 (the official 50 of 300)");
  assert.equal(configureRun(base, { arch: "swin_tiny", predStartEpoch: 0 }).masking.predStartEpoch, 0);
  assert.equal(configureRun(base, {}).masking.predStartEpoch, undefined, "a ViT starts MIM at once");
  const vit = configureRun(swin, { arch: "vit_small", remat: true, batchSize: 32 });
  assert.equal(vit.swin, undefined);
  assert.deepEqual(
    [vit.backbone.arch, vit.backbone.embedDim, vit.backbone.patchSize, vit.backbone.remat, vit.batchSize],
    ["vit_small", 384, 8, true, 32],
  );
  assert.equal(configureRun(swin, { remat: true }).swin?.remat, true);
  const refused = (changes: Parameters<typeof configureRun>[1], flag: string, message: RegExp) =>
    assert.throws(
      () => configureRun(base, changes),
      (e) => e instanceof RunChangeError && e.flag === flag && message.test(e.message),
    );
  refused({ arch: "vit_huge" }, "--arch", /--arch: unknown 'vit_huge' \(vit_tiny, .*swin_tiny/);
  refused({ arch: "swin_huge" }, "--arch", /--arch: unknown Swin 'swin_huge'/);
  refused({ batchSize: MAX_BATCH + 1 }, "--batch-size", /--batch-size 65537 is above the maximum 65536/);
  const flagOf = (path: string) => FLAG_OF_FIELD.find(([re]) => re.test(path))?.[1];
  assert.deepEqual(
    ["epochs", "masking.predStartEpoch", "swin.depths", "backbone", "batchSize", "lr"].map(flagOf),
    ["--epochs", "--pred-start-epoch", "--arch", "--arch", "--batch-size", undefined],
  );
});

Deno.test("presets: the embedded-small augmentation recipe is one object, geometric views only", async () => {
  const { AUGMENT_PRESETS } = await import("../train/augment.ts");
  const aug = PRESETS["embedded-small"].augment;
  assert.equal(aug, AUGMENT_PRESETS["embedded-small"]);
  assert.deepEqual([aug.globalCrops.scale, aug.localCrops.number, aug.localCrops.scale], [[0.5, 1], 4, [0.2, 0.5]]);
  const off = [aug.jitter.p, aug.grayscaleP, aug.blur.pGlobal1, aug.blur.pGlobalOther, aug.blur.pLocal];
  assert.deepEqual([...off, aug.solarize.pGlobal1, aug.solarize.pGlobalOther, aug.solarize.pLocal], Array(8).fill(0));
});
