/**
 * Model weights: reading named tensors from `.pth` or `.safetensors` files (`readModelWeights`), loading them
 * into a parameter tree with one clear error for every missing, unexpected or mis-shaped key
 * (`loadWeightsIntoModel`), and exporting a teacher backbone under the official `checkpoint_teacher.pth` names
 * (spec §9.2). The whole training state (to resume a run) is `train/checkpoint.ts`'s `saveTrainingState` and
 * `loadTrainingState`.
 *
 * @module
 */
import { Tensor } from "../ops/tensor.ts";
import { fromHost } from "../ops/engine.ts";
import { flatten, fromPaths, paths, unflatten } from "../autograd/tree.ts";
import * as api from "../ops/api.ts";
import type { Backend } from "../ops/backend.ts";
import { defaultBackend } from "../ops/backends.ts";
import { allocHost, type DType, type HostArray } from "../ops/dtype.ts";
import { type HostTensor, parseSafetensors, saveSafetensors } from "./safetensors.ts";
import { parsePth, type PthOptions } from "./pth.ts";
import { expectFormat, readCheckpointBytes, sniffFormat } from "./format.ts";
import { ParamSpec } from "./spec.ts";
import { relativePositionIndex } from "./swin_window.ts";

/** Named checkpoint entries: host tensors (from a file) or tensors. */
export type NamedTensors = ReadonlyMap<string, HostTensor | Tensor>;

/** A weights file (`.pth` or safetensors) read into memory. */
export interface ModelWeightsFile {
  /** Which reader was used. */
  format: "pth" | "safetensors";
  /** Every tensor by dotted name. */
  tensors: Map<string, HostTensor>;
  /** The source dtype of each tensor (`float16`, `int64`, `F32`, ...). */
  sourceDtypes: Map<string, string>;
  /** Non-tensor scalars (`.pth`) or string metadata (safetensors). */
  values: Map<string, unknown>;
  /** Skipped non-tensor objects and their Python type (`.pth`). */
  skipped: Map<string, string>;
}

/**
 * Parses checkpoint bytes, dispatching on their first bytes (`sniffFormat`): a zip is a `.pth`, an 8-byte
 * length then `{` is safetensors; anything else (a legacy `.pth`, a bare pickle, unknown bytes) is a
 * `CheckpointError` saying what the file is and what was expected. `file` names it in errors.
 *
 * @example
 * ```ts ignore
 * import { parseModelWeights } from "./mod.ts";
 * const ckpt = parseModelWeights(await Deno.readFile("checkpoint.pth"), "checkpoint.pth");
 * ```
 */
export function parseModelWeights(
  bytes: Uint8Array,
  file = "<checkpoint>",
  opts: PthOptions = {},
): ModelWeightsFile {
  const format = sniffFormat(bytes);
  if (format === "pth") {
    const f = parsePth(bytes, file, opts);
    return { format: "pth", tensors: f.tensors, sourceDtypes: f.torchDtypes, values: f.values, skipped: f.skipped };
  }
  if (format !== "safetensors") expectFormat(bytes, "checkpoint", file); // throws, saying what the bytes are
  const f = parseSafetensors(bytes, file);
  return {
    format: "safetensors",
    tensors: f.tensors,
    sourceDtypes: f.dtypes,
    values: new Map(Object.entries(f.metadata)),
    skipped: new Map(),
  };
}

/**
 * Reads the named tensors of a `.pth` (zip + pickle) or `.safetensors` weights file, told apart by their first
 * bytes (see `parseModelWeights`).
 *
 * @example
 * ```ts ignore
 * import { readModelWeights, stateDict } from "./mod.ts";
 * const ckpt = await readModelWeights("checkpoint.pth");
 * const teacher = stateDict(ckpt.tensors, "teacher");
 * ```
 */
export async function readModelWeights(path: string, opts: PthOptions = {}): Promise<ModelWeightsFile> {
  return parseModelWeights(await readCheckpointBytes(path), path, opts);
}

/** Options of `loadWeightsIntoModel`. */
export interface LoadWeightsOptions {
  /**
   * Only names starting with this prefix are considered, with it removed (e.g. `backbone.` for a teacher state
   * dict, `module.backbone.` for a raw student one). Others are ignored, not unexpected.
   */
  prefix?: string;
  /** Missing and unexpected keys are errors (default true). Wrong shapes always are. */
  strict?: boolean;
  /** Backend of the tensors made for `ParamSpec` leaves (default: the default backend). */
  backend?: Backend;
}

/** The tree type `loadWeightsIntoModel` returns: `T` with its `ParamSpec` leaves replaced by tensors. */
export type Loaded<T> = T extends ParamSpec | Tensor ? Tensor
  : T extends readonly (infer U)[] ? Loaded<U>[]
  : T extends object ? { [K in keyof T]: Loaded<T[K]> }
  : T;

