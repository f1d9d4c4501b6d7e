/**
 * Import by URL: `mod.ts` and everything it imports use only relative and `npm:` specifiers, so the library
 * works imported from any static file server (`import ... from "https://host/ibot-ts/mod.ts"`). The first test
 * walks the module graph (`deno info --json mod.ts`); the third serves this repository on 127.0.0.1 with
 * `deno task serve`'s server (tools/serve.ts, whose media types and path checks the second checks) and runs a
 * fresh `deno run --allow-import=127.0.0.1:<port>` that imports `http://127.0.0.1:<port>/mod.ts` and jits a
 * `grad` on WebGPU. The child gets no other permission (no read, no env): importing the library reads no files
 * and no environment variables.
 *
 * Needs `--allow-run` for the deno binary and `--allow-net=127.0.0.1` (both in the `test` task).
 */
import assert from "node:assert/strict";
import { serveStatic } from "../tools/serve.ts";
import { runDeno } from "./child.ts";

const ROOT = new URL("../", import.meta.url);
const noGpu = Deno.env.get("IBOT_TEST_NO_GPU") === "1";

interface InfoDependency {
  specifier: string;
  code?: { specifier?: string };
  type?: { specifier?: string };
  isDynamic?: boolean;
}
interface InfoModule {
  specifier: string;
  kind?: string;
  dependencies?: InfoDependency[];
  error?: string;
}

const deno = runDeno;

Deno.test("import by URL: mod.ts's module graph has only relative and npm: specifiers", async () => {
  const info = await deno(["info", "--json", "mod.ts"]);
  assert.equal(info.code, 0, info.stderr);
  const graph = JSON.parse(info.stdout) as { roots: string[]; modules: InfoModule[] };
  const root = ROOT.href;
  const problems: string[] = [];
  let files = 0;
  for (const m of graph.modules) {
    if (m.error) problems.push(`${m.specifier}: ${m.error}`);
    if (m.specifier.startsWith("npm:") || m.kind === "npm") continue; // the package itself (resolved by npm)
    if (!m.specifier.startsWith(root)) {
      problems.push(`module outside the repository: ${m.specifier}`);
      continue;
    }
    files++;
    for (const d of m.dependencies ?? []) {
      const s = d.specifier;
      const ok = s.startsWith("./") || s.startsWith("../") || /^npm:(@[^/]+\/)?[^@/]+@\d[^/]*(\/.*)?$/.test(s);
      if (!ok) {
        problems.push(`${m.specifier.slice(root.length)} imports '${s}'${d.isDynamic ? " (dynamic)" : ""}`);
      }
    }
  }
  assert.ok(files > 30, `only ${files} modules in the graph`);
  assert.deepEqual(problems, [], "bare, jsr:, https:, node: or unpinned npm: specifiers break import by URL");
});

/** This repository on 127.0.0.1 (an ephemeral port) through `deno task serve`'s server; counts the requests. */
async function serveRepository() {
  const served: string[] = [];
  const server = await serveStatic(ROOT.pathname, { port: 0, onServe: (p) => served.push(p), onListen() {} });
  return { server, served, port: server.addr.port };
}

Deno.test("serve: media types Deno and browsers accept, index.html, 404, and no path out of the root", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ibot-serve-" });
  const outside = await Deno.makeTempDir({ prefix: "ibot-serve-outside-" });
  await Deno.writeTextFile(`${outside}/secret.txt`, "secret");
  for (const f of ["a.ts", "b.json", "c.wasm", "d.safetensors", "e.html", "f.png", "g.js"]) {
    await Deno.writeTextFile(`${dir}/${f}`, f);
  }
  await Deno.mkdir(`${dir}/sub`);
  await Deno.writeTextFile(`${dir}/sub/index.html`, "<p>index</p>");
  // Deno.symlink needs unscoped write permission, which the test task does not grant: a child deno makes it.
  const ln = await deno(["eval", `await Deno.symlink(${JSON.stringify(outside)}, ${JSON.stringify(`${dir}/out`)})`]);
  assert.equal(ln.code, 0, ln.stderr);
  const server = await serveStatic(dir, { port: 0, onListen() {} });
  const base = `http://127.0.0.1:${server.addr.port}`;
  const get = async (path: string) => {
    const r = await fetch(`${base}${path}`);
    return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
  };
  try {
    const want: Record<string, string> = {
      "/a.ts": "application/typescript; charset=utf-8",
      "/b.json": "application/json; charset=utf-8",
      "/c.wasm": "application/wasm",
      "/d.safetensors": "application/octet-stream",
      "/e.html": "text/html; charset=utf-8",
      "/f.png": "image/png",
      "/g.js": "text/javascript; charset=utf-8",
    };
    for (const [path, type] of Object.entries(want)) {
      assert.deepEqual(await get(path), { status: 200, type, body: path.slice(1) }, path);
    }
    assert.deepEqual([(await get("/sub/")).body, (await get("/sub")).status], ["<p>index</p>", 200]);
    assert.equal((await get("/missing.ts")).status, 404);
    assert.equal((await get("/")).status, 404, "no listing of a folder without index.html");
    assert.equal((await get("/..%2f..%2fetc%2fpasswd")).status, 403, "an encoded ../");
    assert.equal((await get("/out/secret.txt")).status, 403, "a symbolic link out of the root");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test({
  name: "import by URL: deno run --allow-import=127.0.0.1:<port> imports http://.../mod.ts and jits a grad on WebGPU",
  ignore: noGpu,
  async fn() {
    const { server, served, port } = await serveRepository();
    const dir = await Deno.makeTempDir({ prefix: "ibot-url-import-" });
    try {
      const script = `${dir}/main.ts`;
      await Deno.writeTextFile(
        script,
        `import { grad, initBackend, jit, tensor } from "http://127.0.0.1:${port}/mod.ts";
const backend = await initBackend("webgpu");
const df = jit(grad((x) => x.mul(x).sum()));
console.log(JSON.stringify({ backend: backend.name, value: await df(tensor([1, 2, 3])).toArray() }));
`,
      );
      // No --allow-read or --allow-env: the library must not touch files or the environment at import time.
      // The temporary directory has no deno.json, so no lockfile of this repository is read or written.
      const run = await deno(
        ["run", "--unstable-webgpu", "--no-config", "--no-prompt", `--allow-import=127.0.0.1:${port}`, script],
        { cwd: dir, env: { DENO_WEBGPU_BACKEND: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "" } },
      );
      assert.equal(run.code, 0, `deno run failed:\n${run.stderr}`);
      const line = run.stdout.trim().split("\n").pop()!;
      console.log(`child printed ${line}`);
      assert.deepEqual(JSON.parse(line), { backend: "webgpu", value: [2, 4, 6] });
      assert.ok(served.includes("/mod.ts") && served.length > 30, `served ${served.length} files`);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
