/** Backend selection: explicit (`useBackend`) or automatic (`initBackend("auto")`). */
import type { Backend } from "./backend.ts";
import { cpu } from "./cpu.ts";

let current: Backend = cpu;
let gpuPromise: Promise<Backend> | null = null;

/**
 * The backend new tensors are created on. CPU until another is chosen.
 *
 * @example
 * ```ts
 * import { defaultBackend } from "./mod.ts";
 * console.log(defaultBackend().name); // "cpu" until initBackend or useBackend picks another
 * ```
 */
export function defaultBackend(): Backend {
  return current;
}

/**
 * Makes `backend` the default for new tensors.
 *
 * @example
 * ```ts
 * import { cpu, tensor, useBackend } from "./mod.ts";
 * useBackend(cpu);
 * console.log(tensor([1]).backend.name); // "cpu"
 * ```
 */
export function useBackend(backend: Backend): void {
  current = backend;
}

/**
 * The shared WebGPU backend (created once). Throws `NoGpuError` with a clear message when there is no GPU.
 *
 * @example
 * ```ts ignore
 * import { useBackend, webgpu } from "./mod.ts";
 * useBackend(await webgpu()); // needs --unstable-webgpu and a GPU adapter
 * ```
 */
export function webgpu(): Promise<Backend> {
  gpuPromise ??= import("../wgsl/device.ts").then((m) => m.createWebGpuBackend()).catch((e) => {
    gpuPromise = null;
    throw e;
  });
  return gpuPromise;
}

/**
 * Selects and returns the default backend. `auto` picks WebGPU when an adapter exists, else the CPU with a
 * one-line notice on stderr.
 *
 * @example
 * ```ts
 * import { initBackend } from "./mod.ts";
 * const backend = await initBackend("auto");
 * console.log(backend.name);
 * ```
 */
export async function initBackend(kind: "auto" | "cpu" | "webgpu" = "auto"): Promise<Backend> {
  if (kind === "cpu") {
    current = cpu;
    return cpu;
  }
  try {
    current = await webgpu();
  } catch (e) {
    if (kind === "webgpu") throw e;
    console.error(`notice: using the cpu backend (${(e as Error).message})`);
    current = cpu;
  }
  return current;
}
