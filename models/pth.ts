/**
 * Reading PyTorch `.pth` checkpoints (the zip format of `torch.save` since PyTorch 1.6): `<name>/data.pkl` is a
 * pickle whose tensors refer, through persistent ids, to raw little-endian storages `<name>/data/<key>`.
 *
 * The pickle is read by the safe unpickler of `pickle.ts`, which allows only the globals a weights file needs
 * (torch storages and tensor rebuilders, `collections.OrderedDict`, `argparse.Namespace`, ...) and refuses any
 * other unless `skipUnknownGlobals` is set. Tensors become host tensors; other Python objects (e.g. the
 * `argparse.Namespace` of an iBOT checkpoint) are listed as skipped. Nested dicts flatten to dotted names
 * (`student.module.backbone.cls_token`).
 *
 * Nothing is trusted (`torch_storage.ts`): a storage is read (inflated) once, only when a tensor that refers to
 * it is materialised; each view's extent is checked against its storage; identical views share one host tensor,
 * and the distinct views of a storage may together read at most twice its size, so a small file cannot claim
 * gigabytes.
 *
 * @module
 */
import type { HostTensor } from "./safetensors.ts";
import { CheckpointError, expectFormat, readCheckpointBytes } from "./format.ts";
import { PyGlobal, PyObject, unpickle } from "./pickle.ts";
import { ZipArchive } from "./zip.ts";
import { Materializer, MAX_RANK, type StorageRef, STORAGES, TorchTensor } from "./torch_storage.ts";

export { PyGlobal, PyObject, unpickle, type UnpickleOptions } from "./pickle.ts";
export { type StorageRef, TorchTensor } from "./torch_storage.ts";

/** Contents of a `.pth` file. */
export interface PthFile {
  /** Every tensor, by dotted path (dict keys and list indices), as host data; identical views share one. */
  tensors: Map<string, HostTensor>;
  /** The original PyTorch dtype of each tensor (`float16`, `int64`, ...). */
  torchDtypes: Map<string, string>;
  /** Scalars and strings (e.g. `epoch`). */
  values: Map<string, number | string | boolean | bigint | null>;
  /** Objects that are not tensors, dicts, lists or scalars, with their Python type (e.g. `args`). */
  skipped: Map<string, string>;
  /** The unpickled root object. */
  root: unknown;
}

/** Options of `parsePth` and `loadPth`. */
export interface PthOptions {
  /**
   * Keep Python globals outside the allowlist of a weights file (e.g. `numpy.core.multiarray.scalar`, or a
   * hostile `posix.system`) as opaque skipped objects instead of refusing the file. Nothing is ever executed
   * either way; default false, like `torch.load(weights_only=True)`.
   */
  skipUnknownGlobals?: boolean;
}

const MAX_NESTING = 256;

/** Globals a weights file may reference beyond those interpreted here (calling one gives a skipped object). */
const ALLOWED = [
  "argparse.Namespace",
  "torch.Tensor",
  "torch.nn.parameter.Parameter",
  ...Object.keys(STORAGES).map((s) => `torch.${s}`),
];

/** The torch callables that rebuild tensors, interpreted (never run). */
function torchCallables(file: string): Map<string, (args: unknown[]) => unknown> {
  const m = new Map<string, (args: unknown[]) => unknown>();
  const rebuild = (name: string) => (args: unknown[]) => {
    const [storage, offset, size, stride] = args;
    if (!storage || (storage as StorageRef).kind !== "storage") {
      throw new CheckpointError(`${file}: ${name} without a storage persistent id`);
    }
    if (!Array.isArray(size) || !Array.isArray(stride) || size.length > MAX_RANK || stride.length > MAX_RANK) {
      throw new CheckpointError(`${file}: ${name} whose size or stride is not a tuple of at most ${MAX_RANK} ints`);
    }
    return new TorchTensor(storage as StorageRef, Number(offset), size.map(Number), stride.map(Number));
  };
  m.set("torch._utils._rebuild_tensor", rebuild("torch._utils._rebuild_tensor"));
  m.set("torch._utils._rebuild_tensor_v2", rebuild("torch._utils._rebuild_tensor_v2"));
  m.set("torch._utils._rebuild_parameter", (args) => args[0]);
  m.set("torch._utils._rebuild_parameter_with_state", (args) => args[0]);
  m.set("torch.Size", (args) => Array.isArray(args[0]) ? args[0].slice(0, MAX_RANK) : []);
  const fromType = (args: unknown[]) => {
    // (func, new_type, args, state): a tensor subclass; func is itself an allowed global.
    const [func, , fargs] = args as [unknown, unknown, unknown];
    const inner = func instanceof PyGlobal ? m.get(func.toString()) : undefined;
    if (!inner) return new PyObject(func, Array.isArray(fargs) ? fargs : []);
    return inner(Array.isArray(fargs) ? fargs : []);
  };
  m.set("torch._tensor._rebuild_from_type", fromType);
  m.set("torch._tensor._rebuild_from_type_v2", fromType);
  return m;
}

