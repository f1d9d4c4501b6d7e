/**
 * The iBOT pretraining loop: initialise (or resume) the state, compile the step once, stream batches with
 * on-device augmentation and host-generated masks, log metrics every N steps, checkpoint atomically, stop on
 * a non-finite loss (naming the first bad step, leaving the last good checkpoint) or on request (checkpointing
 * first), and evaluate k-NN at the end.
 *
 * Everything random derives from the seed: batch order from (seed, epoch), masks from (seed, iteration), and
 * augmentation and drop path from the PRNG key carried in the state. A resumed run therefore continues
 * bit-exactly.
 */
import type { Tensor } from "../ops/tensor.ts";
import { jit } from "../autograd/jit.ts";
import { tidy } from "../ops/engine.ts";
import { map as treeMap } from "../autograd/tree.ts";
import type { Backend } from "../ops/backend.ts";
import { fromTyped, zeros } from "../ops/create.ts";
import * as random from "../ops/random.ts";
import { slice } from "../ops/api.ts";
import { head, headFeatures, headPrototypes, initHead } from "../models/head.ts";
import type { VitConfig, VitParams } from "../models/vit.ts";
import type { HeadParams } from "../models/head.ts";
import {
  asBackboneSpec,
  backboneDim,
  type BackboneParams,
  type BackboneSpec,
  backboneTokens,
  initBackbone,
  maskGrid,
  resolveBackbone,
} from "./backbone.ts";

// The k-NN evaluation lives in evaluate.ts; these names stay importable from here.
export { evaluateKnn, knnFeatures };
import { multiCrop } from "./augment.ts";
import { adamwInit } from "./optim.ts";
import type { IbotState, IbotStepConfig } from "./step.ts";
import { accumulatingStep, type PretrainStep } from "./step_accumulate.ts";
import { hostFoldIn, hostKey, sampleStepMasks } from "./masking.ts";
import { hyperAt, type PretrainConfig } from "./presets.ts";
import { loadTrainingState, readTrainingStateMeta, saveTrainingState } from "./checkpoint.ts";
import { planStepMemory } from "./memory.ts";
import {
  checkResumable,
  type FiniteWatch,
  finiteWatch,
  foldWatch,
  Interrupted,
  readWatch,
  removeStaleTemps,
  truncateMetrics,
} from "./run_state.ts";
import { evaluateKnn, knnFeatures } from "./evaluate.ts";
import { DataError } from "../errors.ts";
import type { Dataset } from "./data/dataset.ts";
import type { Communicator } from "../distributed/mod.ts";
import { batches, stepsPerEpoch } from "./data/loader.ts";

/** A progress report, every `logEvery` steps. */
export interface Progress {
  /** Completed steps (iterations), counting those before a resume. */
  step: number;
  /** Steps the run will make in all. */
  totalSteps: number;
  /** Epoch of the last step (0-based). */
  epoch: number;
  /** Total loss of the last step. */
  loss: number;
  /** CLS (DINO) loss term of the last step. */
  cls: number;
  /** Masked-patch (MIM) loss term of the last step. */
  patch: number;
  /** Learning rate of the last step. */
  lr: number;
  /** Weight decay of the last step. */
  wd: number;
  /** Teacher EMA momentum of the last step. */
  momentum: number;
  /** Teacher temperature of the last step. */
  teacherTemp: number;
  /** Mean entropy of the teacher's CLS distribution (collapse monitor: near 0 or near log K is bad). */
  teacherEntropy: number;
  /** Fraction of images where teacher and student pick the same CLS prototype. */
  agreement: number;
  /** Throughput since the previous report. */
  imagesPerSecond: number;
  /** Estimated time to the end of the run, at the current throughput. */
  etaSeconds: number;
}

