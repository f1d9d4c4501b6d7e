/**
 * Fused elementwise kernels of a WebGPU plan: a tree of inlined `map` equations evaluated per output element
 * (scalar, or four consecutive elements as vec4 where the sizes allow), and the plan's step type.
 */
import type { Eqn, Graph } from "../autograd/graph.ts";
import type { Aval } from "../ops/prim.ts";
import type { KernelSource } from "../ops/rule.ts";
import { RULES } from "../ops/table.ts";
import { broadcastStrides, mergeDims, size } from "../ops/shape.ts";
import { elementwiseKernel, offsetOf, WG } from "./codegen.ts";
import { PRELUDE, wgslType } from "./types.ts";

/** One dispatch (or alias) of the plan, reading `inputs` and writing `out` (graph variable ids). */
export interface Step {
  kernel: KernelSource | null;
  inputs: number[];
  out: number;
  /** The graph equations this step computes (for printing). */
  eqns: Eqn[];
  /** Invocation `gid` reads same-sized operands only at `gid` and writes `out[gid]` (safe in place). */
  elementwise?: boolean;
  /** A donated operand read from the output buffer (not bound separately): the update happens in place. */
  inPlace?: number;
}

/**
 * WGSL lines evaluating a fused elementwise tree (`members` ends with its root) at flat index `idx` of
 * `shape`; external operands are appended to `inputs` (binding order) and read with broadcast offsets.
 */
export function emitTree(
  graph: Graph,
  members: Eqn[],
  inlined: ReadonlySet<number>,
  shape: readonly number[],
  idx: string,
  inputs: number[],
  inPlace = -1,
): { lines: string[]; value: string } {
  const n = size(shape);
  const lines: string[] = [];
  const loaded = new Map<number, string>();
  const load = (id: number) => {
    let name = loaded.get(id);
    if (name) return name;
    if (id === inPlace) {
      // The operand shares the output buffer: read it from `out` before this invocation writes it.
      lines.push(`let vout = out[${idx}];`);
      loaded.set(id, "vout");
      return "vout";
    }
    let k = inputs.indexOf(id);
    if (k < 0) k = inputs.push(id) - 1;
    name = `v${k}`;
    const a = graph.avals[id];
    if (size(a.shape) === n) lines.push(`let ${name} = in${k}[${idx}];`);
    else {
      const dims = mergeDims(shape, broadcastStrides(a.shape, shape));
      lines.push(`${offsetOf(`o${k}`, idx, dims.shape, dims.strides)}`, `let ${name} = in${k}[o${k}];`);
    }
    loaded.set(id, name);
    return name;
  };
  emitMembers(graph, members, (id) => (inlined.has(id) ? `t${id}` : load(id)), "", lines);
  return { lines, value: `t${members[members.length - 1].out}` };
}

/** Appends `let t<id><suffix> = …;` for each elementwise member, reading operands through `arg`. */
function emitMembers(
  graph: Graph,
  members: readonly Eqn[],
  arg: (id: number) => string,
  suffix: string,
  lines: string[],
): void {
  for (const m of members) {
    const w = RULES[m.prim].wgsl;
    if (w.kind !== "map") throw new Error(`fused kernel: ${m.prim} is not elementwise`);
    const expr = (w.expr as (a: string[], i: readonly Aval[], o: Aval, p: unknown) => string)(
      m.inputs.map(arg),
      m.inputs.map((id) => graph.avals[id]),
      graph.avals[m.out],
      m.params,
    );
    lines.push(`let t${m.out}${suffix}: ${wgslType(graph.avals[m.out].dtype)} = ${expr};`);
  }
}

/** One kernel computing a fused elementwise tree; `members` ends with the root. */
export function fusedStep(graph: Graph, members: Eqn[], inlined: ReadonlySet<number>, inPlace = -1): Step {
  const root = members[members.length - 1];
  const out: Aval = graph.avals[root.out];
  const n = size(out.shape);
  const inputs: number[] = [];
  let kernel: KernelSource;
  if (n % 4 === 0 && n > 0) kernel = vec4Kernel(graph, members, inlined, inputs, inPlace);
  else {
    const { lines, value } = emitTree(graph, members, inlined, out.shape, "gid", inputs, inPlace);
    const body = `${lines.join("\n    ")}\n    out[gid] = ${value};`;
    kernel = elementwiseKernel(inputs.map((id) => graph.avals[id].dtype), out.dtype, n, body);
  }
  return {
    kernel,
    inputs,
    out: root.out,
    eqns: members,
    elementwise: true,
    inPlace: inPlace >= 0 ? inPlace : undefined,
  };
}

