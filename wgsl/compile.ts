/**
 * Compiles a traced graph into a static WebGPU plan:
 * 1. elementwise (`map`) equations are fused into the single consumer that has their shape, so a chain of
 *    elementwise ops becomes one kernel (`fused.ts`);
 * 2. every intermediate gets a buffer slot assigned by liveness (slots are reused, peak bytes are known and
 *    checked against the device's limits before any buffer is created: `memory.ts`);
 * 3. pipelines and the bind groups of steps that touch only intermediates and constants are built ahead.
 * A call writes scalar inputs, binds argument and output buffers, encodes every dispatch into one compute
 * pass, submits once and returns without awaiting.
 */
import type { DataRef } from "../ops/tensor.ts";
import type { Eqn, Graph } from "../autograd/graph.ts";
import type { Executable } from "../autograd/jit.ts";
import { RULES } from "../ops/table.ts";
import { size } from "../ops/shape.ts";
import { preferMatmulLayouts } from "./layout.ts";
import { type GpuBuf, gpuBytes, lower, QUERIES_PER_SET, type WebGpuBackend } from "./backend.ts";
import type { PlanMemory } from "../autograd/memory.ts";
import { assignSlots, checkDeviceMemory, webGpuPlanMemory } from "./memory.ts";
import { type ElementSource, reduceKernel } from "./reduce.ts";
import { emitTree, fusedStep, type Step } from "./fused.ts";

/** Bind groups kept per dynamic step (argument/output buffers seen recently). */
const BIND_GROUP_CACHE = 8;

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 0;

/** A stable small id per GPU buffer object. */
function bufferId(b: GPUBuffer): number {
  let id = bufferIds.get(b);
  if (id === undefined) bufferIds.set(b, id = nextBufferId++);
  return id;
}

/** GPU time of one dispatch of a plan. */
export interface KernelTiming {
  /** Primitive of the kernel's root equation. */
  prim: string;
  /** Equations computed by the kernel. */
  fused: number;
  /** Output shape, e.g. `128x50x96`. */
  shape: string;
  /** Milliseconds between the timestamps around the dispatch. */
  ms: number;
  /** The kernel's WGSL source. */
  code: string;
}

/** Statistics of a compiled plan. */
export interface PlanStats {
  /** Dispatches per call by the primitive of each kernel's root equation. */
  byPrim: Record<string, number>;
  /** Steps of the plan (dispatches plus aliases). */
  steps: number;
  /** Kernel dispatches per call. */
  dispatches: number;
  /** Equations absorbed into other kernels by fusion. */
  fusedEqns: number;
  /** Bytes of the intermediate slots (the static part of the plan). */
  slotBytes: number;
  /** Peak bytes alive during a call: slots + arguments + outputs (not written into donated arguments) + constants. */
  peakBytes: number;
  /** The peak's parts and the largest tensors. */
  memory: PlanMemory;
}

const isMap = (e: Eqn) => RULES[e.prim].wgsl.kind === "map";

/** Most equations one inlined value may expand to inside a kernel (bounds duplicated work). */
const MAX_INLINED_COST = 12;

/**
 * Groups equations into kernels. A map equation is inlined (never materialised) when every consumer is a map
 * of the same size (elementwise chains) or a reduction of it (reduction prologues), duplicating cheap work
 * where a value feeds several consumers, e.g. `exp(x - m)` in both the sum and the division of a softmax.
 */
