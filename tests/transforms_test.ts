/**
 * Transforms above the primitives: grad/valueAndGrad (pytrees, argnums, hasAux), vjp with pytree outputs,
 * stopGradient, customVjp (alone, nested in grad, under jit), higher-order gradients, pytree utilities, emaFold,
 * error messages, and tidy's lifetimes on WebGPU.
 */
import assert from "node:assert/strict";
import {
  cpu,
  customVjp,
  emaFold,
  fromTyped,
  grad,
  jit,
  keep,
  maximum,
  minimum,
  nn,
  stopGradient,
  tanh,
  type Tensor,
  tensor,
  tidy,
  tree,
  valueAndGrad,
  vjp,
} from "../mod.ts";
import { assertClose, checkVjp, gpu, randArray, readAll } from "./util.ts";

const f64 = (data: ArrayLike<number>, shape: number[] = [data.length]) =>
  fromTyped(Float64Array.from(data), shape, "float64", cpu);
const arr = async (t: Tensor) => Array.from(await t.data());

Deno.test("grad and valueAndGrad", async (t) => {
  const params = { w: f64([1, 2, 3]), inner: { b: [f64([0.5]), f64([-1, 4], [2])] } };
  type P = typeof params;
  // loss = sum(w^2) + 3 * b0 * sum(w) + sum(b1^3)
  const loss = (p: P) =>
    p.w.mul(p.w).sum().add(p.inner.b[0].mul(p.w.sum()).mul(3).sum()).add(p.inner.b[1].pow(3).sum());

  await t.step("pytree argument: grads mirror the tree", async () => {
    const [value, g] = valueAndGrad(loss)(params) as [Tensor, P];
    assert.equal(await value.item(), 14 + 3 * 0.5 * 6 + (-1 + 64));
    assert.deepEqual(tree.paths(g).map(([p]) => p), ["w", "inner.b.0", "inner.b.1"]);
    assert.deepEqual(await arr(g.w), [2 + 1.5, 4 + 1.5, 6 + 1.5]);
    assert.deepEqual(await arr(g.inner.b[0]), [18]);
    assert.deepEqual(await arr(g.inner.b[1]), [3, 48]);
    const g2 = grad(loss)(params) as P;
    assert.deepEqual(await readAll(tree.leaves(g2)), await readAll(tree.leaves(g)));
  });

  await t.step("non-float and non-tensor leaves get null; unused float leaves get zeros", async () => {
    const p = { w: f64([1, 2]), idx: tensor([1], { dtype: "int32" }), lr: 0.5, unused: f64([7, 7]) };
    const g = grad((q: typeof p) => q.w.mul(q.lr).sum())(p);
    assert.deepEqual(await arr(g.w), [0.5, 0.5]);
    assert.equal(g.idx, null);
    assert.equal(g.lr, null);
    assert.deepEqual(await arr(g.unused), [0, 0]);
  });

  await t.step("argnums: a number selects one argument, an array gives one tree per argument", async () => {
    const f = (a: Tensor, b: { x: Tensor }, c: Tensor) => a.mul(b.x).mul(c).sum();
    const [a, b, c] = [f64([2]), { x: f64([3]) }, f64([5])];
    assert.deepEqual(await arr(grad(f)(a, b, c)), [15]);
    const gb = grad(f, { argnums: 1 })(a, b, c) as { x: Tensor };
    assert.deepEqual(await arr(gb.x), [10]);
    const [ga, gc] = grad(f, { argnums: [0, 2] })(a, b, c) as Tensor[];
    assert.deepEqual([await arr(ga), await arr(gc)], [[15], [6]]);
    const [v, gs] = valueAndGrad(f, { argnums: [2, 1] })(a, b, c);
    assert.equal(await v.item(), 30);
    assert.deepEqual([await arr(gs[0]), await arr(gs[1].x)], [[6], [10]]);
    assert.throws(() => grad(f, { argnums: 3 })(a, b, c), /grad: argnum 3 out of range for 3 arguments/);
  });

  await t.step("hasAux: aux passes through undifferentiated", async () => {
    const f = (w: Tensor) => {
      const y = w.mul(w);
      return [y.sum(), { y, note: "aux" }] as const;
    };
    const w = f64([1, -2]);
    const [[loss, aux], g] = valueAndGrad(f, { hasAux: true })(w);
    assert.equal(await loss.item(), 5);
    assert.deepEqual(await arr(aux.y), [1, 4]);
    assert.equal(aux.note, "aux");
    assert.deepEqual(await arr(g), [2, -4]);
    const [g2, aux2] = grad(f, { hasAux: true })(w);
    assert.deepEqual(await arr(g2), [2, -4]);
    assert.deepEqual(await arr(aux2.y), [1, 4]);
    assert.throws(
      () => grad((x: Tensor) => x.sum(), { hasAux: true })(w),
      /grad: with hasAux, f must return \[loss, aux\]/,
    );
    // Under jit (float32), float aux tensors come back as values too.
    const w32 = w.cast("float32");
    const [[jl, jaux], jg] = jit(valueAndGrad(f, { hasAux: true }))(w32);
    assert.deepEqual([await jl.item(), await arr(jaux.y), await arr(jg)], [5, [1, 4], [2, -4]]);
    // And as the inner function of a second-order gradient.
    const gg = grad((v: Tensor) => grad(f, { hasAux: true })(v)[0].mul(v).sum())(w);
    assert.deepEqual(await arr(gg), [4, -8]);
  });

  await t.step("the function must return a float scalar", () => {
    assert.throws(() => grad((x: Tensor) => x.mul(2))(f64([1, 2])), /grad: f must return a float scalar/);
  });
});