/**
 * A fused elementwise kernel in which each invocation computes 4 consecutive elements: full-size operands and
 * the output move as vec4 (lavapipe turns a vec4 access into one vector load instead of per-lane gathers, about
 * 2× faster), broadcast operands as a vec4 when their innermost run is contiguous, as one splatted scalar when
 * it is constant over the 4 elements, else as 4 scalars. The expressions stay scalar, one copy per component.
 */
function vec4Kernel(
  graph: Graph,
  members: Eqn[],
  inlined: ReadonlySet<number>,
  inputs: number[],
  inPlace: number,
): KernelSource {
  const root = members[members.length - 1];
  const out = graph.avals[root.out];
  const n = size(out.shape);
  const lines: string[] = [];
  const decls: string[] = [];
  const component = new Map<number, (c: number) => string>();
  const load = (id: number): (c: number) => string => {
    const known = component.get(id);
    if (known) return known;
    let get: (c: number) => string;
    if (id === inPlace) {
      // The operand shares the output buffer: read it from `out` before this invocation writes it.
      lines.push(`let vout = out[gid];`);
      get = (c) => `vout[${c}]`;
    } else {
      const k = inputs.push(id) - 1;
      const a = graph.avals[id];
      const t = wgslType(a.dtype);
      const dims = mergeDims(out.shape, broadcastStrides(a.shape, out.shape));
      const last = dims.shape.length - 1;
      const innerRun = last < 0 ? n : dims.shape[last];
      const innerStride = last < 0 ? 0 : dims.strides[last];
      const outerAligned = dims.strides.slice(0, Math.max(last, 0)).every((d) => d % 4 === 0);
      if (size(a.shape) === n) {
        decls.push(`@group(0) @binding(${k}) var<storage, read> in${k}: array<vec4<${t}>>;`);
        lines.push(`let v${k} = in${k}[gid];`);
        get = (c) => `v${k}[${c}]`;
      } else if (innerStride === 1 && innerRun % 4 === 0 && outerAligned) {
        decls.push(`@group(0) @binding(${k}) var<storage, read> in${k}: array<vec4<${t}>>;`);
        lines.push(offsetOf(`o${k}`, "e0", dims.shape, dims.strides), `let v${k} = in${k}[o${k} / 4u];`);
        get = (c) => `v${k}[${c}]`;
      } else if (innerStride === 0 && innerRun % 4 === 0) {
        decls.push(`@group(0) @binding(${k}) var<storage, read> in${k}: array<${t}>;`);
        lines.push(offsetOf(`o${k}`, "e0", dims.shape, dims.strides), `let v${k} = in${k}[o${k}];`);
        get = () => `v${k}`;
      } else {
        decls.push(`@group(0) @binding(${k}) var<storage, read> in${k}: array<${t}>;`);
        for (let c = 0; c < 4; c++) {
          lines.push(
            offsetOf(`o${k}_${c}`, `e0 + ${c}u`, dims.shape, dims.strides),
            `let v${k}_${c} = in${k}[o${k}_${c}];`,
          );
        }
        get = (c) => `v${k}_${c}`;
      }
    }
    component.set(id, get);
    return get;
  };
  for (let c = 0; c < 4; c++) {
    emitMembers(graph, members, (id) => (inlined.has(id) ? `t${id}_${c}` : load(id)(c)), `_${c}`, lines);
  }
  const t = wgslType(out.dtype);
  const code = `${PRELUDE}
${decls.join("\n")}
@group(0) @binding(${inputs.length}) var<storage, read_write> out: array<vec4<${t}>>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let gid = g.x + g.y * nw.x * ${WG}u;
  if (gid >= ${n / 4}u) { return; }
  let e0 = gid * 4u;
  ${lines.join("\n  ")}
  out[gid] = vec4<${t}>(${[0, 1, 2, 3].map((c) => `t${root.out}_${c}`).join(", ")});
}`;
  return { code, threads: n / 4, workgroupSize: WG };
}
