/**
 * Memory of the `imagenet-vit-s16` iBOT step (ViT-S/16, head of 8192 prototypes, 2 × 224 px global and 10 × 96 px
 * local crops) per micro-batch size, with and without `remat`: the compiled peak of the gradient plan
 * (`ibotGrads`, what one micro-batch runs), of the update plan (once per step), and the time per image. From
 * these it extrapolates what a global batch of 1024 needs on one device with gradient accumulation: the gradient
 * plan's peak at micro-batch M plus one more gradient tree (the accumulated sums), and 1024 × the time per image.
 *
 * Environment (sizes beyond a few images take minutes per plan on a software adapter):
 * - `IBOT_MEMORY_SCALE_SIZES`: micro-batch sizes (default `1,2,4,8,16`);
 * - `IBOT_MEMORY_SCALE_TIMED`: timed calls per size after the first (default 1, but 0 — compile only — on a
 *   software adapter, where one ViT-S/16 image took 102 s on 2 busy cores; the initialisation alone ~2.5 min);
 * - `IBOT_MEMORY_SCALE_REMAT`: `0` skips the remat rows.
 *
 * `remat` is the ViT config field of the memory issue (recompute each block in the backward). Where this tree's
 * `vitConfig` has no such field the remat rows say so instead of repeating the plain numbers.
 *
 * @module
 */
import {
  type Backend,
  evalShape,
  fromTyped,
  jit,
  PRESETS,
  type PretrainConfig,
  random,
  type Tensor,
  tidy,
  tree,
} from "../mod.ts";
import { accumulatingStep } from "../train/step_accumulate.ts";
import { planStepMemory } from "../train/memory.ts";
import type { HeadParams } from "../models/head.ts";
import { vitConfig } from "../models/vit.ts";
import type { BackboneParams } from "../train/backbone.ts";
import { hostKey, sampleStepMasks } from "../train/masking.ts";
import { hyperAt } from "../train/presets.ts";
import { backboneConfig, initState, stepConfig } from "../train/pretrain.ts";
import { ibotGrads, type IbotState, type IbotSums, ibotUpdate } from "../train/step.ts";
import { asWebGpu, errorText, fmtMiB, fmtNum, header, machine, mdTable, progress, writeResults } from "./util.ts";

type State = IbotState<BackboneParams, HeadParams>;

interface Row {
  remat: boolean;
  microBatch: number;
  gradsPeakBytes?: number;
  updatePeakBytes?: number;
  sumsBytes?: number;
  compileSeconds?: number;
  msPerImage?: number;
  error?: string;
}

const SIZE = 224;

function envList(name: string, dflt: number[]): number[] {
  const v = Deno.env.get(name);
  return v ? v.split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0) : dflt;
}

/** Whether this tree's ViT config knows `remat` (the field is added by the memory issue's remat work). */
function hasRemat(): boolean {
  return "remat" in vitConfig({});
}

function bytesOf(t: unknown): number {
  return tree.leaves<unknown>(t).reduce<number>((a, l) => a + ((l as { size?: number })?.size ?? 0) * 4, 0);
}

