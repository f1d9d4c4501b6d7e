/**
 * A small, safe unpickler (protocols 0–5): it rebuilds dicts (as `Map`s), lists, tuples and scalars, and never
 * runs code. Python globals are checked against an allowlist as they are referenced (like
 * `torch.load(weights_only=True)`): an unknown one (`posix.system`, `builtins.eval`) is refused with its name,
 * unless the caller opts in to keep it as an opaque `PyObject`. Every length and count read from the stream is
 * checked against what remains, so a hostile pickle fails fast instead of looping or allocating.
 *
 * @module
 */
import { CheckpointError } from "./format.ts";
import { decodeLong, MAX_LONG_BYTES, narrow, Reader, SIZED } from "./pickle_reader.ts";

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

/** Options of `unpickle`. */
export interface UnpickleOptions {
  /** Callables the caller interprets (by `module.name`), e.g. torch's tensor rebuilders. */
  callables?: ReadonlyMap<string, (args: unknown[]) => unknown>;
  /** Further globals that may be referenced; calling one gives an opaque `PyObject` (e.g. `argparse.Namespace`). */
  allowed?: Iterable<string>;
  /** Keep globals outside the allowlist as opaque objects instead of refusing the pickle (default false). */
  skipUnknownGlobals?: boolean;
}

/** Globals the unpickler itself interprets: dict and set constructors. */
const BUILTIN_GLOBALS = [
  "collections.OrderedDict",
  "builtins.set",
  "builtins.frozenset",
  "__builtin__.set",
  "__builtin__.frozenset",
];

// A dict key's string form; tuples of tuples that share items could otherwise grow exponentially.
const MAX_KEY_CHARS = 4096;

/** A hashable JS key for a Python dict key: strings and numbers as is, tuples by a bounded string form. */
function dictKey(k: unknown, file: string): unknown {
  if (typeof k === "string" || typeof k === "number" || typeof k === "bigint" || typeof k === "boolean") return k;
  if (k === null) return "None";
  let out = "";
  const visit = (x: unknown) => {
    if (out.length > MAX_KEY_CHARS) {
      throw new CheckpointError(`${file}: a pickle dict key is longer than ${MAX_KEY_CHARS} characters`);
    }
    if (Array.isArray(x)) {
      out += "(";
      x.forEach((y, i) => {
        if (i) out += ", ";
        visit(y);
      });
      out += ")";
    } else if (x instanceof PyObject) out += `<${x.typeName}>`;
    else out += x === null ? "None" : String(x);
  };
  visit(k);
  return out;
}

/**
 * Unpickles `bytes`; persistent ids go through `persistentLoad`. Globals outside the allowlist (dict and set
 * constructors, plus `opts.callables` and `opts.allowed`) are refused unless `opts.skipUnknownGlobals`.
 *
 * @example
 * ```ts
 * import { unpickle } from "./mod.ts";
 * // pickle.dumps(1, protocol=2)
 * console.log(unpickle(new Uint8Array([0x80, 2, 0x4b, 1, 0x2e]), () => null)); // 1
 * ```
 */