/** Options of a run. */
export interface PretrainOptions {
  /** Backend the whole run executes on (e.g. `webgpu()` or `cpu`). */
  backend: Backend;
  /** Seed of every random choice (initialisation, batch order, masks, augmentation, drop path). */
  seed: number;
  /** Stop after this many steps (default: the preset's epochs). */
  steps?: number;
  /** Output folder for checkpoints and `metrics.jsonl` (none: nothing is written). */
  out?: string;
  /**
   * Resume from `out/checkpoint.safetensors`. The run must have the checkpoint's preset, batch size, seed and
   * number of training images, and (unless `overrideSchedule`) its dataset name and configuration (else
   * `ScheduleMismatchError`); `metrics.jsonl` is cut back to the checkpoint's step.
   */
  resume?: boolean;
  /** On resume, accept a configuration (schedule) that differs from the checkpoint's (default false). */
  overrideSchedule?: boolean;
  /**
   * Stop request: once aborted, the run finishes the step in flight, checkpoints it (with `out`) and throws
   * `Interrupted`.
   */
  signal?: AbortSignal;
  /** Read metrics back every N steps (default 10). */
  logEvery?: number;
  /** Checkpoint every N steps (default 200) and at each epoch end. */
  checkpointEvery?: number;
  /** Called with each progress report. */
  onProgress?: (p: Progress) => void;
  /** Called once the step is compiled, with the compile time. */
  onCompiled?: (seconds: number, stats: unknown) => void;
  /** k-NN neighbour counts (default 10, 20, 100, 200; clipped to the training set). */
  knnKs?: number[];
  /** Test images used by the k-NN evaluation (default: all). */
  knnTestLimit?: number;
  /** Run the k-NN evaluation at the end (default true). */
  evaluate?: boolean;
  /**
   * Images per forward/backward pass (default: the whole batch). A smaller value that divides the batch size
   * runs each step as batchSize/microBatch passes whose gradients, center sums and metrics are added before one
   * clip/AdamW/EMA update: the step of the whole batch, with less memory (same result up to float rounding).
   */
  microBatch?: number;
  /**
   * The processes of a data-parallel run (`distributed/mod.ts`): each runs the gradient pass on its share of
   * every batch (positions rank, rank + size, ...), the sums are all-reduced, and every process takes the same
   * update. Only rank 0 writes checkpoints and metrics and evaluates k-NN; every rank reads `out` on resume
   * (a folder they all see). `microBatch` then divides each process's share. Default: one process.
   */
  comm?: Communicator;
  /**
   * Most bytes the compiled step may hold at its peak (state, batch, activations): a step over it is refused
   * with a `PlanMemoryError` before anything is allocated. The device's buffer limits are always checked.
   */
  maxMemory?: number;
}

/** Result of a run. */
export interface PretrainResult {
  /** Completed steps at the end of the run (including those before a resume). */
  steps: number;
  /** Loss at the last logged step. */
  lastLoss: number;
  /** Loss of the first step of this invocation (the first after a resume). */
  firstLoss: number;
  /** k-NN top-1 of the trained teacher, per k. */
  knn: Record<number, number>;
  /** k-NN top-1 of the run's own random initialisation (the teacher before step 0; the baseline), per k. */
  knnRandom: Record<number, number>;
  /** Mean wall time of a step, excluding the first (compiling) one; NaN with fewer than 2 steps. */
  secondsPerStep: number;
  /** Wall time of the first step, which compiles the jitted step. */
  compileSeconds: number;
  /** The training state after the last step (the caller's to keep or dispose). */
  state: IbotState<BackboneParams, HeadParams>;
}

type State = IbotState<BackboneParams, HeadParams>;

/**
 * Thrown by `pretrain` when the loss stops being finite; the message names the step and the last good
 * checkpoint (which is left in place).
 *
 * @example
 * ```ts ignore
 * try {
 *   await pretrain(cfg, ds, opts);
 * } catch (e) {
 *   if (e instanceof NonFiniteLossError) console.error(e.message);
 *   else throw e;
 * }
 * ```
 */
