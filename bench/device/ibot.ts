/**
 * Phase `ibot` of the device benchmark: the full `imagenet-vit-s16` iBOT training step (on-device multi-crop
 * augmentation of 224-px images into 2 × 224 px global and 10 × 96 px local crops, teacher forward, student forward
 * and backward, the head and MIM loss on the masked rows, per-parameter clipping, AdamW and the EMA fold: one
 * jitted `ibotStep`, state donated) at the largest batch that fits on the device, the per-device batch of a
 * data-parallel or accumulated run of the preset's 1024 images.
 *
 * The batch is found by the plan-memory planner (`planStepMemory`, nothing allocated): the largest power of two
 * up to the preset's batch whose plan fits the device's buffer limits and `maxMemory` (`DEVICE_BENCH_MAX_MEMORY`
 * bytes, set by run.sh from the GPU's memory). `torch_step.py --ibot` runs the same shapes in PyTorch.
 * The dry run shrinks the preset (2 blocks, 32-px images, 16-px local crops, a small head) and its memory limit.
 *
 * @module
 */
import { PRESETS, type PretrainConfig, random, type Tensor, tidy, tree } from "../../mod.ts";
import { jit } from "../../autograd/jit.ts";
import { fromTyped } from "../../ops/create.ts";
import { hostKey, sampleStepMasks } from "../../train/masking.ts";
import { planStepMemory } from "../../train/memory.ts";
import { hyperAt } from "../../train/presets.ts";
import { backboneConfig, initState, stepConfig } from "../../train/pretrain.ts";
import { type IbotState, ibotStep } from "../../train/step.ts";
import type { BackboneParams } from "../../train/backbone.ts";
import type { HeadParams } from "../../models/head.ts";
import { errorText, progress, randomMatrix } from "../util.ts";
import { gpuBackend, isDry, makeDeadline, type StepTimes, timeSteps, writeFragment } from "./common.ts";

/** The step's shapes, as `torch_step.py` rebuilds them. */
export interface IbotShape {
  preset: string;
  batch: number;
  imageSize: number;
  globalCrops: { number: number; size: number };
  localCrops: { number: number; size: number };
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  head: PretrainConfig["head"];
  /** Masked patches of the step's global crops (the rows our head and MIM loss run on). */
  maskedPatches?: number;
}

/** What the ibot phase records. */
export interface IbotFragment extends StepTimes {
  shape?: IbotShape;
  maxMemoryBytes: number;
  /** Every planned batch: its peak, or why it was refused. */
  planned: { batch: number; peakBytes?: number; refused?: string }[];
}

/** The preset as measured: the real one, or its shrunken dry-run form. */
function preset(): { cfg: PretrainConfig; imageSize: number } {
  const cfg = PRESETS["imagenet-vit-s16"];
  if (!isDry()) return { cfg, imageSize: 224 };
  return {
    cfg: {
      ...cfg,
      backbone: { ...cfg.backbone, depth: 2 },
      head: { hiddenDim: 128, bottleneckDim: 64, outDim: 256, normLastLayer: false },
      augment: {
        ...cfg.augment,
        globalCrops: { ...cfg.augment.globalCrops, size: 32 },
        localCrops: { ...cfg.augment.localCrops, number: 2, size: 16 },
      },
      batchSize: 8,
    },
    imageSize: 32,
  };
}

