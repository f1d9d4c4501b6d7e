/**
 * Training schedules (spec §7.2, §4.1) as pure functions of the iteration (or epoch) returning numbers. They
 * reproduce the official NumPy arrays element by element: `cosineScheduler(...)[it]` is `cosineAt(it, ...)`.
 * The values enter the jitted step as scalar inputs, so changing them never retraces. This is the only
 * implementation of the schedules: training reads `hyperparamsAt` through its resolved run (`train/run_spec.ts`).
 */
import type { IbotHyper } from "./step.ts";

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
  return cosineAtIteration(
    it,
    s.epochs * s.itersPerEpoch,
    (s.warmupEpochs ?? 0) * s.itersPerEpoch,
    s.base,
    s.final,
    s.startWarmup ?? 0,
  );
}

/** `cosineAt` over iteration counts: `total` iterations of which the first `warm` are the linear warm-up. */
function cosineAtIteration(it: number, total: number, warm: number, base: number, final: number, start: number) {
  if (!(total > 0 && Number.isInteger(total) && Number.isInteger(warm) && warm >= 0 && warm <= total)) {
    throw new RangeError(`cosineAt: bad schedule (${total} iterations, ${warm} warm-up)`);
  }
  const i = Math.min(it, total - 1);
  if (i < warm) return warm === 1 ? start : start + (base - start) * (i / (warm - 1));
  const j = i - warm;
  const J = total - warm;
  return final + 0.5 * (base - final) * (1 + Math.cos((Math.PI * j) / J));
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

/**
 * A linear ramp per iteration (not in the official recipe, which ramps temperatures per epoch): `start` for
 * `it < delay`, then `start + (end − start)·j / iters` for `j = it − delay < iters`, then `end`. Short runs use
 * it for the teacher temperatures, which a per-epoch ramp would move in a few coarse steps.
 *
 * @example
 * ```ts
 * import { linearRampAt } from "./train/schedules.ts";
 * linearRampAt(5, { start: 0.04, end: 0.07, iters: 10 }); // 0.055
 * ```
 */
export function linearRampAt(it: number, r: { start: number; end: number; iters: number; delay?: number }): number {
  checkIt(it, "linearRampAt");
  const j = it - (r.delay ?? 0);
  if (j < 0) return r.start;
  return j < r.iters ? r.start + ((r.end - r.start) * j) / r.iters : r.end;
}

/** The iBOT recipe's schedule settings (defaults: the official CLI defaults; the README recipes noted). */
export interface IbotScheduleConfig {
  /** Training length in epochs: every schedule spans `epochs · itersPerEpoch` iterations. */
  epochs: number;
  /** Iterations per epoch. */
  itersPerEpoch: number;
  /** Base lr before the linear scaling rule (5e-4). */
  lr?: number;
  /** Total batch size for the scaling rule (default 256: no scaling). */
  batchSize?: number;
  /**
   * Linear lr warm-up epochs (10). A fraction (not official) warms up for `round(warmupEpochs · itersPerEpoch)`
   * iterations.
   */
  warmupEpochs?: number;
  /** Final lr of the cosine (1e-6). */
  minLr?: number;
  /** Initial weight decay (0.04). */
  weightDecay?: number;
  /** Final weight decay (0.4). */
  weightDecayEnd?: number;
  /** Initial teacher momentum (0.996). */
  momentumTeacher?: number;
  /** Value the teacher momentum's cosine tends to (1). */
  momentumTeacherEnd?: number;
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
  /**
   * Not official: ramp both teacher temperatures per iteration (`linearRampAt`) over this fraction of the run's
   * iterations (rounded, at least 1) instead of per epoch over `warmupTeacherTempEpochs`.
   */
  teacherTempRampFraction?: number;
  /** Epoch at which MIM starts (masks all false before; delays the patch temperature ramp). */
  predStartEpoch?: number;
  /** Epochs during which the last layer is frozen (1). */
  freezeLastLayer?: number;
}

/**
 * Everything that varies per iteration, with the epoch always set.
 *
 * @deprecated Use `IbotHyper` (train/step.ts), the one hyperparameter type; `hyperparamsAt` returns it.
 */
export type StepHyperparams = Required<IbotHyper>;

/**
 * The per-iteration hyperparameters of the recipe at global iteration `it`: lr (cosine with warm-up from 0 to
 * `lr·B/256`, then to `minLr`), weight decay (cosine 0.04 → 0.4), teacher momentum (cosine 0.996 → 1), the
 * teacher temperatures (per epoch, or per iteration with `teacherTempRampFraction`), and the last-layer freeze
 * flag. This is what training feeds its step (`train/run_spec.ts` builds the config from a preset).
 *
 * @example
 * ```ts
 * import { hyperparamsAt } from "./train/schedules.ts";
 * const h = hyperparamsAt(0, { epochs: 100, itersPerEpoch: 50 }); // h.lr === 0, h.momentum === 0.996
 * ```
 */
export function hyperparamsAt(it: number, c: IbotScheduleConfig): Required<IbotHyper> {
  checkIt(it, "hyperparamsAt");
  const { epochs, itersPerEpoch } = c;
  const total = epochs * itersPerEpoch;
  const epoch = Math.min(Math.floor(it / itersPerEpoch), epochs - 1);
  const cosine = (base: number, final: number, warm = 0) => cosineAtIteration(it, total, warm, base, final, 0);
  const predStart = c.predStartEpoch ?? 0;
  const temp = (start: number, end: number, delayEpochs: number) => {
    if (c.teacherTempRampFraction === undefined) {
      return teacherTempAt(epoch, {
        warmup: start,
        final: end,
        warmupEpochs: c.warmupTeacherTempEpochs ?? 30,
        startEpoch: delayEpochs,
      });
    }
    const iters = Math.max(1, Math.round(c.teacherTempRampFraction * total));
    return linearRampAt(it, { start, end, iters, delay: delayEpochs * itersPerEpoch });
  };
  return {
    epoch,
    lr: cosine(
      scaledLr(c.lr ?? 5e-4, c.batchSize ?? 256),
      c.minLr ?? 1e-6,
      Math.round((c.warmupEpochs ?? 10) * itersPerEpoch),
    ),
    wd: cosine(c.weightDecay ?? 0.04, c.weightDecayEnd ?? 0.4),
    momentum: cosine(c.momentumTeacher ?? 0.996, c.momentumTeacherEnd ?? 1),
    teacherTemp: temp(c.warmupTeacherTemp ?? 0.04, c.teacherTemp ?? 0.04, 0),
    teacherPatchTemp: temp(c.warmupTeacherPatchTemp ?? 0.04, c.teacherPatchTemp ?? 0.07, predStart),
    freezeLastLayer: epoch < (c.freezeLastLayer ?? 1) ? 1 : 0,
  };
}
