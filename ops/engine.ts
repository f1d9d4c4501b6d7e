/**
 * The engine: `bind` routes every primitive application to the innermost active transform, or evaluates it
 * on the operands' backend. It also owns eager lifetimes (`tidy` scopes) and the non-finite debug switch.
 */
import { type DataRef, Tensor, type Trace } from "./tensor.ts";
import type { Backend } from "./backend.ts";
import type { DType, HostArray } from "./dtype.ts";
import type { Aval, Prim, PrimParams } from "./prim.ts";
import { fmt } from "./shape.ts";
import { RULES } from "./table.ts";

/** A trace that can process primitive applications on its tracers. */
export interface ActiveTrace extends Trace {
  process<P extends Prim>(prim: P, args: readonly Tensor[], params: PrimParams[P]): Tensor;
}

let depth = 0;
/** Live vjp traces: while one is live, its nodes hold eager values that inner `tidy` scopes must not free. */
let liveVjp = 0;

/** Runs `body` with a fresh trace level; the trace is marked dead afterwards. */
export function withTrace<T extends ActiveTrace, R>(make: (level: number) => T, body: (trace: T) => R): R {
  const trace = make(++depth);
  const isVjp = trace.kind === "vjp";
  if (isVjp) liveVjp++;
  try {
    return body(trace);
  } finally {
    trace.alive = false;
    depth--;
    if (isVjp) liveVjp--;
  }
}

/** The innermost live trace among some tensors, or null when all are concrete. */
export function topTrace(args: readonly Tensor[]): ActiveTrace | null {
  let top: ActiveTrace | null = null;
  for (const a of args) {
    const src = a.source;
    if (src.kind !== "tracer") continue;
    if (!src.trace.alive) {
      throw new Error(
        `a value traced by ${src.trace.kind} (${a.dtype}${fmt(a.shape)}) escaped its transform; ` +
          "return it from the transformed function instead of storing it",
      );
    }
    const t = src.trace as ActiveTrace;
    if (top === null || t.level > top.level) top = t;
  }
  return top;
}

/** Applies a primitive. The single entry point of every operation in the library. */
export function bind<P extends Prim>(prim: P, args: readonly Tensor[], params: PrimParams[P]): Tensor {
  const top = topTrace(args);
  if (top !== null) return top.process(prim, args, params);
  return evaluate(prim, args, params);
}

/** Computes a primitive's output shape and dtype; throws a message naming the op on bad input. */
export function abstractEval<P extends Prim>(prim: P, args: readonly Aval[], params: PrimParams[P]): Aval {
  const rule = RULES[prim];
  if (rule.arity !== "variadic" && args.length !== rule.arity) {
    throw new TypeError(`${prim}: expected ${rule.arity} operands, got ${args.length}`);
  }
  return rule.shape(args, params);
}

function evaluate<P extends Prim>(prim: P, args: readonly Tensor[], params: PrimParams[P]): Tensor {
  const out = abstractEval(prim, args, params);
  const backend = commonBackend(prim, args);
  if (!backend.supports(out.dtype)) {
    throw new TypeError(`${prim}: the ${backend.name} backend does not support ${out.dtype}`);
  }
  const refs = args.map((a, i) => liveRef(a, prim, i));
  if (RULES[prim].alias) return adopt(refs[0], out);
  const handle = backend.run(prim, refs.map((r) => r.handle), args, params, out);
  const result = fromHandle(backend, handle, out);
  if (debugState.checkFinite) debugState.onOutput(prim, result);
  return result;
}

function liveRef(t: Tensor, prim: string, i: number): DataRef {
  const src = t.source;
  if (src.kind !== "data") throw new Error(`${prim}: operand ${i} is not concrete`);
  if (src.ref === null) throw new Error(`${prim}: operand ${i} (${t.dtype}${fmt(t.shape)}) was disposed`);
  return src.ref;
}

