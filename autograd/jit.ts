/**
 * `jit(f)`: traces `f` once per input signature into a `Graph` and replays it. Numbers passed as arguments are
 * float32 scalar inputs, so hyperparameters never cause a retrace. Under another transform (vjp), `jit` traces
 * through: the function is simply called.
 */
import { type DataRef, Tensor } from "../ops/tensor.ts";
import { abstractEval, type ActiveTrace, adoptRef, bind, fromHost, tidy, topTrace, withTrace } from "../ops/engine.ts";
import { eliminateDeadCode, type Eqn, foldTransposesIntoMatmul, type Graph, lastUses, printGraph } from "./graph.ts";
import { flatten, unflatten } from "./tree.ts";
import type { Backend } from "../ops/backend.ts";
import { defaultBackend } from "../ops/backends.ts";
import { toHost } from "../ops/dtype.ts";
import type { Aval, Prim, PrimParams } from "../ops/prim.ts";
import { RULES } from "../ops/table.ts";
import { compileWebGpu, type KernelTiming, type PlanStats, type PreparedPlan, prepareWebGpu } from "../wgsl/compile.ts";
import { checkPlanMemory, interpretedMemory, type PlanMemory } from "./memory.ts";
import type { WebGpuBackend } from "../wgsl/backend.ts";
import { fmt } from "../ops/shape.ts";

/** The trace that records a graph. */
export class JitTrace implements ActiveTrace {
  readonly kind = "jit";
  alive = true;
  readonly graph: Graph = { avals: [], inputs: [], consts: [], eqns: [], outputs: [] };
  private constIds = new Map<DataRef, number>();

  constructor(readonly level: number, readonly backend: Backend) {}

  private newVar(aval: Aval): number {
    this.graph.avals.push({ shape: [...aval.shape], dtype: aval.dtype });
    return this.graph.avals.length - 1;
  }

  private tracer(id: number): Tensor {
    const a = this.graph.avals[id];
    return new Tensor(a.shape, a.dtype, this.backend, { kind: "tracer", trace: this, payload: id });
  }

  /** A new graph input of the given aval. */
  input(aval: Aval): Tensor {
    const id = this.newVar(aval);
    this.graph.inputs.push(id);
    return this.tracer(id);
  }

  /** The variable of a tensor: this trace's tracer, or a captured constant. */
  varOf(t: Tensor): number {
    const src = t.source;
    if (src.kind === "tracer") {
      if (src.trace === this) return src.payload as number;
      throw new Error(
        `jit: the function closes over a value traced by ${src.trace.kind} (${t.dtype}${
          fmt(t.shape)
        }); pass it as an argument`,
      );
    }
    if (src.ref === null) throw new Error(`jit: a captured ${t.dtype}${fmt(t.shape)} tensor was disposed`);
    if (t.backend !== this.backend) {
      throw new Error(
        `jit: a captured tensor lives on ${t.backend.name} but the function runs on ${this.backend.name}`,
      );
    }
    let id = this.constIds.get(src.ref);
    if (id === undefined) {
      id = this.newVar(t);
      src.ref.refs++;
      this.graph.consts.push({ id, ref: src.ref });
      this.constIds.set(src.ref, id);
    } else if (this.graph.avals[id].shape.join() !== t.shape.join()) {
      // Same storage seen under another shape (an eager alias): record the reshape.
      return this.varOf(bind("reshape", [this.tracer(id)], { shape: [...t.shape] }));
    }
    return id;
  }

  process<P extends Prim>(prim: P, args: readonly Tensor[], params: PrimParams[P]): Tensor {
    const inputs = args.map((a) => this.varOf(a));
    const aval = abstractEval(prim, args, params);
    if (!this.backend.supports(aval.dtype)) {
      throw new TypeError(`${prim}: the ${this.backend.name} backend does not support ${aval.dtype}`);
    }
    const out = this.newVar(aval);
    this.graph.eqns.push({ prim, inputs, params, out } as Eqn);
    return this.tracer(out);
  }
}

