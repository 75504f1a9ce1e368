#include "state_dict.h"

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <set>
#include <unordered_map>

namespace pirl::model {

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
                     "tensor '", name, "' must be ", it->second.scalar_type(), ", got ", value.scalar_type());
    given.insert(name);
  }
  if (strict) {
    std::string missing;
    for (const auto& [name, tensor] : targets) {
      if (!given.count(name)) missing += (missing.empty() ? "" : ", ") + name;
    }
    TORCH_CHECK_VALUE(missing.empty(), "missing tensors: ", missing);
  }
  // Checked first, copied after: a failed load leaves the model as it was.
  torch::NoGradGuard noGrad;
  for (const auto& [name, value] : values) targets.at(name).copy_(value);
}

}  // namespace pirl::model
