/**
 * The main job: iBOT self-supervised pretraining, then a weighted k-NN evaluation of the teacher against the
 * same network at its random initialisation.
 *
 * `deno run --unstable-webgpu examples/pretrain.ts` trains the `embedded-small` preset on the embedded shapes
 * dataset and needs no permissions. Flags that read or write files say which permission to add.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { need, runCli, seedFlag, UsageError } from "./lib/cli.ts";
import { inJob, joinJob } from "./lib/job.ts";
import type { Communicator } from "../distributed/mod.ts";
import { FOLDER_TEST_FRACTION, folderImageSize, loadData } from "./lib/data.ts";
import { initBackend, parseBytes, PlanMemoryError } from "../mod.ts";
import { PRESETS, type PretrainConfig } from "../train/presets.ts";
import { NonFiniteLossError, pretrain, type Progress } from "../train/pretrain.ts";
import { Interrupted } from "../train/run_state.ts";
import { NonFiniteStateError } from "../train/checkpoint.ts";
import { exitIfStopped, type ResumeBase, resumeBase, stopOnSignals } from "./lib/resume.ts";
import { FMNIST_DIR } from "../train/data/fmnist.ts";
import { VIT_PRESETS } from "../models/vit.ts";
import { SWIN_PRESETS } from "../train/backbone.ts";
import { configureRun, MAX_BATCH, resolveRun, RunChangeError } from "../train/run_spec.ts";
import { writeRunCurves } from "./plot.ts";

const HELD_OUT = `${100 * FOLDER_TEST_FRACTION}%`;

const USAGE = `Usage: deno run --unstable-webgpu examples/pretrain.ts [options]

iBOT pretraining (masked image modeling with an online tokenizer) on WebGPU or the CPU, then a
weighted k-NN evaluation of the teacher against the same network at its random initialisation.

Options:
  --preset NAME        ${Object.keys(PRESETS).join(" | ")} (default embedded-small)
  --data SOURCE        embedded | fmnist | <folder of class sub-folders> (default: the preset's). A folder
                       with train/ and val/ (or test/) trains on train/ and queries k-NN with val/; one
                       without holds out ${HELD_OUT} of each class (the same files every run) as the k-NN
                       queries, and skips k-NN when that leaves none (classes of < 5 images)
  --arch NAME          ${Object.keys(VIT_PRESETS).join(" | ")} |
                       ${Object.keys(SWIN_PRESETS).join(" | ")} (default: the preset's small ViT).
                       A ViT keeps the preset's patch size. A Swin keeps the arch's widths, heads and
                       depths but is laid out for the global crop size: patch 4 (else 2), as many stages
                       as leave a last-stage grid of >= 4x4, window = that grid (224 px: the official
                       Swin-T/7; 32 px: 2 stages, patch 4, 8x8 -> 4x4, window 4; 28 px: 2 stages, patch 2,
                       14x14 -> 7x7, window 7); the MIM mask grid is the last stage's
  --pred-start-epoch N epoch at which MIM starts (default: 0 for a ViT; for a Swin epochs/6, as the
                       official Swin recipe's 50 of 300)
  --epochs N           epochs of the schedules (default: the preset's)
  --steps N            stop after N steps (schedules still span --epochs)
  --batch-size N       images per step (default: the preset's; at most ${MAX_BATCH} and the training images)
  --micro-batch M      images per forward/backward pass, a divisor of the batch size (default: the whole
                       batch); the gradients of batch/M passes are summed before one update, which is the
                       step of the whole batch with the memory of M images
  --distributed        one process of an MPICH job (mpiexec -n N deno run --allow-ffi --allow-env ...):
                       each of the N ranks runs the gradient pass on every N-th image of each batch,
                       the gradients are all-reduced, every rank takes the same update; rank 0 alone
                       prints, writes --out and evaluates k-NN (--micro-batch divides batch/N)
  --out DIR            write checkpoint.safetensors, metrics.jsonl and curves.png to DIR (needs
                       --allow-read=DIR --allow-write=DIR: checkpoints are renamed into place atomically)
  --resume             continue from DIR/checkpoint.safetensors (needs --out) with the checkpoint's
                       preset, configuration and seed; a flag that contradicts them is an error
  --override-schedule  with --resume: let --epochs, --pred-start-epoch, --arch override the checkpoint's
  --checkpoint-every N write the checkpoint every N steps (default 200; also at each epoch's end).
                       Ctrl-C (SIGINT) or SIGTERM finishes the step, writes the checkpoint, exits 130/143
  --seed N             seed of everything, 0 to 2^53 - 2 (default 0, or the resumed checkpoint's)
  --backend NAME       auto | webgpu | cpu (default auto)
  --log-every N        read metrics back every N steps (default 10)
  --remat              recompute each backbone block's activations in the backward pass instead of
                       keeping them (less memory, about one more forward pass; same values)
  --max-memory SIZE    refuse a training step whose compiled plan needs more than SIZE at its peak
                       (e.g. 6GiB, 500MB), before allocating it; the device's buffer limits are
                       always checked
  -h, --help           show this help

Fashion-MNIST comes from Debian's dataset-fashion-mnist (${FMNIST_DIR}; needs --allow-read).`;

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${v}'`);
  return n;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${Math.round(s)}s`;
}

const OPTIONS = {
  preset: { type: "string" },
  data: { type: "string" },
  arch: { type: "string" },
  epochs: { type: "string" },
  steps: { type: "string" },
  "batch-size": { type: "string" },
  "micro-batch": { type: "string" },
  distributed: { type: "boolean" },
  out: { type: "string" },
  resume: { type: "boolean" },
  seed: { type: "string" },
  backend: { type: "string" },
  "log-every": { type: "string" },
  "pred-start-epoch": { type: "string" },
  remat: { type: "boolean" },
  "max-memory": { type: "string" },
  "override-schedule": { type: "boolean" },
  "checkpoint-every": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;
type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; strict: true }>>["values"];

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: OPTIONS,
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  // A resumed run starts from the checkpoint's configuration; flags then change it (and are checked).
  const resumed: ResumeBase | null = values.resume ? await resumeBase(values.out) : null;
  if (values["override-schedule"] && !resumed) throw new UsageError("--override-schedule applies to --resume only");
  const presetName = values.preset ?? resumed?.preset ?? "embedded-small";
  const preset = PRESETS[presetName];
  if (!preset) throw new UsageError(`--preset: unknown preset '${presetName}' (${Object.keys(PRESETS).join(", ")})`);
  const predStart = values["pred-start-epoch"];
  const predStartEpoch = predStart === undefined ? undefined : Number(predStart);
  if (predStartEpoch !== undefined && !(Number.isInteger(predStartEpoch) && predStartEpoch >= 0)) {
    throw new UsageError(`--pred-start-epoch must be an integer >= 0`);
  }
  let cfg: PretrainConfig;
  try {
    cfg = configureRun(presetName === resumed?.preset ? resumed.config ?? preset : preset, {
      arch: values.arch || undefined,
      epochs: positiveInt("epochs", values.epochs),
      predStartEpoch,
      batchSize: positiveInt("batch-size", values["batch-size"]),
      remat: values.remat,
    });
  } catch (e) {
    throw e instanceof RunChangeError ? new UsageError(e.message) : e;
  }
  const microBatch = positiveInt("micro-batch", values["micro-batch"]);
  if (microBatch !== undefined && cfg.batchSize % microBatch !== 0) {
    throw new UsageError(`--micro-batch ${microBatch} must divide the batch size ${cfg.batchSize}`);
  }
  let maxMemory: number | undefined;
  if (values["max-memory"] !== undefined) {
    try {
      maxMemory = parseBytes(values["max-memory"]);
    } catch (e) {
      throw new UsageError(`--max-memory: ${(e as Error).message}`);
    }
  }
  const steps = positiveInt("steps", values.steps);
  const checkpointEvery = positiveInt("checkpoint-every", values["checkpoint-every"]);
  const seed = seedFlag(values.seed, resumed?.seed ?? 0);
  const kind = values.backend ?? "auto";
  if (!["auto", "webgpu", "cpu"].includes(kind)) throw new UsageError(`--backend must be auto, webgpu or cpu`);
  if (values.resume && !values.out) throw new UsageError("--resume needs --out DIR (the folder with the checkpoint)");
  if (values.out) {
    // Checkpoints are written to a temporary file and renamed into place, and Deno's rename needs both.
    const both = `--allow-read=${values.out} --allow-write=${values.out}`;
    need({ name: "write", path: values.out }, "--out", both);
    need({ name: "read", path: values.out }, values.resume ? "--resume" : "--out (atomic checkpoint rename)", both);
    const isFolder = await Deno.stat(values.out).then((st) => st.isDirectory, () => null);
    if (isFolder === false) throw new UsageError(`--out ${values.out}: a file, not a folder`);
  }

  const comm = await joinJob(values.distributed);
  if (comm && cfg.batchSize % comm.size !== 0) {
    throw new UsageError(`--batch-size ${cfg.batchSize} does not split over the job's ${comm.size} processes`);
  }
  if (comm && microBatch !== undefined && (cfg.batchSize / comm.size) % microBatch !== 0) {
    throw new UsageError(
      `--micro-batch ${microBatch} must divide each process's ${cfg.batchSize / comm.size} images ` +
        `(--batch-size ${cfg.batchSize} over ${comm.size} processes)`,
    );
  }
  return await inJob(
    comm,
    USAGE,
    EXPECTED,
    () =>
      train(values, cfg, { steps, seed, microBatch, maxMemory, checkpointEvery, kind, comm }).catch(withMemoryFlags),
  );
}

/** Everything after the command line is understood: load, train, evaluate, report. */
async function train(
  values: Values,
  cfg: PretrainConfig,
  flags: {
    steps?: number;
    seed: number;
    microBatch?: number;
    maxMemory?: number;
    checkpointEvery?: number;
    kind: string;
    comm?: Communicator;
  },
): Promise<number> {
  const { steps, seed, microBatch, maxMemory, checkpointEvery, kind, comm } = flags;
  const backend = await initBackend(kind as "auto" | "webgpu" | "cpu");
  const ds = await loadData(values.data ?? cfg.data, folderImageSize(cfg.augment.globalCrops.size));
  if (ds.channels !== cfg.augment.channels) {
    throw new UsageError(
      `--data: ${ds.name} has ${ds.channels} channel(s) but preset ${cfg.name} augments ${cfg.augment.channels}`,
    );
  }
  if (cfg.batchSize > ds.train.n) {
    throw new UsageError(
      `--batch-size ${cfg.batchSize}${values["batch-size"] ? "" : ` (preset ${cfg.name}'s)`} is more than the ` +
        `${ds.train.n} training images of ${ds.name}`,
    );
  }
  // Decided before training, so that a run never ends in an error after the work is done.
  const evaluate = ds.test.n > 0;
  const info = (backend as { adapterInfo?: string }).adapterInfo ?? "cpu";
  const run = resolveRun(cfg, ds, { steps });
  const bb = run.backbone;
  const arch = bb.kind === "swin"
    ? `${cfg.swin?.arch}: patch ${bb.config.patchSize}, C ${bb.config.embedDim}, depths ${
      bb.config.depths.join("-")
    }, heads ${
      bb.config.numHeads.join("-")
    }, window ${bb.config.windowSize}, MIM from epoch ${run.schedule.predStartEpoch}`
    : `${cfg.backbone.arch ?? "ViT"}: patch ${bb.config.patchSize}, D ${bb.config.embedDim}, depth ${bb.config.depth}`;
  console.log(
    `iBOT ${cfg.name}: ${ds.name} (${ds.train.n} train / ${ds.test.n} test, ${ds.numClasses} classes, ` +
      `${ds.channels}x${ds.size}x${ds.size}), batch ${cfg.batchSize}${
        comm ? ` over ${comm.size} processes (${comm.library})` : ""
      }${microBatch ? ` in micro-batches of ${microBatch}` : ""}, ${backend.name} [${info}]\nbackbone ${arch}`,
  );
  if (!evaluate) {
    console.log(`k-NN skipped: ${ds.name} has no test images (a class folder needs >= 5 images to hold some out)`);
  }
  const tty = Deno.stdout.isTerminal();
  const line = (p: Progress) =>
    `step ${p.step}/${p.totalSteps}  loss ${p.loss.toFixed(4)}  cls ${p.cls.toFixed(4)}  patch ${
      p.patch.toFixed(4)
    }  ` +
    `lr ${p.lr.toExponential(2)}  ${p.imagesPerSecond.toFixed(1)} img/s  ETA ${fmtTime(p.etaSeconds)}`;
  const stop = stopOnSignals();
  const result = await pretrain(run, ds, {
    backend,
    seed,
    maxMemory,
    out: values.out,
    resume: values.resume,
    evaluate,
    overrideSchedule: values["override-schedule"],
    checkpointEvery,
    signal: stop.signal,
    logEvery: positiveInt("log-every", values["log-every"]) ?? 10,
    microBatch,
    comm,
    onCompiled: (s) => console.log(`compiled the training step in ${s.toFixed(1)} s`),
    onProgress: (p) => {
      if (tty) Deno.stdout.writeSync(new TextEncoder().encode(`\r${line(p)}\x1b[K`));
      else console.log(line(p));
    },
  }).catch((e) => {
    if (e instanceof Interrupted && comm) {
      comm.finalize(); // every rank stopped after the same step; rank 0 alone says so
      if (comm.rank !== 0) console.error = () => {};
    }
    return exitIfStopped(e, values.out);
  }).finally(stop.remove);
  if (tty) console.log();
  const ks = Object.keys(result.knn);
  console.log(
    `trained ${result.steps} steps, ${result.secondsPerStep.toFixed(2)} s/step; loss ${
      result.firstLoss.toFixed(4)
    } -> ${result.lastLoss.toFixed(4)}`,
  );
  if (evaluate) console.log(`k-NN top-1 (teacher CLS, T = 0.07):`);
  for (const k of ks) {
    console.log(
      `  k=${k.padEnd(4)} trained ${(100 * result.knn[+k]).toFixed(1)}%   random init ${
        (100 * result.knnRandom[+k]).toFixed(1)
      }%`,
    );
  }
  if (values.out && (!comm || comm.rank === 0)) console.log(await writeRunCurves(values.out));
  return 0;
}

/** The step's memory refusal, with the flags of this command that lower it. */
class StepMemoryError extends Error {
  override name = "StepMemoryError";
}

/** Rewords a `PlanMemoryError` with this command's flags; rethrows anything else. */
function withMemoryFlags(e: unknown): never {
  if (!(e instanceof PlanMemoryError)) throw e;
  const remat = Deno.args.includes("--remat");
  throw new StepMemoryError(
    `the training step ${e.summary.replace("(maxMemory)", "(--max-memory)")}; lower it with --batch-size, ` +
      `--micro-batch${remat ? "" : " or --remat"}`,
  );
}

const EXPECTED = [NonFiniteLossError, NonFiniteStateError, StepMemoryError];
await runCli(main, USAGE, EXPECTED);