export class NonFiniteLossError extends Error {
  /** Always `"NonFiniteLossError"`. */
  override name = "NonFiniteLossError";
  /** The first step (1-based, counting those before a resume) whose loss was not finite. */
  readonly step?: number;
  /** The last good checkpoint, or null when none was written. */
  readonly checkpoint?: string | null;
  /** An error with its message (what happened, where, which checkpoint is left), step and checkpoint. */
  constructor(message: string, step?: number, checkpoint?: string | null) {
    super(message);
    this.step = step;
    this.checkpoint = checkpoint;
  }
}

/**
 * The ViT configuration of a ViT preset (`resolveBackbone` handles both kinds; this throws for a Swin preset).
 */
export function backboneConfig(cfg: PretrainConfig, ds: Pick<Dataset, "channels" | "size">): VitConfig {
  const spec = resolveBackbone(cfg, ds);
  if (spec.kind !== "vit") throw new TypeError(`backboneConfig: preset ${cfg.name} has a Swin backbone`);
  return spec.config;
}

/** The training step's model functions and constants for a preset and its resolved backbone (ViT or Swin). */
export function stepConfig(
  cfg: PretrainConfig,
  b: VitConfig | BackboneSpec,
): IbotStepConfig<BackboneParams, HeadParams> {
  const spec = asBackboneSpec(b);
  return {
    backbone: (p, images, o) => backboneTokens(spec, p, images, o),
    head: (h, tokens) => head(h, tokens, { normLastLayer: cfg.head.normLastLayer }),
    headFeatures,
    headPrototypes: (h, z) => headPrototypes(h, z, { normLastLayer: cfg.head.normLastLayer }),
    // Without the official norm_last_layer, the prototype layer's weight_g is a trained parameter.
    trainable: cfg.head.normLastLayer ? undefined : () => true,
    globalCrops: cfg.augment.globalCrops.number,
    studentTemp: cfg.studentTemp,
    clipGrad: cfg.clipGrad,
    augment: (k, x) => multiCrop(k, x, cfg.augment),
  };
}

/**
 * A fresh state: student and teacher (a copy without `masked_embed`), AdamW, zero centers, the key. Takes a
 * ViT config or a resolved `BackboneSpec` (ViT or Swin).
 */
export function initState(cfg: PretrainConfig, vc: VitConfig, key: Tensor): IbotState<VitParams, HeadParams>;
export function initState(cfg: PretrainConfig, spec: VitConfig | BackboneSpec, key: Tensor): State;
export function initState(cfg: PretrainConfig, b: VitConfig | BackboneSpec, key: Tensor): State {
  // The initialisers' temporaries are freed here, not left to the garbage collector (GiBs for a ViT-S/16 on a GPU).
  return tidy(() => {
    const spec = asBackboneSpec(b);
    const [kb, kh, kstate] = random.split(key, 3);
    const student = {
      backbone: initBackbone(kb, spec),
      head: initHead(kh, { inDim: backboneDim(spec), ...cfg.head }),
    };
    // The teacher has no mask token: `masked_embed` is outside the EMA (spec §7.4).
    const { masked_embed: _unused, ...tb } = student.backbone as BackboneParams & { masked_embed?: Tensor };
    const copy = (t: Tensor) => slice(t, t.shape.map(() => 0)).add(0); // a distinct buffer with equal values
    const teacher = {
      backbone: treeMap(copy, tb) as unknown as BackboneParams,
      head: treeMap(copy, student.head) as unknown as HeadParams,
    };
    const K = cfg.head.outDim;
    return {
      student,
      teacher,
      opt: adamwInit(student),
      center: zeros([1, K], { backend: key.backend }),
      center2: zeros([1, 1, K], { backend: key.backend }),
      key: kstate,
    };
  });
}

