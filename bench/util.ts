/**
 * Shared helpers of the benchmark suite: machine (cores, memory) and adapter description, timing statistics, deterministic
 * inputs, markdown tables and writing `bench/results/<name>.{json,md}`.
 *
 * @module
 */
import type { Backend } from "../mod.ts";
import type { WebGpuBackend } from "../wgsl/backend.ts";

/** Where and when a benchmark ran; printed at the top of every table. */
export interface Machine {
  date: string;
  deno: string;
  os: string;
  /** Logical CPU cores (`navigator.hardwareConcurrency`). */
  cores: number;
  /** Kernel release (`Deno.osRelease()`), when permitted. */
  osRelease: string;
  /** Total memory in GiB (`Deno.systemMemoryInfo()`), when permitted. */
  memoryGiB: number | null;
  /** 1/5/15-minute load averages when the benchmark started (other processes skew timings). */
  loadavg: number[] | null;
  /** The adapter of our WebGPU backend (`adapterInfo`), or the CPU backend's name. */
  adapter: string;
  backend: string;
}

/** Calls a `Deno` system query that needs `--allow-sys`, or gives the fallback. */
function sys<T>(f: () => T, fallback: T): T {
  try {
    return f();
  } catch {
    return fallback;
  }
}

/** The 1/5/15-minute load averages, when permitted. */
export function loadavg(): number[] | null {
  return sys(() => Deno.loadavg().map((x) => Math.round(x * 100) / 100), null);
}

/** Describes this machine and the backend's adapter. */
export function machine(backend: Backend): Machine {
  return {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    cores: navigator.hardwareConcurrency,
    osRelease: sys(() => Deno.osRelease(), "unknown"),
    memoryGiB: sys(() => Math.round(Deno.systemMemoryInfo().total / 2 ** 30 * 10) / 10, null),
    loadavg: loadavg(),
    adapter: (backend as { adapterInfo?: string }).adapterInfo ?? `${backend.name} (JavaScript)`,
    backend: backend.name,
  };
}

/** The WebGPU backend, or throws: the benchmarks measure the GPU path. */
export function asWebGpu(backend: Backend): WebGpuBackend {
  if (backend.name !== "webgpu") {
    throw new Error(
      "the benchmarks need the webgpu backend: run with --unstable-webgpu and a Vulkan driver " +
        "(DENO_WEBGPU_BACKEND=vulkan with mesa-vulkan-drivers for lavapipe)",
    );
  }
  return backend as unknown as WebGpuBackend;
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** A deterministic matrix of values in [-1, 1) (an LCG), as a flat Float32Array. */
export function randomMatrix(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Max |a - b| over two equally long arrays (NaN anywhere gives Infinity). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

/** A markdown table (right-aligned columns where `right[i]`). */
export function mdTable(headers: string[], rows: (string | number)[][], right: boolean[] = []): string {
  const line = (cells: (string | number)[]) => `| ${cells.map((c) => String(c).replaceAll("|", "\\|")).join(" | ")} |`;
  return [
    line(headers),
    `| ${headers.map((_, i) => (right[i] ? "---:" : "---")).join(" | ")} |`,
    ...rows.map(line),
  ].join("\n");
}

/** The first lines of every results file: what was measured, where and when. */
export function header(title: string, m: Machine, notes: string[]): string {
  return [
    `# ${title}`,
    "",
    `Machine: ${m.cores} cores, ${
      m.memoryGiB ?? "?"
    } GiB RAM, ${m.os} (${m.osRelease}), Deno ${m.deno}. Adapter: **${m.adapter}** (backend \`${m.backend}\`).`,
    `Date: ${m.date}. Load average (1/5/15 min) at start: ${m.loadavg?.join(" / ") ?? "?"}, at end: ${
      loadavg()?.join(" / ") ?? "?"
    } (on ${m.cores} cores; anything above ~1 means other processes competed for the CPU that runs the adapter).`,
    "",
    ...notes,
  ].join("\n");
}

/** Writes `bench/results/<name>.json` and `<name>.md` and prints the markdown. */
export async function writeResults(name: string, json: unknown, md: string): Promise<void> {
  const dir = new URL("./results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL(`${name}.json`, dir), JSON.stringify(json, null, 2) + "\n");
  await Deno.writeTextFile(new URL(`${name}.md`, dir), md.endsWith("\n") ? md : md + "\n");
  console.log(md);
  console.log(`wrote bench/results/${name}.json and bench/results/${name}.md\n`);
}

/** Formats a number with `digits` decimals, or "—" when absent. */
export function fmtNum(x: number | null | undefined, digits = 2): string {
  return x === null || x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(digits);
}

/** Formats bytes as MiB. */
export function fmtMiB(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? "—" : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Progress on stderr (tables go to stdout). */
export function progress(msg: string): void {
  console.error(`[bench] ${msg}`);
}

/** A short one-line error message for a table cell. */
export function errorText(e: unknown): string {
  const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return msg.replace(/\s+/g, " ").slice(0, 160);
}
