/**
 * Training-state checkpoints: the whole state (student, teacher, optimizer, centers, PRNG key) as one
 * safetensors file with JSON metadata (iteration, epoch, config, anything the loop needs to resume), written
 * atomically (temporary file, then rename) by `saveTrainingState`. `loadTrainingState` checks every name and
 * shape against a template state and reports all mismatches in one error that names the file. Model weights
 * alone (`.pth` or safetensors, into a model tree) are `models/checkpoint.ts`'s `readModelWeights` and
 * `loadWeightsIntoModel`.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { flatten, paths, unflatten } from "../autograd/tree.ts";
import type { Backend } from "../ops/backend.ts";
import { fromTyped } from "../ops/create.ts";
import { fmt } from "../ops/shape.ts";
import {
  encodeSafetensors,
  hostEntries,
  parseSafetensors,
  readSafetensorsHeader,
  writeFileAtomic,
} from "../models/safetensors.ts";
import { CheckpointError, readCheckpointBytes } from "../models/format.ts";

// One error class for every checkpoint problem, whether the file's format or its fit to this training run.
export { CheckpointError };

/** Metadata stored with a training state. `iteration` is the number of completed steps. */
export interface TrainingStateMeta {
  /** Completed training steps when the checkpoint was written. */
  iteration: number;
  /** Any further JSON-serialisable fields (epoch, preset, seed, config, ...). */
  [key: string]: unknown;
}

/**
 * Saves `state` (any pytree of tensors) and `meta` to `path` atomically.
 *
 * @example
 * ```ts ignore
 * await saveTrainingState("out/checkpoint.safetensors", state, { iteration: 100, epoch: 2 });
 * ```
 */
export async function saveTrainingState(path: string, state: unknown, meta: TrainingStateMeta): Promise<void> {
  const entries = await hostEntries(state);
  // Never replace a good checkpoint with a broken state.
  for (const [name, { dtype, data }] of entries) {
    if (dtype !== "float32" && dtype !== "float64") continue;
    if (data.some((v) => !Number.isFinite(v))) {
      throw new NonFiniteStateError(
        `'${name}' is not finite at iteration ${meta.iteration}; '${path}' was left as it was`,
      );
    }
  }
  await writeFileAtomic(path, encodeSafetensors(entries, { format: "ibot-ts-checkpoint", meta: JSON.stringify(meta) }));
}

/** Thrown by `saveTrainingState` when the state holds a NaN or infinity. */
export class NonFiniteStateError extends Error {
  /** The error's name. */
  override name = "NonFiniteStateError";
}

/**
 * Loads a training state into a state shaped like `template` (its structure, names, shapes and dtypes), on
 * `backend`. Throws one error naming the file and every missing, unexpected or mis-shaped entry.
 *
 * @example
 * ```ts ignore
 * const { state, meta } = await loadTrainingState("out/checkpoint.safetensors", template, backend);
 * console.log(meta.iteration);
 * ```
 */
export async function loadTrainingState<T>(
  path: string,
  template: T,
  backend: Backend,
): Promise<{ state: T; meta: TrainingStateMeta }> {
  const bytes = await readCheckpointBytes(path);
  let file: ReturnType<typeof parseSafetensors>;
  try {
    file = parseSafetensors(bytes, path);
  } catch (e) {
    // Whatever the parser refuses is a property of the file, not a bug: report it as such.
    throw new CheckpointError((e as Error).message);
  }
  const meta = trainingMeta(file.metadata, path);
  const want = paths<Tensor>(template);
  // Wrong shapes first: they say the most about what the file is, and a one-line report keeps the first few.
  const wrong: string[] = [];
  const problems: string[] = [];
  for (const [name, t] of want) {
    const got = file.tensors.get(name);
    if (!got) problems.push(`missing '${name}' ${t.dtype}${fmt(t.shape)}`);
    else if (got.shape.join() !== t.shape.join() || got.dtype !== t.dtype) {
      wrong.push(
        `'${name}' is ${got.dtype}${fmt(got.shape)} in the file but ${t.dtype}${fmt(t.shape)} in the model`,
      );
    }
  }
  const expected = new Set(want.map(([n]) => n));
  for (const name of file.tensors.keys()) if (!expected.has(name)) problems.push(`unexpected '${name}'`);
  problems.unshift(...wrong);
  if (problems.length) {
    throw new CheckpointError(`checkpoint '${path}' does not fit this run:\n  ${problems.join("\n  ")}`);
  }
  // A state saved before this check existed, or edited since, must not resume into NaN losses.
  for (const [name, h] of file.tensors) {
    if (h.dtype !== "float32" && h.dtype !== "float64") continue;
    const at = h.data.findIndex((v) => !Number.isFinite(v));
    if (at >= 0) {
      throw new NonFiniteStateError(
        `checkpoint '${path}': '${name}' holds ${h.data[at]} at element ${at}; refusing to resume from it`,
      );
    }
  }
  const { def } = flatten(template);
  const leaves = want.map(([name]) => {
    const h = file.tensors.get(name)!;
    return fromTyped(h.data, h.shape, h.dtype, backend);
  });
  return { state: unflatten<T>(def, leaves), meta };
}

/** The training metadata of a checkpoint's `__metadata__`, or an error naming the file. */
function trainingMeta(metadata: Record<string, string>, path: string): TrainingStateMeta {
  if (metadata.format !== "ibot-ts-checkpoint" || !metadata.meta) {
    throw new CheckpointError(`checkpoint '${path}' is not an ibot-ts training checkpoint (no training metadata)`);
  }
  let meta: TrainingStateMeta;
  try {
    meta = JSON.parse(metadata.meta);
  } catch (e) {
    throw new CheckpointError(`checkpoint '${path}' has corrupt metadata: ${(e as Error).message}`);
  }
  const iteration = (meta as { iteration?: unknown } | null)?.iteration;
  if (!(typeof iteration === "number" && Number.isSafeInteger(iteration) && iteration >= 0)) {
    throw new CheckpointError(
      `checkpoint '${path}' has corrupt metadata: iteration ${JSON.stringify(iteration)} is not an integer >= 0`,
    );
  }
  return meta;
}

/**
 * Reads only the metadata of a training state (its safetensors header, not the tensors): what a resumed run
 * takes its configuration from before it builds anything.
 *
 * @example
 * ```ts ignore
 * const meta = await readTrainingStateMeta("out/checkpoint.safetensors");
 * console.log(meta.iteration, meta.config);
 * ```
 */
export async function readTrainingStateMeta(path: string): Promise<TrainingStateMeta> {
  return trainingMeta((await readSafetensorsHeader(path)).metadata, path);
}

// The old names, kept one release: they did not say whether a "checkpoint" held a training state or model weights.

/** @deprecated Renamed `TrainingStateMeta`; this alias goes in the next release. */
export type CheckpointMeta = TrainingStateMeta;
/** @deprecated Renamed `saveTrainingState`; this alias goes in the next release. */
export const saveCheckpoint: typeof saveTrainingState = saveTrainingState;
/** @deprecated Renamed `loadTrainingState`; this alias goes in the next release. */
export const loadCheckpoint: typeof loadTrainingState = loadTrainingState;
/** @deprecated Renamed `readTrainingStateMeta`; this alias goes in the next release. */
export const readCheckpointMeta: typeof readTrainingStateMeta = readTrainingStateMeta;
