"""Phase `torch_step` of the device benchmark: the PyTorch float32 counterparts (CUDA, TF32 off) of the `vit` and
`ibot` phases, on the shapes their fragments record, written from the iBOT specification (../shared/ibot-spec.md
sections 1, 3, 4, 7), not from the official code. Offline only; run by bench/device/run.sh.

- vit: ViT forward + backward of the mean of the squared final tokens, gradient of every parameter; then one
  attention block alone (qkv linear, F.scaled_dot_product_attention, proj linear), forward + backward.
- ibot: one literal official step (spec 0.1) at the same batch: teacher forward on the 2 global crops, student
  forward on the masked global crops and on the local crops, the head on every token (shared prototype layer,
  weight-normalised), the CLS and MIM losses with centers, backward, per-parameter clipping (on the device, no host
  round trip per parameter), AdamW with the two parameter groups, EMA of the teacher. The crops are random
  tensors already on the device: augmentation is not part of this side (ours runs it on the device, in the step).
"""
import math
import statistics
import time

from torch_env import DRY, left_s, read_fragment, setup, write_fragment

torch, device, env = setup()
out = {"env": env}
if torch is None:
    write_fragment("torch_step", out)
    raise SystemExit(0)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio, drop_path):
        super().__init__()
        self.heads, self.drop_path = heads, drop_path
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, int(d * mlp_ratio)), nn.Linear(int(d * mlp_ratio), d)

    def dropped(self, y):
        if not self.training or self.drop_path == 0:
            return y
        keep = 1 - self.drop_path
        return y * (torch.rand(y.shape[0], 1, 1, device=y.device) < keep).to(y.dtype) / keep

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (C // self.heads) ** -0.5).softmax(-1)
        x = x + self.dropped(self.proj((a @ qkv[2]).transpose(1, 2).reshape(B, N, C)))
        return x + self.dropped(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class ViT(nn.Module):
    def __init__(self, s, drop_path_rate=0.0, masked_embed=False):
        super().__init__()
        d, self.p, self.grid = s["embedDim"], s["patchSize"], s["imageSize"] // s["patchSize"]
        self.patch = nn.Conv2d(3, d, self.p, self.p)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, self.grid**2 + 1, d) * 0.02)
        self.masked_embed = nn.Parameter(torch.zeros(1, d)) if masked_embed else None
        rates = [drop_path_rate * i / max(s["depth"] - 1, 1) for i in range(s["depth"])]
        self.blocks = nn.ModuleList(Block(d, s["numHeads"], s["mlpRatio"], r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def pos_for(self, g):
        if g == self.grid:
            return self.pos
        grid = self.pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        f = (g + 0.1) / self.grid  # spec 1.4: a scale factor, not a size
        grid = F.interpolate(grid, scale_factor=(f, f), mode="bicubic", align_corners=False)
        return torch.cat([self.pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], 1)

    def forward(self, x, mask=None):
        x = self.patch(x)
        g = x.shape[-1]
        x = x.flatten(2).transpose(1, 2)
        if mask is not None:
            x = torch.where(mask.flatten(1).unsqueeze(-1), self.masked_embed.to(x.dtype), x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos_for(g)
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


class Head(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d, h["hiddenDim"]), nn.GELU(), nn.Linear(h["hiddenDim"], h["hiddenDim"]), nn.GELU(),
            nn.Linear(h["hiddenDim"], h["bottleneckDim"]))
        v = torch.empty(h["outDim"], h["bottleneckDim"]).uniform_(-1, 1) / math.sqrt(h["bottleneckDim"])
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(h["outDim"], 1), requires_grad=not h["normLastLayer"])

    def forward(self, tokens):
        z = F.normalize(self.mlp(tokens), dim=-1, eps=1e-12)
        return z @ (self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)).t()


def median_ms(fn, steps, first_ms):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    while len(times) < steps and left_s() > 2 * (times[-1] if times else first_ms) / 1000:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def first_call_ms(fn):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1000


def vit_part(s):
    model = ViT({**s, "imageSize": s["imgSize"]}).to(device)
    x = torch.rand(s["batch"], 3, s["imgSize"], s["imgSize"], device=device)

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        loss.backward()
        return loss

    r = timed(step, s["batch"])
    r["shape"] = s
    tokens = (read_fragment("vit").get("attention") or {}).get("tokens")
    if tokens and left_s() > 5:
        r["attention"] = attention_part(s, tokens)
    return r


def timed(step, images):
    first = first_call_ms(step)
    times = median_ms(step, 2 if DRY else 5, first)
    r = {"firstMs": first, "stepsMs": times}
    if times:
        r.update(medianMs=statistics.median(times), imagesPerS=images * 1000 / statistics.median(times))
    return r