if (import.meta.main) {
  const gpu = await gpuBackend();
  const left = makeDeadline();
  const { cfg, imageSize } = preset();
  const maxMemory = Number(Deno.env.get("DEVICE_BENCH_MAX_MEMORY") || (isDry() ? 160 * 2 ** 20 : 64 * 2 ** 30));
  const out: IbotFragment = { maxMemoryBytes: maxMemory, planned: [], stepsMs: [] };
  await writeFragment("ibot", out);
  const vc = backboneConfig(cfg, { channels: 3, size: imageSize });
  const stepCfg = stepConfig(cfg, vc);
  const g = Math.floor(cfg.augment.globalCrops.size / vc.patchSize);
  const grids = Array.from({ length: cfg.augment.globalCrops.number }, () => [g, g] as const);
  // Iteration 20 epochs into the 800-epoch schedule: past the warm-up and the frozen last layer.
  const itersPerEpoch = Math.floor(1281167 / cfg.batchSize);
  const hp = hyperAt(cfg, 20 * itersPerEpoch, itersPerEpoch, cfg.epochs * itersPerEpoch);
  // Typed as the step's state (a ViT or Swin backbone): initState's ViT overload is narrower.
  const init = (k: Tensor): IbotState<BackboneParams, HeadParams> => initState(cfg, vc, k);
  const makeStep = () => jit(ibotStep(stepCfg), { donate: [0], maxMemory });
  const compiled = new Map<number, ReturnType<typeof makeStep>>();
  const stepFor = (batch: number) => {
    if (!compiled.has(batch)) compiled.set(batch, makeStep());
    return compiled.get(batch)!;
  };
  // Largest power-of-two batch whose plan fits: a binary search over the exponents, planning only.
  const fits = (batch: number) => {
    const step = stepFor(batch);
    try {
      const shape = { batchSize: batch, channels: 3, imageSize, grids, masking: cfg.masking };
      const plan = { micro: false, memory: step.memory } as Parameters<typeof planStepMemory>[0];
      const peak = tidy(() => planStepMemory(plan, init, random.key(0, gpu), shape, hp, gpu).peakBytes);
      out.planned.push({ batch, peakBytes: peak });
      progress(`ibot: batch ${batch} plans to ${(peak / 2 ** 30).toFixed(2)} GiB`);
      return true;
    } catch (e) {
      out.planned.push({ batch, refused: errorText(e) });
      progress(`ibot: batch ${batch} refused: ${errorText(e)}`);
      step.dispose();
      compiled.delete(batch);
      return false;
    }
  };
  let lo = -1, hi = Math.floor(Math.log2(cfg.batchSize));
  // Invariant: 2^lo fits (or lo = -1), every exponent above hi is refused.
  while (lo < hi && left() > 20_000) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(2 ** mid)) lo = mid;
    else hi = mid - 1;
  }
  await writeFragment("ibot", out);
  if (lo < 0) {
    out.error = "no batch fits the memory limit";
  } else {
    const B = 2 ** lo;
    for (const [b, s] of compiled) {
      if (b !== B) {
        s.dispose();
        compiled.delete(b);
      }
    }
    const step = stepFor(B);
    const masks = sampleStepMasks(hostKey(1), B, grids, cfg.masking, gpu);
    const pixels = randomMatrix(B * 3 * imageSize * imageSize, 7).map((v) => 0.5 + 0.5 * v);
    const images = fromTyped(pixels, [B, 3, imageSize, imageSize], "float32", gpu);
    out.shape = {
      preset: cfg.name,
      batch: B,
      imageSize,
      globalCrops: { number: cfg.augment.globalCrops.number, size: cfg.augment.globalCrops.size },
      localCrops: { number: cfg.augment.localCrops.number, size: cfg.augment.localCrops.size },
      patchSize: vc.patchSize,
      embedDim: vc.embedDim,
      depth: vc.depth,
      numHeads: vc.numHeads,
      mlpRatio: vc.mlpRatio,
      head: cfg.head,
      maskedPatches: masks.count,
    };
    await writeFragment("ibot", out);
    let state = init(random.key(0, gpu));
    const call = async () => {
      const t0 = performance.now();
      const r = step(state, { images, masks: masks.masks, maskSelection: masks.maskSelection }, hp);
      state = r.state;
      const loss = await r.metrics.loss.item();
      await gpu.sync();
      const ms = performance.now() - t0;
      Object.values(r.metrics).forEach((t) => t.dispose());
      return { ms, loss };
    };
    await timeSteps("ibot", out, B, call, () => step.stats().plan, left, () => writeFragment("ibot", out));
    images.dispose();
    [...masks.masks, masks.maskSelection.index, masks.maskSelection.weight].forEach((t) => t.dispose());
    for (const t of tree.leaves<Tensor>(state)) t.dispose();
  }
  await writeFragment("ibot", out);
  for (const s of compiled.values()) s.dispose();
  if (out.error) Deno.exit(1); // the report's phase table shows it, and run.sh exits 1
}
