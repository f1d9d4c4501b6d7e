/**
 * One full `fmnist-tiny` iBOT training step, as `train/pretrain.ts` runs it: batch 128 of 28-px grayscale
 * images, on-device multi-crop augmentation (2 global crops of 28 px, 4 local crops of 12 px), teacher forward,
 * student forward and backward, per-parameter clipping, AdamW and the EMA fold — one jitted call with the state
 * donated. The images are deterministic noise (speed does not depend on the content).
 *
 * Reported: compile time (first call), seconds per step and images per second (median of `STEPS` calls, each
 * timed until its loss is read back), and the GPU time per kernel kind from the plan's timestamp profile.
 * Target of the iBOT issue: ≤ 6.4 s per step on the project machine (3× PyTorch 1.13 CPU's 2.14 s).
 * `IBOT_PROFILE_DUMP=bench/results/kernels.json` also writes every kernel's timing and WGSL source.
 *
 * @module
 */
import {
  type Backend,
  fromTyped,
  head,
  headFeatures,
  headPrototypes,
  jit,
  PRESETS,
  random,
  tidy,
  tree,
  vit,
} from "../mod.ts";
import type { HeadParams } from "../models/head.ts";
import type { VitParams } from "../models/vit.ts";
import { multiCrop } from "../train/augment.ts";
import { hostKey, sampleStepMasks } from "../train/masking.ts";
import { hyperAt } from "../train/presets.ts";
import { backboneConfig, initState } from "../train/pretrain.ts";
import { type IbotState, ibotStep } from "../train/step.ts";
import {
  asWebGpu,
  fmtMiB,
  fmtNum,
  header,
  machine,
  mdTable,
  median,
  progress,
  randomMatrix,
  writeResults,
} from "./util.ts";

/** Timed steps after the compiling one. */
const STEPS = 3;

type State = IbotState<VitParams, HeadParams>;

