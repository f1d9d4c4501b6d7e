/**
 * Training schedules (spec §7.2, §4.1) as pure functions of the iteration (or epoch) returning numbers. They
 * reproduce the official NumPy arrays element by element: `cosineScheduler(...)[it]` is `cosineAt(it, ...)`.
 * The values enter the jitted step as scalar inputs, so changing them never retraces.
 */

/** Parameters of the official `cosine_scheduler`. */
export interface CosineSchedule {
  /** Value at the end of the warm-up (the start of the cosine). */
  base: number;
  /** Value the cosine tends to (never reached exactly). */
  final: number;
  /** Length of the schedule in epochs. */
  epochs: number;
  /** Iterations per epoch. */
  itersPerEpoch: number;
  /** Linear warm-up epochs (default 0). */
  warmupEpochs?: number;
  /** First warm-up value (default 0). */
  startWarmup?: number;
}

function checkIt(it: number, where: string): void {
  if (!Number.isInteger(it) || it < 0) throw new RangeError(`${where}: iteration must be an integer ≥ 0, got ${it}`);
}

/**
 * The official cosine schedule with linear warm-up at iteration `it`: the first `W = warmupEpochs·itersPerEpoch`
 * values are `linspace(startWarmup, base, W)` (both ends included), then for `j = it − W < J = total − W`,
 * `final + ½(base − final)(1 + cos(π j / J))`. Iterations past the end return the last value.
 *
 * @example
 * ```ts
 * import { cosineAt } from "./train/schedules.ts";
 * cosineAt(3, { base: 1, final: 0, epochs: 3, itersPerEpoch: 4, warmupEpochs: 1 }); // 1
 * ```
 */
export function cosineAt(it: number, s: CosineSchedule): number {
  checkIt(it, "cosineAt");
  const total = s.epochs * s.itersPerEpoch;
  const warm = (s.warmupEpochs ?? 0) * s.itersPerEpoch;
  if (!(total > 0 && Number.isInteger(total) && Number.isInteger(warm) && warm <= total)) {
    throw new RangeError(`cosineAt: bad schedule (${total} iterations, ${warm} warm-up)`);
  }
  const i = Math.min(it, total - 1);
  if (i < warm) {
    const start = s.startWarmup ?? 0;
    return warm === 1 ? start : start + (s.base - start) * (i / (warm - 1));
  }
  const j = i - warm;
  const J = total - warm;
  return s.final + 0.5 * (s.base - s.final) * (1 + Math.cos((Math.PI * j) / J));
}

/**
 * The whole schedule as an array (the official `cosine_scheduler`).
 *
 * @example
 * ```ts
 * import { schedules } from "./mod.ts";
 * console.log(schedules.cosineScheduler({ base: 1, final: 0, epochs: 2, itersPerEpoch: 2 }));
 * // [1, ~0.854, 0.5, ~0.146]
 * ```
 */
export function cosineScheduler(s: CosineSchedule): number[] {
  return Array.from({ length: s.epochs * s.itersPerEpoch }, (_, it) => cosineAt(it, s));
}

/**
 * Linear scaling rule: `lr · totalBatch / 256`.
 *
 * @example
 * ```ts
 * import { schedules } from "./mod.ts";
 * console.log(schedules.scaledLr(5e-4, 1024)); // 0.002
 * ```
 */
export function scaledLr(lr: number, totalBatch: number): number {
  return (lr * totalBatch) / 256;
}

/** Parameters of the per-epoch teacher temperature schedule. */
export interface TeacherTempSchedule {
  /** Start of the ramp (`--warmup_teacher_temp`, 0.04). */
  warmup?: number;
  /** End of the ramp (`--teacher_temp`; CLI default 0.04, recipes 0.07). */
  final: number;
  /** Ramp length in epochs (`--warmup_teacher_temp_epochs`, 30). */
  warmupEpochs?: number;
  /** Epochs held at `warmup` before the ramp (`pred_start_epoch` for the patch temperature; 0 for CLS). */
  startEpoch?: number;
}

/**
 * Teacher temperature at `epoch`: `startEpoch` epochs at `warmup`, then `linspace(warmup, final, warmupEpochs)`
 * (both ends included), then `final`. E.g. warm-up 0.04 → 0.07 over 30: e=0 0.04, e=1 0.041034, e=29 0.07.
 *
 * @example
 * ```ts
 * import { teacherTempAt } from "./train/schedules.ts";
 * teacherTempAt(29, { final: 0.07 }); // 0.07
 * ```
 */