Deno.test("vjp with a pytree output", async () => {
  const x = f64([1, 2, 3]);
  const f = (v: Tensor) => ({ sq: v.mul(v), parts: [v.sum(), v.exp()], label: "static" });
  const [out, pullback] = vjp(f, x);
  assert.equal(out.label, "static");
  assert.deepEqual(await arr(out.sq), [1, 4, 9]);
  const ct = { sq: f64([1, 1, 1]), parts: [f64([2], []), f64([0, 1, 0])], label: "static" };
  const [dx] = pullback(ct) as Tensor[];
  assertClose(await dx.data(), [2 + 2, 4 + 2 + Math.E ** 2, 6 + 2], 1e-15, 0, "pullback");
  // A null cotangent leaf contributes nothing.
  const [dx2] = pullback({ sq: f64([1, 1, 1]), parts: [null, null], label: "static" }) as Tensor[];
  assert.deepEqual(await arr(dx2), [2, 4, 6]);
  assert.throws(() => pullback({ sq: f64([1, 1, 1]) }), /vjp: the cotangent does not have the structure of the output/);
  assert.throws(
    () => pullback({ sq: f64([1, 1]), parts: [f64([2], []), f64([0, 1, 0])], label: "static" }),
    /vjp: cotangent float64\[2\] does not match output float64\[3\]/,
  );
  // Several primal arguments, each a tree.
  const [, pb2] = vjp((a: { p: Tensor }, b: Tensor[]) => a.p.mul(b[0]).add(b[1]), { p: f64([2]) }, [
    f64([3]),
    f64([4]),
  ]);
  const [da, db] = pb2(f64([1])) as [{ p: Tensor }, Tensor[]];
  assert.deepEqual([await arr(da.p), await arr(db[0]), await arr(db[1])], [[3], [2], [1]]);
});

Deno.test("stopGradient blocks the cotangent but passes the value", async () => {
  const x = f64([1, 2, 3]);
  const [v, g] = valueAndGrad((a: Tensor) => stopGradient(a).mul(a).sum())(x);
  assert.equal(await v.item(), 14);
  assert.deepEqual(await arr(g), [1, 2, 3]);
  assert.deepEqual(await arr(grad((a: Tensor) => stopGradient(a.mul(a)).sum().add(a.sum()))(x)), [1, 1, 1]);
  // softmax's max shift is a stopGradient: the gradient is still the true one.
  await checkVjp((a: Tensor) => nn.softmax(a.mul(3)), [f64([0.1, 0.1, 2])]);
});

