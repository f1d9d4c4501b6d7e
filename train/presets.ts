/**
 * Training presets: everything a run needs besides the data path — backbone, head, augmentation, masking,
 * optimiser and schedules. `embedded-small` (the default job), `fmnist-tiny` (exactly as specified for
 * 28-px Fashion-MNIST) and `imagenet-vit-s16` (the official ViT-S/16 recipe, ibot-spec §7.7).
 */
import type { VitConfigInput } from "../models/vit.ts";
import type { SwinBackboneInput } from "./backbone.ts";
import { AUGMENT_PRESETS, type AugmentConfig } from "./augment.ts";
import type { MaskOptions } from "./masking.ts";

/** Which dataset a preset trains on by default. */
export type DataName = "embedded" | "fmnist" | string;

/** A full training configuration. */
export interface PretrainConfig {
  /** The preset's name. */
  name: string;
  /** Default dataset. */
  data: DataName;
  /** Backbone (a ViT config; `arch` picks a preset size). Not used when `swin` is set. */
  backbone: Exclude<VitConfigInput, string>;
  /**
   * A Swin backbone in place of the ViT (`arch: "swin_*"` and overrides; sizes not given are adapted to the
   * global crop size, see `train/backbone.ts`).
   */
  swin?: SwinBackboneInput;
  /** iBOT head sizes (shared between CLS and patches). */
  head: { hiddenDim: number; bottleneckDim: number; outDim: number; normLastLayer: boolean };
  /** Multi-crop augmentation. */
  augment: AugmentConfig;
  /**
   * Patch masking of the global crops. `predStartEpoch` (official: 0 for ViT, 50 of 300 epochs for Swin) also
   * holds the patch teacher temperature at its start value until then.
   */
  masking: MaskOptions;
  /** Images per step. */
  batchSize: number;
  /** Epochs of the schedules (the run may stop earlier with `steps`). */
  epochs: number;
  /** Base lr, scaled by batch/256 (the linear scaling rule). */
  lr: number;
  /** Final lr at the end of the cosine decay. */
  minLr: number;
  /** Epochs of linear lr warm-up from 0 to the scaled base lr. */
  warmupEpochs: number;
  /** Weight decay from `[0]` to `[1]` (cosine). */
  weightDecay: [number, number];
  /** Per-parameter gradient-norm clip (0 disables). */
  clipGrad: number;
  /** Epochs during which the head's last layer gets no update. */
  freezeLastLayerEpochs: number;
  /** Teacher momentum from `[0]` to `[1]` (cosine). */
  momentum: [number, number];
  /** Student temperature (CLS and patch). */
  studentTemp: number;
  /**
   * Teacher temperature (CLS and patch) ramp from `start` to `end`: per epoch over `warmupEpochs` (official),
   * or, with `perIteration`, linearly per iteration over the first `warmupFraction` of the run.
   */
  teacherTemp: { start: number; end: number; warmupEpochs?: number; perIteration?: boolean; warmupFraction?: number };
  /** Stochastic depth of the student's last block. */
  dropPath: number;
}

/** The built-in presets. */
export const PRESETS: Readonly<Record<string, PretrainConfig>> = {
  "embedded-small": {
    name: "embedded-small",
    data: "embedded",
    backbone: { imgSize: 32, patchSize: 8, inChans: 3, embedDim: 64, depth: 4, numHeads: 2, mlpRatio: 2 },
    head: { hiddenDim: 128, bottleneckDim: 64, outDim: 256, normLastLayer: true },
    // The whole augmentation recipe (crops, geometric views only) is AUGMENT_PRESETS["embedded-small"].
    augment: AUGMENT_PRESETS["embedded-small"],
    masking: { shape: "block", predRatio: [0, 0.3], predRatioVar: [0, 0.2] },
    batchSize: 64,
    epochs: 3,
    lr: 2e-3,
    minLr: 1e-5,
    warmupEpochs: 0.5,
    weightDecay: [0.04, 0.4],
    clipGrad: 3,
    freezeLastLayerEpochs: 1,
    // A much faster teacher than the official 0.996, for a run of ~190 steps (0.996^186 ≈ 0.47 of the teacher
    // would still be its random initialisation). Seed 0, 186 steps, k-NN@20 over the initialisation: +6.6 points
    // with 0.95 (loss 7.6 -> 4.2, teacher entropy ~1 nat), +6.3 with 0.99 (loss 7.6 -> 6.5, entropy ~3.6).
    momentum: [0.95, 1],
    studentTemp: 0.1,
    // A constant sharp teacher: with the 0.04 -> 0.07 ramp such a short run drifts towards a uniform teacher
    // (its entropy rose to 4.9 of 5.5 nats and the loss stayed flat); at 0.04 the loss falls steadily.
    teacherTemp: { start: 0.04, end: 0.04, perIteration: true, warmupFraction: 0.3 },
    dropPath: 0.1,
  },
  "fmnist-tiny": {
    name: "fmnist-tiny",
    data: "fmnist",
    backbone: { imgSize: 28, patchSize: 4, inChans: 1, embedDim: 96, depth: 4, numHeads: 3, mlpRatio: 4 },
    head: { hiddenDim: 256, bottleneckDim: 64, outDim: 1024, normLastLayer: true },
    augment: AUGMENT_PRESETS["fmnist-tiny"],
    masking: { shape: "block", predRatio: [0, 0.3], predRatioVar: [0, 0.2] },
    batchSize: 128,
    epochs: 100,
    lr: 5e-4,
    minLr: 1e-6,
    warmupEpochs: 1,
    weightDecay: [0.04, 0.4],
    clipGrad: 3,
    freezeLastLayerEpochs: 1,
    momentum: [0.996, 1],
    studentTemp: 0.1,
    teacherTemp: { start: 0.04, end: 0.07, perIteration: true, warmupFraction: 0.3 },
    dropPath: 0.1,
  },
  "imagenet-vit-s16": {
    name: "imagenet-vit-s16",
    data: "imagenet",
    backbone: { arch: "vit_small", imgSize: 224, patchSize: 16, inChans: 3 },
    head: { hiddenDim: 2048, bottleneckDim: 256, outDim: 8192, normLastLayer: false },
    augment: AUGMENT_PRESETS.imagenet,
    masking: { shape: "block", predRatio: [0, 0.3], predRatioVar: [0, 0.2] },
    batchSize: 1024,
    epochs: 800,
    lr: 5e-4,
    minLr: 1e-6,
    warmupEpochs: 10,
    weightDecay: [0.04, 0.4],
    clipGrad: 3,
    freezeLastLayerEpochs: 1,
    momentum: [0.996, 1],
    studentTemp: 0.1,
    teacherTemp: { start: 0.04, end: 0.07, warmupEpochs: 30 },
    dropPath: 0.1,
  },
};

// Kept importable from here (deprecated): the one schedule implementation is `hyperparamsAt` in schedules.ts.
export { hyperAt } from "./run_spec.ts";
