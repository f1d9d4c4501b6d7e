/**
 * The training step's memory, planned before the run allocates anything: the state's shapes come from tracing
 * its initialisation (`evalShape`), the batch is a set of placeholders at the largest mask capacity, and the
 * step plans itself on them (its main plan: the fused step, or one micro-batch's gradient plan), refusing a plan
 * that cannot fit with a `PlanMemoryError`.
 * The trace is kept, so the first real call of the same shapes reuses it.
 */
import type { Tensor } from "../ops/tensor.ts";
import { evalShape, placeholder } from "../autograd/jit.ts";
import type { PlanMemory } from "../autograd/memory.ts";
import type { Backend } from "../ops/backend.ts";
import { maskCapacity, type MaskOptions } from "./masking.ts";
import type { IbotBatch, IbotHyper } from "./step.ts";

/** What the step's batch looks like: `images` `[B, C, S, S]` and the masks of the global crops' grids. */
export interface StepBatchShape {
  /** Images per pass of the plan (the micro-batch when the step accumulates). */
  batchSize: number;
  /** Channels of the images. */
  channels: number;
  /** Side of the (square) images. */
  imageSize: number;
  /** The MIM mask grid of each global crop. */
  grids: readonly (readonly [number, number])[];
  /** The masking options (their highest ratio sizes the masked-patch rows). */
  masking: MaskOptions;
}

/**
 * Plans `step(state, batch, hyper)` for a state made by `init(key)` and a batch of `shape`, without allocating
 * the state or any buffer of the plan; returns the plan's memory, or throws `PlanMemoryError` when the plan
 * cannot fit (the device's buffer limits, the step's `maxMemory`).
 */
export function planStepMemory<S>(
  step: { readonly micro: boolean; memory(state: S, batch: IbotBatch, hp: IbotHyper): PlanMemory },
  init: (key: Tensor) => S,
  key: Tensor,
  shape: StepBatchShape,
  hyper: IbotHyper,
  backend: Backend,
): PlanMemory {
  const state = evalShape(init, key);
  const { batchSize: B, grids } = shape;
  const n = grids.length > 0 ? grids[0][0] * grids[0][1] : 0;
  const rows = maskCapacity(grids.length * B, n, shape.masking).max;
  const batch: IbotBatch = {
    images: placeholder([B, shape.channels, shape.imageSize, shape.imageSize], "float32", backend),
    masks: grids.map(([gh, gw]) => placeholder([B, gh, gw], "bool", backend)),
    maskSelection: { index: placeholder([rows], "int32", backend), weight: placeholder([rows], "float32", backend) },
  };
  // A micro-batch also carries its images' positions in the whole batch.
  if (step.micro) batch.index = placeholder([B], "int32", backend);
  return step.memory(state, batch, hyper);
}
