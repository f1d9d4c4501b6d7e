/**
 * Hostile checkpoint files (issue 11): each test builds a small `.pth` or safetensors file in memory, runs the
 * reader in a worker under a time bound (a worker that does not answer is terminated and the test fails) and a
 * memory bound (the growth of the process's RSS, sampled every 5 ms), and checks that the message names the file
 * and what is wrong.
 */
import assert from "node:assert/strict";
import type { HostileJob, HostileResult } from "./hostile_worker.ts";
import { deflatedZeros, Pickle, pthZip, stateDictPickle, zip } from "./pth_util.ts";

const TIME_LIMIT_MS = 3000; // a refusal takes well under 100 ms; the bound leaves room for a loaded machine
const PEAK_LIMIT = 128 * 2 ** 20; // bytes of RSS growth a refusal may cause
const HANG_MS = 30_000; // the worker is terminated after this

/** Runs `job` in a worker; asserts its time, and the growth of the process's RSS (sampled every 5 ms) meanwhile. */
async function bounded(job: HostileJob): Promise<HostileResult> {
  const worker = new Worker(new URL("./hostile_worker.ts", import.meta.url).href, { type: "module" });
  let timer: ReturnType<typeof setTimeout> | undefined;
  let sampler: ReturnType<typeof setInterval> | undefined;
  let base = 0;
  let peak = 0;
  try {
    const answer = new Promise<HostileResult>((resolve, reject) => {
      worker.onmessage = (e) => {
        if (e.data !== "started") return resolve(e.data);
        base = peak = Deno.memoryUsage().rss;
        sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 5);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`worker crashed: ${e.message}`));
      };
    });
    const hang = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${job.file}: no answer within ${HANG_MS} ms (a hang)`)), HANG_MS);
    });
    worker.postMessage(job);
    const r = await Promise.race([answer, hang]);
    peak = Math.max(peak, Deno.memoryUsage().rss);
    assert.ok(r.ms < TIME_LIMIT_MS, `${job.file}: took ${r.ms.toFixed(0)} ms`);
    assert.ok(peak - base < PEAK_LIMIT, `${job.file}: RSS grew by ${((peak - base) / 2 ** 20).toFixed(0)} MiB`);
    return r;
  } finally {
    clearTimeout(timer);
    clearInterval(sampler);
    worker.terminate();
  }
}

/** Runs `reader` on `bytes` and asserts a `CheckpointError` matching `message`; returns the result. */
async function refuses(
  reader: HostileJob["reader"],
  bytes: Uint8Array,
  file: string,
  message: RegExp,
): Promise<HostileResult> {
  const r = await bounded({ reader, bytes, file });
  assert.equal(r.ok, false, `${file} was accepted`);
  assert.match(r.error!, /^CheckpointError: /);
  assert.match(r.error!, new RegExp(`${file.replace(/\./g, "\\.")}`));
  assert.match(r.error!, message);
  return r;
}

const f32 = (n: number) => new Uint8Array(4 * n);
let gibOfZeros: Promise<Uint8Array> | undefined; // 1 GiB of zeros, raw-deflated (about 1 MB; built once)
const deflatedGiB = () => gibOfZeros ??= deflatedZeros(2 ** 30);

// --- pickle lengths -----------------------------------------------------------------------------------------

Deno.test("hostile pth: LONG4 with a negative length is refused, not looped on", async () => {
  const pkl = new Pickle().proto().raw(0x8b, 0xfb, 0xff, 0xff, 0xff).stop().bytes(); // LONG4 length -5
  await refuses("pth", pthZip(pkl), "long4.pth", /pickle LONG of length -5 at byte \d+ does not fit/);
});

Deno.test("hostile pth: BINSTRING with a negative length is refused", async () => {
  const pkl = new Pickle().proto().raw(0x54, 0xf8, 0xff, 0xff, 0xff).stop().bytes(); // BINSTRING length -8
  await refuses("pth", pthZip(pkl), "binstring.pth", /pickle BINSTRING of length -8 .* does not fit/);
});

Deno.test("hostile pth: lengths beyond the data (BINUNICODE8 2^60, FRAME 2^31, a 10,000-byte LONG4) are refused", async () => {
  const huge = new Pickle().proto(4).raw(0x8d, 0, 0, 0, 0, 0, 0, 0, 0x10).stop().bytes();
  await refuses("pth", pthZip(huge), "unicode8.pth", /BINUNICODE8 of length 1152921504606847000 .* does not fit/);
  const frame = new Pickle().proto(4).raw(0x95, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0).stop().bytes();
  await refuses("pth", pthZip(frame), "frame.pth", /FRAME of length 2147483647 .* does not fit/);
  const long = new Pickle().proto().raw(0x8b, 0x10, 0x27, 0, 0).raw(...new Uint8Array(10000)).stop().bytes();
  await refuses("pth", pthZip(long), "bigint.pth", /LONG of 10000 bytes/);
});

Deno.test("hostile pth: 100,000 nested lists are refused by depth, not by a stack overflow", async () => {
  const p = new Pickle().proto();
  for (let i = 0; i < 100_000; i++) p.mark();
  for (let i = 0; i < 100_000; i++) p.raw(0x6c); // LIST
  await refuses("pth", pthZip(p.stop().bytes()), "deep.pth", /nests too deep/);
});

Deno.test("hostile pth: a dict key of 64 doubling shared tuples (2^64 leaves) is refused", async () => {
  const p = new Pickle().proto().emptyDict().emptyTuple();
  for (let i = 0; i < 64; i++) p.raw(0x32, 0x86); // DUP, TUPLE2
  await refuses("pth", pthZip(p.raw(0x4e).setitem().stop().bytes()), "key.pth", /dict key is longer than 4096/);
});

Deno.test("hostile pth: one memoised 200,000-item list passed to OrderedDict 50,000 times is refused", async () => {
  const p = new Pickle().proto().raw(0x5d, 0x71, 0).mark(); // EMPTY_LIST, BINPUT 0, MARK
  for (let i = 0; i < 200_000; i++) p.raw(0x4b, 0); // BININT1 0
  p.raw(0x65, 0x30).global("collections", "OrderedDict").raw(0x71, 1, 0x30, 0x5d); // APPENDS, POP, memo 1, list
  for (let i = 0; i < 50_000; i++) p.raw(0x68, 1, 0x68, 0, 0x85).reduce().raw(0x61); // OrderedDict((list,)), APPEND
  await refuses("pth", pthZip(p.stop().bytes()), "copies.pth", /pickle builds more than \d+ items from \d+ bytes/);
});

// --- views and storages -------------------------------------------------------------------------------------

Deno.test("hostile pth: a [40000, 40000] stride-0 view of a 1-element storage is refused before allocating", async () => {
  const pkl = stateDictPickle({ w: { key: "0", numel: 1, shape: [40000, 40000], stride: [0, 0] } });
  await refuses(
    "pth",
    pthZip(pkl, { 0: f32(1) }),
    "stride0.pth",
    /tensor 'w' \[40000,40000\] stride \[0,0\] would read 1600000000 elements of storage data\/0, which holds 1/,
  );
});

Deno.test("hostile pth: a 300 KB file referencing one deflated 4 MB storage 2,000 times shares one host tensor", async () => {
  const tensors = Object.fromEntries(
    Array.from({ length: 2000 }, (_, i) => [`t${i}`, { key: "0", numel: 2 ** 20, shape: [2 ** 20] }]),
  );
  const storage = { name: "", data: await deflatedZeros(2 ** 22), deflated: true, size: 2 ** 22 };
  const bytes = pthZip(stateDictPickle(tensors), { 0: storage });
  const r = await bounded({ reader: "pth", bytes, file: "refs.pth" });
  assert.equal(r.ok, true, r.error);
  assert.equal(r.tensors!.length, 2000);
  assert.equal(r.distinct, 1);
});

Deno.test("hostile pth: 2,000 distinct views of one 4 MB storage are refused at twice its size", async () => {
  const tensors = Object.fromEntries(
    Array.from({ length: 2000 }, (_, i) => [`t${i}`, { key: "0", numel: 2 ** 20, shape: [2 ** 20 - i], offset: i }]),
  );
  await refuses(
    "pth",
    pthZip(stateDictPickle(tensors), { 0: f32(2 ** 20) }),
    "views.pth",
    /tensor 't2' \[1048574\] stride \[1\] would read 1048574 elements of storage data\/0, which holds 1048576 \(its views may read at most 2x/,
  );
});

Deno.test("hostile pth: a view past its storage, a bad stride and a storage larger than its entry are refused", async () => {
  const past = stateDictPickle({ w: { key: "0", numel: 10, shape: [10], offset: 5 } });
  await refuses(
    "pth",
    pthZip(past, { 0: f32(10) }),
    "past.pth",
    /tensor 'w' \[10\] stride \[1\] offset 5 reaches element 14 of its storage data\/0, which holds 10/,
  );
  const negative = stateDictPickle({ w: { key: "0", numel: 10, shape: [2, 2], stride: [-1, 1] } });
  await refuses(
    "pth",
    pthZip(negative, { 0: f32(10) }),
    "stride.pth",
    /tensor 'w' has a bad view: shape \[2,2\] stride \[-1,1\]/,
  );
  const claims = stateDictPickle({ w: { key: "0", numel: 1e9, shape: [4] } });
  await refuses(
    "pth",
    pthZip(claims, { 0: f32(1) }),
    "claims.pth",
    /tensor 'w' refers to storage archive\/data\/0, declared as 1000000000 FloatStorage elements \(4000000000 bytes\), but the archive entry holds 4 bytes/,
  );
  const missing = stateDictPickle({ w: { key: "7", numel: 1, shape: [1] } });
  await refuses("pth", pthZip(missing), "missing.pth", /tensor 'w' refers to the missing storage archive\/data\/7/);
});

// --- zip ----------------------------------------------------------------------------------------------------

Deno.test("hostile pth: a 1 MB zip whose entry declares 1 GiB is refused before inflating", async () => {
  const GiB = 2 ** 30;
  const bomb = await deflatedGiB();
  assert.ok(bomb.length < 1.1e6, `${bomb.length}`);
  const pkl = stateDictPickle({ w: { key: "0", numel: GiB / 4, shape: [GiB / 4] } });
  const file = pthZip(pkl, { 0: { name: "", data: bomb, deflated: true, size: GiB } });
  await refuses(
    "pth",
    file,
    "bomb.pth",
    /'archive\/data\/0' declares 1073741824 bytes inflated from \d+, more than the \d+ bytes left .*zip bomb/,
  );
});

Deno.test("hostile pth: an entry that inflates past its declared size stops there (1 GiB of zeros declared as 1 MiB)", async () => {
  const MiB = 2 ** 20;
  const bomb = await deflatedGiB();
  const pkl = stateDictPickle({ w: { key: "0", numel: MiB / 4, shape: [MiB / 4] } });
  const file = pthZip(pkl, { 0: { name: "", data: bomb, deflated: true, size: MiB } });
  await refuses("pth", file, "liar.pth", /'archive\/data\/0' inflates to more than the 1048576 bytes it declares/);
});

Deno.test("hostile pth: a corrupt zip directory is refused", async () => {
  const good = pthZip(stateDictPickle({}));
  const bad = good.slice();
  const v = new DataView(bad.buffer);
  v.setUint16(bad.length - 12, 0xfffe, true); // entry count
  await refuses("pth", bad, "dir.pth", /corrupt zip central directory/);
  const past = good.slice();
  new DataView(past.buffer).setUint32(past.length - 6, 0x7fffffff, true); // directory offset
  await refuses("pth", past, "past.pth", /corrupt zip central directory/);
  const stored = zip([{ name: "archive/data.pkl", data: stateDictPickle({}), size: 1e6 }]);
  await refuses("pth", stored, "stored.pth", /is stored \(not compressed\) but declares 1000000 bytes/);
});

// --- globals ------------------------------------------------------------------------------------------------

for (const [module, name] of [["posix", "system"], ["builtins", "eval"], ["os", "system"]]) {
  Deno.test(`hostile pth: a pickle calling ${module}.${name} is refused, and skipped only on request`, async () => {
    const pkl = new Pickle().proto().emptyDict().str("x").global(module, name).mark().str("echo pwned").tuple()
      .reduce().setitem().stop().bytes();
    await refuses(
      "pth",
      pthZip(pkl),
      "evil.pth",
      new RegExp(`the pickle references '${module}\\.${name}' \\(byte \\d+\\).*refused`),
    );
    const r = await bounded({ reader: "checkpoint", bytes: pthZip(pkl), file: "evil.pth", skipUnknownGlobals: true });
    assert.equal(r.ok, true, r.error);
    assert.deepEqual(r.skipped, [["x", `${module}.${name}`]]);
  });
}

// --- formats ------------------------------------------------------------------------------------------------

const LEGACY = new Uint8Array([0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);

Deno.test("formats: a legacy .pth gets the same message from parsePth and parseModelWeights", async () => {
  for (const reader of ["pth", "checkpoint"] as const) {
    await refuses(
      reader,
      LEGACY,
      "old.pth",
      /old\.pth: expected a PyTorch \.pth checkpoint \(zip\).*legacy \(pre-1\.6\)/,
    );
  }
  await refuses(
    "checkpoint",
    new Uint8Array(64).fill(7),
    "junk.bin",
    /junk\.bin: expected a PyTorch \.pth checkpoint \(zip\) or a safetensors file, but this is neither \(it starts with 07 07 07 07 07 07 07 07\)/,
  );
  await refuses(
    "safetensors",
    pthZip(stateDictPickle({})),
    "w.safetensors",
    /expected a safetensors file, but this is a PyTorch \.pth/,
  );
});

// --- safetensors --------------------------------------------------------------------------------------------

/** Safetensors bytes: the 8-byte length, `header` as JSON, then `dataLen` bytes (each the byte's own index). */
function safetensors(header: unknown, dataLen: number, headerLen?: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? json.length), true);
  out.set(json, 8);
  for (let i = 0; i < dataLen; i++) out[8 + json.length + i] = i;
  return out;
}

const refusedSafetensors: [string, unknown, number, RegExp][] = [
  [
    "negative offsets",
    { w: { dtype: "F32", shape: [4], data_offsets: [-16, 0] } },
    0,
    /tensor 'w' has data_offsets \[-16,0\] \(two non-negative integers\)/,
  ],
  [
    "negative dims",
    { w: { dtype: "F32", shape: [-2, -2], data_offsets: [0, 16] } },
    16,
    /tensor 'w' has shape \[-2,-2\] \(dimensions must be non-negative integers\)/,
  ],
  [
    "fractional dims",
    { w: { dtype: "F32", shape: [0.5, 8], data_offsets: [0, 16] } },
    16,
    /tensor 'w' has shape \[0\.5,8\]/,
  ],
  ["an entry that is not an object", { w: 5 }, 0, /tensor 'w' is 5, not an object/],
  ["an entry without data_offsets", { w: { dtype: "F32", shape: [1] } }, 4, /tensor 'w' has data_offsets undefined/],
  [
    "out-of-order offsets",
    { w: { dtype: "F32", shape: [0], data_offsets: [16, 0] } },
    16,
    /tensor 'w' has data_offsets \[16, 0\] out of order/,
  ],
  [
    "out-of-range offsets",
    { w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } },
    8,
    /tensor 'w' has data_offsets \[0, 16\] past the 8 data bytes/,
  ],
  [
    "a length that disagrees with shape x dtype",
    { w: { dtype: "F32", shape: [4], data_offsets: [0, 8] } },
    8,
    /tensor 'w' F32\[4\] needs 16 bytes, but its data_offsets \[0, 8\] hold 8/,
  ],
  [
    "overlapping offsets",
    { a: { dtype: "F32", shape: [4], data_offsets: [0, 16] }, b: { dtype: "F32", shape: [4], data_offsets: [8, 24] } },
    24,
    /tensor 'b' data_offsets \[8, 24\] overlap another tensor's/,
  ],
  [
    "a gap between tensors",
    { a: { dtype: "F32", shape: [1], data_offsets: [0, 4] }, b: { dtype: "F32", shape: [1], data_offsets: [8, 12] } },
    12,
    /tensor 'b' data_offsets \[8, 12\] leave bytes 4\.\.8 unused/,
  ],
  [
    "trailing bytes",
    { w: { dtype: "F32", shape: [1], data_offsets: [0, 4] } },
    12,
    /8 bytes after the last tensor's data are not described/,
  ],
  [
    "an unknown dtype",
    { w: { dtype: "X9", shape: [1], data_offsets: [0, 4] } },
    4,
    /tensor 'w' has unsupported dtype "X9"/,
  ],
  ["non-string metadata", { __metadata__: { step: 3 } }, 0, /__metadata__ is not an object of strings/],
  ["a header that is not an object", [1, 2], 0, /corrupt safetensors header \(it does not start with '\{'\)/],
];

for (const [what, header, dataLen, message] of refusedSafetensors) {
  Deno.test(`hostile safetensors: ${what} is refused, naming the file and key`, async () => {
    await refuses("safetensors", safetensors(header, dataLen), "w.safetensors", message);
  });
}

Deno.test("hostile safetensors: a header length beyond the file is refused", async () => {
  const bytes = safetensors({}, 0, 2 ** 40);
  await refuses(
    "safetensors",
    bytes,
    "len.safetensors",
    /corrupt safetensors header length 1099511627776 \(the file has 2 bytes after it\)/,
  );
});
