/**
 * The pretraining CLI's interrupt and resume conventions: SIGINT/SIGTERM become a stop request (exit 130/143
 * once the checkpoint is written), and `--resume` starts from the checkpoint's own configuration, a flag that
 * contradicts it being a usage error that names the flag.
 *
 * @module
 */
import { need, UsageError } from "./cli.ts";
import { readTrainingStateMeta } from "../../train/checkpoint.ts";
import { Interrupted, ScheduleMismatchError, show } from "../../train/run_state.ts";
import type { PretrainConfig } from "../../train/presets.ts";
import { FLAG_OF_FIELD } from "../../train/run_spec.ts";

/** Exit codes of a run stopped by a signal (128 + the signal number, as a shell reports it). */
const EXIT_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * Turns SIGINT and SIGTERM into an abort of `signal` (the first one; a second one exits at once, which the
 * atomic checkpoint write survives) until `remove` is called.
 */
export function stopOnSignals(): { signal: AbortSignal; remove: () => void } {
  const stop = new AbortController();
  // Windows delivers SIGINT and SIGBREAK only.
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const listeners = signals.map((sig) => {
    const listener = () => {
      if (stop.signal.aborted) {
        console.error(`\n${sig} again: exiting without waiting for the checkpoint`);
        Deno.exit(EXIT_CODES[sig]);
      }
      console.error(`\n${sig}: stopping after the current step (${sig} again to exit at once)`);
      stop.abort(sig);
    };
    Deno.addSignalListener(sig, listener);
    return [sig, listener] as const;
  });
  const remove = () => listeners.forEach(([sig, listener]) => Deno.removeSignalListener(sig, listener));
  return { signal: stop.signal, remove };
}

/**
 * The CLI end of a run that stopped: `Interrupted` prints one line saying where the checkpoint is and exits
 * 130 (SIGINT) or 143 (SIGTERM); a configuration that contradicts the resumed checkpoint becomes a usage
 * error naming the flag; anything else is rethrown.
 */
export function exitIfStopped(e: unknown, out: string | undefined): never {
  if (e instanceof ScheduleMismatchError) throw scheduleUsageError(e);
  if (!(e instanceof Interrupted)) throw e;
  const where = e.checkpoint
    ? `checkpoint ${e.checkpoint} holds step ${e.step} (continue with --resume --out ${out})`
    : out
    ? "no checkpoint was written (no step was made)"
    : "no checkpoint was written (no --out)";
  console.error(`interrupted by ${String(e.reason)} after step ${e.step}/${e.totalSteps}; ${where}`);
  Deno.exit(EXIT_CODES[String(e.reason)] ?? 130);
}

/** What `--resume` takes from the checkpoint before the command line is applied. */
export interface ResumeBase {
  /** The checkpoint's file. */
  path: string;
  /** The preset it was written by. */
  preset?: string;
  /** Its seed. */
  seed?: number;
  /** Its whole configuration (checkpoints of older versions have none). */
  config?: PretrainConfig;
}

/** Reads the configuration of `--out DIR`'s checkpoint for `--resume`; a usage error when there is none. */
export async function resumeBase(out: string | undefined): Promise<ResumeBase> {
  if (!out) throw new UsageError("--resume needs --out DIR (the folder with the checkpoint)");
  const both = `--allow-read=${out} --allow-write=${out}`;
  need({ name: "read", path: out }, "--resume", both);
  const path = `${out}/checkpoint.safetensors`;
  let meta;
  try {
    meta = await readTrainingStateMeta(path);
  } catch (e) {
    throw new UsageError(`--resume: ${(e as Error).message}`);
  }
  const config = typeof meta.config === "object" && meta.config !== null ? meta.config as PretrainConfig : undefined;
  return {
    path,
    preset: typeof meta.preset === "string" ? meta.preset : undefined,
    seed: typeof meta.seed === "number" ? meta.seed : undefined,
    config: config && config.name === meta.preset ? config : undefined,
  };
}

/** A `ScheduleMismatchError` as a usage error naming the flags that contradict the checkpoint. */
function scheduleUsageError(e: ScheduleMismatchError): UsageError {
  const parts = e.differences.map((d) => {
    const flag = FLAG_OF_FIELD.find(([re]) => re.test(d.path))?.[1];
    return `${flag ? `${flag} contradicts it: ` : ""}${d.path} is ${show(d.checkpoint)} there but ${show(d.run)} here`;
  });
  const fixed = e.differences.some((d) => !d.overridable);
  return new UsageError(
    `--resume from ${e.checkpoint}: ${parts.join("; ")}; ` +
      (fixed
        ? "a resumed run keeps its preset, batch size, seed and number of training images"
        : "drop the flag to keep the checkpoint's schedule, or add --override-schedule"),
  );
}