/** The persistent id of a storage: `('storage', torch.FloatStorage, key, location, numel)`. */
function storageLoader(file: string): (pid: unknown) => StorageRef {
  const byKey = new Map<string, StorageRef>();
  return (pid) => {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
      throw new CheckpointError(`${file}: unknown persistent id ${String(pid).slice(0, 80)}`);
    }
    const [, type, key, , numel] = pid as [string, unknown, unknown, unknown, unknown];
    const typeName = type instanceof PyGlobal ? type.name : String(type);
    if (!STORAGES[typeName]) throw new CheckpointError(`${file}: unsupported storage type ${String(type)}`);
    const n = Number(numel);
    if (typeof key !== "string" || !Number.isSafeInteger(n) || n < 0) {
      throw new CheckpointError(`${file}: malformed storage persistent id (key ${String(key)}, numel ${numel})`);
    }
    const known = byKey.get(key);
    if (known && (known.type !== typeName || known.numel !== n)) {
      throw new CheckpointError(`${file}: storage data/${key} is declared twice, differently`);
    }
    const ref = known ?? { kind: "storage", type: typeName, key, numel: n } satisfies StorageRef;
    byKey.set(key, ref);
    return ref;
  };
}

/**
 * Parses the bytes of a `.pth` file; `file` names it in errors. Throws a `CheckpointError` for a file that is
 * not a zip-format checkpoint, is corrupt, claims more data than it holds, or references a Python global
 * outside the allowlist (unless `opts.skipUnknownGlobals`).
 *
 * @example
 * ```ts ignore
 * import { parsePth } from "./mod.ts";
 * const pth = parsePth(await Deno.readFile("checkpoint.pth"), "checkpoint.pth");
 * console.log(pth.tensors.size, [...pth.skipped.keys()]);
 * ```
 */
export function parsePth(bytes: Uint8Array, file = "<pth>", opts: PthOptions = {}): PthFile {
  expectFormat(bytes, "pth", file);
  const zip = new ZipArchive(bytes, file);
  const pkl = [...zip.entries.keys()].find((k) => k === "data.pkl" || /^[^/]+\/data\.pkl$/.test(k));
  if (!pkl) throw new CheckpointError(`${file}: no data.pkl in the archive`);
  const base = pkl.slice(0, -"data.pkl".length);
  const order = zip.entries.get(`${base}byteorder`);
  if (order && order.size <= 16 && new TextDecoder().decode(zip.read(order)).trim() === "big") {
    throw new CheckpointError(`${file}: big-endian storages are not supported`);
  }
  const root = unpickle(zip.read(zip.entries.get(pkl)!), storageLoader(file), `${file}:${pkl}`, {
    callables: torchCallables(file),
    allowed: ALLOWED,
    skipUnknownGlobals: opts.skipUnknownGlobals,
  });

  const result: PthFile = { tensors: new Map(), torchDtypes: new Map(), values: new Map(), skipped: new Map(), root };
  const tensors = new Materializer(zip, base, file);
  const seen = new Set<unknown>();
  const walk = (x: unknown, name: string, depth: number) => {
    if (depth > MAX_NESTING) throw new CheckpointError(`${file}: '${name.slice(0, 80)}...' nests too deep`);
    const child = (k: unknown) => (name ? `${name}.${String(k)}` : String(k));
    if (x instanceof TorchTensor) {
      const [host, torchDtype] = tensors.tensor(x, name);
      result.tensors.set(name, host);
      result.torchDtypes.set(name, torchDtype);
    } else if (x instanceof Map) {
      if (seen.has(x)) return;
      seen.add(x);
      for (const [k, v] of x) walk(v, child(k), depth + 1);
    } else if (Array.isArray(x)) {
      if (seen.has(x)) return;
      seen.add(x);
      x.forEach((v, i) => walk(v, child(i), depth + 1));
    } else if (x instanceof PyObject) {
      result.skipped.set(name, x.typeName);
    } else if (x instanceof PyGlobal) {
      result.skipped.set(name, `<global ${x}>`);
    } else if (x instanceof Uint8Array) {
      result.skipped.set(name, `bytes[${x.length}]`);
    } else if (
      x === null || typeof x === "number" || typeof x === "string" || typeof x === "boolean" ||
      typeof x === "bigint"
    ) {
      result.values.set(name, x);
    } else {
      result.skipped.set(name, typeof x);
    }
  };
  walk(root, "", 0);
  return result;
}

/**
 * Reads a `.pth` checkpoint into named host tensors (dotted paths), scalar values and the names of skipped
 * objects. See `parsePth` for what is refused.
 *
 * @example
 * ```ts ignore
 * import { loadPth, stateDict } from "./mod.ts";
 * const ckpt = await loadPth("checkpoint.pth");
 * const teacher = stateDict(ckpt.tensors, "teacher"); // backbone.*, head.* (a leading `module.` removed)
 * ```
 */
export async function loadPth(path: string, opts: PthOptions = {}): Promise<PthFile> {
  return parsePth(await readCheckpointBytes(path), path, opts);
}

/**
 * The entries under `key.` (e.g. `teacher`, `student`, `state_dict`), with that prefix and then a leading
 * `module.` (DistributedDataParallel) removed. An empty key strips only `module.`.
 *
 * @example
 * ```ts
 * import { stateDict } from "./mod.ts";
 * const named = new Map([["teacher.module.backbone.cls_token", 1], ["student.backbone.cls_token", 2]]);
 * console.log(stateDict(named, "teacher")); // Map { "backbone.cls_token" => 1 }
 * ```
 */
export function stateDict<T>(named: ReadonlyMap<string, T>, key: string): Map<string, T> {
  const prefix = key ? `${key}.` : "";
  const out = new Map<string, T>();
  for (const [k, v] of named) {
    if (!k.startsWith(prefix)) continue;
    const rest = k.slice(prefix.length);
    out.set(rest.startsWith("module.") ? rest.slice("module.".length) : rest, v);
  }
  return out;
}
