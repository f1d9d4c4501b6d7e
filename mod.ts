/**
 * ibot-ts: a pure-functional tensor and autograd engine with CPU and WebGPU backends, and iBOT pretraining
 * on top of it.
 *
 * @example
 * ```ts
 * import { grad, initBackend, jit, tensor } from "./mod.ts";
 * await initBackend("auto");
 * const f = (x: any) => x.mul(x).sum();
 * const df = jit(grad(f));
 * console.log(await df(tensor([1, 2, 3])).toArray()); // [2, 4, 6]
 * ```
 *
 * @module
 */
export { type NestedArray, Tensor } from "./ops/tensor.ts";
export { keep, tidy } from "./ops/engine.ts";
export { assertFinite, enableFiniteCheck, NonFiniteError } from "./autograd/debug.ts";
export { customVjp, grad, type GradOptions, type Pullback, valueAndGrad, vjp } from "./autograd/vjp.ts";
export { remat } from "./autograd/remat.ts";
export { evalShape, jit, type JitOptions, type JitStats, type Jitted, placeholder } from "./autograd/jit.ts";
export {
  backendMemory,
  fmtBytes,
  type MemoryLimits,
  parseBytes,
  type PlanMemory,
  PlanMemoryError,
  type PlanTensor,
} from "./autograd/memory.ts";
export { type Eqn, type Graph, printGraph } from "./autograd/graph.ts";
export type { DataRef } from "./ops/tensor.ts";
export type { KernelTiming, PlanStats } from "./wgsl/compile.ts";
export type { GpuMemory } from "./wgsl/backend.ts";
/** Pytree utilities: `map`, `leaves`, `flatten`/`unflatten`, `paths`, `fromPaths`, `emaFold`. */
export * as tree from "./autograd/tree.ts";
export { emaFold, type Tree } from "./autograd/tree.ts";
export * from "./ops/api.ts";
export {
  arange,
  type CreateOptions,
  fromTyped,
  full,
  type NestedInput,
  ones,
  tensor,
  toBackend,
  zeros,
} from "./ops/create.ts";
export { defaultBackend, initBackend, useBackend, webgpu } from "./ops/backends.ts";
export { cpu } from "./ops/cpu.ts";
export type { Backend, Handle } from "./ops/backend.ts";
export type { Shape } from "./ops/shape.ts";
export type { DType, HostArray } from "./ops/dtype.ts";
export {
  type Aval,
  BINARY,
  type BinaryPrim,
  COMPARE,
  type ComparePrim,
  type Prim,
  type PrimParams,
  PRIMS,
  REDUCE,
  type ReducePrim,
  UNARY,
  type UnaryPrim,
} from "./ops/prim.ts";
/** Counter-based PRNG: `key`, `split`, `foldIn`, `uniform`, `normal`, `truncatedNormal`, `bernoulli`, ... */
export * as random from "./ops/random.ts";
/** Composite layers: `softmax`, `logSoftmax`, `layerNorm`, `gelu`, `linear`, `dropout`, `resizeBicubic`, ... */
export * as nn from "./ops/nn.ts";
export {
  encodeSafetensors,
  type HostTensor,
  loadSafetensors,
  parseSafetensors,
  readSafetensorsHeader,
  type SafetensorsFile,
  type SafetensorsHeader,
  saveSafetensors,
} from "./models/safetensors.ts";
export {
  countParams,
  initVit,
  type InitVitOptions,
  interpolatePosEmbed,
  type LayerNormParams,
  type LinearParams,
  vit,
  VIT_DEFAULTS,
  VIT_PRESETS,
  type VitArch,
  type VitBlockParams,
  type VitConfig,
  vitConfig,
  type VitConfigInput,
  type VitOptions,
  type VitOutput,
  type VitParams,
  vitParamShapes,
} from "./models/vit.ts";
export {
  head,
  type HeadConfig,
  headFeatures,
  type HeadLinear,
  type HeadOptions,
  type HeadParams,
  headParamShapes,
  headPrototypes,
  initHead,
  type InitHeadOptions,
  weightNormWeight,
} from "./models/head.ts";
export {
  type InitOptions as InitSwinOptions,
  initSwin,
  patchEmbed as swinPatchEmbed,
  patchMerging,
  type PatchMergingParams,
  relativePositionIndex,
  shiftAttnMask,
  swin,
  type SwinAffine,
  swinBlock,
  type SwinBlockOptions,
  type SwinBlockParams,
  type SwinConfig,
  type SwinLayerParams,
  swinLayout,
  type SwinOptions,
  swinOutDim,
  type SwinParams,
  swinSpec,
  type SwinStage,
  swinTest,
  swinTiny,
  windowAttention,
  windowPartition,
  windowReverse,
} from "./models/swin.ts";
export { ParamSpec } from "./models/spec.ts";
export { ibotLoss, type IbotLossInput, type IbotLossOutput, type MaskedPatchLogits } from "./train/loss.ts";
export {
  type AdamWGroups,
  adamwInit,
  type AdamWOptions,
  type AdamWState,
  adamwUpdate,
  clipGradsPerParam,
  decays,
  defaultTrainable,
  isLastLayer,
} from "./train/optim.ts";
/** iBOT's blockwise and random patch masks, deterministic from a key. */
export * as masking from "./train/masking.ts";
/** Training schedules (cosine with warm-up, temperatures, momentum) as pure functions of the iteration. */
export * as schedules from "./train/schedules.ts";
export type { IbotScheduleConfig } from "./train/schedules.ts";
export {
  loadPth,
  parsePth,
  type PthFile,
  type PthOptions,
  PyGlobal,
  PyObject,
  stateDict,
  type StorageRef,
  TorchTensor,
  unpickle,
  type UnpickleOptions,
} from "./models/pth.ts";
export { CheckpointError, type CheckpointFormat, sniffFormat } from "./models/format.ts";
/** Model weights: `.pth`/safetensors files read into named tensors and loaded into a model tree. */
export {
  type ExportOptions,
  exportTeacherBackbone,
  type Loaded,
  loadWeightsIntoModel,
  type LoadWeightsOptions,
  type ModelWeightsFile,
  type NamedTensors,
  parseModelWeights,
  readModelWeights,
  saveTeacherBackbone,
  specFromShapes,
} from "./models/checkpoint.ts";
/** Deprecated names of the model-weight functions (renamed for what they hold); removed in the next release. */
export {
  type CheckpointFile,
  loadIntoModel,
  type LoadIntoModelOptions,
  parseCheckpoint,
  readCheckpoint,
} from "./models/checkpoint.ts";
/** iBOT's multi-crop augmentation, batched on the device and deterministic from a key. */
export * as augment from "./train/augment.ts";
/** Datasets (embedded shapes, Fashion-MNIST, image folders) and the prefetching, resumable batch loader. */
export * as data from "./train/data/mod.ts";
export {
  addIbotSums,
  type IbotBatch,
  ibotGrads,
  type IbotHyper,
  type IbotMetrics,
  type IbotNetwork,
  type IbotState,
  ibotStep,
  type IbotStepConfig,
  type IbotSums,
  ibotUpdate,
} from "./train/step.ts";
export { type DataName, PRESETS, type PretrainConfig } from "./train/presets.ts";
export {
  configureRun,
  hyperAt,
  MAX_BATCH,
  presetSchedule,
  resolveRun,
  RunChangeError,
  type RunChanges,
  type RunData,
  runHyperparams,
  type RunSpec,
} from "./train/run_spec.ts";
export {
  type BackboneData,
  backboneDim,
  backboneFeatures,
  type BackboneForwardOptions,
  type BackboneInput,
  type BackboneParams,
  type BackboneSpec,
  backboneTokens,
  initBackbone,
  isSwin,
  maskGrid,
  resolveBackbone,
  smallSwin,
  SWIN_PRESETS,
  type SwinArch,
  type SwinBackboneInput,
} from "./train/backbone.ts";
export type {
  AugmentConfig,
  BlurConfig,
  ColorJitterConfig,
  CropGroupConfig,
  Interpolation,
  SolarizeConfig,
} from "./train/augment.ts";
export type { MaskOptions } from "./train/masking.ts";
export type { Dataset, Split } from "./train/data/dataset.ts";
export {
  NonFiniteLossError,
  pretrain,
  type PretrainOptions,
  type PretrainResult,
  type Progress,
} from "./train/pretrain.ts";
export { knnAccuracy, type KnnOptions } from "./train/knn.ts";
/** The training state (to resume a run): saved and loaded whole, with its metadata. */
export {
  loadTrainingState,
  readTrainingStateMeta,
  saveTrainingState,
  type TrainingStateMeta,
} from "./train/checkpoint.ts";
/** Deprecated names of the training-state functions (renamed for what they hold); removed in the next release. */
export { type CheckpointMeta, loadCheckpoint, readCheckpointMeta, saveCheckpoint } from "./train/checkpoint.ts";
export { type ConfigDifference, Interrupted, ScheduleMismatchError } from "./train/run_state.ts";
export { DataError, InputError } from "./errors.ts";
/** The type of a data-parallel job; the collectives themselves live in `distributed/mod.ts` (imported on demand). */
export type { Communicator } from "./distributed/mod.ts";