function planSteps(graph: Graph, maxInputs = Infinity): { steps: Step[]; inlined: Set<number> } {
  const consumers = new Map<number, Eqn[]>();
  for (const e of graph.eqns) {
    for (const id of new Set(e.inputs)) {
      if (!consumers.has(id)) consumers.set(id, []);
      consumers.get(id)!.push(e);
    }
  }
  const outputs = new Set(graph.outputs);
  const producer = new Map<number, Eqn>();
  for (const e of graph.eqns) producer.set(e.out, e);
  const inlined = new Set<number>();
  const cost = new Map<number, number>();
  for (const e of graph.eqns) {
    if (!isMap(e) || outputs.has(e.out)) continue;
    const c = 1 + e.inputs.reduce((acc, id) => acc + (inlined.has(id) ? cost.get(id)! : 0), 0);
    const n = size(graph.avals[e.out].shape);
    const fits = (consumers.get(e.out) ?? []).every((u) => {
      const kind = RULES[u.prim].wgsl.kind;
      return (kind === "map" && size(graph.avals[u.out].shape) === n) || kind === "reduce";
    });
    if (fits && c <= MAX_INLINED_COST && consumers.has(e.out)) {
      inlined.add(e.out);
      cost.set(e.out, c);
    }
  }
  const treeOf = (root: Eqn): Eqn[] => {
    const members: Eqn[] = [];
    const seen = new Set<Eqn>();
    const visit = (x: Eqn) => {
      if (seen.has(x)) return;
      seen.add(x);
      for (const id of x.inputs) if (inlined.has(id)) visit(producer.get(id)!);
      members.push(x);
    };
    visit(root);
    return members;
  };
  materializeShared(graph, producer, inlined);
  limitKernelInputs(graph, producer, inlined, maxInputs);
  const steps: Step[] = [];
  for (const e of graph.eqns) {
    if (inlined.has(e.out)) continue;
    const w = RULES[e.prim].wgsl;
    if (w.kind === "alias") {
      steps.push({ kernel: null, inputs: [...e.inputs], out: e.out, eqns: [e] });
    } else if (w.kind === "map") {
      steps.push(fusedStep(graph, treeOf(e), inlined));
    } else if (w.kind === "reduce" && inlined.has(e.inputs[0])) {
      const tree = treeOf(producer.get(e.inputs[0])!);
      const x = graph.avals[e.inputs[0]];
      const inputs: number[] = [];
      const { lines, value } = emitTree(graph, tree, inlined, x.shape, "e", inputs);
      const element: ElementSource = {
        inputs: inputs.map((id) => graph.avals[id].dtype),
        code: lines.join("\n    "),
        value,
      };
      const axes = (e.params as { axes: number[] }).axes;
      const kernel = reduceKernel(x, axes, graph.avals[e.out], w.init(x.dtype), w.step, element);
      steps.push({ kernel, inputs, out: e.out, eqns: [...tree, e] });
    } else {
      const avals = e.inputs.map((id) => graph.avals[id]);
      steps.push({
        kernel: lower(e.prim, avals, e.params, graph.avals[e.out]),
        inputs: [...e.inputs],
        out: e.out,
        eqns: [e],
      });
    }
  }
  return { steps, inlined };
}

/**
 * Materialises inlined values that several kernels would each recompute from two or more full-size buffers:
 * writing such a value once and reading it in k kernels moves less memory than k recomputations (a residual
 * stream `x + a₁ + a₂ + …` would otherwise be re-summed by every LayerNorm reduction and every later block).
 * Broadcast (smaller) operands do not count: they stay in cache. Works from the last such value backwards,
 * since materialising it also removes the duplication of everything inside it.
 */
function materializeShared(graph: Graph, producer: Map<number, Eqn>, inlined: Set<number>): void {
  const treeOf = (id: number, into: Set<number>) => {
    if (!inlined.has(id) || into.has(id)) return;
    into.add(id);
    for (const x of producer.get(id)!.inputs) treeOf(x, into);
  };
  const fullLoads = (id: number): number => {
    const n = size(graph.avals[id].shape);
    const tree = new Set<number>();
    treeOf(id, tree);
    const loads = new Set<number>();
    for (const t of tree) {
      for (const x of producer.get(t)!.inputs) if (!inlined.has(x) && size(graph.avals[x].shape) === n) loads.add(x);
    }
    return loads.size;
  };
  for (let changed = true; changed;) {
    changed = false;
    // Kernels (non-inlined equations) whose fused tree contains each inlined value.
    const kernels = new Map<number, number>();
    for (const e of graph.eqns) {
      if (inlined.has(e.out)) continue;
      const tree = new Set<number>();
      for (const x of e.inputs) treeOf(x, tree);
      for (const id of tree) kernels.set(id, (kernels.get(id) ?? 0) + 1);
    }
    const settled = new Set<number>();
    for (let i = graph.eqns.length - 1; i >= 0; i--) {
      const id = graph.eqns[i].out;
      if (!inlined.has(id) || settled.has(id) || (kernels.get(id) ?? 0) < 2 || fullLoads(id) < 2) continue;
      inlined.delete(id);
      changed = true;
      // Its members' kernel counts change: decide them in the next round.
      for (const x of producer.get(id)!.inputs) treeOf(x, settled);
    }
  }
}

/**
 * Materialises inlined values until no fused kernel reads more than `maxInputs` distinct buffers (the device's
 * storage buffers per shader stage less the output; browsers may allow as few as 8): repeatedly, the inlined
 * member that pulls in the most buffers of an over-wide kernel becomes a kernel of its own.
 */
