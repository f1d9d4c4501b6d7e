/**
 * The WebGPU backend. Every op encodes one dispatch into a shared open compute pass; work is submitted when a
 * value is read back (or after many dispatches), never awaited inside an op. Released buffers return to a
 * size-bucketed pool owned by the backend, bounded in bytes (the least recently pooled buffers are destroyed past
 * the bound). Uploads reuse a pooled buffer of their bucket when there is one and no command is waiting to be
 * submitted (so none can observe the write out of order), else a fresh mapped buffer: a training loop that uploads
 * a batch per step and frees it after the step keeps reusing one buffer.
 */
import type { Backend } from "../ops/backend.ts";
import { allocHost, type DType, type HostArray } from "../ops/dtype.ts";
import type { Aval, Prim, PrimParams } from "../ops/prim.ts";
import type { KernelSource } from "../ops/rule.ts";
import { RULES } from "../ops/table.ts";
import { broadcastStrides, size } from "../ops/shape.ts";
import { elementwiseKernel, offsetOf, WG } from "./codegen.ts";
import { reduceKernel } from "./reduce.ts";

/** A pooled GPU buffer with its capacity in bytes. */
export interface GpuBuf {
  readonly buffer: GPUBuffer;
  readonly bytes: number;
}

const USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const MAX_DISPATCHES_PER_SUBMIT = 4096;
const MAX_WORKGROUPS_X = 65535;
/** Timestamps per query set (the WebGPU maximum count of a query set). */
export const QUERIES_PER_SET = 4096;
/** Free buffers kept per size bucket. */
const MAX_POOLED_PER_BUCKET = 1024;
/** Default bound of the pool's bytes (`WebGpuBackend.poolLimitBytes`). */
export const DEFAULT_POOL_LIMIT_BYTES = 512 * 2 ** 20;

/** Counters for tests and the jit debug API. */
export interface GpuStats {
  buffersCreated: number;
  dispatches: number;
  submits: number;
  pipelinesCompiled: number;
  pooledBytes: number;
  liveBytes: number;
}

/** GPU memory held by a backend, in bytes (buffer capacities: sizes rounded up to their pool bucket). */
export interface GpuMemory {
  /** Buffers held by tensors, jit plans and constants. */
  liveBytes: number;
  /** Free buffers kept in the pool for reuse. */
  pooledBytes: number;
  /** The most live bytes seen (since creation or `resetPeak`). */
  peakLiveBytes: number;
  /** The most live + pooled bytes seen: what the device held at its fullest. */
  peakBytes: number;
  /** Bound of `pooledBytes`; buffers past it are destroyed. */
  poolLimitBytes: number;
  /** Buffers created so far. */
  buffersCreated: number;
}

/** Rounds a byte size up to its pool bucket (powers of two, at least 16 bytes). */
function bucket(bytes: number): number {
  return Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(bytes, 1))));
}

/** Byte size of `n` elements on the GPU (every dtype is 4 bytes wide there). */
export function gpuBytes(n: number): number {
  return n * 4;
}

/** Creates the WebGPU backend on a device. */
export class WebGpuBackend implements Backend {
  readonly name = "webgpu" as const;
  readonly device: GPUDevice;
  readonly adapterInfo: string;
  readonly stats: GpuStats = {
    buffersCreated: 0,
    dispatches: 0,
    submits: 0,
    pipelinesCompiled: 0,
    pooledBytes: 0,
    liveBytes: 0,
  };
  /** Bound of the pool in bytes: released buffers past it are destroyed, the least recently pooled first. */
  poolLimitBytes = DEFAULT_POOL_LIMIT_BYTES;
  private pool = new Map<number, GPUBuffer[]>();
  /** Pooled buffers in the order they were released (oldest first), for eviction. */
  private pooledOrder = new Set<GPUBuffer>();
  private peakLive = 0;
  private peakHeld = 0;
  private pipelines = new Map<string, GPUComputePipeline>();
  private kernels = new Map<string, KernelSource>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pending = 0;
  private doomed: GPUBuffer[] = [];
  private errors: string[] = [];

