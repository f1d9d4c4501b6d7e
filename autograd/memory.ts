/**
 * Memory of a traced graph, known before anything is allocated: the typed error that refuses a plan that cannot
 * fit, the summary of a plan's peak (`PlanMemory`), and the peak of the op-by-op interpreter (the CPU backend),
 * estimated by replaying the graph's liveness. The WebGPU plan computes its own peak from its buffer slots.
 */
import type { Eqn, Graph } from "./graph.ts";
import { lastUses } from "./graph.ts";
import type { DType } from "../ops/dtype.ts";
import type { Prim } from "../ops/prim.ts";
import { fmt, size } from "../ops/shape.ts";
import { RULES } from "../ops/table.ts";
import type { Backend } from "../ops/backend.ts";
import { defaultBackend } from "../ops/backends.ts";
import type { GpuMemory } from "../wgsl/backend.ts";

/** One large value of a plan, for the message of a refused plan. */
export interface PlanTensor {
  /** `f32[8,197,1536]`. */
  what: string;
  /** Bytes of its storage. */
  bytes: number;
  /** The primitive that computes it, or `argument` / `constant`. */
  source: Prim | "argument" | "constant";
}

/** A compiled (or planned) function's memory at its peak, in bytes. */
export interface PlanMemory {
  /** Everything alive at the worst moment of a call: intermediates + arguments + outputs + constants. */
  peakBytes: number;
  /** Intermediates at their peak (WebGPU: the plan's buffer slots). */
  intermediateBytes: number;
  /** Arguments (they exist before the call). */
  argumentBytes: number;
  /** Outputs not written into donated arguments. */
  outputBytes: number;
  /** Captured constants. */
  constantBytes: number;
  /** The largest values, largest first (at most 3). */
  largest: PlanTensor[];
}

/** Limits a plan is checked against before any of its buffers exists. */
export interface MemoryLimits {
  /** Most bytes the plan may hold at its peak (the user's `maxMemory`). */
  maxMemory?: number;
  /** Largest storage buffer binding of the device (`maxStorageBufferBindingSize`). */
  maxBinding?: number;
  /** Largest buffer of the device (`maxBufferSize`). */
  maxBuffer?: number;
}

/**
 * Thrown when a jitted function's plan cannot fit: its peak is over `maxMemory`, or one of its tensors is larger
 * than the device can bind. Raised while compiling, before any buffer of the plan is created.
 *
 * @example
 * ```ts
 * import { jit, PlanMemoryError, tensor } from "./mod.ts";
 * const f = jit((x: any) => x.mul(2), { maxMemory: 8 });
 * try {
 *   f(tensor([1, 2, 3]));
 * } catch (e) {
 *   if (e instanceof PlanMemoryError) console.log(e.memory.peakBytes, e.limitBytes);
 * }
 * ```
 */
export class PlanMemoryError extends Error {
  /** Always `"PlanMemoryError"`. */
  override name = "PlanMemoryError";
  /** The refused plan's memory. */
  readonly memory: PlanMemory;
  /** The limit it broke, in bytes. */
  readonly limitBytes: number;
  /** Which limit: the plan's total (`maxMemory`) or one buffer (`maxStorageBufferBindingSize`, `maxBufferSize`). */
  readonly limit: "maxMemory" | "maxStorageBufferBindingSize" | "maxBufferSize";

  /** What was refused, without advice: `needs … at its peak, over …; largest tensors: …`. */
  readonly summary: string;

  /** A refusal of the plan with `memory` for breaking `limit` (of `limitBytes`). */
  constructor(memory: PlanMemory, limit: PlanMemoryError["limit"], limitBytes: number) {
    const over = limit === "maxMemory"
      ? `needs ${fmtBytes(memory.peakBytes)} at its peak, over the limit of ${fmtBytes(limitBytes)} (maxMemory)`
      : `needs a ${memory.largest[0]?.what} tensor (a ${
        fmtBytes(2 ** Math.ceil(Math.log2(memory.largest[0]?.bytes ?? 1)))
      } buffer), over the device's ${limit} of ${fmtBytes(limitBytes)} (peak ${fmtBytes(memory.peakBytes)})`;
    const largest = memory.largest.map((t) => `${t.what} ${fmtBytes(t.bytes)} (${t.source})`).join(", ");
    const summary = `${over}; largest tensors: ${largest}`;
    super(
      `jit: the plan ${summary}; lower the batch size, split it into micro-batches or rematerialise blocks (remat)`,
    );
    this.summary = summary;
    this.memory = memory;
    this.limit = limit;
    this.limitBytes = limitBytes;
  }
}