export function unpickle(
  bytes: Uint8Array,
  persistentLoad: (pid: unknown) => unknown,
  file = "<pickle>",
  opts: UnpickleOptions = {},
): unknown {
  const r = new Reader(bytes, file);
  const callables = opts.callables ?? new Map();
  const allowed = new Set([...BUILTIN_GLOBALS, ...callables.keys(), ...(opts.allowed ?? [])]);
  const fail = (what: string, at = r.pos): never => {
    throw new CheckpointError(`${file}: ${what} at byte ${at}`);
  };
  // Copies made by interpreted constructors (a memoised list passed to OrderedDict again and again would
  // otherwise cost its length per 3-byte call): bounded in proportion to the pickle's size.
  let copied = 0;
  const copyLimit = 4 * bytes.length + 100_000;
  const copy = <T>(items: T[], at: number): T[] => {
    copied += items.length;
    if (copied > copyLimit) fail(`pickle builds more than ${copyLimit} items from ${bytes.length} bytes`, at);
    return [...items];
  };
  const stack: unknown[] = [];
  const marks: number[] = []; // stack heights at each MARK
  const memo = new Map<number, unknown>();
  const popMark = (): unknown[] => {
    const i = marks.pop();
    if (i === undefined) return fail("pickle MARK not found");
    return stack.splice(i);
  };
  const top = () => {
    if (stack.length === 0 || (marks.length && marks[marks.length - 1] === stack.length)) {
      return fail("empty pickle stack");
    }
    return stack[stack.length - 1];
  };
  const pop = () => {
    const v = top();
    stack.pop();
    return v;
  };
  const setItems = (target: unknown, kv: unknown[]) => {
    const m = target instanceof Map ? target : target instanceof PyObject ? target.items : null;
    if (!m) fail("SETITEM(S) on a non-dict");
    for (let i = 0; i + 1 < kv.length; i += 2) m!.set(dictKey(kv[i], file), kv[i + 1]);
  };
  const appendItems = (target: unknown, items: unknown[]) => {
    const list = Array.isArray(target) ? target : target instanceof PyObject ? target.list : null;
    if (!list) fail("APPEND(S) on a non-list");
    for (const x of items) list!.push(x);
  };
  const global = (module: string, name: string, at: number): PyGlobal => {
    const g = new PyGlobal(module, name);
    const id = g.toString();
    if (!allowed.has(id) && !opts.skipUnknownGlobals) {
      throw new CheckpointError(
        `${file}: the pickle references '${id}' (byte ${at}), which is not on the allowlist of a weights file; ` +
          "refused (opt in with skipUnknownGlobals / --allow-unknown-globals to keep it as an opaque object)",
      );
    }
    return g;
  };
  const call = (fn: unknown, args: unknown, at: number): unknown => {
    if (!Array.isArray(args)) return fail("a call whose arguments are not a tuple", at);
    if (!(fn instanceof PyGlobal)) {
      // Calling an object that is not a global (a list, a dict, ...) is not something pickle does for data.
      if (opts.skipUnknownGlobals) return new PyObject(fn, args as unknown[]);
      return fail("a call of something that is not a class or function", at);
    }
    const id = fn.toString();
    const interpret = callables.get(id);
    if (interpret) return interpret(args as unknown[]);
    switch (id) {
      case "collections.OrderedDict": {
        const m = new Map<unknown, unknown>();
        const init = (args as unknown[])[0];
        if (Array.isArray(init)) {
          for (const kv of copy(init, at)) if (Array.isArray(kv) && kv.length === 2) m.set(dictKey(kv[0], file), kv[1]);
        }
        return m;
      }
      case "builtins.set":
      case "builtins.frozenset":
      case "__builtin__.set":
      case "__builtin__.frozenset": {
        const init = (args as unknown[])[0];
        return Array.isArray(init) ? copy(init, at) : [];
      }
    }
    return new PyObject(fn, args as unknown[]);
  };
  const str = (x: unknown, what: string): string => typeof x === "string" ? x : fail(`${what} is not a string`);
  for (;;) {
    const at = r.pos;
    const op = r.u8();
    switch (op) {
      case 0x80: { // PROTO
        const p = r.u8();
        if (p > 5) fail(`unsupported pickle protocol ${p}`, at);
        break;
      }
      case 0x95: { // FRAME: only its length is checked, frames are read as one stream
        const n = r.u64();
        r.need(n, "FRAME");
        break;
      }
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x30: // POP
        if (marks.length && marks[marks.length - 1] === stack.length) popMark();
        else pop();
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
      case 0x8b: { // LONG4
        const n = op === 0x8a ? r.u8() : r.i32();
        if (n > MAX_LONG_BYTES && n <= r.left) fail(`pickle LONG of ${n} bytes (more than ${MAX_LONG_BYTES})`, at);
        stack.push(decodeLong(r.take(n, "LONG")));
        break;
      }
      case 0x49: { // INT ("01" and "00" are True and False)
        const s = r.line();
        stack.push(s === "01" ? true : s === "00" ? false : narrow(r.parseInt(s, at)));
        break;
      }
      case 0x4c: // LONG
        stack.push(narrow(r.intLine()));
        break;
      case 0x46: // FLOAT
        stack.push(parseFloat(r.line()));
        break;
      case 0x47: // BINFLOAT
        stack.push(r.f64be());
        break;
      case 0x56: // UNICODE (raw-unicode-escape; ASCII in practice)
        stack.push(r.line());
        break;
      case 0x53: { // STRING: a Python repr in quotes
        const s = r.line();
        const q = s[0];
        stack.push((q === "'" || q === '"') && s.length >= 2 && s.endsWith(q) ? s.slice(1, -1) : s);
        break;
      }
      case 0x29: // EMPTY_TUPLE
      case 0x5d: // EMPTY_LIST
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x74: // TUPLE
      case 0x6c: // LIST
      case 0x91: // FROZENSET
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
      case 0x90: // ADDITEMS
      case 0x65: { // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        appendItems(top(), [v]);
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
        memo.set(Number(r.intLine()), top());
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
        const i = op === 0x67 ? Number(r.intLine()) : op === 0x68 ? r.u8() : r.u32();
        if (!memo.has(i)) fail(`pickle memo ${i} missing`, at);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: { // GLOBAL
        const module = r.line();
        stack.push(global(module, r.line(), at));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = str(pop(), "STACK_GLOBAL name");
        stack.push(global(str(pop(), "STACK_GLOBAL module"), name, at));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        stack.push(call(pop(), args, at));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop();
        stack.push(call(pop(), args, at));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        pop(); // kwargs
        const args = pop();
        stack.push(call(pop(), args, at));
        break;
      }
      case 0x69: { // INST
        const module = r.line();
        const g = global(module, r.line(), at);
        stack.push(call(g, popMark(), at));
        break;
      }
      case 0x6f: { // OBJ
        const items = popMark();
        if (!items.length) fail("OBJ without a class", at);
        const cls = items.shift();
        stack.push(call(cls, items, at));
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
      case 0x84: { // EXT4: the copyreg extension registry names arbitrary callables
        const code = op === 0x82 ? r.u8() : op === 0x83 ? r.u16() : r.i32();
        stack.push(global("copyreg.extension", String(code), at));
        break;
      }
      case 0x97: // NEXT_BUFFER
      case 0x98: // READONLY_BUFFER
        return fail("out-of-band pickle buffers are not supported", at);
      default: {
        const sized = SIZED[op];
        if (!sized) return fail(`unknown pickle opcode 0x${op.toString(16)}`, at);
        const [name, length, decode] = sized;
        stack.push(decode(r.take(length(r), name)));
      }
    }
  }
}