/** A compiled program: runs a graph on concrete inputs. Backends may replace this with fused plans. */
export interface Executable {
  /** Runs on argument storage (numbers are float32 scalar arguments); returns one owned reference per output. */
  run(inputs: readonly (DataRef | number)[]): DataRef[];
  /** Frees captured constants. */
  dispose(): void;
}

/** Interprets a graph op by op, freeing every intermediate right after its last use. */
export function interpret(graph: Graph, backend: Backend): Executable {
  const last = lastUses(graph);
  const outputs = new Set(graph.outputs);
  return {
    run(args) {
      const env = new Array<DataRef | null>(graph.avals.length).fill(null);
      const temps: Tensor[] = [];
      const inputs = args.map((a) => {
        if (typeof a !== "number") return a;
        const t = fromHost(backend, toHost("float32", [a]), [], "float32");
        temps.push(t);
        return (t.source as { ref: DataRef }).ref;
      });
      graph.inputs.forEach((id, i) => (env[id] = inputs[i]));
      for (const c of graph.consts) env[c.id] = c.ref;
      const owned = new Set<number>();
      const drop = (id: number) => {
        const r = env[id]!;
        if (--r.refs === 0) backend.release(r.handle);
      };
      graph.eqns.forEach((e, i) => {
        const ins = e.inputs.map((id) => env[id]!);
        if (RULES[e.prim].alias) {
          ins[0].refs++;
          env[e.out] = ins[0];
        } else {
          const avals = e.inputs.map((id) => graph.avals[id]);
          const handle = backend.run(e.prim, ins.map((r) => r.handle), avals, e.params, graph.avals[e.out]);
          env[e.out] = { backend, handle, refs: 1 };
        }
        owned.add(e.out);
        for (const id of new Set(e.inputs)) if (last[id] === i && owned.has(id) && !outputs.has(id)) drop(id);
      });
      for (const id of owned) if (last[id] === -1 && !outputs.has(id)) drop(id);
      const given = new Set<number>();
      const result = graph.outputs.map((id) => {
        const r = env[id]!;
        if (!owned.has(id) || given.has(id)) r.refs++; // an input, constant or repeated output
        given.add(id);
        return r;
      });
      for (const t of temps) t.dispose();
      return result;
    },
    dispose() {
      for (const c of graph.consts) if (--c.ref.refs === 0) backend.release(c.ref.handle);
    },
  };
}

/** Statistics of a jitted function, for debugging and benchmarks. */
export interface JitStats {
  /** How many signatures were traced. */
  traces: number;
  /** Equations in the most recent plan. */
  eqns: number;
  /** The compiled WebGPU plan of the most recent signature (dispatches per call, peak bytes), if any. */
  plan?: PlanStats;
}

/** A jitted function: callable like `f`, plus inspection helpers. */
export interface Jitted<A extends unknown[], R> {
  (...args: A): R;
  /** The printed graph for these arguments (traces if needed). */
  graph(...args: A): string;
  /** Traces so far and the latest plan's statistics. */
  stats(): JitStats;
  /** Frees every cached plan and its constants. */
  dispose(): void;
  /**
   * WebGPU: autotunes the matmuls of the plan for these arguments (timing candidate kernels on the device)
   * and recompiles it. Call once at start-up; a no-op on the CPU.
   */
  tune(...args: A): Promise<void>;
  /** WebGPU: GPU time of every dispatch of the plan for these arguments (needs `timestamp-query`). */
  profile(...args: A): Promise<KernelTiming[]>;
  /**
   * The plan's memory at its peak for these arguments, known before any of its buffers exists: traces (or reuses
   * the trace) and plans without allocating. Arguments may be `placeholder`s (shapes without storage). Throws a
   * `PlanMemoryError` when the plan cannot fit (`maxMemory`, the device's buffer limits), as a call would.
   */
  memory(...args: A): PlanMemory;
}