def attention_part(s, tokens):
    """One attention block (qkv linear, scaled_dot_product_attention, proj linear), forward + backward."""
    d, h, B = s["embedDim"], s["numHeads"], s["batch"]
    qkv, proj = nn.Linear(d, 3 * d).to(device), nn.Linear(d, d).to(device)
    x = torch.randn(B, tokens, d, device=device, requires_grad=True)
    sdpa = getattr(F, "scaled_dot_product_attention", None)

    def step():
        qkv.zero_grad(set_to_none=True)
        proj.zero_grad(set_to_none=True)
        x.grad = None
        q, k, v = qkv(x).reshape(B, tokens, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if sdpa is not None:
            a = sdpa(q, k, v)
        else:  # torch < 2.0 (the dry run on Debian's 1.13)
            a = ((q @ k.transpose(-2, -1)) * (d // h) ** -0.5).softmax(-1) @ v
        y = proj(a.transpose(1, 2).reshape(B, tokens, d))
        y.square().mean().backward()

    r = timed(step, B)
    r.update(tokens=tokens, sdpa=sdpa is not None)
    return r


def ibot_loss(s_cls, s_patch, s_local, t_cls, t_patch, masks, centers, temps, ng):
    """Spec 4.3: CLS terms over every (teacher global, other student view) pair, MIM terms on the same view."""
    student = torch.cat([s_cls, s_local]) / 0.1
    s_views = student.chunk(student.shape[0] // (t_cls.shape[0] // ng))  # one chunk of B rows per crop
    sp_views = (s_patch / 0.1).chunk(ng)
    t = F.softmax((t_cls - centers[0]) / temps[0], -1).chunk(ng)
    tp = F.softmax((t_patch - centers[1]) / temps[1], -1).chunk(ng)
    cls_terms, mim_terms = [], []
    for q in range(ng):
        for v in range(len(s_views)):
            if v == q:
                m = masks[v].flatten(1).float()
                c = -(tp[q] * F.log_softmax(sp_views[v], -1)).sum(-1)
                mim_terms.append(((c * m).sum(-1) / m.sum(-1).clamp(min=1)).mean())
            else:
                cls_terms.append(-(t[q] * F.log_softmax(s_views[v], -1)).sum(-1).mean())
    loss = sum(cls_terms) / len(cls_terms) + sum(mim_terms) / len(mim_terms)
    with torch.no_grad():
        centers[0].mul_(0.9).add_(t_cls.mean(0, keepdim=True), alpha=0.1)
        centers[1].mul_(0.9).add_(t_patch.mean(1).mean(0, keepdim=True).unsqueeze(0), alpha=0.1)
    return loss


def ibot_part(s):
    B, ng, nl = s["batch"], s["globalCrops"]["number"], s["localCrops"]["number"]
    gs, ls = s["globalCrops"]["size"], s["localCrops"]["size"]
    student = nn.ModuleDict({"backbone": ViT(s, 0.1, masked_embed=True), "head": Head(s["embedDim"], s["head"])})
    teacher = nn.ModuleDict({"backbone": ViT(s), "head": Head(s["embedDim"], s["head"])})
    student, teacher = student.to(device), teacher.to(device)
    teacher.load_state_dict(student.state_dict(), strict=False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not n.endswith(".bias") and p.ndim > 1]
    no_decay = [p for n, p in named if n.endswith(".bias") or p.ndim == 1]
    # Values past the warm-up (the speed does not depend on them).
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    pairs = [(ps, pt) for (n, ps) in student.named_parameters() for (m, pt) in teacher.named_parameters() if n == m]
    s_ema, t_ema = [a for a, _ in pairs], [b for _, b in pairs]
    grads_of = [p for _, p in named]
    g = gs // s["patchSize"]
    p_mask = min(max(s.get("maskedPatches", 0) / max(ng * B * g * g, 1), 0.0), 1.0)
    globals_ = torch.rand(ng * B, 3, gs, gs, device=device)
    locals_ = torch.rand(nl * B, 3, ls, ls, device=device)
    masks = (torch.rand(ng * B, g, g, device=device) < p_mask).chunk(ng)
    centers = [torch.zeros(1, s["head"]["outDim"], device=device), torch.zeros(1, 1, s["head"]["outDim"], device=device)]

    def step():
        with torch.no_grad():
            t_all = teacher["head"](teacher["backbone"](globals_))
        s_all = student["head"](student["backbone"](globals_, torch.cat(masks)))
        s_loc = student["head"](student["backbone"](locals_))[:, 0]
        loss = ibot_loss(s_all[:, 0], s_all[:, 1:], s_loc, t_all[:, 0], t_all[:, 1:], masks, centers, (0.07, 0.07), ng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms = torch._foreach_norm([p.grad for p in grads_of])
        coefs = [torch.clamp(3.0 / (n + 1e-6), max=1.0) for n in norms]
        torch._foreach_mul_([p.grad for p in grads_of], coefs)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(t_ema, 0.996)
            torch._foreach_add_(t_ema, s_ema, alpha=1 - 0.996)
        return loss

    r = timed(step, B)
    r.update(shape=s, literal=True, augmentation=False)
    if device.type == "cuda":
        r["maxMemoryAllocated"] = torch.cuda.max_memory_allocated()
    return r


for part, fn in (("vit", vit_part), ("ibot", ibot_part)):
    shape = (read_fragment(part) or {}).get("shape")
    if shape is None:
        out[part] = {"error": f"the {part} phase left no shape"}
    elif left_s() < 5:
        out[part] = {"error": "phase budget spent"}
    else:
        try:
            out[part] = fn(shape)
        except Exception as e:  # noqa: BLE001 - an out-of-memory or other failure goes into the report
            out[part] = {"shape": shape, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    r = out[part]
    print(f"[torch] {part}: {r.get('medianMs', float('nan')):.1f} ms per step {r.get('error', '')}", flush=True)
    write_fragment("torch_step", out)
if DRY:
    out["note"] = "dry run: PyTorch on the CPU, tiny shapes; the numbers only show that the script runs"
write_fragment("torch_step", out)
raise SystemExit(1 if any("error" in out.get(p, {}) for p in ("vit", "ibot")) else 0)
