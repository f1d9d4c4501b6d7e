/**
 * Reading PyTorch `.pth` checkpoints (the zip format of `torch.save` since PyTorch 1.6): `<name>/data.pkl` is a
 * pickle whose tensors refer, through persistent ids, to raw little-endian storages `<name>/data/<key>`.
 *
 * A small unpickler (protocols 0–5) rebuilds dicts (as `Map`s), lists, tuples, scalars and tensors
 * (`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, parameters, tensor subclasses);
 * any other Python object (e.g. the `argparse.Namespace` of an iBOT checkpoint) becomes an opaque `PyObject`
 * and is skipped. Nested dicts flatten to dotted names (`student.module.backbone.cls_token`).
 *
 * @module
 */
import { bf16ToF32, f16ToF32 } from "./safetensors.ts";
import { unzipSync } from "npm:fflate@0.8.3";
import type { HostTensor } from "./safetensors.ts";
import type { DType } from "../ops/dtype.ts";

/**
 * A Python global (a class or function) referenced by the pickle.
 *
 * @example
 * ```ts
 * import { PyGlobal } from "./mod.ts";
 * console.log(String(new PyGlobal("argparse", "Namespace"))); // argparse.Namespace
 * ```
 */
export class PyGlobal {
  /** A reference to `module.name`. */
  constructor(readonly module: string, readonly name: string) {}
  /** `module.name`. */
  toString(): string {
    return `${this.module}.${this.name}`;
  }
}

/**
 * An opaque Python object: its class, constructor arguments, `__setstate__` state and dict/list items.
 *
 * @example
 * ```ts
 * import { PyGlobal, PyObject } from "./mod.ts";
 * const args = new PyObject(new PyGlobal("argparse", "Namespace"), []);
 * console.log(args.typeName); // argparse.Namespace
 * ```
 */
export class PyObject {
  /** The state passed by BUILD (`__setstate__`), e.g. a Namespace's attributes. */
  state: unknown = undefined;
  /** Items set by SETITEM(S) (dict subclasses). */
  readonly items: Map<unknown, unknown> = new Map();
  /** Items appended by APPEND(S) (list subclasses). */
  readonly list: unknown[] = [];
  /** An instance of `cls` built from `args`. */
  constructor(readonly cls: PyGlobal | unknown, readonly args: unknown[]) {}
  /** The Python type name, e.g. `argparse.Namespace`. */
  get typeName(): string {
    return this.cls instanceof PyGlobal ? this.cls.toString() : "object";
  }
}

/** A storage referenced by a persistent id: a raw byte file of the archive. */
export interface StorageRef {
  /** Tag of a storage. */
  readonly kind: "storage";
  /** Storage class name, e.g. `FloatStorage`. */
  readonly type: string;
  /** File name under `data/`. */
  readonly key: string;
  /** Element count as recorded by PyTorch. */
  readonly numel: number;
}

/**
 * A tensor as described by the pickle (a view of a storage).
 *
 * @example
 * ```ts
 * import { TorchTensor } from "./mod.ts";
 * const t = new TorchTensor({ kind: "storage", type: "FloatStorage", key: "0", numel: 6 }, 0, [2, 3], [3, 1]);
 * console.log(t.storageType, t.shape); // FloatStorage [2, 3]
 * ```
 */
export class TorchTensor {
  /** A view of `storage`: element offset, sizes and strides (in elements). */
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
  /** The storage's element type, e.g. `FloatStorage`. */
  get storageType(): string {
    return this.storage.type;
  }
}

/** Contents of a `.pth` file. */
export interface PthFile {
  /** Every tensor, by dotted path (dict keys and list indices), as host data. */
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

// ---------------------------------------------------------------------------------------------------------
// Unpickler

const MARK = Symbol("mark");

class Reader {
  pos = 0;
  private view: DataView;
  constructor(readonly bytes: Uint8Array, readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.bytes.byteLength) throw new Error(`${this.file}: truncated pickle at byte ${this.pos}`);
  }
  u8(): number {
    this.need(1);
    return this.bytes[this.pos++];
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = Number(this.view.getBigUint64(this.pos, true));
    this.pos += 8;
    return v;
  }
  f64be(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, false);
    this.pos += 8;
    return v;
  }
  take(n: number): Uint8Array {
    this.need(n);
    const b = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new Error(`${this.file}: truncated pickle (no end of line) at byte ${this.pos}`);
    const s = new TextDecoder("latin1").decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
}

