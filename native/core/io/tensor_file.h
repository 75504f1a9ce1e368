// Tensors' bytes at given offsets of an open file (the data section of a safetensors file), read and
// written with positioned I/O straight from and into tensor memory: one copy, and no size limit (a
// JavaScript buffer stops at 4 GiB; an ImageNet-scale memory bank or res5 features do not).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pirl::io {

// Where one tensor lies in a file and what it is; `what` names it in errors.
struct TensorSpan {
  std::string what;
  int64_t offset;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
};

// New CPU tensors read from `fd` at their spans; a file that ends early is an error naming `file`.
std::vector<at::Tensor> readTensors(int fd, const std::string& file, const std::vector<TensorSpan>& spans);

// Writes each tensor's bytes (as a dense CPU tensor: copied to it when not) one after another from `offset`.
void writeTensors(int fd, const std::string& file, int64_t offset, const std::vector<at::Tensor>& tensors);

}  // namespace pirl::io