Deno.test("customVjp", async (t) => {
  // Gradient clipping: the identity forward, the cotangent clipped to [-1, 1] backward.
  let bwdCalls = 0;
  const clipGrad = customVjp(
    (x: Tensor) => x,
    (x: Tensor) => [x, null],
    (_r: null, g: Tensor) => {
      bwdCalls++;
      return [minimum(maximum(g, -1), 1)];
    },
  );
  const x = f64([1, -2, 3]);
  await t.step("the custom rule is used", async () => {
    bwdCalls = 0;
    const g = grad((a: Tensor) => clipGrad(a).mul(f64([5, -5, 0.5])).sum())(x);
    assert.deepEqual(await arr(g), [1, -1, 0.5]);
    assert.equal(bwdCalls, 1);
    // Without a vjp it is just f.
    assert.equal(clipGrad(x), x);
  });
  await t.step("nested inside grad of a larger function", async () => {
    // loss = sum(clip(w * x)^2): d/dw = x * clip(2 w x)
    const loss = (w: Tensor) => clipGrad(w.mul(x)).pow(2).sum();
    const w = f64([0.1, 0.2, 1]);
    assertClose(await grad(loss)(w).data(), [1 * 0.2, -2 * -0.8, 3 * 1], 1e-15, 0, "clipped grad");
  });
  await t.step("under jit, and jit of grad", async () => {
    const loss = (w: Tensor) => clipGrad(w.mul(x)).pow(2).sum();
    const w = f64([0.1, 0.2, 1]);
    const eager = await grad(loss)(w).data();
    const jg = jit(grad(loss));
    assert.deepEqual(await jg(w).data(), eager);
    assert.deepEqual(await jg(f64([0.1, 0.2, 1])).data(), eager);
    assert.equal(jg.stats().traces, 1);
    // grad of a jitted function containing the custom rule.
    assert.deepEqual(await grad(jit(loss))(w).data(), eager);
    assert.deepEqual(await jit(clipGrad)(w).data(), await w.data());
  });
  await t.step("differentiating through the custom backward (grad of grad)", async () => {
    // A custom square with its true derivative as the rule: d2/dx2 sum(x^2) = 2.
    const square = customVjp(
      (a: Tensor) => a.mul(a),
      (a: Tensor) => [a.mul(a), a],
      (a: Tensor, g: Tensor) => [g.mul(a).mul(2)],
    );
    const first = (a: Tensor) => grad((b: Tensor) => square(b).sum())(a);
    assert.deepEqual(await arr(first(x)), [2, -4, 6]);
    assert.deepEqual(await arr(grad((a: Tensor) => first(a).mul(a).sum())(x)), [4, -8, 12]);
  });
  await t.step("bwd must return one cotangent per argument", () => {
    const bad = customVjp((a: Tensor, b: Tensor) => a.mul(b), (a: Tensor, b: Tensor) => [a.mul(b), null], () => [null]);
    assert.throws(
      () => grad((a: Tensor) => bad(a, a).sum())(x),
      /customVjp: bwd returned 1 cotangents for 2 arguments/,
    );
  });
});

Deno.test("higher-order gradients of composites", async (t) => {
  const xs = randArray(3, 9, -3, 3);
  const x = f64(xs);
  await t.step("d2/dx2 of tanh(x) * x", async () => {
    const f = (a: Tensor) => tanh(a).mul(a).sum();
    const d2 = grad((a: Tensor) => grad(f)(a).sum())(x);
    const sech2 = (v: number) => 1 / Math.cosh(v) ** 2;
    assertClose(await d2.data(), xs.map((v) => 2 * sech2(v) * (1 - v * Math.tanh(v))), 1e-12, 1e-14, "tanh(x) x");
  });
  await t.step("d2/dx2 of gelu is pdf(x) (2 - x^2)", async () => {
    const d2 = grad((a: Tensor) => grad((b: Tensor) => nn.gelu(b).sum())(a).sum())(x);
    const pdf = (v: number) => Math.exp(-v * v / 2) / Math.sqrt(2 * Math.PI);
    assertClose(await d2.data(), xs.map((v) => pdf(v) * (2 - v * v)), 1e-12, 1e-14, "gelu''");
  });
  await t.step("Hessian-vector products of layerNorm, softmax and l2Normalize match finite differences", async () => {
    const c = f64(randArray(4, 12), [3, 4]);
    const a = f64(randArray(5, 12, -2, 2), [3, 4]);
    for (
      const [name, comp] of Object.entries({
        layerNorm: nn.layerNorm,
        softmax: nn.softmax,
        l2Normalize: nn.l2Normalize,
      })
    ) {
      const gradOf = (v: Tensor) => grad((b: Tensor) => (comp as (t: Tensor) => Tensor)(b).mul(c).sum())(v);
      await checkVjp(gradOf, [a], { what: `${name} HVP` });
    }
  });
  await t.step("third derivative of exp is exp", async () => {
    const d = (f: (a: Tensor) => Tensor) => (a: Tensor) => grad((b: Tensor) => f(b).sum())(a);
    const d3 = d(d(d((a) => a.exp())))(x);
    assertClose(await d3.data(), xs.map(Math.exp), 1e-14, 0, "exp'''");
  });
});

