/**
 * Prints the tree of a checkpoint (`.pth` or `.safetensors`): every tensor's name, dtype and shape, parameter
 * counts per group (the first `--depth` name segments) and in total, plus the scalars and skipped objects of a
 * `.pth`.
 *
 * Run with: `deno run --allow-read examples/inspect_checkpoint.ts FILE [options]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { CheckpointError, type ModelWeightsFile, parseModelWeights } from "../mod.ts";
import { readBytes, runCli, UsageError } from "./lib/cli.ts";

const USAGE = `Usage: deno run --allow-read examples/inspect_checkpoint.ts FILE [options]

Prints a checkpoint's tensors (name, dtype, shape, element count), the parameter counts per
group and in total. FILE is a PyTorch .pth (zip + pickle, e.g. an official iBOT checkpoint.pth
or checkpoint_teacher.pth) or a .safetensors file.

Options:
  --filter PREFIX   only names starting with PREFIX (e.g. teacher.backbone.)
  --depth N         group counts by the first N dotted name segments (default 1)
  --summary         print only the group counts and totals, not every tensor; list-like
                    scalars (optimizer.param_groups.*.params.*) collapse to one line each
  --allow-unknown-globals
                    list Python objects of a .pth outside the allowlist of a weights file
                    (e.g. numpy scalars) as skipped instead of refusing the file; nothing is
                    executed either way
  -h, --help        show this help
`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      filter: { type: "string", default: "" },
      depth: { type: "string", default: "1" },
      summary: { type: "boolean", default: false },
      "allow-unknown-globals": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`expected one FILE, got ${positionals.length}`);
  const depth = Number(values.depth);
  if (!Number.isInteger(depth) || depth < 1) {
    throw new UsageError(`--depth must be a positive integer, got '${values.depth}'`);
  }
  const path = positionals[0];
  const ckpt = parseModelWeights(await readBytes(path, "FILE"), path, {
    skipUnknownGlobals: values["allow-unknown-globals"],
  });
  inspect(path, ckpt, values.filter, depth, values.summary);
  return 0;
}

/** Lines for scalars; with `collapse`, names that differ only in numeric segments share one line when > 3. */
function scalarLines(vals: [string, unknown][], collapse: boolean): string[] {
  const show = (v: unknown) =>
    typeof v === "string" ? JSON.stringify(v.length > 100 ? `${v.slice(0, 100)}...` : v) : String(v);
  const groups = new Map<string, [string, unknown][]>();
  for (const kv of vals) {
    const pattern = collapse ? kv[0].replace(/(^|\.)\d+(?=\.|$)/g, "$1*") : kv[0];
    const group = groups.get(pattern);
    if (group) group.push(kv);
    else groups.set(pattern, [kv]);
  }
  return [...groups].flatMap(([pattern, kvs]) => {
    if (kvs.length <= 3) return kvs.map(([k, v]) => `  ${k} = ${show(v)}`);
    const distinct = new Set(kvs.map(([, v]) => show(v)));
    const summary = distinct.size === 1
      ? `all ${show(kvs[0][1])}`
      : `${kvs.slice(0, 3).map(([, v]) => show(v)).join(", ")}, ..., ${show(kvs[kvs.length - 1][1])}`;
    return [`  ${pattern}: ${kvs.length} values (${summary})`];
  });
}

function inspect(path: string, ckpt: ModelWeightsFile, filter: string, depth: number, summary: boolean): void {
  const rows = [...ckpt.tensors].filter(([k]) => k.startsWith(filter));
  const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  const fmtInt = (n: number) => n.toLocaleString("en-US");
  console.log(
    `${path}: ${ckpt.format}, ${ckpt.tensors.size} tensors${filter ? `, ${rows.length} under '${filter}'` : ""}`,
  );
  if (!summary && rows.length) {
    const w = Math.max(...rows.map(([k]) => k.length));
    const shapes = rows.map(([, t]) => `[${t.shape.join(", ")}]`);
    const sw = Math.max(...shapes.map((s) => s.length));
    rows.forEach(([k, t], i) => {
      const dtype = ckpt.sourceDtypes.get(k) ?? t.dtype;
      console.log(
        `  ${k.padEnd(w)}  ${dtype.padEnd(8)}  ${shapes[i].padEnd(sw)}  ${fmtInt(count(t.shape)).padStart(12)}`,
      );
    });
  }
  const groups = new Map<string, { tensors: number; elements: number }>();
  let total = 0;
  for (const [k, t] of rows) {
    const g = k.split(".").slice(0, depth).join(".");
    const e = groups.get(g) ?? { tensors: 0, elements: 0 };
    e.tensors++;
    e.elements += count(t.shape);
    groups.set(g, e);
    total += count(t.shape);
  }
  console.log(`\nparameter counts by group (depth ${depth}):`);
  const gw = Math.max(5, ...[...groups.keys()].map((g) => g.length));
  for (const [g, e] of groups) {
    console.log(`  ${g.padEnd(gw)}  ${fmtInt(e.elements).padStart(14)}  (${e.tensors} tensors)`);
  }
  console.log(`  ${"total".padEnd(gw)}  ${fmtInt(total).padStart(14)}  (${rows.length} tensors)`);
  const vals = [...ckpt.values].filter(([k]) => k.startsWith(filter));
  if (vals.length) {
    console.log(`\n${ckpt.format === "pth" ? "scalars" : "metadata"}:`);
    for (const line of scalarLines(vals, summary)) console.log(line);
  }
  const skipped = [...ckpt.skipped].filter(([k]) => k.startsWith(filter));
  if (skipped.length) {
    console.log("\nskipped (not tensors):");
    for (const [k, t] of skipped) console.log(`  ${k}: ${t}`);
  }
}

if (import.meta.main) await runCli(main, USAGE, [CheckpointError]);
