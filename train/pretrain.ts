/**
 * The iBOT pretraining loop: resolve the run once (`resolveRun`), initialise (or resume) the state, compile the
 * step once, stream batches with on-device augmentation and host-generated masks, and hand logging, checkpoints,
 * stop requests and the closing k-NN evaluation to `pretrain_output.ts`. The model functions and the fresh state
 * live in `pretrain_model.ts`.
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
import { fromTyped } from "../ops/create.ts";
import * as random from "../ops/random.ts";
import type { HeadParams } from "../models/head.ts";
import type { BackboneParams } from "./backbone.ts";
import type { IbotState } from "./step.ts";
import { accumulatingStep, type PretrainStep } from "./step_accumulate.ts";
import { hostFoldIn, hostKey, sampleStepMasks } from "./masking.ts";
import type { PretrainConfig } from "./presets.ts";
import { isRunSpec, resolveRun, runHyperparams, type RunSpec } from "./run_spec.ts";
import { loadTrainingState, readTrainingStateMeta } from "./checkpoint.ts";
import { planStepMemory } from "./memory.ts";
import { checkResumable, type FiniteWatch, finiteWatch, foldWatch, Interrupted, readWatch } from "./run_state.ts";
import { initState, stepConfig } from "./pretrain_model.ts";
import { evaluateRun, RunOutput, stopRequested } from "./pretrain_output.ts";
import { DataError } from "../errors.ts";
import type { Dataset } from "./data/dataset.ts";
import type { Communicator } from "../distributed/mod.ts";
import { batches } from "./data/loader.ts";

// These names stay importable from here.
export { evaluateKnn, knnFeatures } from "./evaluate.ts";
export { backboneConfig, initState, stepConfig } from "./pretrain_model.ts";
export { NonFiniteLossError } from "./pretrain_output.ts";

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
  /** Stop after this many steps (default: the preset's epochs; a resolved run fixes them itself). */
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
 * Runs (or resumes) a pretraining job: trains for `opts.steps` (default: the preset's epochs), reporting
 * progress, writing `metrics.jsonl` and checkpoints under `opts.out`, then evaluates k-NN of the teacher and
 * of a random network. Takes a preset (resolved here for `ds` and `opts.steps`) or a run already resolved by
 * `resolveRun` for this dataset (which then fixes the steps).
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
export async function pretrain(
  cfgOrRun: PretrainConfig | RunSpec,
  ds: Dataset,
  opts: PretrainOptions,
): Promise<PretrainResult> {
  const { backend, seed } = opts;
  const run = isRunSpec(cfgOrRun) ? checkRunData(cfgOrRun, ds, opts.steps) : resolveRun(cfgOrRun, ds, opts);
  const { itersPerEpoch, totalSteps: total, batchSize } = run;
  if ((opts.evaluate ?? true) && ds.test.n === 0) {
    throw new DataError(`pretrain: ${ds.name} has no test images for the k-NN evaluation (pass evaluate: false)`);
  }
  const comm = opts.comm;
  // In a data-parallel run, rank 0 alone writes and evaluates; the states of all ranks are identical.
  const writer = !comm || comm.rank === 0;
  const output = new RunOutput(run, {
    out: opts.out,
    writer,
    seed,
    logEvery: opts.logEvery ?? 10,
    checkpointEvery: opts.checkpointEvery ?? 200,
  });
  await output.prepare();

  const grids = Array.from({ length: run.globalCrops }, () => run.maskGrid);
  // Images per gradient pass: the whole batch, or each rank's share of it, or the given micro-batch.
  const microBatch = opts.microBatch ?? batchSize / (comm?.size ?? 1);
  const step: PretrainStep<State> = accumulatingStep(stepConfig(run), {
    batchSize,
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
        (k) => initState(run, k),
        random.key(seed, backend),
        {
          batchSize: microBatch,
          channels: run.data.channels,
          imageSize: run.data.size,
          grids,
          masking: run.config.masking,
        },
        runHyperparams(run, 0),
        backend,
      )
    );
  } catch (e) {
    step.dispose(); // the traced graphs' constants
    throw e;
  }

  let state = initState(run, random.key(seed, backend));
  let startIteration = 0;
  if (opts.resume) {
    const ckptPath = output.checkpointPath;
    if (!ckptPath) throw new Error("--resume needs --out <dir> holding checkpoint.safetensors");
    const identity = { cfg: run.config, seed, dataset: run.data.name, trainImages: run.data.trainImages };
    checkResumable(ckptPath, await readTrainingStateMeta(ckptPath), identity, opts.overrideSchedule);
    const loaded = await loadTrainingState(ckptPath, state, backend);
    tidy(() => treeMap((t: Tensor) => t.dispose(), state));
    state = loaded.state;
    startIteration = loaded.meta.iteration;
    await output.resumeAt(startIteration);
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
      grids,
      { ...run.config.masking, epoch: Math.floor(iteration / itersPerEpoch) },
      backend,
      positions,
    );

  let firstLoss = NaN;
  let lastLoss = NaN;
  let compileSeconds = 0;
  const t0 = performance.now();
  let tLast = t0;
  let stepsSinceLog = 0;
  let done = startIteration;
  const loader = batches(ds, {
    batchSize,
    seed,
    start: { epoch: Math.floor(startIteration / itersPerEpoch), step: startIteration % itersPerEpoch },
    // A whole batch is uploaded ahead; micro-batches are uploaded one at a time by the step.
    upload: (b) => step.micro ? undefined : fromTyped(b.images, b.shape, "float32", backend),
    dispose: (t) => t?.dispose(),
  });
  let watch = finiteWatch(backend);
  // On a stop request: checkpoint the steps made since the last checkpoint (unless one was not finite), stop.
  const stopIfAsked = async (together = true) => {
    if (!(await stopRequested(opts.signal, comm, together))) return;
    if (output.checkpointPath && done > (output.saved ?? 0)) {
      const bad = await readWatch(watch);
      if (bad) throw output.nonFinite(bad);
      await output.save(state, done);
    }
    throw new Interrupted(done, total, output.lastGood(), opts.signal!.reason);
  };
  try {
    await stopIfAsked();
    for await (const batch of loader) {
      if (done >= total) break;
      const it = batch.iteration;
      const hp = runHyperparams(run, it);
      const tCall = performance.now();
      const out = await step.run(state, batch, hp, (positions) => masksFor(it, positions));
      state = out.state;
      watch = watchStep(watch, out.metrics.loss, it);
      done = it + 1;
      stepsSinceLog++;
      const first = done === startIteration + 1;
      const isCkpt = output.isCheckpoint(done);
      if (output.isLog(done, first) || isCkpt) {
        const m = out.metrics;
        const [[loss, cls, patch, ent, agree], bad] = await Promise.all([
          Promise.all([m.loss, m.cls, m.patch, m.teacherEntropy, m.agreement].map((t) => t.item())),
          readWatch(watch),
        ]);
        if (first) compileSeconds = (performance.now() - tCall) / 1000;
        if (bad) throw output.nonFinite(bad);
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
          imagesPerSecond: (stepsSinceLog * batchSize) / dt,
          etaSeconds: ((total - done) * dt) / stepsSinceLog,
        };
        stepsSinceLog = 0;
        opts.onProgress?.(report);
        await output.log(report);
        if (first) opts.onCompiled?.(compileSeconds, step.stats());
      }
      Object.values(out.metrics).forEach((t) => t.dispose());
      if (isCkpt) await output.save(state, done);
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

  const { knn, knnRandom } = (opts.evaluate ?? true) && writer
    ? await evaluateRun(run, state.teacher.backbone, ds, {
      backend,
      seed,
      ks: opts.knnKs ?? [10, 20, 100, 200],
      testLimit: opts.knnTestLimit,
      between: () => stopIfAsked(false),
    })
    : { knn: {}, knnRandom: {} };
  await output.log({ step: done, knn, knnRandom });
  return { steps: done, lastLoss, firstLoss, knn, knnRandom, secondsPerStep, compileSeconds, state };
}

/** A run resolved elsewhere, checked to be of this dataset (and not given other steps). */
function checkRunData(run: RunSpec, ds: Dataset, steps: number | undefined): RunSpec {
  if (run.data.name !== ds.name || run.data.trainImages !== ds.train.n || run.data.size !== ds.size) {
    throw new RangeError(
      `pretrain: the run was resolved for ${run.data.name} (${run.data.trainImages} images of ${run.data.size} px), ` +
        `not ${ds.name} (${ds.train.n} of ${ds.size} px)`,
    );
  }
  if (steps !== undefined && Math.min(steps, run.scheduleSteps) !== run.totalSteps) {
    throw new RangeError(`pretrain: steps ${steps} differs from the resolved run's ${run.totalSteps}`);
  }
  return run;
}
