// Mixed precision for the training step: the trunk and heads run under autocast (bf16 or fp16), the
// NCE loss and the memory bank stay fp32, and fp16 gradients are protected by a dynamic loss scale.
#pragma once

#include <ATen/ATen.h>

namespace pirl::train {

enum class Precision { Fp32, Bf16, Fp16 };

// While alive, ops on `device` run under autocast in `precision`'s dtype (nothing for Fp32), as
// torch.autocast does: nested scopes, the cast cache cleared when the outermost one ends.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, Precision precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool wasEnabled_ = false;
  at::ScalarType previousDtype_ = at::kFloat;
};

// fp16's dynamic loss scale, torch.cuda.amp.GradScaler's rule: the loss is multiplied by scale()
// before backward; a step whose gradients overflow is skipped and halves the scale; `growthInterval`
// finite steps in a row double it.
class LossScaler {
 public:
  LossScaler(double initialScale, int64_t growthInterval);
  double scale() const { return scale_; }
  // After a step's gradients were checked: returns whether the step may be applied.
  bool update(bool finite);
  int64_t goodSteps() const { return goodSteps_; }
  void restore(double scale, int64_t goodSteps);

 private:
  double scale_;
  int64_t growthInterval_;
  int64_t goodSteps_ = 0;
};

}  // namespace pirl::train