function limitKernelInputs(graph: Graph, producer: Map<number, Eqn>, inlined: Set<number>, maxInputs: number): void {
  if (!Number.isFinite(maxInputs)) return;
  // Distinct non-inlined buffers read by the fused tree of `id` (just `id` itself when it is materialised).
  const externals = (id: number, memo: Map<number, Set<number>>): Set<number> => {
    if (!inlined.has(id)) return new Set([id]);
    let set = memo.get(id);
    if (!set) {
      set = new Set();
      for (const x of producer.get(id)!.inputs) for (const b of externals(x, memo)) set.add(b);
      memo.set(id, set);
    }
    return set;
  };
  for (let changed = true; changed;) {
    changed = false;
    const memo = new Map<number, Set<number>>();
    for (const e of graph.eqns) {
      if (inlined.has(e.out)) continue;
      const reads = new Set<number>();
      for (const x of e.inputs) for (const b of externals(x, memo)) reads.add(b);
      if (reads.size <= maxInputs) continue;
      // The widest inlined value in this kernel's tree.
      let widest = -1;
      let width = 1;
      const visit = (id: number) => {
        if (!inlined.has(id)) return;
        const w = externals(id, memo).size;
        if (w > width) [widest, width] = [id, w];
        for (const x of producer.get(id)!.inputs) visit(x);
      };
      for (const x of e.inputs) visit(x);
      if (widest < 0) continue; // only materialised operands: nothing to split
      inlined.delete(widest);
      changed = true;
      break;
    }
  }
}

/** A graph planned for WebGPU (kernels, donation, buffer slots and peak), before any buffer exists. */
export interface PreparedPlan {
  /** The graph after layout rewrites. */
  graph: Graph;
  /** The plan's memory at its peak. */
  memory: PlanMemory;
  /** @internal */
  steps: Step[];
  /** @internal */
  root: Int32Array;
  /** @internal */
  slotOf: Int32Array;
  /** @internal */
  slotBytes: number[];
  /** @internal */
  donorOf: Map<number, number>;
  /** @internal */
  outputSet: Set<number>;
}

/** Plans a traced graph for the WebGPU backend: kernels, donation, buffer slots and the peak. Allocates nothing. */
export function prepareWebGpu(
  traced: Graph,
  backend: WebGpuBackend,
  donated: ReadonlySet<number> = new Set(),
): PreparedPlan {
  const graph = preferMatmulLayouts(traced);
  const { steps, inlined } = planSteps(graph, backend.device.limits.maxStorageBuffersPerShaderStage - 1);
  const nVars = graph.avals.length;
  const inputSet = new Set(graph.inputs);
  const constSet = new Set(graph.consts.map((c) => c.id));
  const outputSet = new Set(graph.outputs);
  // Alias chains share their root's storage.
  const root = new Int32Array(nVars).map((_, i) => i);
  for (const s of steps) if (!s.kernel) root[s.out] = root[s.inputs[0]];
  // Where a variable's storage comes from: argument, constant, output (fresh per call) or a static slot.
  const dynamic = (id: number) => inputSet.has(root[id]) || outputSet.has(root[id]);
  // An output aliasing an intermediate makes that whole chain per-call output storage.
  for (const id of graph.outputs) if (!inputSet.has(root[id]) && !constSet.has(root[id])) outputSet.add(root[id]);

  // Liveness over steps for static slots.
  const lastUse = new Int32Array(nVars).fill(-1);
  steps.forEach((s, i) => {
    for (const id of s.inputs) lastUse[root[id]] = Math.max(lastUse[root[id]], i);
  });
  // Donation: an output may be written into a donated argument's buffer once the argument is no longer read,
  // or in place by the elementwise kernel that reads it last (each invocation reads and writes index gid).
  const stepOf = new Map<number, number>();
  steps.forEach((s, i) => stepOf.set(s.out, i));
  const donorOf = new Map<number, number>();
  const returnedRoots = new Set(graph.outputs.map((id) => root[id]));
  const usedDonors = new Set<number>();
  for (const o of returnedRoots) {
    const si = stepOf.get(o);
    if (si === undefined || !steps[si].kernel) continue;
    const n = size(graph.avals[o].shape);
    for (const d of donated) {
      // Not when the argument is returned, itself or through an alias (reshape, stopGradient).
      if (usedDonors.has(d) || returnedRoots.has(d)) continue;
      if (graph.avals[d].dtype !== graph.avals[o].dtype || size(graph.avals[d].shape) !== n) continue;
      // In place only when the kernel reads the argument itself, not an alias of it (that would be bound twice).
      const direct = steps[si].inputs.every((x) => x === d || root[x] !== d);
      if (lastUse[d] < si || (lastUse[d] === si && steps[si].elementwise && direct)) {
        donorOf.set(o, d);
        usedDonors.add(d);
        if (lastUse[d] === si) steps[si] = fusedStep(graph, steps[si].eqns, inlined, d);
        break;
      }
    }
  }
  const { slotOf, slotBytes } = assignSlots(graph, steps, root, lastUse, (id) => !dynamic(id) && !constSet.has(id));
  const fresh = [...outputSet].filter((id) => !inputSet.has(id) && !constSet.has(id) && !donorOf.has(id));
  const memory = webGpuPlanMemory(graph, steps, slotBytes, fresh);
  return { graph, memory, steps, root, slotOf, slotBytes, donorOf, outputSet };
}

