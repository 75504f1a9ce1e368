#include "state_dict.h"

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>
#include <unordered_map>

#include "../device_numbers.h"
#include "../dtype.h"

namespace pirl::model {

namespace {

const std::string kBatchCount = "num_batches_tracked";

bool endsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Names sorted, the first few of them: a trunk of another arch misses dozens.
std::string listed(std::vector<std::string> names) {
  constexpr size_t kShown = 8;
  std::sort(names.begin(), names.end());
  std::string out;
  for (size_t i = 0; i < std::min(names.size(), kShown); ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > kShown) out += ", … (" + std::to_string(names.size() - kShown) + " more)";
  return out;
}

}  // namespace

NamedTensors stateDict(const torch::nn::Module& module, const std::string& prefix) {
  NamedTensors out;
  for (const auto& item : module.named_parameters()) out.emplace_back(prefix + item.key(), item.value().detach());
  for (const auto& item : module.named_buffers()) out.emplace_back(prefix + item.key(), item.value().detach());
  return out;
}

void loadStateDict(torch::nn::Module& module, const NamedTensors& values, bool strict) {
  std::unordered_map<std::string, at::Tensor> targets;
  for (auto& [name, tensor] : stateDict(module)) targets.emplace(name, tensor);
  std::set<std::string> given;
  for (const auto& [name, value] : values) {
    const auto it = targets.find(name);
    TORCH_CHECK_VALUE(it != targets.end(), "unexpected tensor '", name, "': the model has no such parameter or buffer");
    TORCH_CHECK_VALUE(it->second.sizes() == value.sizes(), "tensor '", name, "' must have shape ", it->second.sizes(),
                      ", got ", value.sizes());
    TORCH_CHECK_TYPE(at::isFloatingType(it->second.scalar_type()) == at::isFloatingType(value.scalar_type()),
                     "tensor '", name, "' must be ", dtypeName(it->second.scalar_type()), ", got ", dtypeName(value.scalar_type()));
    given.insert(name);
  }
  // PyTorch's BatchNorm loads a state dict without its num_batches_tracked (torchvision's older files), counting from 0.
  std::vector<std::string> uncounted;
  std::vector<std::string> missing;
  for (const auto& [name, tensor] : targets) {
    if (given.count(name)) continue;
    if (endsWith(name, kBatchCount) && given.count(name.substr(0, name.size() - kBatchCount.size()) + "running_mean")) {
      uncounted.push_back(name);
    } else if (strict) {
      missing.push_back(name);
    }
  }
  TORCH_CHECK_VALUE(missing.empty(), "missing ", missing.size(), " tensor(s): ", listed(missing));
  // Values no model can hold (a diverged run's NaN, a variance below 0) embedded as NaN ever after, silently: each
  // tensor's smallest value (NaN where any is NaN) and whether all are finite, in one read.
  DeviceNumbers numbers;
  std::vector<std::pair<const std::string*, size_t>> checked;
  for (const auto& [name, value] : values) {
    if (!at::isFloatingType(value.scalar_type()) || value.numel() == 0) continue;
    const at::Tensor v = value.detach();
    checked.emplace_back(&name, numbers.add(at::stack({at::isfinite(v).all().to(at::kDouble), v.min().to(at::kDouble)})));
  }
  numbers.read();
  for (const auto& [name, slot] : checked) {
    TORCH_CHECK_VALUE(numbers.real(slot) != 0, "tensor '", *name, "' must be finite, got a NaN or infinite value");
    TORCH_CHECK_VALUE(!endsWith(*name, "running_var") || numbers.real(slot + 1) >= 0, "tensor '", *name,
                      "' must be >= 0 (a variance), got ", numbers.real(slot + 1));
  }
  // Checked first, copied after: a failed load leaves the model as it was.
  torch::NoGradGuard noGrad;
  for (const auto& [name, value] : values) targets.at(name).copy_(value);
  for (const auto& name : uncounted) targets.at(name).zero_();
}

}  // namespace pirl::model
