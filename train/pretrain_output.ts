/**
 * What a pretraining run leaves behind and when: progress lines in `metrics.jsonl` and checkpoints at their
 * cadence (rank 0 only), the error of a non-finite loss naming the last good checkpoint, a stop request agreed
 * by every rank, and the closing k-NN evaluation of the teacher against the run's own initialisation.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import type { Backend } from "../ops/backend.ts";
import { tidy } from "../ops/engine.ts";
import { map as treeMap } from "../autograd/tree.ts";
import * as random from "../ops/random.ts";
import type { HeadParams } from "../models/head.ts";
import type { BackboneParams } from "./backbone.ts";
import type { IbotState } from "./step.ts";
import type { RunSpec } from "./run_spec.ts";
import { saveTrainingState } from "./checkpoint.ts";
import { removeStaleTemps, truncateMetrics } from "./run_state.ts";
import { evaluateKnn } from "./evaluate.ts";
import { initState } from "./pretrain_model.ts";
import type { Dataset } from "./data/dataset.ts";
import type { Communicator } from "../distributed/mod.ts";

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

/** Where and how often a run writes. */
export interface OutputOptions {
  /** Output folder (none: nothing is written). */
  out?: string;
  /** Whether this process writes (rank 0 of a data-parallel run, or the only process). */
  writer: boolean;
  /** The run's seed (recorded in checkpoints). */
  seed: number;
  /** Read metrics back every N steps. */
  logEvery: number;
  /** Checkpoint every N steps (and at each epoch end and the run's end). */
  checkpointEvery: number;
}

/** The metrics file and checkpoint of a run, and when each is written. */
export class RunOutput {
  /** The checkpoint file (null without an output folder). */
  readonly checkpointPath: string | null;
  /** The metrics file (null without an output folder or on ranks other than 0). */
  readonly metricsPath: string | null;
  /** The step the checkpoint on disk holds (null: none yet). */
  saved: number | null = null;
  readonly #run: RunSpec;
  readonly #opts: OutputOptions;

  /** The output of `run` as `opts` say. */
  constructor(run: RunSpec, opts: OutputOptions) {
    this.#run = run;
    this.#opts = opts;
    this.checkpointPath = opts.out ? `${opts.out}/checkpoint.safetensors` : null;
    this.metricsPath = opts.out && opts.writer ? `${opts.out}/metrics.jsonl` : null;
  }

  /** Creates the folder and removes the temporary files of killed checkpoint writes. */
  async prepare(): Promise<void> {
    if (!this.#opts.out || !this.#opts.writer) return;
    await Deno.mkdir(this.#opts.out, { recursive: true });
    await removeStaleTemps(this.checkpointPath!);
  }

  /** A resumed run: the checkpoint holds `iteration`; metrics past it were logged by the run that died. */
  async resumeAt(iteration: number): Promise<void> {
    this.saved = iteration;
    if (this.metricsPath) await truncateMetrics(this.metricsPath, iteration);
  }

  /** Whether the step that completes `done` steps is logged (`first`: the first step of this invocation). */
  isLog(done: number, first: boolean): boolean {
    return done % this.#opts.logEvery === 0 || done === this.#run.totalSteps || first;
  }

  /** Whether a checkpoint follows the step that completes `done` steps. */
  isCheckpoint(done: number): boolean {
    return this.checkpointPath !== null &&
      (done % this.#opts.checkpointEvery === 0 || done % this.#run.itersPerEpoch === 0 ||
        done === this.#run.totalSteps);
  }

  /** Appends one JSON line to the metrics file (when this process writes one). */
  async log(record: unknown): Promise<void> {
    if (this.metricsPath) await Deno.writeTextFile(this.metricsPath, JSON.stringify(record) + "\n", { append: true });
  }

  /** Writes the checkpoint of `state` after `iteration` steps (when this process writes). */
  async save(state: State, iteration: number): Promise<void> {
    if (!this.checkpointPath || !this.#opts.writer) return;
    const run = this.#run;
    const meta = {
      iteration,
      preset: run.config.name,
      batchSize: run.batchSize,
      seed: this.#opts.seed,
      dataset: run.data.name,
      trainImages: run.data.trainImages,
      config: run.config,
    };
    await saveTrainingState(this.checkpointPath, state, meta);
    this.saved = iteration;
  }

  /** The last good checkpoint, or null when none was written. */
  lastGood(): string | null {
    return this.saved !== null ? this.checkpointPath : null;
  }

  /** The error of a loss that became non-finite at `bad.step`, naming the last good checkpoint. */
  nonFinite(bad: { step: number; loss: number }): NonFiniteLossError {
    const ckpt = this.checkpointPath;
    return new NonFiniteLossError(
      `the loss became non-finite (${bad.loss}) at step ${bad.step}; ` +
        (this.saved !== null
          ? `the last good checkpoint is ${ckpt} (step ${this.saved})`
          : `no checkpoint was written${ckpt ? " yet" : " (no output folder)"}`),
      bad.step,
      this.lastGood(),
    );
  }
}

/**
 * Whether a stop was requested. `together`: every rank of a data-parallel run calls it at the same point, and
 * they stop if any was asked (else the others would wait in the next all-reduce).
 */
export async function stopRequested(
  signal: AbortSignal | undefined,
  comm: Communicator | undefined,
  together: boolean,
): Promise<boolean> {
  if (!signal) return false;
  // OS signals reach their listeners when the runtime turns its I/O driver, which an await of work done on
  // another thread (a one-byte digest) makes it do; timers do not (Deno 2.9: on the CPU backend a SIGTERM
  // sent during a step reached its listener steps later, or only after the run).
  await crypto.subtle.digest("SHA-256", new Uint8Array(1));
  await new Promise((resolve) => setTimeout(resolve, 0)); // and the listener's turn
  return comm && together ? (await comm.allReduceNumbers([signal.aborted ? 1 : 0]))[0] > 0 : signal.aborted;
}

/**
 * The closing evaluation: k-NN top-1 of the trained teacher and of the run's own initialisation (the same draw
 * as step 0: random networks of one size differ by several k-NN points between seeds, so another seed's
 * network would mostly measure that spread). `between` runs before each evaluation (a stop request check).
 */
export async function evaluateRun(
  run: RunSpec,
  teacher: BackboneParams,
  ds: Dataset,
  opts: { backend: Backend; seed: number; ks: number[]; testLimit?: number; between: () => Promise<void> },
): Promise<{ knn: Record<number, number>; knnRandom: Record<number, number> }> {
  const { backend, ks, testLimit } = opts;
  await opts.between();
  const knn = await evaluateKnn(teacher, run.backbone, ds, run.config, backend, ks, testLimit);
  await opts.between();
  const rand = initState(run, random.key(opts.seed, backend));
  const knnRandom = await evaluateKnn(rand.teacher.backbone, run.backbone, ds, run.config, backend, ks, testLimit);
  tidy(() => treeMap((t: Tensor) => t.dispose(), rand));
  return { knn, knnRandom };
}
