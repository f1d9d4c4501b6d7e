/**
 * Every bad command line of the examples ends in one line on stderr and exit code 2, never a stack trace: a
 * table of invocations of examples/pretrain.ts, knn.ts and inspect_checkpoint.ts, each run as a child process
 * with explicit permissions, each failing before any training or feature extraction starts. The files they
 * need (a checkpoint that does not fit, one with a corrupt iteration, ViT weights of a width without a known
 * head count, a 1-channel ViT, image folders without classes, without images, with only a CMYK JPEG) are made
 * here.
 *
 * Needs `--allow-run` for the deno binary and `--allow-write=/tmp` (both in the `test` task).
 */
import assert from "node:assert/strict";
import { encodeSafetensors, type HostTensor } from "../mod.ts";
import { cmykJpeg } from "./data_files.ts";
import { runDeno } from "./child.ts";

/** One bad invocation: the script, its arguments, the permissions, and what its one line of stderr must say. */
interface Case {
  script: "pretrain" | "knn" | "inspect_checkpoint";
  args: string[];
  perms?: string[];
  error: RegExp;
}

async function run(c: Case): Promise<{ code: number; stderr: string; ms: number }> {
  const t0 = performance.now();
  const args = ["run", "--unstable-webgpu", "--no-prompt", ...(c.perms ?? []), `examples/${c.script}.ts`, ...c.args];
  const { code, stderr } = await runDeno(args);
  return { code, stderr, ms: performance.now() - t0 };
}

const f32 = (shape: number[]): HostTensor => ({
  dtype: "float32",
  shape,
  data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
});

/** A ViT state dict with just what `knn.ts --weights --arch vit` reads before loading: width, channels, depth. */
function vitStub(D: number, C: number): Uint8Array {
  return encodeSafetensors([
    ["patch_embed.proj.weight", f32([D, C, 8, 8])],
    ["pos_embed", f32([1, 17, D])],
    ["blocks.0.norm1.weight", f32([D])],
  ]);
}

function trainingCheckpoint(meta: Record<string, unknown>, tensors: [string, HostTensor][]): Uint8Array {
  return encodeSafetensors(tensors, { format: "ibot-ts-checkpoint", meta: JSON.stringify(meta) });
}