export function teacherTempAt(epoch: number, s: TeacherTempSchedule): number {
  checkIt(epoch, "teacherTempAt");
  const warmup = s.warmup ?? 0.04;
  const W = s.warmupEpochs ?? 30;
  const e = epoch - (s.startEpoch ?? 0);
  if (e < 0) return warmup;
  if (e >= W) return s.final;
  return W === 1 ? warmup : warmup + (s.final - warmup) * (e / (W - 1));
}

/** The iBOT recipe's schedule settings (defaults: the official CLI defaults; the README recipes noted). */
export interface IbotScheduleConfig {
  /** Training length in epochs. */
  epochs: number;
  /** Iterations per epoch. */
  itersPerEpoch: number;
  /** Base lr before the linear scaling rule (5e-4). */
  lr?: number;
  /** Total batch size for the scaling rule (default 256: no scaling). */
  batchSize?: number;
  /** Linear lr warm-up epochs (10). */
  warmupEpochs?: number;
  /** Final lr of the cosine (1e-6). */
  minLr?: number;
  /** Initial weight decay (0.04). */
  weightDecay?: number;
  /** Final weight decay (0.4). */
  weightDecayEnd?: number;
  /** Initial teacher momentum (0.996), cosine to 1. */
  momentumTeacher?: number;
  /** Start of the CLS teacher temperature ramp (0.04). */
  warmupTeacherTemp?: number;
  /** CLI default 0.04; every README recipe 0.07. */
  teacherTemp?: number;
  /** Start of the patch teacher temperature ramp (0.04). */
  warmupTeacherPatchTemp?: number;
  /** End of the patch teacher temperature ramp (0.07). */
  teacherPatchTemp?: number;
  /** Length of both temperature ramps in epochs (30). */
  warmupTeacherTempEpochs?: number;
  /** Epoch at which MIM starts (masks all false before; delays the patch temperature ramp). */
  predStartEpoch?: number;
  /** Epochs during which the last layer is frozen (1). */
  freezeLastLayer?: number;
}

/** Everything that varies per iteration, as numbers (feed them to the jitted step as scalar inputs). */
export interface StepHyperparams {
  /** The epoch of the iteration. */
  epoch: number;
  /** Learning rate (both parameter groups). */
  lr: number;
  /** Weight decay of the decayed group. */
  wd: number;
  /** Teacher EMA momentum. */
  momentum: number;
  /** Teacher CLS temperature. */
  teacherTemp: number;
  /** Teacher patch temperature. */
  teacherPatchTemp: number;
  /** 1 while the last layer is frozen (`epoch < freezeLastLayer`), else 0. */
  freezeLastLayer: number;
}

/**
 * The per-iteration hyperparameters of the official recipe at global iteration `it`: lr (cosine with warm-up
 * from 0 to `lr·B/256`, then to `minLr`), weight decay (cosine 0.04 → 0.4), teacher momentum (cosine 0.996 → 1),
 * per-epoch teacher temperatures, and the last-layer freeze flag.
 *
 * @example
 * ```ts
 * import { hyperparamsAt } from "./train/schedules.ts";
 * const h = hyperparamsAt(0, { epochs: 100, itersPerEpoch: 50 }); // h.lr === 0, h.momentum === 0.996
 * ```
 */
export function hyperparamsAt(it: number, c: IbotScheduleConfig): StepHyperparams {
  checkIt(it, "hyperparamsAt");
  const { epochs, itersPerEpoch } = c;
  const epoch = Math.min(Math.floor(it / itersPerEpoch), epochs - 1);
  const warmT = c.warmupTeacherTempEpochs ?? 30;
  return {
    epoch,
    lr: cosineAt(it, {
      base: scaledLr(c.lr ?? 5e-4, c.batchSize ?? 256),
      final: c.minLr ?? 1e-6,
      epochs,
      itersPerEpoch,
      warmupEpochs: c.warmupEpochs ?? 10,
    }),
    wd: cosineAt(it, { base: c.weightDecay ?? 0.04, final: c.weightDecayEnd ?? 0.4, epochs, itersPerEpoch }),
    momentum: cosineAt(it, { base: c.momentumTeacher ?? 0.996, final: 1, epochs, itersPerEpoch }),
    teacherTemp: teacherTempAt(epoch, {
      warmup: c.warmupTeacherTemp ?? 0.04,
      final: c.teacherTemp ?? 0.04,
      warmupEpochs: warmT,
    }),
    teacherPatchTemp: teacherTempAt(epoch, {
      warmup: c.warmupTeacherPatchTemp ?? 0.04,
      final: c.teacherPatchTemp ?? 0.07,
      warmupEpochs: warmT,
      startEpoch: c.predStartEpoch ?? 0,
    }),
    freezeLastLayer: epoch < (c.freezeLastLayer ?? 1) ? 1 : 0,
  };
}
