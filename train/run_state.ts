/**
 * What a pretraining run keeps consistent across interruptions: the stop request and its typed result, the
 * checks that a resumed run continues the checkpoint's own configuration, the out-folder housekeeping at start
 * (stale temporary files, metrics past the checkpoint), and the on-device record of the first non-finite loss.
 */
import type { Tensor } from "../ops/tensor.ts";
import type { Backend } from "../ops/backend.ts";
import { fromTyped } from "../ops/create.ts";
import * as api from "../ops/api.ts";
import { isAtomicTemp, writeFileAtomic } from "../models/safetensors.ts";
import type { TrainingStateMeta } from "./checkpoint.ts";
import type { PretrainConfig } from "./presets.ts";

/**
 * Thrown by `pretrain` when its `signal` aborted: the step in flight was finished and, with an output folder,
 * the state was checkpointed. `checkpoint` is the file to resume from (null when none exists).
 *
 * @example
 * ```ts ignore
 * const stop = new AbortController();
 * Deno.addSignalListener("SIGINT", () => stop.abort("SIGINT"));
 * try {
 *   await pretrain(cfg, ds, { backend, seed: 0, out: "runs/a", signal: stop.signal });
 * } catch (e) {
 *   if (e instanceof Interrupted) console.error(`stopped at step ${e.step}; resume from ${e.checkpoint}`);
 *   else throw e;
 * }
 * ```
 */
export class Interrupted extends Error {
  /** Always `"Interrupted"`. */
  override name = "Interrupted";
  /** Completed steps (counting those before a resume); the checkpoint, if any, holds this step. */
  readonly step: number;
  /** Steps the run would have made. */
  readonly totalSteps: number;
  /** The checkpoint that holds `step`, or null (no output folder, or no step made yet). */
  readonly checkpoint: string | null;
  /** The abort reason of the signal (e.g. `"SIGINT"`). */
  readonly reason: unknown;
  /** The result of a run stopped after `step` of `totalSteps` steps. */
  constructor(step: number, totalSteps: number, checkpoint: string | null, reason: unknown) {
    super(
      `interrupted at step ${step}/${totalSteps}: ` +
        (checkpoint ? `checkpoint ${checkpoint}` : "no checkpoint was written"),
    );
    this.step = step;
    this.totalSteps = totalSteps;
    this.checkpoint = checkpoint;
    this.reason = reason;
  }
}

/** One configuration field on which a checkpoint and a resumed run disagree. */
export interface ConfigDifference {
  /** Dotted path in the run's configuration (`epochs`, `masking.predStartEpoch`, ...), or `seed`/`dataset`. */
  path: string;
  /** The checkpoint's value. */
  checkpoint: unknown;
  /** This run's value. */
  run: unknown;
  /** False for what fixes the data order and the meaning of a step (preset, batch size, seed, data size). */
  overridable: boolean;
}

/**
 * Thrown by `pretrain` when a resumed run's configuration differs from the checkpoint's: a resumed run keeps
 * the checkpoint's schedule unless `overrideSchedule` is set, and never changes its preset, batch size, seed
 * or number of training images.
 */
export class ScheduleMismatchError extends Error {
  /** Always `"ScheduleMismatchError"`. */
  override name = "ScheduleMismatchError";
  /** The checkpoint's path. */
  readonly checkpoint: string;
  /** Every differing field. */
  readonly differences: ConfigDifference[];
  /** The error for resuming `checkpoint` with a configuration that differs in `differences`. */
  constructor(checkpoint: string, differences: ConfigDifference[]) {
    const fixed = differences.some((d) => !d.overridable);
    super(
      `checkpoint '${checkpoint}' does not match this run: ${
        differences.map((d) => `${d.path} is ${show(d.checkpoint)} there but ${show(d.run)} here`).join("; ")
      }; ` +
        (fixed
          ? "a resumed run keeps its preset, batch size, seed and number of training images"
          : "a resumed run keeps the checkpoint's schedule unless it is overridden"),
    );
    this.checkpoint = checkpoint;
    this.differences = differences;
  }
}

/** A value as a message shows it. */
export function show(v: unknown): string {
  return v === undefined ? "(unset)" : JSON.stringify(v);
}

/** The differing leaves of two JSON values (plain objects are compared key by key, anything else whole). */
function differences(a: unknown, b: unknown, path: string, out: ConfigDifference[]): void {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      differences(a[k], b[k], path ? `${path}.${k}` : k, out);
    }
  } else if (JSON.stringify(a) !== JSON.stringify(b)) {
    out.push({ path, checkpoint: a, run: b, overridable: true });
  }
}