/** Runs the benchmark and writes `bench/results/ibot_step.{json,md}`. */
export async function run(backend: Backend): Promise<void> {
  asWebGpu(backend); // the GPU path only
  const cfg = PRESETS["fmnist-tiny"];
  const ds = { channels: 1, size: 28 };
  const vc = backboneConfig(cfg, ds);
  const B = cfg.batchSize;
  const gh = Math.floor(cfg.augment.globalCrops.size / vc.patchSize);
  const images = fromTyped(randomMatrix(B * 28 * 28, 7).map((v) => 0.5 + 0.5 * v), [B, 1, 28, 28], "float32", backend);
  let state: State = initState(cfg, vc, random.key(0, backend));
  const step = jit(
    ibotStep<VitParams, HeadParams>({
      backbone: (p, x, o) => vit(p, x, { ...vc, returnAllTokens: true, ...o }),
      head: (h, tokens) => head(h, tokens, { normLastLayer: cfg.head.normLastLayer }),
      headFeatures,
      headPrototypes: (h, z) => headPrototypes(h, z, { normLastLayer: cfg.head.normLastLayer }),
      globalCrops: cfg.augment.globalCrops.number,
      studentTemp: cfg.studentTemp,
      clipGrad: cfg.clipGrad,
      augment: (k, x) => multiCrop(k, x, cfg.augment),
    }),
    { donate: [0] },
  );
  // Iteration 500 of a 100-epoch run (468 steps per epoch): past the warm-up and the frozen last layer.
  const itersPerEpoch = Math.floor(60000 / B);
  const hp = hyperAt(cfg, 500, itersPerEpoch, cfg.epochs * itersPerEpoch);
  // Masks as the training loop makes them: on the host, uploaded with the masked rows for the sparse MIM loss.
  const { masks, maskSelection: maskRows, count } = sampleStepMasks(
    hostKey(1),
    B,
    [[gh, gh], [gh, gh]],
    cfg.masking,
    backend,
  );
  const call = async () => {
    const t0 = performance.now();
    const out = step(state, { images, masks, maskSelection: maskRows }, hp);
    state = out.state;
    const loss = await out.metrics.loss.item();
    const ms = performance.now() - t0;
    tidy(() => Object.values(out.metrics).forEach((t) => t.dispose()));
    return { ms, loss };
  };

  const m = machine(backend);
  progress("ibot_step: first call (trace + compile)");
  const first = await call();
  const runs: { ms: number; loss: number }[] = [];
  for (let i = 0; i < STEPS; i++) {
    runs.push(await call());
    progress(`ibot_step ${i + 1}/${STEPS}: ${runs[i].ms.toFixed(0)} ms, loss ${runs[i].loss.toFixed(4)}`);
  }
  const stats = step.stats();
  let kernels: { prim: string; shape: string; ms: number }[] = [];
  try {
    kernels = await step.profile(state, { images, masks, maskSelection: maskRows }, hp);
  } catch (e) {
    progress(`ibot_step: no profile (${e instanceof Error ? e.message : e})`);
  }
  const dump = Deno.env.get("IBOT_PROFILE_DUMP");
  if (dump) await Deno.writeTextFile(dump, JSON.stringify(kernels));
  const medianMs = median(runs.map((r) => r.ms));
  const compileMs = first.ms - medianMs;

  const byPrim = new Map<string, { n: number; ms: number }>();
  for (const k of kernels) {
    const e = byPrim.get(k.prim) ?? { n: 0, ms: 0 };
    byPrim.set(k.prim, { n: e.n + 1, ms: e.ms + k.ms });
  }
  const gpuMs = kernels.reduce((a, k) => a + k.ms, 0);
  const primRows = [...byPrim.entries()].sort((a, b) => b[1].ms - a[1].ms).map(([p, e]) => [
    p,
    e.n,
    e.ms.toFixed(0),
    `${((100 * e.ms) / gpuMs).toFixed(1)} %`,
  ]);
  const top = [...kernels].sort((a, b) => b.ms - a.ms).slice(0, 15).map((k) => [k.prim, k.shape, k.ms.toFixed(1)]);

  const md = [
    header("iBOT fmnist-tiny training step", m, [
      `One jitted \`ibotStep\` (batch ${B}, 2×28 px global + 4×12 px local crops, augmentation on the device, ` +
      `student fwd+bwd, clipping, AdamW, EMA), state donated; the head and MIM loss on the ${count} masked ` +
      `patches (padded to ${maskRows.index.shape[0]} rows). ${STEPS} timed steps after the compiling one.`,
      "",
    ]),
    mdTable(
      ["s/step (median)", "steps (ms)", "images/s", "compile s", "dispatches", "plan peak"],
      [[
        fmtNum(medianMs / 1000),
        runs.map((r) => r.ms.toFixed(0)).join(", "),
        fmtNum((B * 1000) / medianMs, 1),
        fmtNum(compileMs / 1000, 1),
        stats.plan?.dispatches ?? "—",
        fmtMiB(stats.plan?.peakBytes),
      ]],
      [true, false, true, true, true, true],
    ),
    "",
    `GPU time by root primitive (timestamp profile, each dispatch in its own pass; total ${gpuMs.toFixed(0)} ms):`,
    "",
    mdTable(["primitive", "dispatches", "ms", "share"], primRows, [false, true, true, true]),
    "",
    "Slowest kernels:",
    "",
    mdTable(["primitive", "output shape", "ms"], top, [false, false, true]),
  ].join("\n");
  await writeResults("ibot_step", {
    machine: m,
    batch: B,
    stepsMs: runs.map((r) => r.ms),
    medianMs,
    compileMs,
    imagesPerSecond: (B * 1000) / medianMs,
    dispatches: stats.plan?.dispatches,
    peakBytes: stats.plan?.peakBytes,
    gpuMsByPrim: Object.fromEntries(byPrim),
    slowest: top,
  }, md);

  step.dispose();
  images.dispose();
  [...masks, maskRows.index, maskRows.weight].forEach((t) => t.dispose());
  for (const t of tree.leaves(state)) t.dispose();
}