/** A leaf of the expected tree: a tensor (its value is the fallback when non-strict) or a shape spec. */
type Expected = Tensor | ParamSpec;

const BUFFER = /(^|\.)relative_position_index$/;

function shapeOf(v: HostTensor | Tensor): readonly number[] {
  return v.shape;
}

const fmtShape = (s: readonly number[]) => `[${s.join(",")}]`;

async function hostData(v: HostTensor | Tensor): Promise<ArrayLike<number>> {
  return v instanceof Tensor ? await v.data() : v.data;
}

function convert(data: ArrayLike<number>, dtype: DType): HostArray {
  const out = allocHost(dtype, data.length);
  out.set(data);
  return out;
}

/**
 * Loads named tensors into the structure of `expected` (a tree of tensors or `ParamSpec`s, e.g. `initSwin(...)`
 * or `swinSpec(config)`), converting each to the expected leaf's dtype and backend. Every problem (missing,
 * unexpected or mis-shaped keys, a `relative_position_index` buffer that differs from the computed one) is
 * reported in ONE error that names each key with its shapes. `relative_position_index` buffers are not
 * parameters: they are checked, then dropped.
 *
 * @example
 * ```ts ignore
 * import { loadWeightsIntoModel, readModelWeights, stateDict, swinSpec, swinTiny } from "./mod.ts";
 * const ckpt = await readModelWeights("checkpoint.pth");
 * const backbone = await loadWeightsIntoModel(swinSpec(swinTiny(7, { maskedEmbed: false })),
 *   stateDict(ckpt.tensors, "teacher"), { prefix: "backbone." });
 * ```
 */
export async function loadWeightsIntoModel<T = unknown>(
  expected: T,
  named: NamedTensors,
  opts: LoadWeightsOptions = {},
): Promise<Loaded<T>> {
  const { prefix = "", strict = true } = opts;
  const backend = opts.backend ?? defaultBackend();
  const { def } = flatten<Expected>(expected);
  const want = paths<Expected>(expected);
  for (const [name, leaf] of want) {
    if (!(leaf instanceof Tensor || leaf instanceof ParamSpec)) {
      throw new TypeError(`loadWeightsIntoModel: the expected leaf '${name}' is neither a Tensor nor a ParamSpec`);
    }
  }
  const wantShape = new Map(want.map(([k, v]) => [k, v.shape]));
  const given = new Map<string, HostTensor | Tensor>();
  for (const [k, v] of named) if (k.startsWith(prefix)) given.set(k.slice(prefix.length), v);

  const problems = {
    missing: [] as string[],
    unexpected: [] as string[],
    shape: [] as string[],
    buffer: [] as string[],
  };
  for (const [k, v] of given) {
    if (BUFFER.test(k)) {
      const table = k.replace(BUFFER, "$1relative_position_bias_table");
      const ts = wantShape.get(table);
      if (!ts) {
        problems.unexpected.push(`${prefix}${k} ${fmtShape(shapeOf(v))} (a buffer without '${prefix}${table}')`);
        continue;
      }
      const ws = (Math.round(Math.sqrt(ts[0])) + 1) / 2;
      const ref = relativePositionIndex(ws);
      const data = await hostData(v);
      const n = ws * ws;
      const same = v.shape.length === 2 && v.shape[0] === n && v.shape[1] === n &&
        Array.prototype.every.call(data, (x: number, i: number) => x === ref[i]);
      if (!same) {
        problems.buffer.push(
          `${prefix}${k} ${fmtShape(v.shape)}: differs from the relative-position index of window ${ws} ([${n},${n}])`,
        );
      }
      continue;
    }
    const ws = wantShape.get(k);
    if (!ws) problems.unexpected.push(`${prefix}${k} ${fmtShape(shapeOf(v))}`);
    else if (fmtShape(ws) !== fmtShape(shapeOf(v))) {
      problems.shape.push(`${prefix}${k}: checkpoint ${fmtShape(shapeOf(v))}, model ${fmtShape(ws)}`);
    }
  }
  for (const [k, leaf] of want) {
    if (given.has(k)) continue;
    if (strict || !(leaf instanceof Tensor)) {
      problems.missing.push(`${prefix}${k} ${fmtShape(leaf.shape)}${strict ? "" : " (no initial value to keep)"}`);
    }
  }
  if (!strict) problems.unexpected = [];
  const lines: string[] = [];
  const section = (title: string, items: string[]) => {
    if (items.length) lines.push(`  ${title} (${items.length}):`, ...items.map((s) => `    ${s}`));
  };
  section("missing", problems.missing);
  section("unexpected", problems.unexpected);
  section("wrong shape", problems.shape);
  section("bad buffer", problems.buffer);
  if (lines.length) {
    throw new Error(
      `loadWeightsIntoModel: the checkpoint does not fit the model${prefix ? ` (prefix '${prefix}')` : ""}:\n${
        lines.join("\n")
      }`,
    );
  }

  const leaves = await Promise.all(want.map(async ([k, leaf]) => {
    const v = given.get(k);
    if (!v) return leaf as Tensor; // non-strict: keep the initial value
    const dtype = leaf.dtype;
    const target = leaf instanceof Tensor ? leaf.backend : backend;
    const dt: DType = target.supports(dtype) ? dtype : "float32";
    if (v instanceof Tensor && v.backend === target) return api.cast(v, dt);
    const data = await hostData(v);
    return fromHost(target, convert(data, dt), [...v.shape], dt);
  }));
  return unflatten<Loaded<T>>(def, leaves);
}