/**
 * Compiles a prepared plan: checks its peak against the device's buffer limits and `maxMemory` (a
 * `PlanMemoryError` before any buffer is created), then creates its slots, pipelines and bind groups.
 */
export function compileWebGpu(
  prepared: PreparedPlan,
  backend: WebGpuBackend,
  opts: { maxMemory?: number } = {},
): Executable & { stats(): PlanStats; profile(args: readonly (DataRef | number)[]): Promise<KernelTiming[]> } {
  checkDeviceMemory(prepared.memory, backend.device, opts.maxMemory);
  const { graph, steps, root, slotOf, donorOf, outputSet } = prepared;
  const inputSet = new Set(graph.inputs);
  const constSet = new Set(graph.consts.map((c) => c.id));
  const inPlaceOutputs = new Set(steps.filter((st) => st.inPlace !== undefined).map((st) => st.out));
  const slots: GpuBuf[] = prepared.slotBytes.map((bytes) => backend.alloc(bytes));
  const constBuf = new Map(graph.consts.map((c) => [c.id, c.ref.handle as GpuBuf]));

  const kernels = steps.filter((s) => s.kernel);
  const pipelines = kernels.map((s) => backend.pipeline(s.kernel!.code));
  const staticBuf = (id: number): GpuBuf | null => {
    const r = root[id];
    if (slotOf[r] >= 0) return slots[slotOf[r]];
    return constBuf.get(r) ?? null;
  };
  const prebuilt = kernels.map((s, k) => {
    const bufs = [...s.inputs, s.out].map(staticBuf);
    if (bufs.some((b) => b === null)) return null;
    return backend.device.createBindGroup({
      layout: pipelines[k].getBindGroupLayout(0),
      entries: bufs.map((b, i) => ({ binding: i, resource: { buffer: b!.buffer } })),
    });
  });
  const scalars: DataRef[] = [];
  const dynamicGroups: Map<string, GPUBindGroup>[] = [];

  return {
    run(args: readonly (DataRef | number)[]): DataRef[] {
      const env = new Map<number, DataRef>();
      // Numbers go to plan-owned scalar buffers. writeBuffer runs at queue time, so submit the queued eager work
      // first: a pooled buffer may still be the target of commands encoded before this call.
      if (args.some((a) => typeof a === "number")) backend.flush();
      const inputs = args.map((a, i) => {
        if (typeof a !== "number") return a;
        scalars[i] ??= { backend, handle: backend.alloc(4), refs: 1 };
        backend.device.queue.writeBuffer((scalars[i].handle as GpuBuf).buffer, 0, new Float32Array([a]));
        return scalars[i];
      });
      graph.inputs.forEach((id, i) => env.set(id, inputs[i]));
      const fresh: DataRef[] = [];
      for (const id of outputSet) {
        if (inputSet.has(id) || constSet.has(id)) continue;
        const d = donorOf.get(id);
        if (d !== undefined) {
          const ref = env.get(d)!;
          // Only storage held by this argument alone (and passed once) can be overwritten.
          if (ref.refs === 1 && inputs.filter((x) => x === ref).length === 1) {
            env.set(id, ref);
            continue;
          }
          if (inPlaceOutputs.has(id)) {
            // The kernel reads the operand from its output buffer: start from a copy of the argument.
            const copy: DataRef = { backend, handle: backend.alloc(gpuBytes(size(graph.avals[id].shape))), refs: 0 };
            backend.copy(ref.handle as GpuBuf, copy.handle as GpuBuf, gpuBytes(size(graph.avals[id].shape)));
            env.set(id, copy);
            fresh.push(copy);
            continue;
          }
        }
        const ref: DataRef = { backend, handle: backend.alloc(gpuBytes(size(graph.avals[id].shape))), refs: 0 };
        env.set(id, ref);
        fresh.push(ref);
      }
      const bufOf = (id: number): GpuBuf => {
        const r = root[id];
        const ref = env.get(r);
        if (ref) return ref.handle as GpuBuf;
        return staticBuf(id)!;
      };
      kernels.forEach((s, k) => {
        let bg = prebuilt[k];
        if (!bg) {
          // Steps touching arguments or outputs: their buffers repeat across calls (donation, the pool), so a
          // small per-step cache keyed by buffer identity avoids creating bind groups on every call.
          const bufs = [...s.inputs, s.out].map((id) => bufOf(id).buffer);
          const key = bufs.map(bufferId).join(",");
          const cache = (dynamicGroups[k] ??= new Map());
          bg = cache.get(key) ?? null;
          if (!bg) {
            bg = backend.device.createBindGroup({
              layout: pipelines[k].getBindGroupLayout(0),
              entries: bufs.map((buffer, i) => ({ binding: i, resource: { buffer } })),
            });
            if (cache.size >= BIND_GROUP_CACHE) cache.delete(cache.keys().next().value!);
            cache.set(key, bg);
          }
        }
        backend.dispatchPrebuilt(pipelines[k], bg, s.kernel!);
      });
      backend.flush();
      const result = graph.outputs.map((id) => {
        const r = root[id];
        const ref = env.get(r) ?? { backend, handle: constBuf.get(r)!, refs: 0 };
        if (scalars.includes(ref)) {
          // A number argument returned as is: a copy, since the plan rewrites its scalar buffer on every call.
          const copy: DataRef = { backend, handle: backend.alloc(4), refs: 1 };
          backend.copy(ref.handle as GpuBuf, copy.handle as GpuBuf, 4);
          return copy;
        }
        const existing = inputs.find((x) => x === ref) ?? graph.consts.find((c) => c.ref.handle === ref.handle)?.ref;
        const owner = existing ?? ref;
        owner.refs++;
        return owner;
      });
      for (const ref of fresh) if (ref.refs === 0) backend.release(ref.handle);
      return result;
    },
    async profile(args: readonly (DataRef | number)[]): Promise<KernelTiming[]> {
      // Each dispatch in its own pass with GPU timestamps around it; the plan's buffers are bound as in `run`.
      if (!backend.device.features.has("timestamp-query")) {
        throw new Error("profile: the adapter has no timestamp-query");
      }
      const n = kernels.length;
      const sets = Array.from(
        { length: Math.ceil((2 * n) / QUERIES_PER_SET) },
        () => backend.device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET }),
      );
      const bytes = 8 * QUERIES_PER_SET * sets.length;
      const resolve = backend.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const read = backend.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      backend.beginProfile(sets);
      const outs = this.run(args);
      backend.endProfile();
      const enc = backend.device.createCommandEncoder();
      sets.forEach((set, i) => {
        const count = Math.min(QUERIES_PER_SET, 2 * n - i * QUERIES_PER_SET);
        enc.resolveQuerySet(set, 0, count, resolve, 8 * QUERIES_PER_SET * i);
      });
      enc.copyBufferToBuffer(resolve, 0, read, 0, bytes);
      backend.device.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const ts = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      for (const b of [resolve, read]) b.destroy();
      sets.forEach((set) => set.destroy());
      for (const r of outs) if (--r.refs === 0) backend.release(r.handle);
      return kernels.map((st, k) => ({
        prim: st.eqns[st.eqns.length - 1].prim,
        fused: st.eqns.length,
        shape: graph.avals[st.out].shape.join("x"),
        ms: Number(ts[2 * k + 1] - ts[2 * k]) / 1e6,
        code: st.kernel!.code,
      }));
    },
    dispose() {
      for (const s of slots) backend.release(s);
      for (const r of scalars) if (r && --r.refs === 0) backend.release(r.handle);
      for (const c of graph.consts) if (--c.ref.refs === 0) backend.release(c.ref.handle);
    },
    stats: () => ({
      byPrim: Object.fromEntries(
        [...kernels.reduce((m, st) => {
          const p = st.eqns[st.eqns.length - 1].prim;
          return m.set(p, (m.get(p) ?? 0) + 1);
        }, new Map<string, number>())].sort((a, b) => b[1] - a[1]),
      ),
      steps: steps.length,
      dispatches: kernels.length,
      fusedEqns: graph.eqns.length - steps.length,
      slotBytes: prepared.memory.intermediateBytes,
      peakBytes: prepared.memory.peakBytes,
      memory: prepared.memory,
    }),
  };
}