/** Compiles (and times) the gradient plan of one micro-batch size, and the update plan. */
async function measure(
  backend: Backend,
  cfg: PretrainConfig,
  state: State | null,
  remat: boolean,
  m: number,
  timed: number,
): Promise<Row> {
  const withRemat = { ...cfg, backbone: { ...cfg.backbone, ...(remat ? { remat: true } : {}) } } as PretrainConfig;
  const vc = backboneConfig(withRemat, { channels: 3, size: SIZE });
  const stepCfg = stepConfig(cfg, vc);
  const itersPerEpoch = 1281167 / cfg.batchSize;
  const hp = hyperAt(cfg, 20 * itersPerEpoch, itersPerEpoch, cfg.epochs * itersPerEpoch);
  const g = cfg.augment.globalCrops.size / vc.patchSize;
  const positions = Int32Array.from({ length: m }, (_, i) => i);
  const masks = sampleStepMasks(hostKey(1), m, [[g, g], [g, g]], cfg.masking, backend, positions);
  const images = tidy(() => random.uniform(random.key(2, backend), [m, 3, SIZE, SIZE]));
  const index = fromTyped(positions, [m], "int32", backend);
  const batch = { images, masks: masks.masks, maskSelection: masks.maskSelection, index };
  const grads = jit(ibotGrads(stepCfg));
  const update = jit(ibotUpdate<BackboneParams, HeadParams>(stepCfg));
  // The running sums hold one gradient tree (the student's shape) and the two centers.
  const student = evalShape((k: Tensor) => initState(cfg, vc, k), random.key(0, backend)).student;
  const row: Row = { remat, microBatch: m, sumsBytes: bytesOf(student) + 8 * cfg.head.outDim };
  // The peak, planned on placeholders (nothing allocated): the gradient plan of one micro-batch of m images.
  const step = accumulatingStep(stepCfg, { batchSize: cfg.batchSize, microBatch: m, backend });
  try {
    const t0 = performance.now();
    const grids = [[g, g], [g, g]] as const;
    const shape = { batchSize: m, channels: 3, imageSize: SIZE, grids, masking: cfg.masking };
    const init = (k: Tensor) => initState(withRemat, vc, k);
    row.gradsPeakBytes = planStepMemory(step, init, random.key(0, backend), shape, hp, backend).peakBytes;
    row.compileSeconds = (performance.now() - t0) / 1000;
    if (timed > 0 && state) {
      const call = async () => {
        const t = performance.now();
        const sums: IbotSums<BackboneParams, HeadParams> = grads(state!, batch, hp);
        await sums.loss.item();
        if (row.updatePeakBytes === undefined) {
          update.graph(state!, sums, hp);
          row.updatePeakBytes = update.stats().plan?.peakBytes;
        }
        tidy(() => tree.leaves<unknown>(sums).forEach((l) => (l as { dispose?: () => void })?.dispose?.()));
        return performance.now() - t;
      };
      await call(); // the first run allocates the plan's buffers
      const ms: number[] = [];
      for (let i = 0; i < timed; i++) ms.push(await call());
      row.msPerImage = Math.min(...ms) / m;
    }
  } catch (e) {
    row.error = errorText(e);
  } finally {
    step.dispose();
    grads.dispose();
    update.dispose();
    [images, index, ...masks.masks, masks.maskSelection.index, masks.maskSelection.weight].forEach((t) => t.dispose());
  }
  return row;
}

