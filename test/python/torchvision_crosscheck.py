"""Cross-checks pirl trunks against torchvision (Debian's python3-torch / python3-torchvision).

  check-export ARCH TRUNK INPUT FEATURES   load pirl's exported trunk into torchvision's ResNet
                                           (fc = Identity, strict) and compare pooled features
  make-torchvision ARCH SEED OUT INPUT FEATURES
                                           save a torchvision ResNet (random weights and BatchNorm
                                           statistics) as safetensors, with its features of INPUT
Inputs and features are raw float32 files; INPUT is N×3×64×64. Prints one JSON line.
"""
import json
import struct
import sys

import numpy as np
import torch
import torchvision

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def read_safetensors(path):
    """The tensors and the metadata of a safetensors file (without the safetensors package)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
        out[name] = torch.from_numpy(array.copy())
    return out, header.get("__metadata__", {})


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = tensors[name].detach().cpu().contiguous().numpy()
        raw = array.tobytes()
        header[name] = {"dtype": CODES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - (8 + len(blob)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def trunk(arch, stem="imagenet"):
    """torchvision's ResNet as README "Transfer" rebuilds an exported trunk: no fc; the small stem's 3×3 conv, no max-pool."""
    model = getattr(torchvision.models, arch)()
    model.fc = torch.nn.Identity()
    if stem == "small":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model


def features(model, input_path):
    images = torch.from_numpy(np.fromfile(input_path, dtype=np.float32).reshape(-1, 3, 64, 64))
    model.eval()
    with torch.no_grad():
        return model(images)


def main():
    torch.set_num_threads(2)
    mode = sys.argv[1]
    if mode == "check-export":
        arch, trunk_path, input_path, features_path = sys.argv[2:6]
        tensors, metadata = read_safetensors(trunk_path)
        described = json.loads(metadata["pirl-trunk"])  # the export says how to rebuild it
        if described["arch"] != arch or described["width"] != 1:
            raise SystemExit("pirl-trunk metadata: %s" % described)
        model = trunk(arch, described["stem"])
        model.load_state_dict(tensors, strict=True)
        expected = torch.from_numpy(np.fromfile(features_path, dtype=np.float32)).reshape(-1, model_width(arch))
        got = features(model, input_path)
        print(json.dumps({"maxAbsDiff": float((got - expected).abs().max()), "scale": float(got.abs().max())}))
    elif mode == "make-torchvision":
        arch, seed, out_path, input_path, features_path = sys.argv[2:7]
        torch.manual_seed(int(seed))
        model = getattr(torchvision.models, arch)()
        # Random statistics and affine terms, scaled so the features have a trained network's O(1)
        # magnitude (max ~1), where an absolute tolerance of 1e-4 means what it says.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.2, 0.5)
                module.bias.data.uniform_(-0.2, 0.2)
                module.num_batches_tracked.fill_(7)
        write_safetensors(out_path, model.state_dict())
        model.fc = torch.nn.Identity()
        features(model, input_path).numpy().astype(np.float32).tofile(features_path)
        print(json.dumps({"keys": len(model.state_dict())}))
    else:
        raise SystemExit("unknown mode " + mode)


def model_width(arch):
    return 2048 if arch == "resnet50" else 512


if __name__ == "__main__":
    main()