/**
 * Checks that a run may resume from a checkpoint written with `meta`: the same preset, batch size, seed and
 * number of training images, and (unless `overrideSchedule`) the same dataset name and configuration. Throws `ScheduleMismatchError` listing every
 * difference. A checkpoint without a stored configuration is checked on what it stores.
 */
export function checkResumable(
  path: string,
  meta: TrainingStateMeta,
  run: { cfg: PretrainConfig; seed: number; dataset: string; trainImages: number },
  overrideSchedule = false,
): void {
  const found: ConfigDifference[] = [];
  const compare = (p: string, checkpoint: unknown, value: unknown, overridable = false) => {
    if (checkpoint !== undefined && checkpoint !== value) found.push({ path: p, checkpoint, run: value, overridable });
  };
  compare("preset", meta.preset, run.cfg.name);
  compare("batchSize", meta.batchSize, run.cfg.batchSize);
  compare("seed", meta.seed, run.seed);
  compare("dataset", meta.dataset, run.dataset, true); // a renamed folder; its size still fixes the order
  compare("trainImages", meta.trainImages, run.trainImages);
  if (meta.config !== undefined) {
    // Compare as stored: JSON drops undefined fields and the checkpoint went through JSON.
    const config: ConfigDifference[] = [];
    differences(meta.config, JSON.parse(JSON.stringify(run.cfg)), "", config);
    // name and batchSize are checked above; remat changes memory, not values (a resume may add or drop it).
    const free = (path: string) => path === "name" || path === "batchSize" || /^(backbone|swin)\.remat$/.test(path);
    found.push(...config.filter((d) => !free(d.path)));
  }
  const refused = found.filter((d) => !(overrideSchedule && d.overridable));
  if (refused.length) throw new ScheduleMismatchError(path, refused);
}

/** Removes temporary files that killed atomic writes of `target` left in its folder; returns their names. */
export async function removeStaleTemps(target: string): Promise<string[]> {
  const dir = target.includes("/") ? target.slice(0, target.lastIndexOf("/")) || "/" : ".";
  const removed: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && isAtomicTemp(e.name, target)) {
      await Deno.remove(`${dir}/${e.name}`);
      removed.push(e.name);
    }
  }
  return removed;
}

/**
 * Keeps the lines of a `metrics.jsonl` up to `step` (those a resumed run will not write again) and drops the
 * rest, including a line cut short by a kill. A missing file is left missing.
 */
export async function truncateMetrics(path: string, step: number): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  const kept = text.split("\n").filter((line) => {
    try {
      const s = JSON.parse(line)?.step;
      return typeof s === "number" && s <= step;
    } catch {
      return false;
    }
  });
  const next = kept.map((l) => l + "\n").join("");
  if (next !== text) await writeFileAtomic(path, new TextEncoder().encode(next));
}

/**
 * The first non-finite loss of a run, kept on the device and updated by every step, so that no step has to be
 * read back: `first` is the iteration (0-based) of the first non-finite loss, or -1; `loss` its value.
 */
export interface FiniteWatch {
  /** float32 scalar: the first iteration whose loss was NaN or infinite, or -1. */
  first: Tensor;
  /** float32 scalar: that loss (meaningless while `first` is -1). */
  loss: Tensor;
}

/** A watch that has seen no non-finite loss. */
export function finiteWatch(backend: Backend): FiniteWatch {
  return {
    first: fromTyped(new Float32Array([-1]), [], "float32", backend),
    loss: fromTyped(new Float32Array([0]), [], "float32", backend),
  };
}

/** The largest finite float32: `|x| <= F32_MAX` is false exactly for NaN and the infinities. */
const F32_MAX = 3.4028234663852886e38;

/**
 * The watch after iteration `iteration` produced `loss` (trace it into the jitted step: no readback).
 * `iteration` is a number or, inside `jit`, its scalar input.
 */
export function foldWatch(w: FiniteWatch, loss: Tensor, iteration: api.Operand): FiniteWatch {
  const seen = api.greaterEqual(w.first, 0);
  const finite = api.lessEqual(api.abs(loss), F32_MAX);
  return {
    first: api.where(seen, w.first, api.where(finite, w.first, iteration)),
    loss: api.where(seen, w.loss, loss),
  };
}

/** Reads a watch: the first non-finite loss as a 1-based step and its value, or null. */
export async function readWatch(w: FiniteWatch): Promise<{ step: number; loss: number } | null> {
  const [first, loss] = await Promise.all([w.first.item(), w.loss.item()]);
  return first < 0 ? null : { step: first + 1, loss };
}