const utf8 = new TextDecoder("utf-8");

/** Two's-complement little-endian integer of any width. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return narrow(v);
}

function narrow(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** A hashable JS key for a Python dict key (strings and numbers as is, anything else by a string form). */
function dictKey(k: unknown): unknown {
  if (typeof k === "string" || typeof k === "number" || typeof k === "bigint" || typeof k === "boolean") return k;
  if (k === null) return "None";
  if (Array.isArray(k)) return `(${k.map((x) => String(dictKey(x))).join(", ")})`;
  return String(k);
}

/** Applies a Python callable to arguments: the few that matter are interpreted, the rest become `PyObject`s. */
function call(fn: unknown, args: unknown[], file: string): unknown {
  if (!(fn instanceof PyGlobal)) return new PyObject(fn, args);
  const name = fn.toString();
  switch (name) {
    case "collections.OrderedDict":
    case "builtins.dict":
    case "__builtin__.dict": {
      const m = new Map<unknown, unknown>();
      const init = args[0];
      if (Array.isArray(init)) { for (const [k, v] of init as [unknown, unknown][]) m.set(dictKey(k), v); }
      return m;
    }
    case "torch._utils._rebuild_tensor":
    case "torch._utils._rebuild_tensor_v2": {
      const [storage, offset, size, stride] = args as [StorageRef, number, number[], number[]];
      if (!storage || (storage as StorageRef).kind !== "storage") {
        throw new Error(`${file}: ${name} without a storage persistent id`);
      }
      return new TorchTensor(storage, Number(offset), (size as number[]).map(Number), (stride as number[]).map(Number));
    }
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      return args[0];
    case "torch._tensor._rebuild_from_type":
    case "torch._tensor._rebuild_from_type_v2": {
      const [func, , fargs] = args as [unknown, unknown, unknown[]];
      return call(func, fargs ?? [], file);
    }
    case "builtins.set":
    case "builtins.frozenset":
    case "builtins.list":
    case "builtins.tuple":
      return Array.isArray(args[0]) ? [...(args[0] as unknown[])] : [];
  }
  return new PyObject(fn, args);
}

/**
 * Unpickles `bytes`; persistent ids go through `persistentLoad`.
 *
 * @example
 * ```ts
 * import { unpickle } from "./mod.ts";
 * // pickle.dumps(1, protocol=2)
 * console.log(unpickle(new Uint8Array([0x80, 2, 0x4b, 1, 0x2e]), () => null)); // 1
 * ```
 */