/** Options of `jit`. */
export interface JitOptions {
  /**
   * Argument positions whose buffers may be reused for outputs (parameters, optimizer state): on WebGPU an
   * output of the same shape is written in place. Donated argument tensors are disposed by the call.
   */
  donate?: number[];
  /** Backend to run on when no argument is a tensor (default backend otherwise). */
  backend?: Backend;
  /** Run the traced graph op by op instead of compiling it (debugging). */
  interpret?: boolean;
  /**
   * Most bytes a call may hold at its peak (arguments, intermediates, outputs, constants). A plan over it is
   * refused with a `PlanMemoryError` before any of its buffers is created. On the CPU backend the peak is
   * estimated from the graph's liveness.
   */
  maxMemory?: number;
}

interface Plan {
  graph: Graph;
  backend: Backend;
  donated: Set<number>;
  /** The WebGPU plan before allocation (memory known), made on first need. */
  prepared: PreparedPlan | null;
  /** Compiled on the first call. */
  exe: Executable | null;
  outDef: ReturnType<typeof flatten>["def"];
  staticOut: unknown[];
  outIsVar: boolean[];
}

/**
 * Compiles `f` once per argument signature (tree structure, shapes, dtypes; numbers are scalar inputs).
 *
 * @example
 * ```ts
 * import { jit, grad, tensor } from "./mod.ts";
 * const step = jit((w: any, lr: number) => w.sub(grad((v: any) => v.mul(v).sum())(w).mul(lr)));
 * const w1 = step(tensor([1, 2]), 0.1); // [0.8, 1.6]
 * ```
 */