  constructor(device: GPUDevice, adapterInfo: string) {
    this.device = device;
    this.adapterInfo = adapterInfo;
  }

  /** Records an uncaptured device error; the next `read` throws with it, so no invalid result goes unnoticed. */
  reportError(message: string): void {
    this.errors.push(message.trim());
  }

  supports(dtype: DType): boolean {
    return dtype !== "float64";
  }

  /** A buffer of at least `bytes` from the pool, or a new one. */
  alloc(bytes: number): GpuBuf {
    const cap = bucket(bytes);
    const pooled = this.takePooled(cap);
    this.addLive(cap);
    if (pooled) return { buffer: pooled, bytes: cap };
    this.stats.buffersCreated++;
    return { buffer: this.device.createBuffer({ size: cap, usage: USAGE }), bytes: cap };
  }

  upload(data: HostArray, aval: Aval): GpuBuf {
    const n = size(aval.shape);
    const cap = bucket(gpuBytes(n));
    // writeBuffer happens at the next submit, before the commands encoded so far, one of which may still read a
    // pooled buffer's previous contents: reuse one only when nothing is encoded (as between the calls of a jitted
    // step), else map a fresh one (eager code that interleaves uploads and ops would otherwise submit per upload).
    const pooled = this.encoder ? null : this.takePooled(cap);
    this.addLive(cap);
    if (pooled) {
      if (n > 0) {
        const src = aval.dtype === "bool" ? Uint32Array.from(data) : data;
        this.device.queue.writeBuffer(pooled, 0, src.buffer, src.byteOffset, gpuBytes(n));
      }
      return { buffer: pooled, bytes: cap };
    }
    const buffer = this.device.createBuffer({ size: cap, usage: USAGE, mappedAtCreation: true });
    this.stats.buffersCreated++;
    const range = buffer.getMappedRange();
    if (aval.dtype === "bool") new Uint32Array(range, 0, n).set(data);
    else new Uint8Array(range, 0, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buffer.unmap();
    return { buffer, bytes: cap };
  }

  /** The most recently pooled free buffer of a bucket, or null. */
  private takePooled(cap: number): GPUBuffer | null {
    const buffer = this.pool.get(cap)?.pop();
    if (!buffer) return null;
    this.pooledOrder.delete(buffer);
    this.stats.pooledBytes -= cap;
    return buffer;
  }

  private addLive(cap: number): void {
    this.stats.liveBytes += cap;
    this.peakLive = Math.max(this.peakLive, this.stats.liveBytes);
    this.peakHeld = Math.max(this.peakHeld, this.stats.liveBytes + this.stats.pooledBytes);
  }

  /** Live, pooled and peak bytes of this backend. */
  memory(): GpuMemory {
    return {
      liveBytes: this.stats.liveBytes,
      pooledBytes: this.stats.pooledBytes,
      peakLiveBytes: this.peakLive,
      peakBytes: this.peakHeld,
      poolLimitBytes: this.poolLimitBytes,
      buffersCreated: this.stats.buffersCreated,
    };
  }

  /** Restarts the peaks of `memory()` from the current bytes. */
  resetPeak(): void {
    this.peakLive = this.stats.liveBytes;
    this.peakHeld = this.stats.liveBytes + this.stats.pooledBytes;
  }

  async read(handle: unknown, aval: Aval): Promise<HostArray> {
    const buf = handle as GpuBuf;
    const n = size(aval.shape);
    const bytes = gpuBytes(n);
    if (n === 0) return allocHost(aval.dtype, 0);
    this.endPass();
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(buf.buffer, 0, staging, 0, bytes);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const raw = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    if (this.errors.length > 0) {
      const first = this.errors[0];
      const more = this.errors.length > 1 ? ` (and ${this.errors.length - 1} more)` : "";
      this.errors = [];
      throw new Error(`WebGPU reported an error before this read; results are invalid: ${first}${more}`);
    }
    if (aval.dtype === "bool") return Uint8Array.from(new Uint32Array(raw));
    const out = allocHost(aval.dtype, n);
    new Uint8Array(out.buffer).set(new Uint8Array(raw));
    return out;
  }

  run<P extends Prim>(prim: P, ins: readonly unknown[], inAvals: readonly Aval[], params: PrimParams[P], out: Aval) {
    // JSON writes Infinity, -Infinity and NaN all as null: name them, or pad(x, ..., Infinity) would reuse the kernel
    // compiled for -Infinity.
    const exact = (_: string, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v);
    const key = `${prim}|${inAvals.map((a) => `${a.dtype}[${a.shape}]`).join(";")}|${JSON.stringify(params, exact)}`;
    let kernel = this.kernels.get(key);
    if (!kernel) {
      kernel = lower(prim, inAvals, params, out);
      this.kernels.set(key, kernel);
    }
    const result = this.alloc(gpuBytes(size(out.shape)));
    this.dispatch(kernel, [...(ins as GpuBuf[]), result]);
    return result;
  }

  release(handle: unknown): void {
    const buf = handle as GpuBuf;
    this.stats.liveBytes -= buf.bytes;
    const list = this.pool.get(buf.bytes);
    // Surplus buffers are destroyed after the next submit (queued commands may still use them).
    if ((list && list.length >= MAX_POOLED_PER_BUCKET) || buf.bytes > this.poolLimitBytes) {
      this.doomed.push(buf.buffer);
      return;
    }
    this.stats.pooledBytes += buf.bytes;
    if (list) list.push(buf.buffer);
    else this.pool.set(buf.bytes, [buf.buffer]);
    this.pooledOrder.add(buf.buffer);
    this.evict(this.poolLimitBytes);
  }

  /** Destroys the least recently pooled buffers until the pool holds at most `limit` bytes. */
  private evict(limit: number): void {
    for (const buffer of this.pooledOrder) {
      if (this.stats.pooledBytes <= limit) break;
      const cap = buffer.size;
      const list = this.pool.get(cap)!;
      list.splice(list.indexOf(buffer), 1);
      this.pooledOrder.delete(buffer);
      this.stats.pooledBytes -= cap;
      this.doomed.push(buffer);
    }
  }

  /** Compiles (once) and returns the pipeline for a shader. */
  pipeline(code: string): GPUComputePipeline {
    let p = this.pipelines.get(code);
    if (!p) {
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
      this.pipelines.set(code, p);
      this.stats.pipelinesCompiled++;
    }
    return p;
  }

  /** Encodes one dispatch of `kernel` over `buffers` (operands then output) into the open pass. */
  dispatch(kernel: KernelSource, buffers: readonly GpuBuf[]): void {
    if (kernel.threads === 0) return;
    const pipeline = this.pipeline(kernel.code);
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((b, i) => ({ binding: i, resource: { buffer: b.buffer } })),
    });
    this.dispatchPrebuilt(pipeline, bindGroup, kernel);
  }

  /** Encodes a dispatch whose pipeline and bind group were built ahead (jit plans). */
  dispatchPrebuilt(pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, kernel: KernelSource): void {
    if (kernel.threads === 0) return;
    const groups = Math.ceil(kernel.threads / kernel.workgroupSize);
    const x = Math.min(groups, MAX_WORKGROUPS_X);
    const y = Math.ceil(groups / x);
    if (this.profiling) {
      // One pass per dispatch, with timestamps at its start and end.
      this.endPass();
      this.encoder ??= this.device.createCommandEncoder();
      const q = this.profiling;
      // Query sets hold at most 4096 timestamps: dispatch i uses set floor(2i / 4096).
      const set = q.sets[Math.floor(q.next / QUERIES_PER_SET)];
      const at = q.next % QUERIES_PER_SET;
      const pass = this.encoder.beginComputePass({
        timestampWrites: { querySet: set, beginningOfPassWriteIndex: at, endOfPassWriteIndex: at + 1 },
      });
      q.next += 2;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y);
      pass.end();
      this.stats.dispatches++;
      return;
    }
    if (!this.pass) {
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass();
    }
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y);
    this.stats.dispatches++;
    if (++this.pending >= MAX_DISPATCHES_PER_SUBMIT) this.flush();
  }

  private profiling: { sets: GPUQuerySet[]; next: number } | null = null;

  /**
   * Debug: time every following dispatch with two timestamps until `endProfile`; dispatch i writes queries
   * 2i and 2i+1 of the concatenated `sets` (each of `QUERIES_PER_SET`).
   */
  beginProfile(sets: GPUQuerySet[]): void {
    this.flush();
    this.profiling = { sets, next: 0 };
  }

  /** Ends profiling and submits. */
  endProfile(): void {
    this.profiling = null;
    this.flush();
  }

  /** Encodes a buffer copy in order with the queued dispatches. */
  copy(src: GpuBuf, dst: GpuBuf, bytes: number): void {
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, bytes);
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  /** Submits everything encoded so far (no await). */
  flush(): void {
    this.endPass();
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.stats.submits++;
      this.encoder = null;
    }
    this.pending = 0;
    for (const b of this.doomed) b.destroy();
    this.doomed = [];
  }

  private finiteFlag: GpuBuf | null = null;

  /** Debug: records `index` in a flag buffer (atomic min) if `handle` holds a NaN or infinity. */
  flagNonFinite(handle: unknown, n: number, index: number): void {
    if (!this.finiteFlag) {
      this.finiteFlag = this.upload(new Uint32Array([0xffffffff]), { shape: [1], dtype: "uint32" });
    }
    const code = `@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> flag: atomic<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let i = g.x + g.y * nw.x * ${WG}u;
  if (i >= ${n}u) { return; }
  if ((x[i] & 0x7f800000u) == 0x7f800000u) { atomicMin(&flag, ${index}u); }
}`;
    this.dispatch({ code, threads: n, workgroupSize: WG }, [handle as GpuBuf, this.finiteFlag]);
  }

  /** Debug: the lowest op index flagged as non-finite, or -1; resets the flag. */
  async readNonFiniteFlag(): Promise<number> {
    if (!this.finiteFlag) return -1;
    const v = (await this.read(this.finiteFlag, { shape: [1], dtype: "uint32" }))[0];
    this.release(this.finiteFlag);
    this.finiteFlag = null;
    return v === 0xffffffff ? -1 : v;
  }

  /** Destroys every pooled buffer (after submitting queued work that may use them). */
  trim(): void {
    for (const list of this.pool.values()) this.doomed.push(...list);
    this.pool.clear();
    this.pooledOrder.clear();
    this.stats.pooledBytes = 0;
    this.flush();
  }

  /** Waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
  }
}

/** Builds the shader of one primitive application from its rule's WGSL lowering. */
export function lower<P extends Prim>(prim: P, ins: readonly Aval[], params: PrimParams[P], out: Aval): KernelSource {
  const w = RULES[prim].wgsl;
  if (w.kind === "kernel") return w.build(ins, out, params);
  if (w.kind === "reduce") {
    return reduceKernel(ins[0], (params as { axes: number[] }).axes, out, w.init(ins[0].dtype), w.step);
  }
  if (w.kind === "alias") throw new Error(`${prim}: alias primitives have no kernel`);
  const n = size(out.shape);
  const loads = ins.map((a, k) => {
    if (size(a.shape) === n) return { code: "", expr: `in${k}[gid]` };
    const strides = broadcastStrides(a.shape, out.shape);
    return { code: offsetOf(`o${k}`, "gid", out.shape, strides), expr: `in${k}[o${k}]` };
  });
  const expr = w.expr(loads.map((l) => l.expr), ins, out, params);
  const body = `${loads.map((l) => l.code).join("\n    ")}
    out[gid] = ${expr};`;
  return elementwiseKernel(ins.map((a) => a.dtype), out.dtype, n, body);
}