/** Runs the benchmark and writes `bench/results/memory_scale.{json,md}`. */
export async function run(backend: Backend): Promise<void> {
  asWebGpu(backend); // plan statistics come from the WebGPU plan compiler
  const cfg = PRESETS["imagenet-vit-s16"];
  const sizes = envList("IBOT_MEMORY_SCALE_SIZES", [1, 2, 4, 8, 16]);
  const m = machine(backend);
  const software = /\(software\)|llvmpipe|lavapipe|swiftshader/i.test(m.adapter);
  const timed = Number(Deno.env.get("IBOT_MEMORY_SCALE_TIMED") ?? (software ? 0 : 1));
  const remats = Deno.env.get("IBOT_MEMORY_SCALE_REMAT") === "0" ? [false] : [false, true];
  const rematOk = hasRemat();
  const rows: Row[] = [];
  // One state for every plan (remat changes the forward, not the parameters). tidy: the initialisers'
  // temporaries (several per parameter) are freed at once, not left to the GC.
  const vc = backboneConfig(cfg, { channels: 3, size: SIZE });
  // A real state only to time calls (its initialisation takes minutes on a software adapter); peaks are planned.
  const state: State | null = timed > 0 ? initState(cfg, vc, random.key(0, backend)) : null;
  const stateBytes = bytesOf(evalShape((k: Tensor) => initState(cfg, vc, k), random.key(0, backend)));
  for (const remat of remats) {
    for (const size of sizes) {
      if (remat && !rematOk) {
        rows.push({ remat, microBatch: size, error: "remat: not in this tree's ViT config" });
        continue;
      }
      progress(`memory_scale: micro-batch ${size}${remat ? " with remat" : ""}`);
      rows.push(await measure(backend, cfg, state, remat, size, timed));
      const r = rows[rows.length - 1];
      progress(
        `  peak ${fmtMiB(r.gradsPeakBytes)}, ${fmtNum(r.msPerImage, 1)} ms/image${r.error ? `, ${r.error}` : ""}`,
      );
    }
  }
  // Wait for the queued work (the initialisation takes minutes on a software adapter): a process that exits
  // with kernels still queued makes wgpu panic ("timed out while waiting on the last successful submission").
  if (state) {
    await state.center.data();
    for (const t of tree.leaves(state)) t.dispose();
  }
  // Per-image slope of the gradient plan's peak between the two largest measured sizes, and batch 1024.
  const slope = (remat: boolean) => {
    const ok = rows.filter((r) => r.remat === remat && r.gradsPeakBytes !== undefined);
    if (ok.length < 2) return undefined;
    const [a, b] = ok.slice(-2);
    return (b.gradsPeakBytes! - a.gradsPeakBytes!) / (b.microBatch - a.microBatch);
  };
  const sums = rows.find((r) => r.sumsBytes !== undefined)?.sumsBytes;
  const table = rows.map((r) => [
    r.remat ? "yes" : "no",
    r.microBatch,
    fmtMiB(r.gradsPeakBytes),
    r.gradsPeakBytes !== undefined && sums !== undefined ? fmtMiB(r.gradsPeakBytes + sums) : "—",
    fmtNum(r.msPerImage, 1),
    r.msPerImage !== undefined ? fmtNum((1024 * r.msPerImage) / 1000, 1) : "—",
    fmtNum(r.compileSeconds, 1),
    r.error ?? "",
  ]);
  const slopes = [false, true].map((remat) => {
    const s = slope(remat);
    return `${remat ? "with" : "without"} remat: ${s === undefined ? "—" : fmtMiB(s)} per image`;
  });
  const md = [
    header("Memory of the ViT-S/16 iBOT step per micro-batch", m, [
      `Preset \`imagenet-vit-s16\` (2 × ${cfg.augment.globalCrops.size} px + ${cfg.augment.localCrops.number} × ` +
      `${cfg.augment.localCrops.size} px crops, head ${cfg.head.outDim} prototypes), images ${SIZE} px. ` +
      `"grads peak" is the planned peak (\`planStepMemory\`, on placeholders, masks at their largest capacity) of the plan one micro-batch runs (arguments, outputs and intermediates); a ` +
      `global batch of 1024 accumulated over micro-batches of M needs it plus one gradient tree for the running ` +
      `sums (${fmtMiB(sums)}) — the "batch 1024" column; the update plan's peak is ` +
      `${fmtMiB(rows.find((r) => r.updatePeakBytes !== undefined)?.updatePeakBytes)}. ` +
      `The training state (student, teacher, AdamW moments: arguments of both plans) is ${fmtMiB(stateBytes)}. ` +
      (timed > 0
        ? `Time per image: the fastest of ${timed} timed gradient calls after the first, divided by M.`
        : "Not timed (`IBOT_MEMORY_SCALE_TIMED=0`, the default on a software adapter)."),
      "",
      `Peak growth per image (two largest sizes): ${slopes.join("; ")}.`,
      "",
    ]),
    mdTable(
      ["remat", "micro-batch", "grads peak", "batch 1024 peak", "ms/image", "s per 1024", "plan s", "note"],
      table,
      [false, true, true, true, true, true, true, false],
    ),
  ].join("\n");
  await writeResults("memory_scale", { machine: m, sizes, timed, rows, sumsBytes: sums, stateBytes }, md);
}