/**
 * Runs (or resumes) a pretraining job: trains for `opts.steps` (default: the preset's epochs), reporting
 * progress, writing `metrics.jsonl` and checkpoints under `opts.out`, then evaluates k-NN of the teacher and
 * of a random network.
 *
 * @example
 * ```ts ignore
 * import { data, initBackend, PRESETS, pretrain } from "./mod.ts";
 * const backend = await initBackend("auto");
 * const ds = data.embeddedDataset();
 * const result = await pretrain(PRESETS["embedded-small"], ds, {
 *   backend,
 *   seed: 0,
 *   steps: 100,
 *   out: "runs/embedded",
 *   onProgress: (p) => console.log(p.step, p.loss),
 * });
 * console.log(result.knn);
 * ```
 */
export async function pretrain(cfg: PretrainConfig, ds: Dataset, opts: PretrainOptions): Promise<PretrainResult> {
  const { backend, seed } = opts;
  const vc = resolveBackbone(cfg, ds);
  const itersPerEpoch = stepsPerEpoch(ds.train.n, cfg.batchSize);
  if (itersPerEpoch === 0) {
    throw new RangeError(
      `pretrain: ${ds.train.n} training images give no batch of ${cfg.batchSize}; lower --batch-size`,
    );
  }
  if ((opts.evaluate ?? true) && ds.test.n === 0) {
    throw new DataError(`pretrain: ${ds.name} has no test images for the k-NN evaluation (pass evaluate: false)`);
  }
  // The schedules always span the preset's epochs; `steps` only stops the run early, so an interrupted and a
  // resumed run see the same hyperparameters at every iteration.
  const scheduleSteps = cfg.epochs * itersPerEpoch;
  const total = Math.min(opts.steps ?? scheduleSteps, scheduleSteps);
  const logEvery = opts.logEvery ?? 10;
  const checkpointEvery = opts.checkpointEvery ?? 200;
  const comm = opts.comm;
  // In a data-parallel run, rank 0 alone writes and evaluates; the states of all ranks are identical.
  const writer = !comm || comm.rank === 0;
  const ckptPath = opts.out ? `${opts.out}/checkpoint.safetensors` : null;
  const metricsPath = opts.out && writer ? `${opts.out}/metrics.jsonl` : null;
  if (opts.out && writer) await Deno.mkdir(opts.out, { recursive: true });
  if (ckptPath && writer) await removeStaleTemps(ckptPath);
  const identity = { dataset: ds.name, trainImages: ds.train.n };

  // The MIM mask grid: the patch grid of a ViT, the last stage's grid of a Swin (spec §2.5).
  const [gh, gw] = maskGrid(vc, cfg.augment.globalCrops.size);
  // Images per gradient pass: the whole batch, or each rank's share of it, or the given micro-batch.
  const microBatch = opts.microBatch ?? cfg.batchSize / (comm?.size ?? 1);
  const step: PretrainStep<State> = accumulatingStep(stepConfig(cfg, vc), {
    batchSize: cfg.batchSize,
    microBatch,
    backend,
    maxMemory: opts.maxMemory,
    shard: comm && { rank: comm.rank, size: comm.size },
    reduce: comm && ((sums) => comm.allReduceSum(sums)),
  });
  // The step's memory is planned on placeholders before the state or any buffer of the plan exists: a step
  // that cannot fit is refused here (PlanMemoryError) rather than failing or swapping after allocating.
  try {
    tidy(() =>
      planStepMemory(
        step,
        (k) => initState(cfg, vc, k),
        random.key(seed, backend),
        {
          batchSize: microBatch,
          channels: ds.channels,
          imageSize: ds.size,
          grids: Array.from({ length: cfg.augment.globalCrops.number }, () => [gh, gw] as const),
          masking: cfg.masking,
        },
        hyperAt(cfg, 0, itersPerEpoch, scheduleSteps),
        backend,
      )
    );
  } catch (e) {
    step.dispose(); // the traced graphs' constants
    throw e;
  }

  let state = initState(cfg, vc, random.key(seed, backend));
  let startIteration = 0;
  if (opts.resume) {
    if (!ckptPath) throw new Error("--resume needs --out <dir> holding checkpoint.safetensors");
    checkResumable(ckptPath, await readTrainingStateMeta(ckptPath), { cfg, seed, ...identity }, opts.overrideSchedule);
    const loaded = await loadTrainingState(ckptPath, state, backend);
    tidy(() => treeMap((t: Tensor) => t.dispose(), state));
    state = loaded.state;
    startIteration = loaded.meta.iteration;
    // Steps past the checkpoint were logged by the run that died; this run logs them again.
    if (metricsPath) await truncateMetrics(metricsPath, startIteration);
  }

  // Every step's loss is folded into the watch of the first non-finite one on the device (no readback); the
  // watch is read with the metrics.
  const watchStep = jit((w: FiniteWatch, loss: Tensor, it: number) => foldWatch(w, loss, it), { donate: [0] });
  const maskKey = hostKey(seed + 1);
  // Host masks and their masked token rows (the head and the MIM loss run on those rows only), of the images
  // at `positions` in the step's batch.
  const masksFor = (iteration: number, positions: Int32Array) =>
    sampleStepMasks(
      hostFoldIn(maskKey, iteration),
      positions.length,
      Array.from({ length: cfg.augment.globalCrops.number }, () => [gh, gw] as const),
      { ...cfg.masking, epoch: Math.floor(iteration / itersPerEpoch) },
      backend,
      positions,
    );

  const knnKs = opts.knnKs ?? [10, 20, 100, 200];
  let firstLoss = NaN;
  let lastLoss = NaN;
  let compileSeconds = 0;
  const t0 = performance.now();
  let tLast = t0;
  let stepsSinceLog = 0;
  let done = startIteration;
  const loader = batches(ds, {
    batchSize: cfg.batchSize,
    seed,
    start: { epoch: Math.floor(startIteration / itersPerEpoch), step: startIteration % itersPerEpoch },
    // A whole batch is uploaded ahead; micro-batches are uploaded one at a time by the step.
    upload: (b) => step.micro ? undefined : fromTyped(b.images, b.shape, "float32", backend),
    dispose: (t) => t?.dispose(),
  });
  let watch = finiteWatch(backend);
  let saved: number | null = opts.resume ? startIteration : null; // the step the checkpoint on disk holds
  const save = async (iteration: number) => {
    if (!ckptPath || !writer) return;
    const meta = { iteration, preset: cfg.name, batchSize: cfg.batchSize, seed, ...identity, config: cfg };
    await saveTrainingState(ckptPath, state, meta);
    saved = iteration;
  };
  const lastGood = () => (saved !== null ? ckptPath : null);
  const nonFinite = (bad: { step: number; loss: number }) =>
    new NonFiniteLossError(
      `the loss became non-finite (${bad.loss}) at step ${bad.step}; ` +
        (saved !== null
          ? `the last good checkpoint is ${ckptPath} (step ${saved})`
          : `no checkpoint was written${ckptPath ? " yet" : " (no output folder)"}`),
      bad.step,
      lastGood(),
    );
  // On a stop request: checkpoint the steps made since the last checkpoint (unless one was not finite), stop.
  // `together`: all ranks call it at the same point (not in rank 0's k-NN), so they can agree.
  const stopIfAsked = async (together = true) => {
    if (!opts.signal) return;
    // OS signals reach their listeners when the runtime turns its I/O driver, which an await of work done on
    // another thread (a one-byte digest) makes it do; timers do not (Deno 2.9: on the CPU backend a SIGTERM
    // sent during a step reached its listener steps later, or only after the run).
    await crypto.subtle.digest("SHA-256", new Uint8Array(1));
    await new Promise((resolve) => setTimeout(resolve, 0)); // and the listener's turn
    // Every rank of a data-parallel run must stop after the same step, or the others wait in the next all-reduce.
    const stop = comm && together
      ? (await comm.allReduceNumbers([opts.signal.aborted ? 1 : 0]))[0] > 0
      : opts.signal.aborted;
    if (!stop) return;
    if (ckptPath && done > (saved ?? 0)) {
      const bad = await readWatch(watch);
      if (bad) throw nonFinite(bad);
      await save(done);
    }
    throw new Interrupted(done, total, lastGood(), opts.signal.reason);
  };
  try {
    await stopIfAsked();
    for await (const batch of loader) {
      if (done >= total) break;
      const it = batch.iteration;
      const hp = hyperAt(cfg, it, itersPerEpoch, scheduleSteps);
      const tCall = performance.now();
      const out = await step.run(state, batch, hp, (positions) => masksFor(it, positions));
      state = out.state;
      watch = watchStep(watch, out.metrics.loss, it);
      done = it + 1;
      stepsSinceLog++;
      const isLog = done % logEvery === 0 || done === total || done === startIteration + 1;
      const epochEnd = done % itersPerEpoch === 0;
      const isCkpt = ckptPath !== null && (done % checkpointEvery === 0 || epochEnd || done === total);
      if (isLog || isCkpt) {
        const m = out.metrics;
        const [[loss, cls, patch, ent, agree], bad] = await Promise.all([
          Promise.all([m.loss, m.cls, m.patch, m.teacherEntropy, m.agreement].map((t) => t.item())),
          readWatch(watch),
        ]);
        if (done === startIteration + 1) compileSeconds = (performance.now() - tCall) / 1000;
        if (bad) throw nonFinite(bad);
        if (Number.isNaN(firstLoss)) firstLoss = loss;
        lastLoss = loss;
        const now = performance.now();
        const dt = (now - tLast) / 1000;
        tLast = now;
        const report: Progress = {
          step: done,
          totalSteps: total,
          epoch: hp.epoch,
          loss,
          cls,
          patch,
          lr: hp.lr,
          wd: hp.wd,
          momentum: hp.momentum,
          teacherTemp: hp.teacherTemp,
          teacherEntropy: ent,
          agreement: agree,
          imagesPerSecond: (stepsSinceLog * cfg.batchSize) / dt,
          etaSeconds: ((total - done) * dt) / stepsSinceLog,
        };
        stepsSinceLog = 0;
        opts.onProgress?.(report);
        if (metricsPath) await Deno.writeTextFile(metricsPath, JSON.stringify(report) + "\n", { append: true });
        if (done === startIteration + 1) opts.onCompiled?.(compileSeconds, step.stats());
      }
      Object.values(out.metrics).forEach((t) => t.dispose());
      if (isCkpt) await save(done);
      if (done >= total) break;
      await stopIfAsked();
    }
  } finally {
    await loader.return(undefined);
    step.dispose();
    watchStep.dispose();
    watch.first.dispose();
    watch.loss.dispose();
  }
  const steps = done - startIteration;
  const secondsPerStep = steps > 1 ? ((performance.now() - t0) / 1000 - compileSeconds) / Math.max(steps - 1, 1) : NaN;

  let knn: Record<number, number> = {};
  let knnRandom: Record<number, number> = {};
  if ((opts.evaluate ?? true) && writer) {
    await stopIfAsked(false);
    knn = await evaluateKnn(state.teacher.backbone, vc, ds, cfg, backend, knnKs, opts.knnTestLimit);
    await stopIfAsked(false);
    // The run's own initialisation (the same draw as step 0): random networks of one size differ by several
    // k-NN points between seeds, so another seed's network would mostly measure that spread.
    const rand = initState(cfg, vc, random.key(seed, backend));
    knnRandom = await evaluateKnn(rand.teacher.backbone, vc, ds, cfg, backend, knnKs, opts.knnTestLimit);
    tidy(() => treeMap((t: Tensor) => t.dispose(), rand));
  }
  if (metricsPath) {
    await Deno.writeTextFile(metricsPath, JSON.stringify({ step: done, knn, knnRandom }) + "\n", { append: true });
  }
  return { steps: done, lastLoss, firstLoss, knn, knnRandom, secondsPerStep, compileSeconds, state };
}
