"""PIRL's training step in float64 PyTorch, written from docs/PIRL.md and the README ("Memory bank and loss",
"Training") — not from pirl's C++ — checked against pirl's own steps on the same state and batch.

  pirl_step_reference.py DIR...   each DIR as test/crosscheck.test.ts writes it: run.json ({config, schedule,
      steps: [{lr, loss, lossImage, lossJigsaw, gradNorm}]}), state{s}.safetensors (pirl's checkpoint before step s,
      s = 0..S) and batch{s}.safetensors (images, patches, indices; evalImages too where the bank starts from features)
Prints one JSON line: {DIR: {"compared": N, "failures": [...]}}, a failure naming what differs, by how much, and the
tolerance.

Each step starts from pirl's checkpoint before it, so each is compared alone. Only which bank rows are the negatives
is taken from pirl: its keyed SplitMix64 streams (native/core/negatives/negative_streams.h) are reproduced here.

Float32's ReLU kinks: pirl computes in float32, and a ReLU input within float32's rounding of 0 may fall on the other
side of it there, which moves the gradients of everything before it by up to a few % (a few such inputs in a
million). The reference knows which inputs those are (a float32 pass of its own measures the rounding at each ReLU)
and what flipping each one's derivative would add to every gradient (a backward pass from it): pirl's gradients must
lie within twice the sum of those, plus float32's tolerance, of the reference's.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torchvision_crosscheck import read_safetensors  # noqa: E402

F64 = torch.float64
MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------------------------------- the negatives' rows
def splitmix64(z):
    z = (z + GAMMA) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def negatives(seed, step, rows, k, n, term, shared, exclude):
    """B×K bank rows of one term (1: jigsaw, 2: image): value j of the stream of (seed, step, term, row)."""
    s = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ term)
    value = lambda stream, j, bound: (splitmix64((stream + j * GAMMA) & MASK) * bound) >> 64
    if shared:
        stream = splitmix64(s)
        return torch.tensor([[value(stream, j, n) for j in range(k)]] * len(rows))
    out = []
    for row in rows:
        stream = splitmix64(s ^ splitmix64(row))
        if exclude:  # uniform over the other N − 1 rows
            out.append([v + (v >= row) for v in (value(stream, j, n - 1) for j in range(k))])
        else:
            out.append([value(stream, j, n) for j in range(k)])
    return torch.tensor(out)


# ---------------------------------------------------------------------------------------------------- the network
class Relus:
    """The trunk's ReLUs in call order: a float32 pass records its inputs; the float64 pass then keeps, per call, its
    input, its output and how far float32 rounding took the input (eps: 4× the largest difference, for pirl's own
    kernels' rounding)."""

    def __init__(self):
        self.recorded, self.calls = [], []

    def record(self, x):
        self.recorded.append(x.detach())
        return x.clamp_min(0)

    def kept(self, x):
        y = torch.relu(x)
        eps = 4 * (x.detach() - self.recorded[len(self.calls)].to(F64)).abs().max().item()
        self.calls.append((x, y, eps))
        return y

    def kink_bound(self, loss, params):
        """Per parameter, Σ over the ReLU inputs within eps of 0 of |what flipping that one's derivative adds|."""
        upstream = torch.autograd.grad(loss, [y for _, y, _ in self.calls], retain_graph=True)
        bound = [torch.zeros_like(w) for w in params]
        for (x, _, eps), up in zip(self.calls, upstream):
            for i in (x.detach().abs() <= eps).flatten().nonzero().flatten().tolist():
                one = torch.zeros_like(x).flatten()
                one[i] = up.flatten()[i]
                flip = torch.autograd.grad(x, params, grad_outputs=one.view_as(x), retain_graph=True, allow_unused=True)
                for b, c in zip(bound, flip):
                    if c is not None:
                        b += c.abs()
        return bound


def batch_norm(x, p, state, name, train, track):
    """BatchNorm2d: batch statistics in training (running ones updated, momentum 0.1, unbiased variance, if `track`)."""
    w, b = p[name + ".weight"], p[name + ".bias"]
    if not train:
        mean, var = state[name + ".running_mean"], state[name + ".running_var"]
    else:
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        if track:
            n = x.numel() / x.shape[1]
            state[name + ".running_mean"] = 0.9 * state[name + ".running_mean"] + 0.1 * mean.detach()
            state[name + ".running_var"] = 0.9 * state[name + ".running_var"] + 0.1 * var.detach() * n / (n - 1)
            state[name + ".num_batches_tracked"] = state[name + ".num_batches_tracked"] + 1
    shape = (1, -1, 1, 1)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-5) * w.view(shape) + b.view(shape)