/** The one backend shared by all operands; mixing backends is an error that names the op. */
export function commonBackend(prim: string, args: readonly Tensor[]): Backend {
  const b = args[0].backend;
  for (let i = 1; i < args.length; i++) {
    if (args[i].backend !== b) {
      throw new Error(
        `${prim}: operands live on different backends (${b.name} and ${args[i].backend.name}); ` +
          "move one with `await toBackend(t, name)`",
      );
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// Lifetimes: eager tensors are registered in the innermost `tidy` scope and freed when it ends.

const scopes: Set<Tensor>[] = [];

function track(t: Tensor): Tensor {
  if (scopes.length > 0) scopes[scopes.length - 1].add(t);
  return t;
}

/** Wraps new device storage in a tensor registered with the current scope. */
export function fromHandle(backend: Backend, handle: unknown, aval: Aval): Tensor {
  const ref: DataRef = { backend, handle, refs: 1 };
  return track(new Tensor(aval.shape, aval.dtype, backend, { kind: "data", ref }));
}

/** A tensor that takes over one existing reference to `ref` (used by jit outputs). */
export function adoptRef(ref: DataRef, aval: Aval): Tensor {
  return track(new Tensor(aval.shape, aval.dtype, ref.backend, { kind: "data", ref }));
}

/** A new tensor sharing `ref`'s storage under another shape. */
function adopt(ref: DataRef, aval: Aval): Tensor {
  ref.refs++;
  return track(new Tensor(aval.shape, aval.dtype, ref.backend, { kind: "data", ref }));
}

/** Uploads host data to a backend as a new tensor. */
export function fromHost(backend: Backend, data: HostArray, shape: readonly number[], dtype: DType): Tensor {
  if (!backend.supports(dtype)) throw new TypeError(`the ${backend.name} backend does not support ${dtype}`);
  return fromHandle(backend, backend.upload(data, { shape, dtype }), { shape, dtype });
}

/**
 * Runs `fn` and frees every eager tensor it created except those in its result (any pytree).
 *
 * @example
 * ```ts
 * import { tensor, tidy } from "./mod.ts";
 * const y = tidy(() => tensor([1, 2]).mul(2).add(1)); // the intermediate product is freed
 * ```
 */
export function tidy<R>(fn: () => R): R {
  return scoped(fn, false);
}

/**
 * @internal Like `tidy`, but frees even while a vjp is live: for code that runs on concrete values no trace holds
 * (the forward of `remat`, whose intermediates no backward pass reads).
 */
export function tidyConcrete<R>(fn: () => R): R {
  return scoped(fn, true);
}

function scoped<R>(fn: () => R, always: boolean): R {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: R;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  const parent = scopes.length > 0 ? scopes[scopes.length - 1] : null;
  if (liveVjp > 0 && !always) {
    // An enclosing vjp may still need these values for its backward pass: leave them to the outer scope.
    if (parent) { for (const t of scope) parent.add(t); }
    return result;
  }
  const keep = new Set<Tensor>();
  collectTensors(result, keep);
  for (const t of scope) {
    if (keep.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

/**
 * Keeps `t` alive past the enclosing scopes (the caller then owns it).
 *
 * @example
 * ```ts
 * import { keep, type Tensor, tensor, tidy } from "./mod.ts";
 * const cache: Tensor[] = [];
 * const y = tidy(() => {
 *   const x = tensor([1, 2]).mul(3);
 *   cache.push(keep(x)); // survives the scope although only x + 1 is returned
 *   return x.add(1);
 * });
 * console.log(await cache[0].toArray(), await y.toArray()); // [3, 6] [4, 7]
 * ```
 */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collectTensors(x: unknown, out: Set<Tensor>): void {
  if (x instanceof Tensor) out.add(x);
  else if (Array.isArray(x)) { for (const v of x) collectTensors(v, out); }
  else if (x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype) {
    for (const v of Object.values(x)) collectTensors(v, out);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Debugging non-finite values.

interface DebugState {
  checkFinite: boolean;
  onOutput(prim: string, t: Tensor): void;
}

const debugState: DebugState = { checkFinite: false, onOutput: () => {} };

/** @internal Installed by autograd/debug.ts: called with every eager op's output while the check is on. */
export function setOutputHook(on: boolean, hook: (prim: string, t: Tensor) => void): void {
  debugState.checkFinite = on;
  debugState.onOutput = hook;
}
