/**
 * Image folders work as the CLI says: with exactly the permission the CLI asks for (`--allow-read=<folder>`),
 * PNG and JPEG files decode (the decoders' WebAssembly is embedded, nothing is read from Deno's npm cache) and
 * a CMYK JPEG is skipped with its reason; a folder of class sub-folders without train/ and val/ holds out a
 * deterministic k-NN split, or, when that leaves none, says before training that k-NN is skipped and exits 0.
 *
 * Needs `--allow-run` for the deno binary and `--allow-write=/tmp` (both in the `test` task).
 */
import assert from "node:assert/strict";
import { encode as encodePng } from "npm:@jsquash/png@3.1.1";
import { encode as encodeJpeg } from "npm:@jsquash/jpeg@1.6.0";
import { cmykJpeg } from "./data_files.ts";
import { runDeno } from "./child.ts";

const deno = (args: string[]) => runDeno(["run", "--unstable-webgpu", "--no-prompt", ...args]);

/** `perClass` images of each of two classes, alternately PNG and JPEG, of two distinct colours. */
async function imageFolder(root: string, perClass: number): Promise<void> {
  for (const [c, rgb] of [["dark", [30, 30, 30]], ["light", [220, 220, 220]]] as const) {
    await Deno.mkdir(`${root}/${c}`, { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const d = new Uint8ClampedArray(12 * 12 * 4);
      for (let p = 0; p < 144; p++) d.set([rgb[0] + i, rgb[1], rgb[2] - i, 255], p * 4);
      const img = new ImageData(d, 12, 12);
      const bytes = i % 2 ? await encodeJpeg(img) : await encodePng(img);
      await Deno.writeFile(`${root}/${c}/${i}.${i % 2 ? "jpg" : "png"}`, new Uint8Array(bytes));
    }
  }
}

Deno.test("image folder: knn.ts decodes PNG and JPEG with exactly --allow-read=<folder>; a CMYK JPEG is skipped with its reason", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot-folder-perm-" });
  try {
    await imageFolder(root, 5);
    await Deno.writeFile(`${root}/dark/cmyk.jpg`, cmykJpeg());
    const r = await deno([`--allow-read=${root}`, "examples/knn.ts", "--random", "--data", root, "--ks", "1,3"]
      .concat(["--backend", "cpu"]));
    console.log(r.stdout + r.stderr);
    assert.equal(r.code, 0, r.stderr);
    // 10% of each class of 5 held out: 1 + 1 test images, 4 + 4 train.
    assert.match(r.stdout, /\(8 train \/ 2 test, 2 classes, 3x32x32\)/);
    assert.match(r.stdout, /k=3 +random init \d+\.\d+%/);
    assert.match(r.stderr, /skipped 1 undecodable file under .* \(first: .*cmyk\.jpg: a CMYK \(4-component\) JPEG/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("image folder: pretrain.ts on class folders too small to hold out a k-NN split says so before training and exits 0", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot-folder-flat-" });
  try {
    await imageFolder(root, 2);
    const r = await deno([
      `--allow-read=${root}`,
      "examples/pretrain.ts",
      ...["--data", root, "--batch-size", "2", "--steps", "1", "--backend", "cpu"],
    ]);
    console.log(r.stdout + r.stderr);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    const skipped = lines.findIndex((l) => /^k-NN skipped: .* has no test images/.test(l));
    const step = lines.findIndex((l) => /^step 1\/1 /.test(l));
    assert.ok(skipped >= 0 && step > skipped, "the k-NN note comes before the first step");
    assert.doesNotMatch(r.stdout, /k-NN top-1/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