export function jit<A extends unknown[], R>(f: (...args: A) => R, opts: JitOptions = {}): Jitted<A, R> {
  const plans = new Map<string, Plan>();
  let lastPlan: Plan | null = null;
  const donate = new Set(opts.donate ?? []);

  const signature = (args: unknown[]) => {
    const { leaves, def } = flatten<unknown>(args);
    const parts = leaves.map((l) => {
      if (l instanceof Tensor) return `${l.dtype}[${l.shape}]`;
      if (typeof l === "number") return "num";
      return `static:${JSON.stringify(l)}`;
    });
    return { leaves, def, key: `${JSON.stringify(def)}|${parts.join(";")}` };
  };

  const backendOf = (leaves: unknown[]): Backend => {
    const t = leaves.find((l): l is Tensor => l instanceof Tensor);
    return t?.backend ?? opts.backend ?? defaultBackend();
  };

  /** Which leaves belong to donated arguments (flatten order). */
  const donatedLeaves = (args: unknown[]): boolean[] =>
    args.flatMap((a, i) => flatten<unknown>(a).leaves.map(() => donate.has(i)));

  const trace = (leaves: unknown[], def: ReturnType<typeof flatten>["def"], donatedLeaf: boolean[]): Plan => {
    const backend = backendOf(leaves);
    return withTrace((level) => new JitTrace(level, backend), (tr) =>
      tidy(() => {
        const inLeaves = leaves.map((l) => {
          if (l instanceof Tensor) return tr.input(l);
          if (typeof l === "number") return tr.input({ shape: [], dtype: "float32" });
          return l;
        });
        const out = (f as (...a: unknown[]) => unknown)(...unflatten<unknown[]>(def, inLeaves));
        const { leaves: outLeaves, def: outDef } = flatten<unknown>(out);
        const outIsVar = outLeaves.map((l) => l instanceof Tensor);
        tr.graph.outputs = outLeaves.filter((l): l is Tensor => l instanceof Tensor).map((t) => tr.varOf(t));
        const graph = foldTransposesIntoMatmul(eliminateDeadCode(tr.graph));
        for (const c of tr.graph.consts) {
          if (!graph.consts.includes(c) && --c.ref.refs === 0) backend.release(c.ref.handle);
        }
        // Graph inputs are the tensor and number leaves, in order; donated ones may be overwritten by outputs.
        const inputLeaves = leaves.map((_l, i) => i).filter((i) =>
          leaves[i] instanceof Tensor || typeof leaves[i] === "number"
        );
        const donated = new Set(
          inputLeaves.flatMap((
            leaf,
            k,
          ) => (donatedLeaf[leaf] && leaves[leaf] instanceof Tensor ? [graph.inputs[k]] : [])),
        );
        return { graph, backend, donated, prepared: null, exe: null, outDef, staticOut: outLeaves, outIsVar };
      }));
  };

  const compiled = (plan: Plan) => plan.backend.name === "webgpu" && !opts.interpret;
  const prepare = (
    plan: Plan,
  ) => (plan.prepared ??= prepareWebGpu(plan.graph, plan.backend as WebGpuBackend, plan.donated));
  /** The plan's memory, checked against the limits (throws before anything is allocated). */
  const memoryOf = (plan: Plan): PlanMemory => {
    if (compiled(plan)) {
      const memory = prepare(plan).memory;
      const limits = (plan.backend as WebGpuBackend).device.limits;
      checkPlanMemory(memory, {
        maxMemory: opts.maxMemory,
        maxBinding: limits.maxStorageBufferBindingSize,
        maxBuffer: limits.maxBufferSize,
      });
      return memory;
    }
    const memory = interpretedMemory(plan.graph);
    checkPlanMemory(memory, { maxMemory: opts.maxMemory });
    return memory;
  };
  const executable = (plan: Plan): Executable => {
    if (plan.exe) return plan.exe;
    if (compiled(plan)) {
      plan.exe = compileWebGpu(prepare(plan), plan.backend as WebGpuBackend, { maxMemory: opts.maxMemory });
    } else {
      if (opts.maxMemory !== undefined) memoryOf(plan);
      plan.exe = interpret(plan.graph, plan.backend);
    }
    return plan.exe;
  };

  /** Frees a plan's compiled buffers, or only its captured constants when it was never compiled. */
  const releasePlan = (p: Plan) => {
    if (p.exe) p.exe.dispose();
    else for (const c of p.graph.consts) if (--c.ref.refs === 0) p.backend.release(c.ref.handle);
  };

  const planFor = (args: unknown[]) => {
    const { leaves, def, key } = signature(args);
    let plan = plans.get(key);
    if (!plan) {
      plan = trace(leaves, def, donatedLeaves(args));
      plans.set(key, plan);
    }
    lastPlan = plan;
    return { plan, leaves };
  };

  const call = (...args: A): R => {
    const tensors = flatten<unknown>(args).leaves.filter((l): l is Tensor => l instanceof Tensor);
    if (topTrace(tensors) !== null) return f(...args); // under another transform: trace through
    const { plan, leaves } = planFor(args);
    const backend = backendOf(leaves);
    const inputs: (DataRef | number)[] = [];
    for (const l of leaves) {
      if (l instanceof Tensor) {
        if (l.backend !== backend) throw new Error(`jit: arguments live on ${l.backend.name} and ${backend.name}`);
        const src = l.source as { ref: DataRef | null };
        if (!src.ref) throw new Error(`jit: argument ${l.dtype}${fmt(l.shape)} was disposed`);
        inputs.push(src.ref);
      } else if (typeof l === "number") {
        inputs.push(l);
      }
    }
    const outRefs = executable(plan).run(inputs);
    if (donate.size > 0) {
      // Donated arguments are consumed: their storage may now belong to an output.
      const dl = donatedLeaves(args);
      leaves.forEach((l, i) => dl[i] && l instanceof Tensor && l.dispose());
    }
    let k = 0;
    const outLeaves = plan.staticOut.map((l, i) => {
      if (!plan.outIsVar[i]) return l;
      const ref = outRefs[k];
      const aval = plan.graph.avals[plan.graph.outputs[k++]];
      return adoptRef(ref, aval);
    });
    return unflatten<R>(plan.outDef, outLeaves);
  };

  return Object.assign(call, {
    graph: (...args: A) => printGraph(planFor(args).plan.graph),
    stats: (): JitStats => {
      const p = lastPlan as Plan | null;
      const exe = p?.exe as { stats?: () => PlanStats } | undefined;
      return { traces: plans.size, eqns: p?.graph.eqns.length ?? 0, plan: exe?.stats?.() };
    },
    dispose: () => {
      for (const p of plans.values()) releasePlan(p);
      plans.clear();
    },
    profile: async (...args: A) => {
      const { plan } = planFor(args);
      const exe = executable(plan) as { profile?: (a: (DataRef | number)[]) => Promise<KernelTiming[]> };
      if (!exe.profile) throw new Error("profile: only compiled WebGPU plans can be profiled");
      const inputs = flatten<unknown>(args).leaves.flatMap((l): (DataRef | number)[] =>
        l instanceof Tensor ? [(l.source as { ref: DataRef }).ref] : typeof l === "number" ? [l] : []
      );
      return await exe.profile(inputs);
    },
    memory: (...args: A) => memoryOf(planFor(args).plan),
    tune: async (...args: A) => {
      const { plan, leaves } = planFor(args);
      const backend = backendOf(leaves);
      if (backend.name !== "webgpu") return;
      const { tuneGraph } = await import("../wgsl/autotune.ts");
      if ((await tuneGraph(backend as WebGpuBackend, plan.graph)) > 0) {
        // Recompile with the tuned tiles on the next call.
        releasePlan(plan);
        plans.delete(signature(args).key);
      }
    },
  });
}

