/**
 * Last phase of the device benchmark: assembles the fragments the other phases left in the work folder, and
 * run.sh's record of each phase (exit status, seconds, budget), into ONE results file,
 * `device_<adapter>.md` + `.json` (`device_<adapter>_dry` in the dry run), in `$OUT` when set, else
 * `bench/results/`; prints the markdown. `checkReport` lists the sections a results file lacks (the CI test uses it).
 *
 * @module
 */
import { fmtMiB, fmtNum, mdTable } from "../util.ts";
import type { AdapterFragment } from "./adapter.ts";
import type { IbotFragment } from "./ibot.ts";
import type { MatmulFragment } from "./matmul.ts";
import type { VitFragment } from "./vit.ts";
import { isDry, PHASES, readFragment, workDir } from "./common.ts";

/** The sections every results file has, in order (each a `## ` heading of the markdown and a key of the JSON). */
export const SECTIONS = {
  adapter: "Adapter",
  matmul: "Matmul GFLOP/s",
  vit: "ViT-S/16 forward + backward",
  ibot: "iBOT step",
  phases: "Phases",
} as const;

/** What a results file lacks: every section missing from the markdown or the JSON, and phases that did not finish. */
export function checkReport(md: string, json: Record<string, unknown>): string[] {
  const missing: string[] = [];
  for (const [key, title] of Object.entries(SECTIONS)) {
    if (!md.includes(`\n## ${title}\n`)) missing.push(`markdown section "## ${title}"`);
    if (json[key] === undefined || json[key] === null) missing.push(`JSON key "${key}"`);
  }
  const phases = (json.phases ?? []) as PhaseRecord[];
  for (const p of PHASES) {
    const r = phases.find((x) => x.phase === p);
    if (!r) missing.push(`phase ${p}: no record`);
    else if (r.rc !== 0) missing.push(`phase ${p}: exit status ${r.rc}${r.rc === 124 ? " (timed out)" : ""}`);
  }
  return missing;
}

/** run.sh's line for one phase. */
export interface PhaseRecord {
  phase: string;
  rc: number;
  seconds: number;
  budget: number;
}

