/** Shared test helpers: backends, tolerant comparison, and fast-check settings. */
import { cpu } from "../ops/cpu.ts";
import type { Backend } from "../ops/backend.ts";
import { webgpu } from "../ops/backends.ts";
import type { Tensor } from "../autograd/tensor.ts";

/**
 * The WebGPU backend. Tests need it (CI installs lavapipe); set IBOT_TEST_NO_GPU=1 to run GPU comparisons
 * against the CPU backend instead on a machine without any adapter.
 */
export async function gpu(): Promise<Backend> {
  if (Deno.env.get("IBOT_TEST_NO_GPU") === "1") return cpu;
  return await webgpu();
}

export { cpu };

/** Number of fast-check runs per property (override with IBOT_TEST_RUNS). */
export const RUNS = Number(Deno.env.get("IBOT_TEST_RUNS") ?? 25);

/** Max |a-b| / (atol + rtol*|b|) over elements; <= 1 means close. */
export function closeness(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Number(a[i]);
    const y = Number(b[i]);
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    if (x === y) continue;
    worst = Math.max(worst, Math.abs(x - y) / (atol + rtol * Math.abs(y)));
    if (Number.isNaN(worst)) return Infinity;
  }
  return worst;
}

/** Asserts two arrays agree within tolerance, with the worst element in the message. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = ""): void {
  const c = closeness(a, b, rtol, atol);
  if (!(c <= 1)) {
    let at = 0;
    let w = -1;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(Number(a[i]) - Number(b[i])) / (atol + rtol * Math.abs(Number(b[i])));
      if (!(d <= w)) {
        w = d;
        at = i;
      }
    }
    throw new Error(
      `${what} not close (ratio ${c.toFixed(3)}): at ${at}: ${a[at]} vs ${b[at]} (rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Reads several tensors with one await each, concurrently (a GPU readback costs ~11 ms here). */
export function readAll(ts: readonly Tensor[]): Promise<ArrayLike<number>[]> {
  return Promise.all(ts.map((t) => t.data()));
}
