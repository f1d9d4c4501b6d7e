/**
 * Memory planning of a WebGPU plan, done before any of its buffers exists: intermediates get buffer slots by
 * liveness (a slot is reused by a later value of the same size bucket once its value is dead), the plan's peak is
 * summed from slots, arguments, outputs and constants, and checked against the device's buffer limits and an
 * optional `maxMemory`.
 */
import type { Graph } from "../autograd/graph.ts";
import { checkPlanMemory, largestTensors, type PlanMemory } from "../autograd/memory.ts";
import { size } from "../ops/shape.ts";
import { gpuBytes } from "./backend.ts";

/** A step of a plan as the slot planner sees it: a kernel (or an alias) reading `inputs` and writing `out`. */
export interface SlotStep {
  kernel: unknown;
  inputs: readonly number[];
  out: number;
}

/** Bytes of a variable's buffer: its size rounded up to the pool's bucket (a power of two, at least 16). */
export function bucketBytes(graph: Graph, id: number): number {
  return Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(gpuBytes(size(graph.avals[id].shape)), 1))));
}

/**
 * Assigns a slot to every kernel output for which `isSlot` holds (alias chains use their root's), reusing a free
 * slot of the same bucket; a slot is freed after its value's last use (`lastUse`, by step), or at once when
 * nothing reads it. Returns each variable's slot (-1: none) and each slot's bytes.
 */
export function assignSlots(
  graph: Graph,
  steps: readonly SlotStep[],
  root: Int32Array,
  lastUse: Int32Array,
  isSlot: (id: number) => boolean,
): { slotOf: Int32Array; slotBytes: number[] } {
  const slotOf = new Int32Array(graph.avals.length).fill(-1);
  const slotBytes: number[] = [];
  const free = new Map<number, number[]>();
  const release = (slot: number) => {
    const bytes = slotBytes[slot];
    if (!free.has(bytes)) free.set(bytes, []);
    free.get(bytes)!.push(slot);
  };
  steps.forEach((s, i) => {
    if (s.kernel && isSlot(s.out)) {
      const bytes = bucketBytes(graph, s.out);
      const reuse = free.get(bytes);
      if (reuse && reuse.length) slotOf[s.out] = reuse.pop()!;
      else slotOf[s.out] = slotBytes.push(bytes) - 1;
    }
    for (const id of new Set(s.inputs.map((x) => root[x]))) {
      if (lastUse[id] === i && slotOf[id] >= 0) release(slotOf[id]);
    }
    if (slotOf[s.out] >= 0 && lastUse[s.out] < 0) release(slotOf[s.out]);
  });
  return { slotOf, slotBytes };
}

/**
 * The peak of a plan: its slots, its arguments, the outputs that get fresh buffers (those not written into a
 * donated argument) and its constants, counted in buffer bytes; `largest` among every value that gets a buffer,
 * in tensor bytes.
 */
export function webGpuPlanMemory(
  graph: Graph,
  steps: readonly SlotStep[],
  slotBytes: readonly number[],
  freshOutputs: Iterable<number>,
): PlanMemory {
  const bytes = (id: number) => bucketBytes(graph, id);
  const tensorBytes = (id: number) => gpuBytes(size(graph.avals[id].shape));
  const outs = [...freshOutputs];
  const intermediateBytes = slotBytes.reduce((a, b) => a + b, 0);
  const argumentBytes = graph.inputs.reduce((a, id) => a + bytes(id), 0);
  const outputBytes = outs.reduce((a, id) => a + bytes(id), 0);
  const constantBytes = graph.consts.reduce((a, c) => a + bytes(c.id), 0);
  const buffered = [
    ...graph.inputs,
    ...graph.consts.map((c) => c.id),
    ...steps.filter((s) => s.kernel).map((s) => s.out),
  ];
  return {
    peakBytes: intermediateBytes + argumentBytes + outputBytes + constantBytes,
    intermediateBytes,
    argumentBytes,
    outputBytes,
    constantBytes,
    largest: largestTensors(graph, buffered, tensorBytes),
  };
}

/** Checks a plan against the device's buffer limits and `maxMemory`; throws `PlanMemoryError` when it cannot fit. */
export function checkDeviceMemory(memory: PlanMemory, device: GPUDevice, maxMemory?: number): void {
  checkPlanMemory(memory, {
    maxMemory,
    maxBinding: device.limits.maxStorageBufferBindingSize,
    maxBuffer: device.limits.maxBufferSize,
  });
}