export function unpickle(bytes: Uint8Array, persistentLoad: (pid: unknown) => unknown, file = "<pickle>"): unknown {
  const r = new Reader(bytes, file);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw new Error(`${file}: pickle MARK not found at byte ${r.pos}`);
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const top = () => {
    if (stack.length === 0) throw new Error(`${file}: empty pickle stack at byte ${r.pos}`);
    return stack[stack.length - 1];
  };
  const pop = () => {
    if (stack.length === 0) throw new Error(`${file}: empty pickle stack at byte ${r.pos}`);
    return stack.pop();
  };
  const setItems = (target: unknown, kv: unknown[]) => {
    const m = target instanceof Map ? target : target instanceof PyObject ? target.items : null;
    if (!m) throw new Error(`${file}: SETITEM(S) on a non-dict at byte ${r.pos}`);
    for (let i = 0; i + 1 < kv.length; i += 2) m.set(dictKey(kv[i]), kv[i + 1]);
  };
  const appendItems = (target: unknown, items: unknown[]) => {
    if (Array.isArray(target)) target.push(...items);
    else if (target instanceof PyObject) target.list.push(...items);
    else throw new Error(`${file}: APPEND(S) on a non-list at byte ${r.pos}`);
  };
  const stringArg = (s: string) => {
    // Protocol-0 STRING: a Python repr in quotes.
    const q = s[0];
    if ((q === "'" || q === '"') && s.endsWith(q)) return s.slice(1, -1);
    return s;
  };
  for (;;) {
    const at = r.pos;
    const op = r.u8();
    switch (op) {
      case 0x80: // PROTO
        r.u8();
        break;
      case 0x95: // FRAME
        r.u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(r.i32());
        break;
      case 0x4b: // BININT1
        stack.push(r.u8());
        break;
      case 0x4d: // BININT2
        stack.push(r.u16());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(r.take(r.u8())));
        break;
      case 0x8b: // LONG4
        stack.push(decodeLong(r.take(r.i32())));
        break;
      case 0x49: { // INT
        const s = r.line();
        stack.push(s === "01" ? true : s === "00" ? false : narrow(BigInt(s)));
        break;
      }
      case 0x4c: // LONG
        stack.push(narrow(BigInt(r.line().replace(/L$/, ""))));
        break;
      case 0x46: // FLOAT
        stack.push(parseFloat(r.line()));
        break;
      case 0x47: // BINFLOAT
        stack.push(r.f64be());
        break;
      case 0x58: // BINUNICODE
        stack.push(utf8.decode(r.take(r.u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8.decode(r.take(r.u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8.decode(r.take(r.u64())));
        break;
      case 0x56: // UNICODE (raw-unicode-escape; ASCII in practice)
        stack.push(r.line());
        break;
      case 0x53: // STRING
        stack.push(stringArg(r.line()));
        break;
      case 0x54: // BINSTRING
        stack.push(new TextDecoder("latin1").decode(r.take(r.i32())));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(new TextDecoder("latin1").decode(r.take(r.u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(r.take(r.u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(r.take(r.u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(r.take(r.u64()).slice());
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: { // DICT
        const m = new Map();
        setItems(m, popMark());
        stack.push(m);
        break;
      }
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x90: { // ADDITEMS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x91: // FROZENSET
        stack.push(popMark());
        break;
      case 0x61: { // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x70: // PUT
        memo.set(Number(r.line()), top());
        break;
      case 0x71: // BINPUT
        memo.set(r.u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(r.u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x67: // GET
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const i = op === 0x67 ? Number(r.line()) : op === 0x68 ? r.u8() : r.u32();
        if (!memo.has(i)) throw new Error(`${file}: pickle memo ${i} missing at byte ${at}`);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: { // GLOBAL
        const module = r.line();
        stack.push(new PyGlobal(module, r.line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop() as string;
        stack.push(new PyGlobal(pop() as string, name));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop() as unknown[];
        const fn = pop();
        stack.push(call(fn, Array.isArray(args) ? args : [args], file));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop() as unknown[];
        const cls = pop();
        stack.push(call(cls, Array.isArray(args) ? args : [], file));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        pop(); // kwargs
        const args = pop() as unknown[];
        const cls = pop();
        stack.push(call(cls, Array.isArray(args) ? args : [], file));
        break;
      }
      case 0x69: { // INST
        const module = r.line();
        const name = r.line();
        stack.push(call(new PyGlobal(module, name), popMark(), file));
        break;
      }
      case 0x6f: { // OBJ
        const items = popMark();
        const cls = items.shift();
        stack.push(call(cls, items, file));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const obj = top();
        if (obj instanceof PyObject) obj.state = state;
        // Tensors and dicts ignore their state (tensor metadata, OrderedDict attributes).
        break;
      }
      case 0x50: // PERSID
        stack.push(persistentLoad(r.line()));
        break;
      case 0x51: // BINPERSID
        stack.push(persistentLoad(pop()));
        break;
      case 0x82: // EXT1
      case 0x83: // EXT2
      case 0x84: { // EXT4
        const code = op === 0x82 ? r.u8() : op === 0x83 ? r.u16() : r.i32();
        stack.push(new PyGlobal("copyreg.extension", String(code)));
        break;
      }
      case 0x97: // NEXT_BUFFER
      case 0x98: // READONLY_BUFFER
        throw new Error(`${file}: out-of-band pickle buffers are not supported (byte ${at})`);
      default:
        throw new Error(`${file}: unknown pickle opcode 0x${op.toString(16)} at byte ${at}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Storages and tensors

/** Element width and decoder of each storage type. */
const STORAGES: Record<string, { bytes: number; torch: string }> = {
  FloatStorage: { bytes: 4, torch: "float32" },
  DoubleStorage: { bytes: 8, torch: "float64" },
  HalfStorage: { bytes: 2, torch: "float16" },
  BFloat16Storage: { bytes: 2, torch: "bfloat16" },
  LongStorage: { bytes: 8, torch: "int64" },
  IntStorage: { bytes: 4, torch: "int32" },
  ShortStorage: { bytes: 2, torch: "int16" },
  CharStorage: { bytes: 1, torch: "int8" },
  ByteStorage: { bytes: 1, torch: "uint8" },
  BoolStorage: { bytes: 1, torch: "bool" },
  UntypedStorage: { bytes: 1, torch: "uint8" },
};

/**
 * Copies a (possibly strided, offset) tensor view out of its storage bytes into a contiguous host tensor:
 * float16/bfloat16 widen to float32, int64 narrows to int32 when every value fits (else float64), small ints
 * widen to int32.
 */
function materialize(t: TorchTensor, raw: Uint8Array, name: string, file: string): [HostTensor, string] {
  const info = STORAGES[t.storage.type];
  if (!info) throw new Error(`${file}: '${name}' uses the unsupported storage type ${t.storage.type}`);
  const n = t.shape.reduce((a, b) => a * b, 1);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const count = raw.byteLength / info.bytes;
  const rank = t.shape.length;
  // Row-major contiguous views (the common case) index the storage directly; others get an index table.
  let contiguous = true;
  for (let d = rank - 1, expect = 1; d >= 0; d--) {
    if (t.shape[d] !== 1 && t.stride[d] !== expect) contiguous = false;
    expect *= t.shape[d];
  }
  let src: Float64Array | null = null;
  let maxIdx = t.offset + n - 1;
  if (!contiguous) {
    src = new Float64Array(n);
    maxIdx = -1;
    const coord = new Array(rank).fill(0);
    for (let i = 0; i < n; i++) {
      let off = t.offset;
      for (let d = 0; d < rank; d++) off += coord[d] * t.stride[d];
      src[i] = off;
      if (off > maxIdx) maxIdx = off;
      for (let d = rank - 1; d >= 0; d--) {
        if (++coord[d] < t.shape[d]) break;
        coord[d] = 0;
      }
    }
  }
  if (n > 0 && (maxIdx >= count || t.offset < 0)) {
    throw new Error(
      `${file}: '${name}' [${t.shape}] stride [${t.stride}] offset ${t.offset} overruns its storage of ${count} elements`,
    );
  }
  const at = (i: number) => (src ? src[i] : t.offset + i);
  const out = (dtype: DType, get: (byteOff: number) => number): HostTensor => {
    const data = dtype === "float32"
      ? new Float32Array(n)
      : dtype === "float64"
      ? new Float64Array(n)
      : dtype === "bool"
      ? new Uint8Array(n)
      : new Int32Array(n);
    for (let i = 0; i < n; i++) data[i] = get(at(i) * info.bytes);
    return { dtype, shape: [...t.shape], data };
  };
  const kind = info.torch;
  switch (kind) {
    case "float32":
      if (!src && (raw.byteOffset + t.offset * 4) % 4 === 0) {
        const data = new Float32Array(raw.buffer, raw.byteOffset + t.offset * 4, n).slice();
        return [{ dtype: "float32", shape: [...t.shape], data }, kind];
      }
      return [out("float32", (o) => view.getFloat32(o, true)), kind];
    case "float64":
      return [out("float64", (o) => view.getFloat64(o, true)), kind];
    case "float16":
      return [out("float32", (o) => f16ToF32(view.getUint16(o, true))), kind];
    case "bfloat16":
      return [out("float32", (o) => bf16ToF32(view.getUint16(o, true))), kind];
    case "int64": {
      let fits = true;
      for (let i = 0; i < n && fits; i++) {
        const v = view.getBigInt64(at(i) * 8, true);
        fits = v <= 2147483647n && v >= -2147483648n;
      }
      return [out(fits ? "int32" : "float64", (o) => Number(view.getBigInt64(o, true))), kind];
    }
    case "int32":
      return [out("int32", (o) => view.getInt32(o, true)), kind];
    case "int16":
      return [out("int32", (o) => view.getInt16(o, true)), kind];
    case "int8":
      return [out("int32", (o) => view.getInt8(o)), kind];
    case "uint8":
      return [out("int32", (o) => view.getUint8(o)), kind];
    case "bool":
      return [out("bool", (o) => (view.getUint8(o) ? 1 : 0)), kind];
  }
  throw new Error(`${file}: '${name}' has unsupported dtype ${kind}`);
}

/** True when the bytes start like a zip archive (`PK\x03\x04`). */
export function isZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}

/**
 * Parses the bytes of a `.pth` file; `file` names it in errors.
 *
 * @example
 * ```ts ignore
 * import { parsePth } from "./mod.ts";
 * const pth = parsePth(await Deno.readFile("checkpoint.pth"), "checkpoint.pth");
 * console.log(pth.tensors.size, [...pth.skipped.keys()]);
 * ```
 */
export function parsePth(bytes: Uint8Array, file = "<pth>"): PthFile {
  if (!isZip(bytes)) {
    throw new Error(
      `${file}: not a zip-format PyTorch checkpoint (legacy pre-1.6 torch.save files are not supported; ` +
        "re-save with a recent PyTorch)",
    );
  }
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes);
  } catch (e) {
    throw new Error(`${file}: corrupt zip archive (${(e as Error).message})`);
  }
  const pkl = Object.keys(entries).find((k) => k === "data.pkl" || k.endsWith("/data.pkl"));
  if (!pkl) throw new Error(`${file}: no data.pkl in the archive`);
  const base = pkl.slice(0, -"data.pkl".length);
  const order = entries[`${base}byteorder`];
  if (order && new TextDecoder().decode(order).trim() === "big") {
    throw new Error(`${file}: big-endian storages are not supported`);
  }
  const root = unpickle(entries[pkl], (pid) => {
    if (!Array.isArray(pid) || pid[0] !== "storage") throw new Error(`${file}: unknown persistent id ${String(pid)}`);
    const [, type, key, , numel] = pid as [string, unknown, string, string, number];
    const typeName = type instanceof PyGlobal ? type.name : String(type);
    return { kind: "storage", type: typeName, key: String(key), numel: Number(numel) } satisfies StorageRef;
  }, `${file}:${pkl}`);

  const result: PthFile = { tensors: new Map(), torchDtypes: new Map(), values: new Map(), skipped: new Map(), root };
  const seen = new Set<unknown>();
  const walk = (x: unknown, name: string) => {
    const child = (k: unknown) => (name ? `${name}.${String(k)}` : String(k));
    if (x instanceof TorchTensor) {
      const raw = entries[`${base}data/${x.storage.key}`];
      if (!raw) throw new Error(`${file}: '${name}' refers to the missing storage data/${x.storage.key}`);
      const [host, torchDtype] = materialize(x, raw, name, file);
      result.tensors.set(name, host);
      result.torchDtypes.set(name, torchDtype);
    } else if (x instanceof Map) {
      if (seen.has(x)) return;
      seen.add(x);
      for (const [k, v] of x) walk(v, child(k));
    } else if (Array.isArray(x)) {
      if (seen.has(x)) return;
      seen.add(x);
      x.forEach((v, i) => walk(v, child(i)));
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
  walk(root, "");
  return result;
}

/**
 * Reads a `.pth` checkpoint into named host tensors (dotted paths), scalar values and the names of skipped
 * objects.
 *
 * @example
 * ```ts ignore
 * import { loadPth, stateDict } from "./mod.ts";
 * const ckpt = await loadPth("checkpoint.pth");
 * const teacher = stateDict(ckpt.tensors, "teacher"); // backbone.*, head.* (a leading `module.` removed)
 * ```
 */
export async function loadPth(path: string): Promise<PthFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`loadPth: cannot read '${path}': ${(e as Error).message}`);
  }
  return parsePth(bytes, path);
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
