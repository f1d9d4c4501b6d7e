/**
 * The memory part of `bench/memory.ts` that runs the real training loop: N steps of the default preset
 * (`embedded-small`, through `pretrain`, no k-NN), sampling the backend's pooled and live GPU bytes, the buffers
 * created and the process RSS every 10 steps (after a forced full GC in one run, as is in the other), and the
 * least-squares slope of each after warm-up. N is `IBOT_BENCH_MEMORY_STEPS` (default 1000).
 *
 * @module
 */
import { type Backend, backendMemory, data, PRESETS, pretrain } from "../mod.ts";
import { fmtMiB, fmtNum, mdTable, progress } from "./util.ts";

/** Steps per run (`IBOT_BENCH_MEMORY_STEPS`, default 1000). */
export const TRAIN_STEPS = Number(Deno.env.get("IBOT_BENCH_MEMORY_STEPS") ?? 1000);
/** Steps between samples (the loop's log steps). */
const SAMPLE_EVERY = 10;
/** Samples before this step are warm-up (compilation, first pool fills) and left out of the slopes. */
const WARMUP_STEPS = 20;

/** One sample of the training loop. */
interface TrainPoint {
  step: number;
  rss: number;
  heapUsed: number;
  pooledBytes: number;
  liveBytes: number;
  buffersCreated: number;
}

/** A run of the training loop. */
export interface TrainLoop {
  forcedGc: boolean;
  steps: number;
  points: TrainPoint[];
  /** MiB per step, least squares over the samples after warm-up. */
  slopes: { pooled: number; live: number; rss: number; buffersCreated: number };
  secondsPerStep: number;
}

/** Least-squares slope of `ys` over `xs`. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return num / den;
}

const gcFn = (globalThis as { gc?: () => void }).gc;

/** `TRAIN_STEPS` steps of `embedded-small` (its schedule stretched to that length), sampled every 10 steps. */
export async function trainingLoop(backend: Backend, forcedGc: boolean): Promise<TrainLoop> {
  const ds = data.embeddedDataset();
  const preset = PRESETS["embedded-small"];
  const perEpoch = Math.floor(ds.train.n / preset.batchSize);
  const cfg = { ...preset, epochs: Math.max(preset.epochs, Math.ceil(TRAIN_STEPS / perEpoch)) };
  const points: TrainPoint[] = [];
  const result = await pretrain(cfg, ds, {
    backend,
    seed: 0,
    steps: TRAIN_STEPS,
    evaluate: false,
    logEvery: SAMPLE_EVERY,
    onProgress: (p) => {
      if (p.step % SAMPLE_EVERY !== 0) return;
      if (forcedGc) gcFn!();
      const mem = Deno.memoryUsage();
      const gpu = backendMemory(backend);
      points.push({
        step: p.step,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        pooledBytes: gpu?.pooledBytes ?? 0,
        liveBytes: gpu?.liveBytes ?? 0,
        buffersCreated: gpu?.buffersCreated ?? 0,
      });
      if (p.step % 100 === 0) {
        progress(`memory train${forcedGc ? " (gc)" : ""}: step ${p.step}, rss ${fmtMiB(mem.rss)}`);
      }
    },
  });
  const after = points.filter((p) => p.step >= WARMUP_STEPS);
  const xs = after.map((p) => p.step);
  const mib = (f: (p: TrainPoint) => number) => slope(xs, after.map((p) => f(p) / 2 ** 20));
  return {
    forcedGc,
    steps: result.steps,
    points,
    slopes: {
      pooled: mib((p) => p.pooledBytes),
      live: mib((p) => p.liveBytes),
      rss: mib((p) => p.rss),
      buffersCreated: slope(xs, after.map((p) => p.buffersCreated)),
    },
    secondsPerStep: result.secondsPerStep,
  };
}

/** Markdown tables of the training runs: slopes, then samples. */
export function trainingTables(loops: TrainLoop[]): string[] {
  const first = (l: TrainLoop) => l.points.find((p) => p.step >= WARMUP_STEPS) ?? l.points[0];
  const last = (l: TrainLoop) => l.points[l.points.length - 1];
  const perStep = (x: number) => `${x >= 0 ? "+" : ""}${fmtNum(x, 4)} MiB`;
  const summary = mdTable(
    [
      "RSS read",
      "steps",
      `pooled at ${WARMUP_STEPS} → end`,
      "pooled slope / step",
      "live slope / step",
      `RSS at ${WARMUP_STEPS} → end`,
      "RSS slope / step",
      "buffers created / step",
      "s/step",
    ],
    loops.map((l) => [
      l.forcedGc ? "after a forced full GC" : "as is (no forced GC)",
      l.steps,
      `${fmtMiB(first(l).pooledBytes)} → ${fmtMiB(last(l).pooledBytes)}`,
      perStep(l.slopes.pooled),
      perStep(l.slopes.live),
      `${fmtMiB(first(l).rss)} → ${fmtMiB(last(l).rss)}`,
      perStep(l.slopes.rss),
      fmtNum(l.slopes.buffersCreated, 3),
      fmtNum(l.secondsPerStep, 2),
    ]),
    [false, true, true, true, true, true, true, true, true],
  );
  const every = Math.max(SAMPLE_EVERY, Math.ceil(TRAIN_STEPS / 10 / SAMPLE_EVERY) * SAMPLE_EVERY);
  const detail = mdTable(
    ["RSS read", "step", "RSS", "V8 heap used", "GPU pooled", "GPU live", "buffers created (total)"],
    loops.flatMap((l) =>
      l.points.filter((p, i) => p.step % every === 0 || i === l.points.length - 1).map((p) => [
        l.forcedGc ? "forced GC" : "as is",
        p.step,
        fmtMiB(p.rss),
        fmtMiB(p.heapUsed),
        fmtMiB(p.pooledBytes),
        fmtMiB(p.liveBytes),
        p.buffersCreated,
      ])
    ),
    [false, true, true, true, true, true, true],
  );
  return [
    `## ${TRAIN_STEPS} steps of the default preset (\`embedded-small\`)`,
    "",
    `\`pretrain\` with the preset's batch, augmentation, masks and jitted step (no k-NN; its schedule stretched to`,
    `${TRAIN_STEPS} steps), a fresh batch uploaded every step. Sampled every ${SAMPLE_EVERY} steps (a log step, which reads`,
    `the metrics back); slopes are least squares over the samples from step ${WARMUP_STEPS} on. Set the number of steps`,
    "with `IBOT_BENCH_MEMORY_STEPS`.",
    "",
    summary,
    "",
    detail,
    "",
  ];
}