async function phaseRecords(): Promise<PhaseRecord[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(`${workDir()}/phases.tsv`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return text.trim().split("\n").filter((l) => l).map((l) => {
    const [phase, rc, seconds, budget] = l.split("\t");
    return { phase, rc: Number(rc), seconds: Number(seconds), budget: Number(budget) };
  });
}

interface TorchEnv {
  unavailable?: string;
  torch?: string;
  device?: string;
  cuda?: string;
  allow_tf32?: unknown;
  date?: string;
  loadavg?: number[];
}
interface TorchMatmul {
  env: TorchEnv;
  shapes: { label: string; gflops?: number; skipped?: string }[];
}
interface TorchRun {
  medianMs?: number;
  imagesPerS?: number;
  stepsMs?: number[];
  error?: string;
  maxMemoryAllocated?: number;
  /** The vit part's attention block (`sdpa`: through F.scaled_dot_product_attention). */
  attention?: TorchRun & { sdpa?: boolean };
}
interface TorchStep {
  env: TorchEnv;
  vit?: TorchRun;
  ibot?: TorchRun;
}

const torchLine = (env: TorchEnv | undefined) =>
  !env
    ? "PyTorch: its phase left nothing (see Phases)."
    : env.unavailable
    ? `PyTorch: not measured: ${env.unavailable}.`
    : `PyTorch ${env.torch} on ${env.device}${
      env.cuda ? ` (CUDA ${env.cuda}, TF32 off: ${JSON.stringify(env.allow_tf32)})` : ""
    }, float32.`;

function adapterSection(a: AdapterFragment | null, smi: string | null): string[] {
  if (!a) return ["The adapter phase left nothing (see Phases)."];
  const limits = Object.entries(a.limits).map(([k, v]) => [k, v]);
  return [
    ...(smi ? ["`nvidia-smi`:", "", "```", smi.trim(), "```", ""] : []),
    `**${a.description}** — vendor ${a.vendor || "?"}, architecture ${a.architecture || "?"}, device ${
      a.device || "?"
    }, ${a.software ? "a software adapter" : "a hardware adapter"}${a.isFallbackAdapter ? " (fallback)" : ""}.`,
    `Vulkan driver selection: ${
      Object.entries(a.env).map(([k, v]) => `${k}=${v}`).join(", ") || "the default search"
    }.`,
    `Features: ${a.features.join(", ")}.`,
    "",
    mdTable(["limit", "value"], limits, [false, true]),
  ];
}

function matmulSection(m: MatmulFragment | null, t: TorchMatmul | null): string[] {
  if (!m) return ["The matmul phase left nothing (see Phases)."];
  const families = m.families;
  const rows = m.shapes.map((s) => {
    const best = s.families.reduce<(typeof s.families)[number] | null>(
      (a, f) => (!a || f.gflops > a.gflops ? f : a),
      null,
    );
    const torch = t?.shapes.find((x) => x.label === s.label)?.gflops;
    const dims = `${s.batch > 1 ? `${s.batch} × ` : ""}${s.m}×${s.k}×${s.n}${s.transA ? " Aᵀ" : ""}${
      s.transB ? " Bᵀ" : ""
    }`;
    return [
      s.label,
      dims,
      ...families.map((f) => {
        const r = s.families.find((x) => x.family === f);
        return r ? `${fmtNum(r.gflops, 1)} (${r.variant})` : "—";
      }),
      best ? `${best.family} ${best.variant}` : s.skipped ?? "—",
      fmtNum(torch, 1),
      best && torch ? `${fmtNum(best.gflops / torch)}×` : "—",
    ];
  });
  const errors = m.shapes.flatMap((s) => s.errors.map((e) => `- ${s.label}: ${e}`));
  return [
    `Float32, every kernel family the autotuner tries (\`wgsl/autotune.ts\`) at its best candidate per shape (the autotuner's pick is ` +
    `the fastest overall); each candidate dispatched directly: a warm-up, then repetitions of N back-to-back ` +
    `dispatches (~${m.targetMs} ms each) ending in a queue drain, median per dispatch. ${torchLine(t?.env)} ` +
    `Ratio = our best / PyTorch.`,
    "",
    mdTable(
      [
        "shape",
        "batch × m×k×n",
        ...families.map((f) => `${f} GFLOP/s (variant)`),
        "best",
        "PyTorch GFLOP/s",
        "ours/PyTorch",
      ],
      rows,
      [false, false, ...families.map(() => true), false, true, true],
    ),
    ...(errors.length ? ["", "Not measured:", "", ...errors] : []),
  ];
}

type Timed = { medianMs?: number; imagesPerS?: number; stepsMs?: number[]; error?: string };

/** Ours beside PyTorch: a table of both sides' steps and the speed ratio. */
function versus(ours: Timed, torch: Timed | undefined): string[] {
  const row = (name: string, r: Timed | undefined) => [
    name,
    fmtNum(r?.medianMs, 1),
    fmtNum(r?.imagesPerS, 1),
    r?.stepsMs?.map((x) => x.toFixed(0)).join(", ") || "—",
    r?.error ?? "",
  ];
  const ratio = ours.medianMs && torch?.medianMs
    ? `Speed ours / PyTorch: **${fmtNum(torch.medianMs / ours.medianMs)}×** (PyTorch time / our time).`
    : "Speed ours / PyTorch: — (one side has no timed step).";
  return [
    mdTable(["", "ms/step (median)", "images/s", "steps (ms)", "error"], [
      row("ours (WebGPU)", ours),
      row("PyTorch", torch),
    ], [false, true, true, false, false]),
    "",
    ratio,
  ];
}

function vitSection(v: VitFragment | null, t: TorchStep | null): string[] {
  if (!v) return ["The vit phase left nothing (see Phases)."];
  const s = v.shape;
  return [
    `ViT (dim ${s.embedDim}, depth ${s.depth}, ${s.numHeads} heads, patch ${s.patchSize}) on ${s.batch} images of ` +
    `${s.imgSize} px: \`jit(valueAndGrad)\` of the mean squared final tokens, every parameter's gradient; a step ` +
    `is timed until the loss is read back and the queue drained. Ours: compile ${fmtNum(v.compileS, 1)} s, plan peak ` +
    `${fmtMiB(v.peakBytes)}, ${v.dispatches ?? "—"} dispatches. ${torchLine(t?.env)}`,
    "",
    ...versus(v, t?.vit),
    "",
    `One attention block alone (qkv linear, attention of ${v.attention?.tokens ?? "?"} tokens, proj linear), forward ` +
    `+ backward, on the same ${s.batch} images: ours is \`attention\` of \`models/vit.ts\` (fused where the code ` +
    `has fused attention); PyTorch ${
      t?.vit?.attention?.sdpa === false ? "computes softmax(q·kᵀ)·v (no scaled_dot_product_attention)" : "uses " +
        "`F.scaled_dot_product_attention`"
    }. Ours: compile ${fmtNum(v.attention?.compileS, 1)} s, plan peak ${fmtMiB(v.attention?.peakBytes)}.`,
    "",
    ...(v.attention ? versus(v.attention, t?.vit?.attention) : ["Not measured (see Phases)."]),
  ];
}

function ibotSection(b: IbotFragment | null, t: TorchStep | null): string[] {
  if (!b) return ["The ibot phase left nothing (see Phases)."];
  const s = b.shape;
  const planned = b.planned.map((
    p,
  ) => [p.batch, p.peakBytes !== undefined ? fmtMiB(p.peakBytes) : "refused", p.refused ?? ""]);
  return [
    s
      ? `Preset \`${s.preset}\`: one full iBOT step (on-device augmentation of ${s.imageSize}-px images into ` +
        `${s.globalCrops.number} × ${s.globalCrops.size} px + ${s.localCrops.number} × ${s.localCrops.size} px crops, ` +
        `teacher, student fwd+bwd, head ${s.head.hiddenDim}/${s.head.bottleneckDim}/${s.head.outDim}, loss, ` +
        `clipping, AdamW, EMA) at batch **${s.batch}**, the largest power of two whose plan fits ` +
        `${fmtMiB(b.maxMemoryBytes)} (\`planStepMemory\`, nothing allocated). Ours runs the head and the MIM loss ` +
        `on the ${s.maskedPatches ?? "?"} masked patches only; PyTorch runs the literal official step (head on ` +
        `every token) on crops already on the device (no augmentation). Compile ${fmtNum(b.compileS, 1)} s, plan ` +
        `peak ${fmtMiB(b.peakBytes)}, ${b.dispatches ?? "—"} dispatches. ${torchLine(t?.env)}`
      : `No batch was run: ${b.error ?? "see Phases"}.`,
    "",
    ...versus(b, t?.ibot),
    s?.batch
      ? `At this speed a batch of 1024 takes ${fmtNum(((b.medianMs ?? NaN) * 1024) / s.batch / 1000, 1)} s (ours).`
      : "",
    "",
    "Planned batches:",
    "",
    mdTable(["batch", "plan peak", "refused because"], planned, [true, true, false]),
  ];
}

function phasesSection(phases: PhaseRecord[]): string[] {
  return [
    "Each phase runs as its own process under its budget (run.sh). Exit status 124: stopped at its budget; 3 (adapter): " +
    "a software adapter, not measured; 1: the phase recorded an error (in its section).",
    "",
    mdTable(
      ["phase", "exit status", "seconds", "budget s"],
      PHASES.map((p) => {
        const r = phases.find((x) => x.phase === p);
        return [p, r ? String(r.rc) : "not run", r ? String(r.seconds) : "—", r ? String(r.budget) : "—"];
      }),
      [false, true, true, true],
    ),
  ];
}

if (import.meta.main) {
  const adapter = await readFragment<AdapterFragment>("adapter");
  const matmul = await readFragment<MatmulFragment>("matmul");
  const vit = await readFragment<VitFragment>("vit");
  const ibot = await readFragment<IbotFragment>("ibot");
  const torchMatmul = await readFragment<TorchMatmul>("torch_matmul");
  const torchStep = await readFragment<TorchStep>("torch_step");
  const phases = await phaseRecords();
  const smi = await Deno.readTextFile(`${workDir()}/nvidia_smi.csv`).catch(() => null);
  const slug = `${adapter?.slug ?? "unknown"}${isDry() ? "_dry" : ""}`;
  const load = Deno.env.get("DEVICE_BENCH_LOADAVG") ?? "?";
  const md = [
    `# Device benchmark: ${adapter?.description ?? "unknown adapter"}${isDry() ? " (dry run)" : ""}`,
    "",
    `Date: ${new Date().toISOString()}. Deno ${Deno.version.deno}, ${Deno.build.os}-${Deno.build.arch}, ` +
    `${navigator.hardwareConcurrency} cores; load average at start ${load}. Written by \`bench/device/run.sh` +
    `${isDry() ? " --dry" : ""}\`${isDry() ? " (small sizes: it checks that every phase runs, not speed)" : ""}.`,
    "",
    ...([
      ["adapter", adapterSection(adapter, smi)],
      ["matmul", matmulSection(matmul, torchMatmul)],
      ["vit", vitSection(vit, torchStep)],
      ["ibot", ibotSection(ibot, torchStep)],
      ["phases", phasesSection(phases)],
    ] as const).flatMap(([key, lines]) => [`## ${SECTIONS[key]}`, "", ...lines, ""]),
  ].join("\n");
  const json = {
    dry: isDry(),
    date: new Date().toISOString(),
    loadavg: load,
    adapter: adapter && { ...adapter, nvidiaSmi: smi },
    matmul: matmul && { ...matmul, torch: torchMatmul },
    vit: vit && { ours: vit, torch: torchStep?.vit ?? null, torchEnv: torchStep?.env ?? null },
    ibot: ibot && { ours: ibot, torch: torchStep?.ibot ?? null },
    phases,
  };
  const dir = Deno.env.get("OUT") || new URL("../results", import.meta.url).pathname;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/device_${slug}.md`, md);
  await Deno.writeTextFile(`${dir}/device_${slug}.json`, JSON.stringify(json, null, 2) + "\n");
  console.log(md);
  console.log(`wrote ${dir}/device_${slug}.md and .json`);
  const missing = checkReport(md, json);
  if (missing.length) console.error(`bench/device: incomplete: ${missing.join("; ")}`);
}