Deno.test("CLI errors: each bad invocation prints one line naming the problem and exits with code 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ibot-cli-errors-" });
  try {
    await Deno.writeTextFile(`${dir}/a-file`, "not a folder");
    await Deno.mkdir(`${dir}/no-classes`);
    await Deno.mkdir(`${dir}/empty-classes/cat`, { recursive: true });
    await Deno.mkdir(`${dir}/empty-classes/dog`, { recursive: true });
    await Deno.mkdir(`${dir}/cmyk/cat`, { recursive: true });
    await Deno.writeFile(`${dir}/cmyk/cat/a.jpg`, cmykJpeg());
    const meta = { iteration: 3, preset: "embedded-small", batchSize: 64, seed: 0 };
    await Deno.mkdir(`${dir}/misfit`);
    await Deno.writeFile(
      `${dir}/misfit/checkpoint.safetensors`,
      trainingCheckpoint(meta, [["teacher.backbone.cls_token", f32([1, 1, 5])]]),
    );
    await Deno.mkdir(`${dir}/bad-iteration`);
    await Deno.writeFile(
      `${dir}/bad-iteration/checkpoint.safetensors`,
      trainingCheckpoint({ ...meta, iteration: "abc" }, [["teacher.backbone.cls_token", f32([1, 1, 64])]]),
    );
    await Deno.writeFile(`${dir}/width80.safetensors`, vitStub(80, 3));
    await Deno.writeFile(`${dir}/grey.safetensors`, vitStub(192, 1));
    const rw = [`--allow-read=${dir}`, `--allow-write=${dir}`];
    const cpu = ["--backend", "cpu"];

    const cases: Case[] = [
      { script: "pretrain", args: ["--resume", "yes"], error: /^error: --resume takes no value \(got 'yes'\)/ },
      { script: "pretrain", args: ["--bogus"], error: /^error: Unknown option '--bogus'/ },
      { script: "pretrain", args: ["--batch-size", "1000000"], error: /--batch-size 1000000 is above the maximum/ },
      {
        script: "pretrain",
        args: ["--batch-size", "5000", ...cpu],
        error: /--batch-size 5000 is more than the 4000 training images of embedded-shapes-32/,
      },
      { script: "pretrain", args: ["--seed", "1e20"], error: /--seed must be an integer in \[0, 9007199254740990\]/ },
      { script: "pretrain", args: ["--seed=-1"], error: /--seed must be an integer in \[0, /, perms: [] },
      {
        script: "pretrain",
        args: ["--out", `${dir}/a-file`],
        perms: rw,
        error: /--out .*a-file: a file, not a folder/,
      },
      {
        script: "pretrain",
        args: ["--data", `${dir}/no-classes`, ...cpu],
        perms: [`--allow-read=${dir}/no-classes`],
        error: /no-classes has no class sub-folders \(expected .*\/<class>\/<image>\)/,
      },
      {
        script: "pretrain",
        args: ["--data", `${dir}/empty-classes`, ...cpu],
        perms: [`--allow-read=${dir}/empty-classes`],
        error: /no images found in the 2 class folder\(s\) of .*empty-classes \(cat, dog; looked for/,
      },
      {
        script: "pretrain",
        args: ["--data", `${dir}/cmyk`, ...cpu],
        perms: [`--allow-read=${dir}/cmyk`],
        error: /none of the 1 image file\(s\) .* could be decoded \(first: .*a\.jpg: a CMYK \(4-component\) JPEG/,
      },
      {
        script: "pretrain",
        args: ["--resume", "--out", `${dir}/misfit`, ...cpu],
        perms: rw,
        error:
          /checkpoint .* does not fit this run: 'teacher\.backbone\.cls_token' is float32\[1,1,5\] in the file .*; missing .* more$/,
      },
      {
        script: "pretrain",
        args: ["--resume", "--out", `${dir}/bad-iteration`, ...cpu],
        perms: rw,
        error: /corrupt metadata: iteration "abc" is not an integer >= 0/,
      },
      {
        script: "knn",
        args: ["--weights", `${dir}/width80.safetensors`, "--arch", "vit", ...cpu],
        perms: [`--allow-read=${dir}`],
        error: /a ViT of width 80, whose number of attention heads .*: pass --heads N/,
      },
      {
        script: "knn",
        args: ["--weights", `${dir}/grey.safetensors`, "--arch", "vit", ...cpu],
        perms: [`--allow-read=${dir}`],
        error:
          /takes 1 input channel\(s\) but --norm imagenet \(the default\) normalises 3: pass --norm preset --preset /,
      },
      { script: "knn", args: ["--random", "--seed", "x"], error: /--seed must be an integer in/ },
      { script: "inspect_checkpoint", args: ["a", "b"], error: /expected one FILE, got 2/ },
      {
        script: "inspect_checkpoint",
        args: [`${dir}/missing.pth`],
        perms: [`--allow-read=${dir}`],
        error: /missing\.pth: .*(No such file|not found)/i,
      },
    ];
    const failures: string[] = [];
    for (const c of cases) {
      const { code, stderr, ms } = await run(c);
      // Deno's own progress lines (an npm download on a cold cache) are not the program's.
      const lines = stderr.split("\n").filter((l) => l.trim() && !/^(Download|Initialize) /.test(l));
      const what = `${c.script}.ts ${c.args.join(" ")}`;
      console.log(`${what} -> ${code} in ${(ms / 1000).toFixed(1)} s: ${lines.join(" | ")}`);
      if (code !== 2) failures.push(`${what}: exit code ${code}, expected 2`);
      if (lines.length !== 1) failures.push(`${what}: ${lines.length} lines on stderr:\n${stderr}`);
      else if (!c.error.test(lines[0])) failures.push(`${what}: '${lines[0]}' does not match ${c.error}`);
    }
    assert.deepEqual(failures, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
