/**
 * The resolved run: a preset, the changes a command line makes to it and a dataset, turned once into what every
 * later stage reads: the backbone built for the data, the MIM mask grid, the iterations per epoch and of the
 * run, and the schedules' settings. `pretrain`, its step config and state, and the CLI read this record instead
 * of re-deriving any of it from the preset.
 *
 * @module
 */
import { VIT_PRESETS } from "../models/vit.ts";
import { InputError } from "../errors.ts";
import type { PretrainConfig } from "./presets.ts";
import {
  type BackboneSpec,
  isSwin,
  maskGrid,
  resolveBackbone,
  smallSwin,
  SWIN_PRESETS,
  type SwinArch,
} from "./backbone.ts";
import { hyperparamsAt, type IbotScheduleConfig } from "./schedules.ts";
import type { IbotHyper } from "./step.ts";
import { stepsPerEpoch } from "./data/loader.ts";
import type { Dataset } from "./data/dataset.ts";

/** The largest batch a run takes (2^16); memory limits usually bind first. */
export const MAX_BATCH = 65536;

/** A change to a preset that cannot apply; `flag` is the command-line flag that makes it. */
export class RunChangeError extends InputError {
  /** Always `"RunChangeError"`. */
  override name = "RunChangeError";
  /** The flag (`--arch`, `--batch-size`, ...). */
  readonly flag: string;
  /** The error of `flag`, with a message that names it. */
  constructor(flag: string, message: string) {
    super(message);
    this.flag = flag;
  }
}

/** What a run may change in its preset (the pretraining CLI's flags). */
export interface RunChanges {
  /** A `vit_*` or `swin_*` architecture (`--arch`): a ViT keeps the preset's patch; a Swin is laid out for the crop. */
  arch?: string;
  /** Epochs of the schedules (`--epochs`). */
  epochs?: number;
  /** Epoch at which MIM starts (`--pred-start-epoch`; default for a Swin: epochs/6, the official 50 of 300). */
  predStartEpoch?: number;
  /** Images per step (`--batch-size`). */
  batchSize?: number;
  /** Recompute each backbone block's activations in the backward pass (`--remat`). */
  remat?: boolean;
}

/**
 * The configuration field each flag sets, as a pattern over the dotted paths of `PretrainConfig` (and the
 * checkpoint's identity fields): a resumed run that differs from its checkpoint names the flag.
 */
export const FLAG_OF_FIELD: readonly (readonly [RegExp, string])[] = [
  [/^epochs$/, "--epochs"],
  [/^batchSize$/, "--batch-size"],
  [/^masking\.predStartEpoch$/, "--pred-start-epoch"],
  [/^(backbone|swin)(\.|$)/, "--arch"],
  [/^(preset|name)$/, "--preset"],
  [/^seed$/, "--seed"],
  [/^(dataset|trainImages)$/, "--data"],
];

/**
 * The preset with a run's changes applied (a copy): the configuration a checkpoint records.
 *
 * @example
 * ```ts
 * import { configureRun, PRESETS } from "./mod.ts";
 * const cfg = configureRun(PRESETS["embedded-small"], { arch: "swin_tiny", epochs: 12 });
 * console.log(cfg.swin?.depths, cfg.masking.predStartEpoch); // [2, 2] 2
 * ```
 */