/** Bytes in binary units with three significant digits: `1.50 GiB`. */
export function fmtBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toPrecision(3)} ${units[u]}`;
}

/** Parses `6GB`, `6GiB`, `512MiB`, `1.5g` or a plain number of bytes (decimal and binary units; k, m, g, t). */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b)?\s*$/i.exec(text);
  if (!m) throw new RangeError(`'${text}' is not a byte size (e.g. 6GiB, 512MB, 1000000)`);
  const exp = m[2] ? "kmgt".indexOf(m[2].toLowerCase()) + 1 : 0;
  const base = m[3] || (m[2] && !/b$/i.test(text.trim())) ? 1024 : 1000;
  const bytes = Math.floor(Number(m[1]) * base ** exp);
  if (!(bytes > 0)) throw new RangeError(`'${text}' is not a positive byte size`);
  return bytes;
}

/**
 * The check of `memory` against `limits`: throws a `PlanMemoryError` naming the first broken limit (a buffer too
 * large for the device before the total). Buffer limits apply to the largest tensor's buffer (its bytes rounded up
 * to a power of two).
 */
export function checkPlanMemory(memory: PlanMemory, limits: MemoryLimits): void {
  const largest = memory.largest[0]?.bytes ?? 0;
  // A WebGPU buffer is its tensor's size rounded up to a power of two (the pool's buckets), and is bound whole.
  const buffer = largest > 0 ? Math.max(16, 2 ** Math.ceil(Math.log2(largest))) : 0;
  if (limits.maxBinding !== undefined && buffer > limits.maxBinding) {
    throw new PlanMemoryError(memory, "maxStorageBufferBindingSize", limits.maxBinding);
  }
  if (limits.maxBuffer !== undefined && buffer > limits.maxBuffer) {
    throw new PlanMemoryError(memory, "maxBufferSize", limits.maxBuffer);
  }
  if (limits.maxMemory !== undefined && memory.peakBytes > limits.maxMemory) {
    throw new PlanMemoryError(memory, "maxMemory", limits.maxMemory);
  }
}

const SHORT: Record<DType, string> = { float32: "f32", float64: "f64", int32: "i32", uint32: "u32", bool: "bool" };

/** The `largest` list of a `PlanMemory`: the 3 largest of `ids` by `bytesOf`, with what computes each. */
export function largestTensors(graph: Graph, ids: Iterable<number>, bytesOf: (id: number) => number): PlanTensor[] {
  const producer = new Map<number, Eqn>();
  for (const e of graph.eqns) producer.set(e.out, e);
  const inputs = new Set(graph.inputs);
  return [...new Set(ids)].map((id) => ({ id, bytes: bytesOf(id) })).sort((a, b) => b.bytes - a.bytes).slice(0, 3)
    .map(({ id, bytes }) => ({
      what: `${SHORT[graph.avals[id].dtype]}${fmt(graph.avals[id].shape)}`,
      bytes,
      source: producer.get(id)?.prim ?? (inputs.has(id) ? "argument" : "constant"),
    }));
}

const HOST_BYTES: Record<DType, number> = { float32: 4, float64: 8, int32: 4, uint32: 4, bool: 1 };

/**
 * The peak of running `graph` op by op (the interpreter of `jit` on the CPU backend): arguments, constants and
 * every computed value from its equation to its last use (aliases share storage; outputs live to the end).
 */
export function interpretedMemory(graph: Graph): PlanMemory {
  const bytes = (id: number) => size(graph.avals[id].shape) * HOST_BYTES[graph.avals[id].dtype];
  const last = lastUses(graph);
  const outputs = new Set(graph.outputs);
  // Alias chains (reshape, stopGradient) share their root's storage, which lives until the chain's last use.
  const root = new Map<number, number>();
  const rootOf = (id: number) => root.get(id) ?? id;
  const end = new Map<number, number>();
  graph.eqns.forEach((e, i) => {
    if (RULES[e.prim].alias) root.set(e.out, rootOf(e.inputs[0]));
    const r = rootOf(e.out);
    end.set(r, Math.max(end.get(r) ?? i, outputs.has(e.out) ? Infinity : last[e.out]));
  });
  const computed = graph.eqns.filter((e) => !RULES[e.prim].alias && rootOf(e.out) === e.out);
  const freeAt = new Map<number, number>();
  for (const e of computed) {
    const at = end.get(e.out)!;
    if (Number.isFinite(at)) freeAt.set(at, (freeAt.get(at) ?? 0) + bytes(e.out));
  }
  let live = 0;
  let peak = 0;
  const computedAt = new Map(computed.map((e) => [e.out, bytes(e.out)]));
  graph.eqns.forEach((e, i) => {
    live += computedAt.get(e.out) ?? 0;
    peak = Math.max(peak, live);
    live -= freeAt.get(i) ?? 0;
  });
  const argumentBytes = graph.inputs.reduce((a, id) => a + bytes(id), 0);
  const constantBytes = graph.consts.reduce((a, c) => a + bytes(c.id), 0);
  return {
    peakBytes: peak + argumentBytes + constantBytes,
    intermediateBytes: peak,
    argumentBytes,
    outputBytes: graph.outputs.filter((id) => computedAt.has(rootOf(id))).reduce((a, id) => a + bytes(id), 0),
    constantBytes,
    largest: largestTensors(graph, [...graph.inputs, ...graph.consts.map((c) => c.id), ...computedAt.keys()], bytes),
  };
}

/**
 * Live, pooled and peak GPU bytes of a WebGPU backend (the default backend when none is given); null on the CPU
 * backend, whose arrays the JavaScript garbage collector frees.
 *
 * @example
 * ```ts
 * import { backendMemory, tensor } from "./mod.ts";
 * const x = tensor([1, 2, 3]);
 * console.log(backendMemory(x.backend)?.liveBytes);
 * ```
 */
export function backendMemory(backend: Backend = defaultBackend()): GpuMemory | null {
  const gpu = backend as Backend & { memory?: () => GpuMemory };
  return typeof gpu.memory === "function" ? gpu.memory() : null;
}