def trunk(x, p, state, relu, train, track, stem):
    """torchvision's ResNet-18 (pirl's small stem: a 3×3 stride-1 conv, no max-pool), pooled res5."""
    t = "model.trunk."
    bn = lambda y, name: batch_norm(y, p, state, t + name, train, track)
    if stem == "small":
        x = relu(bn(F.conv2d(x, p[t + "conv1.weight"], stride=1, padding=1), "bn1"))
    else:
        x = F.max_pool2d(relu(bn(F.conv2d(x, p[t + "conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for layer in range(1, 5):
        for block in range(2):
            n = f"layer{layer}.{block}."
            stride = 2 if layer > 1 and block == 0 else 1
            out = relu(bn(F.conv2d(x, p[t + n + "conv1.weight"], stride=stride, padding=1), n + "bn1"))
            out = bn(F.conv2d(out, p[t + n + "conv2.weight"], padding=1), n + "bn2")
            shortcut = bn(F.conv2d(x, p[t + n + "downsample.0.weight"], stride=stride), n + "downsample.1") if t + n + "downsample.0.weight" in p else x
            x = relu(out + shortcut)
    return x.mean(dim=(2, 3))


def f_head(v, p):
    return F.linear(v, p["model.fHead.fc.weight"], p["model.fHead.fc.bias"])


def g_head(v, p, b):
    """One Linear shared by the 9 patches, their outputs concatenated in the patches' (sampled) order, a Linear."""
    e = F.linear(v, p["model.gHead.patch.weight"], p["model.gHead.patch.bias"])
    return F.linear(e.reshape(b, -1), p["model.gHead.fc.weight"], p["model.gHead.fc.bias"])


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------------------- the loss
def nce_term(x, bank, positives, negs, tau, z, mode):
    """(loss, Z used, this batch's estimate of Z); the bank as it was before the step, without gradient."""
    n, k = bank.shape[0], negs.shape[1]
    sp = (x * bank[positives]).sum(1)
    sn = torch.einsum("bd,bkd->bk", x, bank[negs])
    if mode == "infonce":
        return F.cross_entropy(torch.cat([sp[:, None], sn], 1) / tau, torch.zeros(len(positives), dtype=torch.long)), None, None
    ep, en = torch.exp(sp / tau), torch.exp(sn / tau)
    estimate = n * torch.cat([ep[:, None], en], 1).mean().item()  # N·mean(e^{s/τ}) over the B·(K+1) scores
    used = estimate if z <= 0 else z
    noise = k * used / n
    return (-torch.log(ep / (ep + noise)) - torch.log(1 - en / (en + noise)).sum(1)).mean(), used, estimate


def lr_at(c, total, step):
    """base·batch/256, then a cosine down to finalLrRatio of it at the last step (no warm-up here)."""
    peak = c["baseLr"] * c["batchSize"] / 256
    floor = peak * c["finalLrRatio"]
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * step / max(1, total - 1)))


# ------------------------------------------------------------------------------------------------- the comparison
class Checks:
    def __init__(self):
        self.compared, self.failures = 0, []

    def close(self, what, ours, ref, tol, kinks=None):
        """Every element of pirl's `ours` within `tol` (and what the kinks may add) of the reference's `ref`."""
        ours, ref = torch.as_tensor(ours, dtype=F64), torch.as_tensor(ref, dtype=F64)
        excess = (ours - ref).abs() - tol - (0 if kinks is None else kinks)
        self.compared += 1
        if ours.shape != ref.shape or not torch.isfinite(ours).all() or not torch.isfinite(ref).all():
            self.failures.append(f"{what}: pirl's {list(ours.shape)} {ours.flatten()[:4].tolist()} vs {list(ref.shape)} {ref.flatten()[:4].tolist()}")
        elif not (excess <= 0).all():  # a NaN tolerance fails too
            i = int(excess.flatten().argmax())
            self.failures.append(f"{what}: pirl {ours.flatten()[i].item():.9g} vs reference {ref.flatten()[i].item():.9g} "
                                 f"(element {i}; tolerance {tol if isinstance(tol, float) else float(tol):.3g})")


def parameters_of(state):
    return {k: v.to(F64) for k, v in state.items() if k.startswith("model.") and "running_" not in k and "num_batches" not in k}


def run(d):
    info = json.load(open(os.path.join(d, "run.json")))
    c, L = info["config"], info["config"]["loss"]
    assert c["model"]["arch"] == "resnet18" and c["warmupEpochs"] == 0 and c["lrUpdate"] == "step", "outside the reference's scope"
    checks = Checks()
    for s, logged in enumerate(info["steps"]):
        before, meta = read_safetensors(os.path.join(d, f"state{s}.safetensors"))
        after, meta_after = read_safetensors(os.path.join(d, f"state{s + 1}.safetensors"))
        z = json.loads(meta["pirl-checkpoint"])["state"]
        z_after = json.loads(meta_after["pirl-checkpoint"])["state"]
        batch, _ = read_safetensors(os.path.join(d, f"batch{s}.safetensors"))
        p = {k: v.requires_grad_(True) for k, v in parameters_of(before).items()}
        state = {k: v.to(F64) if v.is_floating_point() else v for k, v in before.items() if "running_" in k or "num_batches" in k}
        bank = before["bank.rows"].to(F64)
        images, patches, indices = batch["images"].to(F64), batch["patches"].to(F64), batch["indices"]
        b, stem = images.shape[0], c["model"]["stem"]
        if s == 0 and c["bankInit"] == "features":
            # The bank's first rows: each image's f, in eval mode, from the evaluation transform.
            with torch.no_grad():
                v = trunk(batch["evalImages"].to(F64), p, dict(state), lambda x: x.clamp_min(0), False, False, stem)
                checks.close("the bank from features", bank, unit(f_head(v, p)), 1e-5)
        rows = [int(i) for i in indices]
        n, k = bank.shape[0], L["negatives"]
        neg_jigsaw, neg_image = (negatives(c["seed"], s, rows, k, n, term, L["sharedNegatives"], L["excludePositive"]) for term in (1, 2))
        # The patches' pass first (its running statistics only with patchRunningStats), then the images'.
        relus = Relus()
        with torch.no_grad():
            p32 = {k_: v.detach().float() for k_, v in p.items()}
            s32 = {k_: v.float() if v.is_floating_point() else v for k_, v in state.items()}
            trunk(patches.flatten(0, 1).float(), p32, s32, relus.record, True, False, stem)
            trunk(images.float(), p32, s32, relus.record, True, False, stem)
        v_patches = trunk(patches.flatten(0, 1), p, state, relus.kept, True, c["model"]["patchRunningStats"], stem)
        v_images = trunk(images, p, state, relus.kept, True, True, stem)
        f, g = unit(f_head(v_images, p)), unit(g_head(v_patches, p, b))
        loss_jigsaw, z_jigsaw, est_jigsaw = nce_term(g, bank, indices, neg_jigsaw, L["tau"], z["zJigsaw"], L["mode"])
        loss_image, z_image, est_image = nce_term(f, bank, indices, neg_image, L["tau"], z["zImage"], L["mode"])
        loss = L["lambda"] * loss_jigsaw + (1 - L["lambda"]) * loss_image
        names = list(p)
        grads = dict(zip(names, torch.autograd.grad(loss, [p[k_] for k_ in names], retain_graph=True)))
        kinks = dict(zip(names, (2 * b for b in relus.kink_bound(loss, [p[k_] for k_ in names]))))

        lr = lr_at(c, info["schedule"]["totalSteps"], s)
        checks.close(f"step {s} lr", logged["lr"], lr, 1e-12 * lr)
        for key, ref in (("loss", loss), ("lossImage", loss_image), ("lossJigsaw", loss_jigsaw)):
            checks.close(f"step {s} {key}", logged[key], ref.item(), 1e-5 * abs(ref.item()) + 1e-6)
        norm = math.sqrt(sum((g_ ** 2).sum().item() for g_ in grads.values()))
        kinked = math.sqrt(sum((b ** 2).sum().item() for b in kinks.values()))  # ‖pirl − reference‖ ≤ ‖bound‖
        checks.close(f"step {s} gradNorm", logged["gradNorm"], norm, 1e-5 * norm + kinked)
        # Z: estimated at NCE's first step, then frozen or an EMA of each step's estimate (before it is used).
        for key, used, estimate in (("zJigsaw", z_jigsaw, est_jigsaw), ("zImage", z_image, est_image)):
            expected = z[key]
            if L["mode"] == "nce":
                expected = used if z[key] <= 0 else (L["zMomentum"] * z[key] + (1 - L["zMomentum"]) * estimate if L["z"] == "ema" else z[key])
            checks.close(f"step {s} {key}", z_after[key], expected, 1e-5 * abs(expected))
        # SGD with momentum (PyTorch's rule); weight decay on conv and linear weights, not on BatchNorm's or biases.
        for name in names:
            w = p[name].detach()
            decay = c["weightDecay"] * w if w.dim() > 1 else 0
            previous = before.get("momentum." + name[len("model."):])
            carried = c["momentum"] * previous.to(F64) if previous is not None else 0
            momentum = carried + grads[name] + decay
            tol = 1e-4 * momentum.abs().max().item()
            checks.close(f"step {s} momentum of {name}", after["momentum." + name[len("model."):]], momentum, tol, kinks[name])
            checks.close(f"step {s} {name}", after[name], w - lr * momentum, lr * tol + 1e-6 * w.abs().max().item(), lr * kinks[name])
        for name, value in state.items():
            tol = 0 if not value.is_floating_point() else 1e-5 * value.abs().max().item() + 1e-7
            checks.close(f"step {s} {name}", after[name], value.detach(), tol)
        # The bank: m_y ← normalize(μ·m_y + (1−μ)·f̂_y) for the batch's rows (a row given twice: its f̂s' mean); no other row moves.
        updated = bank.clone()
        for row in set(rows):
            mine = [i for i, r in enumerate(rows) if r == row]
            m = L["momentum"] * bank[row] + (1 - L["momentum"]) * f.detach()[mine].mean(0)
            updated[row] = m / m.norm()
        checks.close(f"step {s} memory bank", after["bank.rows"], updated, 2e-6)
    return {"compared": checks.compared, "failures": checks.failures}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({d: run(d) for d in sys.argv[1:]}))
