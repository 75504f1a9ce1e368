#!/usr/bin/env python3
"""The PIRL training step in plain PyTorch eager mode: pirl's peer in bench:gpu, run on the same GPU in
the same session. ResNet (torchvision's architecture, written out so torchvision is not needed), the
f and g heads, both NCE terms by gather + bmm against a memory bank (the public implementations' way),
SGD with momentum and weight decay, the bank update. Prints one JSON line: images/s and peak memory.

usage: eager_step.py ARCH BATCH IMAGE_SIZE PATCH_SIZE K BANK_ROWS PRECISION(fp32|bf16) CHANNELS_LAST(0|1) STEPS
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.down = None
        if stride != 1 or inplanes != planes * 4:
            self.down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.down = None
        if stride != 1 or inplanes != planes:
            self.down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


def resnet(arch):
    block, blocks = {'resnet18': (Basic, [2, 2, 2, 2]), 'resnet50': (Bottleneck, [3, 4, 6, 3])}[arch]
    layers, inplanes = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for stage, n in enumerate(blocks):
        for i in range(n):
            layers.append(block(inplanes, 64 << stage, 2 if i == 0 and stage > 0 else 1))
            inplanes = (64 << stage) * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), inplanes


def nce(x, bank, positives, negatives, tau=0.07, z=100.0):
    rows = bank[torch.cat([positives[:, None], negatives], 1)]  # B×(K+1)×D: what the public code gathers
    s = torch.bmm(rows, x[:, :, None]).squeeze(2) / tau
    k, n = negatives.shape[1], bank.shape[0]
    h = torch.exp(s) / (torch.exp(s) + k * z / n)
    return -(torch.log(h[:, 0]) + torch.log1p(-h[:, 1:]).sum(1)).mean()


def main():
    arch, batch, size, patch, k, rows, precision, channels_last, steps = sys.argv[1:10]
    batch, size, patch, k, rows, steps = map(int, (batch, size, patch, k, rows, steps))
    dev = torch.device('cuda')
    torch.backends.cudnn.benchmark = True
    trunk, width = resnet(arch)
    f_head, g_patch, g_head = nn.Linear(width, 128), nn.Linear(width, 128), nn.Linear(9 * 128, 128)
    model = nn.ModuleList([trunk, f_head, g_patch, g_head]).to(dev)
    fmt = torch.channels_last if channels_last == '1' else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    bank = F.normalize(torch.randn(rows, 128, device=dev), dim=1)
    images = torch.randn(batch, 3, size, size, device=dev).to(memory_format=fmt)
    patches = torch.randn(batch * 9, 3, patch, patch, device=dev).to(memory_format=fmt)
    index = torch.randint(rows, (batch,), device=dev)
    amp = precision == 'bf16'

    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
            f = F.normalize(f_head(trunk(images)), dim=1)
            g = F.normalize(g_head(g_patch(trunk(patches)).reshape(batch, -1)), dim=1)
        f, g = f.float(), g.float()
        loss = 0.5 * nce(g, bank, index, torch.randint(rows, (batch, k), device=dev)) + \
            0.5 * nce(f, bank, index, torch.randint(rows, (batch, k), device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            bank[index] = F.normalize(0.5 * bank[index] + 0.5 * f.detach(), dim=1)
        return loss.item()  # one read per step, as pirl's step

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    ms = times[len(times) // 2] * 1000
    print(json.dumps({'arch': arch, 'batch': batch, 'precision': precision, 'channelsLast': channels_last == '1',
                      'imagesPerSecond': round(batch * 1000 / ms, 1), 'ms': round(ms, 2),
                      'peakAllocatedMB': round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)}))


if __name__ == '__main__':
    main()
