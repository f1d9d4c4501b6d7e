/**
 * Runs one checkpoint reader on bytes posted by tests/hostile_checkpoint_test.ts and posts back what happened and
 * its time (the test samples the process's RSS meanwhile, and terminates a worker that does not answer in time).
 */
import { parseModelWeights } from "../models/checkpoint.ts";
import { parsePth } from "../models/pth.ts";
import { parseSafetensors } from "../models/safetensors.ts";

/** What the test posts. */
export interface HostileJob {
  reader: "pth" | "safetensors" | "checkpoint";
  bytes: Uint8Array;
  file: string;
  skipUnknownGlobals?: boolean;
}

/** What the worker posts back. */
export interface HostileResult {
  ok: boolean;
  /** The error's class and message when not ok. */
  error?: string;
  tensors?: string[];
  skipped?: [string, string][];
  /** Distinct host tensors among `tensors` (identical views share one). */
  distinct?: number;
  ms: number;
}

self.onmessage = (e: MessageEvent<HostileJob>) => {
  const { reader, bytes, file, skipUnknownGlobals } = e.data;
  self.postMessage("started");
  const t0 = performance.now();
  let result: Omit<HostileResult, "ms">;
  try {
    const f = reader === "pth"
      ? parsePth(bytes, file, { skipUnknownGlobals })
      : reader === "safetensors"
      ? parseSafetensors(bytes, file)
      : parseModelWeights(bytes, file, { skipUnknownGlobals });
    const skipped = "skipped" in f ? [...f.skipped] : [];
    result = { ok: true, tensors: [...f.tensors.keys()], skipped, distinct: new Set(f.tensors.values()).size };
  } catch (err) {
    result = { ok: false, error: `${(err as Error).name}: ${(err as Error).message}` };
  }
  self.postMessage({ ...result, ms: performance.now() - t0 });
};