Deno.test("pytree utilities", async (t) => {
  const vit = {
    cls_token: "c",
    blocks: [{ attn: { qkv: { weight: "w0", bias: "b0" } }, norm1: { weight: "n0" } }, {
      attn: { qkv: { weight: "w1", bias: "b1" } },
      norm1: { weight: "n1" },
    }],
    head: { mlp: ["m0", "m1"] },
  };
  await t.step("flatten / unflatten / leaves (insertion order)", () => {
    const { leaves, def } = tree.flatten<string>(vit);
    assert.deepEqual(leaves, ["c", "w0", "b0", "n0", "w1", "b1", "n1", "m0", "m1"]);
    assert.deepEqual(tree.leaves<string>(vit), leaves);
    assert.deepEqual(tree.unflatten(def, leaves), vit);
    const upper = tree.unflatten<typeof vit>(def, leaves.map((l) => l.toUpperCase()));
    assert.equal(upper.blocks[1].attn.qkv.bias, "B1");
    assert.deepEqual(upper.head.mlp, ["M0", "M1"]);
    assert.throws(() => tree.unflatten(def, leaves.slice(1)), /tree.unflatten: 8 leaves for a structure of 9/);
    // Scalars, null and tensors are leaves.
    const x = tensor([1]);
    assert.deepEqual(tree.leaves([x, { a: null, b: 3 }]), [x, null, 3]);
    assert.deepEqual(tree.leaves(x), [x]);
    assert.deepEqual(tree.leaves({}), []);
  });
  await t.step("paths are dotted names; fromPaths inverts them", () => {
    const ps = tree.paths<string>(vit);
    assert.deepEqual(ps.map(([p]) => p), [
      "cls_token",
      "blocks.0.attn.qkv.weight",
      "blocks.0.attn.qkv.bias",
      "blocks.0.norm1.weight",
      "blocks.1.attn.qkv.weight",
      "blocks.1.attn.qkv.bias",
      "blocks.1.norm1.weight",
      "head.mlp.0",
      "head.mlp.1",
    ]);
    assert.deepEqual(tree.fromPaths(ps), vit);
    // Numeric segments become arrays (in any insertion order of the entries), others stay objects.
    assert.deepEqual(tree.fromPaths([["a.1", 2], ["a.0", 1]]), { a: [1, 2] });
    assert.deepEqual(tree.fromPaths([["a.0", 1], ["a.2", 2]]), { a: { 0: 1, 2: 2 } });
    assert.deepEqual(tree.fromPaths([["a.0", 1], ["a.1", 2], ["b", 3]]), { a: [1, 2], b: 3 });
    assert.deepEqual(tree.paths<number>([1, { x: 2 }], "student"), [["student.0", 1], ["student.1.x", 2]]);
  });
  await t.step("map over one tree and over several trees", async () => {
    const a = { w: f64([1, 2]), b: [f64([3])] };
    const b = { w: f64([10, 20]), b: [f64([30])] };
    const c = { w: f64([100, 200]), b: [f64([300])] };
    const doubled = tree.map((l: Tensor) => l.mul(2), a) as typeof a;
    assert.deepEqual(await readAll(tree.leaves(doubled)), [new Float64Array([2, 4]), new Float64Array([6])]);
    const sum3 = tree.map((x: Tensor, y: Tensor, z: Tensor) => x.add(y).add(z), a, b, c) as typeof a;
    assert.deepEqual(await arr(sum3.w), [111, 222]);
    assert.deepEqual(await arr(sum3.b[0]), [333]);
    assert.deepEqual(tree.map((l: string) => l.length, { x: "ab", y: ["c"] }), { x: 2, y: [1] });
  });
  await t.step("map rejects trees of another structure", () => {
    assert.throws(
      () => tree.map((x: number, y: number) => x + y, { a: 1, b: 2 }, { a: 1 }),
      /tree.map: tree 1 does not have the structure of tree 0/,
    );
    assert.throws(
      () => tree.map((x: number, y: number) => x + y, [1, 2], [1, [2]]),
      /tree 1 does not have the structure/,
    );
    assert.deepEqual(tree.map((x: number, y: number) => x + y, { a: 1, b: [2] }, { a: 10, b: [20] }), {
      a: 11,
      b: [22],
    });
  });
});