export function configureRun(preset: PretrainConfig, changes: RunChanges): PretrainConfig {
  const cfg: PretrainConfig = structuredClone(preset);
  const { arch } = changes;
  if (arch !== undefined) {
    if (isSwin(arch)) {
      if (!(arch in SWIN_PRESETS)) {
        throw new RunChangeError("--arch", `--arch: unknown Swin '${arch}' (${Object.keys(SWIN_PRESETS).join(", ")})`);
      }
      try {
        cfg.swin = smallSwin(arch as SwinArch, cfg.augment.globalCrops.size);
      } catch (e) {
        throw new RunChangeError("--arch", `--arch ${arch} with preset ${cfg.name}: ${(e as Error).message}`);
      }
    } else {
      const vit = VIT_PRESETS[arch as keyof typeof VIT_PRESETS];
      if (!vit) {
        const known = [...Object.keys(VIT_PRESETS), ...Object.keys(SWIN_PRESETS)].join(", ");
        throw new RunChangeError("--arch", `--arch: unknown '${arch}' (${known})`);
      }
      delete cfg.swin;
      cfg.backbone = { ...cfg.backbone, ...vit, arch: arch as keyof typeof VIT_PRESETS };
    }
  }
  cfg.epochs = changes.epochs ?? cfg.epochs;
  if (changes.predStartEpoch !== undefined) {
    cfg.masking = { ...cfg.masking, predStartEpoch: changes.predStartEpoch };
  } else if (cfg.swin && cfg.masking.predStartEpoch === undefined) {
    cfg.masking = { ...cfg.masking, predStartEpoch: Math.floor(cfg.epochs / 6) };
  }
  cfg.batchSize = changes.batchSize ?? cfg.batchSize;
  if (cfg.batchSize > MAX_BATCH) {
    throw new RunChangeError("--batch-size", `--batch-size ${cfg.batchSize} is above the maximum ${MAX_BATCH}`);
  }
  if (changes.remat) {
    if (cfg.swin) cfg.swin = { ...cfg.swin, remat: true };
    else cfg.backbone = { ...cfg.backbone, remat: true };
  }
  return cfg;
}

/** The dataset of a run, as far as the run depends on it. */
export interface RunData {
  /** The dataset's name (checked on resume). */
  name: string;
  /** Image channels. */
  channels: number;
  /** Image side. */
  size: number;
  /** Training images (fixes the iterations per epoch; checked on resume). */
  trainImages: number;
  /** Test images (the k-NN queries). */
  testImages: number;
}

/** A run resolved once from its configuration and dataset (see the module doc). */
export interface RunSpec {
  /** The preset with the run's changes: what checkpoints record and a resume compares. */
  readonly config: PretrainConfig;
  /** The dataset's properties the run depends on. */
  readonly data: Readonly<RunData>;
  /** The backbone built for the data (ViT or Swin, student config with `masked_embed`). */
  readonly backbone: BackboneSpec;
  /** The MIM mask grid of one global crop. */
  readonly maskGrid: readonly [number, number];
  /** Global crops per image. */
  readonly globalCrops: number;
  /** Images per step (all ranks together). */
  readonly batchSize: number;
  /** Steps per epoch (incomplete last batches dropped). */
  readonly itersPerEpoch: number;
  /**
   * Iterations the schedules span: `epochs · itersPerEpoch`. A run stopped early (`totalSteps`) sees the same
   * hyperparameters at every iteration as a full one, so an interrupted and a resumed run agree.
   */
  readonly scheduleSteps: number;
  /** Steps the run makes: the requested `steps`, at most `scheduleSteps`. */
  readonly totalSteps: number;
  /** The settings `hyperparamsAt` reads (see `runHyperparams`). */
  readonly schedule: Readonly<IbotScheduleConfig>;
}

/** The schedules' settings of a preset for `itersPerEpoch` steps per epoch. */
export function presetSchedule(cfg: PretrainConfig, itersPerEpoch: number): IbotScheduleConfig {
  const tt = cfg.teacherTemp;
  return {
    epochs: cfg.epochs,
    itersPerEpoch,
    lr: cfg.lr,
    batchSize: cfg.batchSize,
    warmupEpochs: cfg.warmupEpochs,
    minLr: cfg.minLr,
    weightDecay: cfg.weightDecay[0],
    weightDecayEnd: cfg.weightDecay[1],
    momentumTeacher: cfg.momentum[0],
    momentumTeacherEnd: cfg.momentum[1],
    // Both temperatures follow the preset's one ramp; the patch one starts at MIM's start.
    warmupTeacherTemp: tt.start,
    teacherTemp: tt.end,
    warmupTeacherPatchTemp: tt.start,
    teacherPatchTemp: tt.end,
    warmupTeacherTempEpochs: tt.warmupEpochs ?? 30,
    teacherTempRampFraction: tt.perIteration ? tt.warmupFraction ?? 0.3 : undefined,
    predStartEpoch: cfg.masking.predStartEpoch ?? 0,
    freezeLastLayer: cfg.freezeLastLayerEpochs,
  };
}