/**
 * Turns `[name, shape]` pairs (e.g. `vitParamShapes(config)`) into a tree of `ParamSpec`s for `loadWeightsIntoModel`.
 *
 * @example
 * ```ts
 * import { specFromShapes, vitParamShapes } from "./mod.ts";
 * const spec = specFromShapes(vitParamShapes({ arch: "vit_tiny", depth: 1 })); // a ParamSpec tree for loadWeightsIntoModel
 * ```
 */
export function specFromShapes(
  shapes: Iterable<readonly [string, readonly number[]]>,
  dtype: DType = "float32",
): unknown {
  return fromPaths([...shapes].map(([k, s]) => [k, new ParamSpec(s, dtype)] as const));
}

/** Options of `exportTeacherBackbone`. */
export interface ExportOptions {
  /** Add the `relative_position_index` buffers (int32) after each table, as the official state dict has (default true). */
  buffers?: boolean;
}

/**
 * The teacher's backbone under the official `checkpoint_teacher.pth` names: the keys of its `state_dict`
 * (spec §9.2), i.e. backbone keys without `backbone.`, in tree order. `teacher` is `{ backbone, head }` or a
 * bare backbone tree; `masked_embed` (student-only) is dropped; Swin `relative_position_index` buffers are added.
 *
 * @example
 * ```ts
 * import { exportTeacherBackbone, initSwin, random, swinTest } from "./mod.ts";
 * const named = exportTeacherBackbone({ backbone: initSwin(random.key(0), swinTest()) });
 * [...named.keys()][0]; // "patch_embed.proj.weight"
 * ```
 */
export function exportTeacherBackbone(teacher: unknown, opts: ExportOptions = {}): Map<string, Tensor> {
  const { buffers = true } = opts;
  const backbone = teacher !== null && typeof teacher === "object" && "backbone" in teacher
    ? (teacher as { backbone: unknown }).backbone
    : teacher;
  const out = new Map<string, Tensor>();
  for (const [k, t] of paths<unknown>(backbone)) {
    if (!(t instanceof Tensor)) throw new TypeError(`exportTeacherBackbone: '${k}' is not a tensor`);
    if (k === "masked_embed") continue;
    out.set(k, t);
    if (buffers && k.endsWith("relative_position_bias_table")) {
      const ws = (Math.round(Math.sqrt(t.shape[0])) + 1) / 2;
      const name = k.replace(/relative_position_bias_table$/, "relative_position_index");
      out.set(name, fromHost(t.backend, relativePositionIndex(ws).slice(), [ws * ws, ws * ws], "int32"));
    }
  }
  return out;
}

/**
 * Writes the teacher backbone as safetensors under the `checkpoint_teacher.pth` state-dict names (no prefix),
 * with metadata `{ format: "ibot checkpoint_teacher state_dict" }`.
 *
 * @example
 * ```ts ignore
 * import { saveTeacherBackbone } from "./mod.ts";
 * await saveTeacherBackbone(state.teacher, "out/checkpoint_teacher.safetensors", { epoch: "100" });
 * ```
 */
export async function saveTeacherBackbone(
  teacher: unknown,
  path: string,
  metadata: Record<string, string> = {},
): Promise<void> {
  const named = exportTeacherBackbone(teacher);
  await saveSafetensors(fromPaths([...named]), path, { format: "ibot checkpoint_teacher state_dict", ...metadata });
}

// The old names, kept one release: they did not say whether a "checkpoint" held model weights or a training state.

/** @deprecated Renamed `ModelWeightsFile`; this alias goes in the next release. */
export type CheckpointFile = ModelWeightsFile;
/** @deprecated Renamed `LoadWeightsOptions`; this alias goes in the next release. */
export type LoadIntoModelOptions = LoadWeightsOptions;
/** @deprecated Renamed `parseModelWeights`; this alias goes in the next release. */
export const parseCheckpoint: typeof parseModelWeights = parseModelWeights;
/** @deprecated Renamed `readModelWeights`; this alias goes in the next release. */
export const readCheckpoint: typeof readModelWeights = readModelWeights;
/** @deprecated Renamed `loadWeightsIntoModel`; this alias goes in the next release. */
export const loadIntoModel: typeof loadWeightsIntoModel = loadWeightsIntoModel;