Deno.test("emaFold", async () => {
  const teacher = { blocks: [{ w: f64([1, 2]) }], head: { b: f64([3]) } };
  const student = { masked_embed: f64([9, 9, 9]), blocks: [{ w: f64([5, 6]) }], head: { b: f64([-1]) } };
  for (const m of [0.996, 0.5]) {
    const t = emaFold(teacher, student, m);
    assert.deepEqual(tree.paths(t).map(([p]) => p), ["blocks.0.w", "head.b"], "the teacher's structure");
    assert.deepEqual(await arr(t.blocks[0].w), [m * 1 + (1 - m) * 5, m * 2 + (1 - m) * 6]);
    assert.deepEqual(await arr(t.head.b), [m * 3 + (1 - m) * -1]);
    // m as a (traced or concrete) tensor gives the same values.
    const tm = emaFold(teacher, student, f64([m], []));
    assertClose(await tm.blocks[0].w.data(), await t.blocks[0].w.data(), 1e-15, 0, "tensor m");
  }
  // Also under jit with m a number argument (no retrace as m changes).
  const fold = jit((tt: typeof teacher, s: typeof student, m: number) => emaFold(tt, s, m));
  const t32 = tree.map((l: Tensor) => l.cast("float32"), teacher) as typeof teacher;
  const s32 = tree.map((l: Tensor) => l.cast("float32"), student) as typeof student;
  for (const m of [0.9, 0.99]) {
    const out = fold(t32, s32, m);
    assertClose(await out.head.b.data(), [m * 3 - (1 - m)], 1e-6, 1e-7, "jit emaFold");
  }
  assert.equal(fold.stats().traces, 1);
  assert.throws(
    () => emaFold(teacher, { blocks: [{ w: f64([1, 2, 3]) }], head: { b: f64([1]) } }, 0.9),
    /emaFold: 'blocks.0.w' is \[2\] in the teacher but \[3\] in the student/,
  );
  assert.throws(
    () => emaFold(teacher, { blocks: [{ w: f64([1, 2]) }] }, 0.9),
    /emaFold: the student has no tensor at 'head.b'/,
  );
});

Deno.test("error messages", async (t) => {
  const g = await gpu();
  await t.step("mixing backends names the op and both backends", () => {
    if (g === cpu) return;
    const a = tensor([1, 2], { backend: cpu });
    const b = tensor([1, 2], { backend: g });
    assert.throws(() => a.add(b), /add: operands live on different backends \(cpu and webgpu\)/);
    const m = tensor([[1, 2]], { backend: g });
    assert.throws(
      () => m.matmul(tensor([[1], [2]], { backend: cpu })),
      /matmul: operands live on different backends \(webgpu and cpu\)/,
    );
  });
  await t.step("a disposed tensor names the op", async () => {
    for (const backend of [cpu, g]) {
      const a = tensor([1, 2], { backend });
      a.dispose();
      assert.ok(a.disposed);
      a.dispose(); // idempotent
      assert.throws(() => a.mul(2), /mul: operand 0 \(float32\[2\]\) was disposed/);
      assert.throws(() => tensor([1, 2], { backend }).sub(a), /sub: operand 1 \(float32\[2\]\) was disposed/);
      await assert.rejects(a.data(), /data\(\): tensor \[2\] float32 was disposed/);
    }
  });
  await t.step("a tracer escaping its transform", async () => {
    let leaked: Tensor | null = null;
    grad((x: Tensor) => {
      leaked = x.mul(2);
      return x.sum();
    })(f64([1, 2]));
    assert.throws(() => leaked!.add(1), /a value traced by vjp \(float64\[2\]\) escaped its transform; return it/);
    let leakedJit: Tensor | null = null;
    jit((x: Tensor) => {
      leakedJit = x.exp();
      return x;
    })(tensor([1, 2]));
    assert.throws(() => leakedJit!.add(1), /a value traced by jit \(float32\[2\]\) escaped its transform/);
    // Reading a tracer inside the transform is an error too.
    await assert.rejects(
      (async () => {
        let p: Promise<unknown> | null = null;
        grad((x: Tensor) => {
          p = x.data();
          p.catch(() => {});
          return x.sum();
        })(f64([1]));
        await p;
      })(),
      /data\(\): cannot read a traced value of shape \[1\] inside vjp/,
    );
  });
});