/**
 * A tensor with a shape, a dtype and a backend but no storage: an argument for `jitted.memory` and `evalShape`,
 * which only trace. Reading it or passing it to an eager op is an error.
 *
 * @example
 * ```ts
 * import { jit, placeholder } from "./mod.ts";
 * const f = jit((x: any) => x.matmul(x));
 * console.log(f.memory(placeholder([512, 512])).peakBytes); // known without allocating anything
 * ```
 */
export function placeholder(shape: readonly number[], dtype: Aval["dtype"] = "float32", backend?: Backend): Tensor {
  return new Tensor(shape, dtype, backend ?? defaultBackend(), { kind: "data", ref: null });
}

/**
 * The output of `f(...args)` with every tensor replaced by a `placeholder` of its shape and dtype, found by tracing
 * `f` (like `jax.eval_shape`): no value is computed and no large buffer is allocated (small constants that `f`
 * creates are freed). Arguments may be placeholders; numbers and other leaves are passed to `f` as they are.
 *
 * @example
 * ```ts
 * import { evalShape, placeholder } from "./mod.ts";
 * const y = evalShape((x: any) => x.sum(-1), placeholder([4000, 1024]));
 * console.log(y.shape); // [4000]
 * ```
 */
export function evalShape<A extends unknown[], R>(f: (...args: A) => R, ...args: A): R {
  const { leaves, def } = flatten<unknown>(args);
  const backend = leaves.find((l): l is Tensor => l instanceof Tensor)?.backend ?? defaultBackend();
  return withTrace((level) => new JitTrace(level, backend), (tr) =>
    tidy(() => {
      const ins = leaves.map((l) => (l instanceof Tensor ? tr.input(l) : l));
      const out = (f as (...a: unknown[]) => unknown)(...unflatten<unknown[]>(def, ins));
      const { leaves: outLeaves, def: outDef } = flatten<unknown>(out);
      const result = outLeaves.map((l) => (l instanceof Tensor ? placeholder(l.shape, l.dtype, backend) : l));
      for (const c of tr.graph.consts) if (--c.ref.refs === 0) backend.release(c.ref.handle);
      return unflatten<R>(outDef, result);
    }));
}