/**
 * Resolves a run of `cfg` (a preset, or `configureRun`'s result) on a dataset, stopping after `steps` (default:
 * all of the schedules' iterations). Throws when the dataset gives no batch or the backbone does not fit it.
 *
 * @example
 * ```ts
 * import { data, PRESETS, resolveRun } from "./mod.ts";
 * const run = resolveRun(PRESETS["embedded-small"], data.embeddedDataset({ seed: 0 }), { steps: 100 });
 * console.log(run.itersPerEpoch, run.maskGrid, run.totalSteps); // 62 [4, 4] 100
 * ```
 */
export function resolveRun(
  cfg: PretrainConfig,
  ds: Pick<Dataset, "name" | "channels" | "size" | "train" | "test">,
  opts: { steps?: number } = {},
): RunSpec {
  const itersPerEpoch = stepsPerEpoch(ds.train.n, cfg.batchSize);
  if (itersPerEpoch === 0) {
    throw new RangeError(
      `pretrain: ${ds.train.n} training images give no batch of ${cfg.batchSize}; lower --batch-size`,
    );
  }
  const backbone = resolveBackbone(cfg, ds);
  const scheduleSteps = cfg.epochs * itersPerEpoch;
  return Object.freeze({
    config: cfg,
    data: Object.freeze({
      name: ds.name,
      channels: ds.channels,
      size: ds.size,
      trainImages: ds.train.n,
      testImages: ds.test.n,
    }),
    backbone,
    maskGrid: Object.freeze(maskGrid(backbone, cfg.augment.globalCrops.size)),
    globalCrops: cfg.augment.globalCrops.number,
    batchSize: cfg.batchSize,
    itersPerEpoch,
    scheduleSteps,
    totalSteps: Math.min(opts.steps ?? scheduleSteps, scheduleSteps),
    schedule: Object.freeze(presetSchedule(cfg, itersPerEpoch)),
  });
}

/** Whether a value is a `RunSpec` (rather than a `PretrainConfig`). */
export function isRunSpec(x: PretrainConfig | RunSpec): x is RunSpec {
  return "schedule" in x && "config" in x;
}

/**
 * The hyperparameters of iteration `it` of a run (the `hyper` argument of its step).
 *
 * @example
 * ```ts
 * import { data, PRESETS, resolveRun, runHyperparams } from "./mod.ts";
 * const run = resolveRun(PRESETS["fmnist-tiny"], data.embeddedDataset({ seed: 0 }));
 * console.log(runHyperparams(run, 0).lr); // 0 (the warm-up starts at 0)
 * ```
 */
export function runHyperparams(run: RunSpec, it: number): Required<IbotHyper> {
  return hyperparamsAt(it, run.schedule);
}

/**
 * The hyperparameters of iteration `it` of a preset's schedules spanning `total` iterations of `itersPerEpoch`.
 *
 * @deprecated Use `runHyperparams(resolveRun(cfg, ds), it)`, or `hyperparamsAt(it, presetSchedule(cfg, n))`.
 */
export function hyperAt(
  cfg: PretrainConfig,
  it: number,
  itersPerEpoch: number,
  total: number,
): Required<IbotHyper> {
  if (!(Number.isInteger(total / itersPerEpoch) && total > 0)) {
    throw new RangeError(`hyperAt: total ${total} must be a positive multiple of itersPerEpoch ${itersPerEpoch}`);
  }
  return hyperparamsAt(it, presetSchedule({ ...cfg, epochs: total / itersPerEpoch }, itersPerEpoch));
}
