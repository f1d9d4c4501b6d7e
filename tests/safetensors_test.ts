import assert from "node:assert/strict";
import {
  CheckpointError,
  cpu,
  encodeSafetensors,
  loadSafetensors,
  parseSafetensors,
  readSafetensorsHeader,
  saveSafetensors,
  sniffFormat,
  tensor,
  tree,
} from "../mod.ts";

const FIX = new URL("./fixtures/", import.meta.url);

Deno.test("safetensors: reads the PyTorch fixtures (F32, BOOL, metadata)", async () => {
  const { flat, metadata } = await loadSafetensors(new URL("rgb/inputs.safetensors", FIX).pathname, { backend: cpu });
  assert.deepEqual(flat.get("crops.0")!.shape, [2, 3, 32, 32]);
  const masks = flat.get("masks.0")!;
  assert.equal(masks.dtype, "bool");
  // README: masked counts of crop 0 are [6, 0].
  const m = Array.from(await masks.data());
  const count = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  assert.deepEqual([count(m.slice(0, 16)), count(m.slice(16))], [6, 0]);
  assert.equal(typeof metadata, "object");
});

Deno.test("safetensors: save then load round-trips a tree, metadata and dtypes; writes atomically", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/t.safetensors`;
  const t = {
    blocks: [{ w: tensor([[1.5, -2], [3, 4]], { backend: cpu }) }],
    idx: tensor([1, -7], { dtype: "int32", backend: cpu }),
    flag: tensor([true, false], { dtype: "bool", backend: cpu }),
  };
  await saveSafetensors(t, path, { step: "12" });
  const { tree: back, metadata } = await loadSafetensors(path, { backend: cpu });
  assert.equal(metadata.step, "12");
  assert.deepEqual(tree.paths(back).map(([p]) => p).sort(), ["blocks.0.w", "flag", "idx"]);
  assert.deepEqual(await (back as any).blocks[0].w.toArray(), [[1.5, -2], [3, 4]]);
  assert.deepEqual(await (back as any).idx.toArray(), [1, -7]);
  assert.deepEqual(await (back as any).flag.toArray(), [true, false]);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name);
  assert.deepEqual(names, ["t.safetensors"]); // no temporary file left behind
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors: corrupt input names the file", () => {
  assert.throws(() => parseSafetensors(new Uint8Array([1, 2, 3]), "bad.safetensors"), /bad\.safetensors/);
  const bytes = new Uint8Array(16);
  new DataView(bytes.buffer).setBigUint64(0, 1000n, true);
  assert.throws(() => parseSafetensors(bytes, "short.safetensors"), /short\.safetensors: corrupt/);
});

Deno.test("safetensors: 2000 mutations of a fixture's header are read or refused with a CheckpointError", () => {
  const src = Deno.readFileSync(new URL("rgb/inputs.safetensors", FIX));
  const headerLen = Number(new DataView(src.buffer).getBigUint64(0, true));
  const chars = [...'{}[]",:-0123456789.e '].map((c) => c.charCodeAt(0));
  let seed = 3;
  const rand = (n: number) => Math.floor((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000 * n);
  const outcomes = { read: 0, refused: 0 };
  for (let it = 0; it < 2000; it++) {
    const b = src.slice();
    for (let k = 0, edits = 1 + rand(3); k < edits; k++) b[8 + rand(headerLen)] = chars[rand(chars.length)];
    if (it % 10 === 0) b[rand(8)] = rand(256); // the length too
    try {
      parseSafetensors(b, `mutant${it}.safetensors`);
      outcomes.read++;
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw new Error(`mutant ${it}: ${(e as Error).stack}`);
      assert.match(e.message, new RegExp(`^mutant${it}\\.safetensors: `));
      outcomes.refused++;
    }
  }
  assert.ok(outcomes.read > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
});

Deno.test("safetensors: a header of 640 bytes (the file starts 0x80 0x02, like a pickle) is read as safetensors", () => {
  const bytes = encodeSafetensors([["w", { dtype: "float32", shape: [1], data: new Float32Array([2.5]) }]], {
    pad: "x".repeat(560), // makes the header 640 = 0x280 bytes
  });
  assert.deepEqual([...bytes.subarray(0, 2)], [0x80, 2]);
  assert.equal(sniffFormat(bytes), "safetensors");
  assert.deepEqual([...parseSafetensors(bytes, "w.safetensors").tensors.get("w")!.data], [2.5]);
});

Deno.test("safetensors: readSafetensorsHeader reads the header alone, by parseSafetensors's rules", async () => {
  const dir = await Deno.makeTempDir();
  const src = Deno.readFileSync(new URL("rgb/inputs.safetensors", FIX));
  const whole = parseSafetensors(src, "inputs.safetensors");
  const path = `${dir}/inputs.safetensors`;
  await Deno.writeFile(path, src);
  const head = await readSafetensorsHeader(path);
  assert.deepEqual(head.metadata, whole.metadata);
  assert.deepEqual([...head.tensors.keys()], [...whole.tensors.keys()]);
  for (const [name, t] of head.tensors) {
    assert.deepEqual([t.dtype, t.shape], [whole.dtypes.get(name), whole.tensors.get(name)!.shape]);
  }
  // A file cut short in its data is refused from the header alone; so is one that is not safetensors.
  await Deno.writeFile(path, src.subarray(0, src.length - 1));
  await assert.rejects(readSafetensorsHeader(path), /past the \d+ data bytes of the file/);
  await Deno.writeFile(path, new Uint8Array([0x50, 0x4b, 3, 4, 0, 0, 0, 0, 0, 0]));
  await assert.rejects(readSafetensorsHeader(path), /expected a safetensors file, but this is a PyTorch \.pth/);
  // A 640-byte header starts 0x80 0x02 like a pickle: still read as safetensors from the file's start.
  const padded = encodeSafetensors([["w", { dtype: "float32", shape: [1], data: new Float32Array([2.5]) }]], {
    pad: "x".repeat(560),
  });
  await Deno.writeFile(path, padded);
  assert.equal((await readSafetensorsHeader(path)).metadata.pad.length, 560);
  // Corrupt headers get parseSafetensors's message.
  let seed = 5;
  const rand = (n: number) => Math.floor((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000 * n);
  const headerLen = Number(new DataView(src.buffer).getBigUint64(0, true));
  let refused = 0;
  for (let it = 0; it < 100; it++) {
    const b = src.slice();
    b[8 + rand(headerLen)] = '{}[]",:-0123456789.e '.charCodeAt(rand(21));
    if (it % 10 === 0) b[rand(8)] = rand(256);
    await Deno.writeFile(path, b);
    const parsed = (() => {
      try {
        parseSafetensors(b, path);
        return "read";
      } catch (e) {
        return (e as Error).message;
      }
    })();
    const header = await readSafetensorsHeader(path).then(() => "read", (e: Error) => e.message);
    if (header !== "read") assert.equal(header, parsed, `mutant ${it}`);
    if (header !== "read") refused++;
  }
  assert.ok(refused > 10, `${refused} of 100 mutants refused`);
  await Deno.remove(dir, { recursive: true });
});