Deno.test("tidy frees intermediates", async (t) => {
  await t.step("cpu: only the result survives; nested scopes; keep; errors", async () => {
    const a = tensor([1, 2, 3], { backend: cpu });
    let inner: Tensor[] = [];
    const out = tidy(() => {
      const b = a.add(a);
      const c = b.mul(b);
      inner = [b, c];
      return { y: c.sum(), z: [b] };
    });
    assert.ok(inner[1].disposed, "the unreturned intermediate is freed");
    assert.ok(!inner[0].disposed && !out.y.disposed, "returned tensors (in a tree) survive");
    assert.ok(!a.disposed, "tensors created outside are untouched");
    assert.equal(await out.y.item(), 56);
    let kept: Tensor | null = null;
    let innerResult: Tensor | null = null;
    tidy(() => {
      innerResult = tidy(() => a.add(1).mul(2));
      kept = keep(a.add(10));
      return null;
    });
    assert.ok(innerResult!.disposed, "an inner result belongs to the outer scope");
    assert.ok(!kept!.disposed, "keep() escapes every scope");
    let temp: Tensor | null = null;
    assert.throws(() =>
      tidy(() => {
        temp = a.add(1);
        throw new Error("boom");
      }), /boom/);
    assert.ok(temp!.disposed, "freed on error");
  });
  await t.step(
    "webgpu: liveBytes returns to its value, and buffersCreated stops growing once the pool is warm",
    async () => {
      const g = await gpu();
      if (g.name !== "webgpu") return;
      const stats = (g as unknown as { stats: { liveBytes: number; buffersCreated: number } }).stats;
      const x = tensor(randArray(1, 64 * 32), { shape: [64, 32], backend: g });
      const w = tensor(randArray(2, 32 * 32), { shape: [32, 32], backend: g });
      const bias = tensor(randArray(3, 32), { backend: g });
      const eps = tensor(1e-6, { backend: g });
      const inv = tensor(1 / 32, { backend: g });
      // Many temporaries, tensor operands only (number operands upload a fresh scalar buffer per op).
      const step = () =>
        tidy(() => {
          let h = x;
          for (let i = 0; i < 10; i++) {
            const y = h.matmul(w).add(bias);
            const mu = y.sum(-1, true).mul(inv);
            const d = y.sub(mu);
            h = tanh(d.div(d.mul(d).sum(-1, true).mul(inv).add(eps).sqrt()));
          }
          return h.sum();
        });
      const first = step();
      await first.data();
      first.dispose();
      const live0 = stats.liveBytes;
      const created0 = stats.buffersCreated;
      for (let r = 0; r < 3; r++) {
        const s = step();
        await s.data();
        s.dispose();
        assert.equal(stats.liveBytes, live0, `round ${r}: every temporary was released`);
      }
      assert.equal(stats.buffersCreated, created0, "the warm pool serves every temporary");
      // Intermediates of a gradient are released too.
      const gstep = () => tidy(() => grad((v: Tensor) => nn.layerNorm(v.matmul(w)).sum())(x));
      const g0 = gstep();
      await g0.data();
      g0.dispose();
      const live1 = stats.liveBytes;
      const gr = gstep();
      await gr.data();
      gr.dispose();
      assert.equal(stats.liveBytes, live1);
    },
  );
  await t.step(
    "webgpu: the pool stays bounded in eager loops with number operands (fresh upload buffers)",
    async () => {
      const g = await gpu();
      if (g.name !== "webgpu") return;
      const stats = (g as unknown as { stats: { pooledBytes: number; liveBytes: number } }).stats;
      const x = tensor([1, 2, 3, 4], { backend: g });
      const round = async () => {
        for (let i = 0; i < 700; i++) tidy(() => x.mul(2).add(1)).dispose();
        await x.data();
        return stats.pooledBytes;
      };
      const live = stats.liveBytes;
      await round();
      const p1 = await round();
      const p2 = await round();
      assert.equal(p2, p1, "pooled bytes saturate instead of growing by every upload");
      assert.equal(stats.liveBytes, live);
    },
  );
});
