/**
 * Training checkpoints: the whole state (student, teacher, optimizer, centers, PRNG key) as one safetensors
 * file with JSON metadata (iteration, epoch, config, anything the loop needs to resume), written atomically
 * (temporary file, then rename). Loading checks every name and shape against a template state and reports all
 * mismatches in one error that names the file.
 */
import { Tensor } from "../autograd/tensor.ts";
import { flatten, paths, unflatten } from "../autograd/tree.ts";
import type { Backend } from "../ops/backend.ts";
import { fromTyped } from "../ops/create.ts";
import { fmt } from "../ops/shape.ts";
import { encodeSafetensors, type HostTensor, parseSafetensors, writeFileAtomic } from "../models/safetensors.ts";
import { CheckpointError } from "../models/format.ts";

// One error class for every checkpoint problem, whether the file's format or its fit to this training run.
export { CheckpointError };

/** Metadata stored with a checkpoint. `iteration` is the number of completed steps. */
export interface CheckpointMeta {
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
 * await saveCheckpoint("out/checkpoint.safetensors", state, { iteration: 100, epoch: 2 });
 * ```
 */
export async function saveCheckpoint(path: string, state: unknown, meta: CheckpointMeta): Promise<void> {
  const leaves = paths<unknown>(state).filter((e): e is [string, Tensor] => e[1] instanceof Tensor);
  const datas = await Promise.all(leaves.map(([, t]) => t.data()));
  // Never replace a good checkpoint with a broken state.
  leaves.forEach(([name, t], i) => {
    if (t.dtype !== "float32" && t.dtype !== "float64") return;
    const d = datas[i];
    for (let j = 0; j < d.length; j++) {
      if (!Number.isFinite(d[j])) {
        throw new NonFiniteStateError(
          `'${name}' is not finite at iteration ${meta.iteration}; '${path}' was left as it was`,
        );
      }
    }
  });
  const entries = leaves.map((
    [name, t],
    i,
  ): [string, HostTensor] => [name, { dtype: t.dtype, shape: [...t.shape], data: datas[i] }]);
  await writeFileAtomic(path, encodeSafetensors(entries, { format: "ibot-ts-checkpoint", meta: JSON.stringify(meta) }));
}

/** Thrown by `saveCheckpoint` when the state holds a NaN or infinity. */
export class NonFiniteStateError extends Error {
  /** The error's name. */
  override name = "NonFiniteStateError";
}

/**
 * Loads a checkpoint into a state shaped like `template` (its structure, names, shapes and dtypes), on
 * `backend`. Throws one error naming the file and every missing, unexpected or mis-shaped entry.
 *
 * @example
 * ```ts ignore
 * const { state, meta } = await loadCheckpoint("out/checkpoint.safetensors", template, backend);
 * console.log(meta.iteration);
 * ```
 */
export async function loadCheckpoint<T>(
  path: string,
  template: T,
  backend: Backend,
): Promise<{ state: T; meta: CheckpointMeta }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new CheckpointError(`checkpoint '${path}' cannot be read: ${(e as Error).message}`);
  }
  let file: ReturnType<typeof parseSafetensors>;
  try {
    file = parseSafetensors(bytes, path);
  } catch (e) {
    // Whatever the parser refuses is a property of the file, not a bug: report it as such.
    throw new CheckpointError((e as Error).message);
  }
  if (file.metadata.format !== "ibot-ts-checkpoint" || !file.metadata.meta) {
    throw new CheckpointError(`checkpoint '${path}' is not an ibot-ts training checkpoint (no training metadata)`);
  }
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(file.metadata.meta);
  } catch (e) {
    throw new CheckpointError(`checkpoint '${path}' has corrupt metadata: ${(e as Error).message}`);
  }
  const iteration = (meta as { iteration?: unknown } | null)?.iteration;
  if (!(typeof iteration === "number" && Number.isSafeInteger(iteration) && iteration >= 0)) {
    throw new CheckpointError(
      `checkpoint '${path}' has corrupt metadata: iteration ${JSON.stringify(iteration)} is not an integer >= 0`,
    );
  }
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
  const { def } = flatten(template);
  const leaves = want.map(([name]) => {
    const h = file.tensors.get(name)!;
    return fromTyped(h.data, h.shape, h.dtype, backend);
  });
  return { state: unflatten<T>(def, leaves), meta };
}
