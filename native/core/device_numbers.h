// Numbers that checks or results need from the device, gathered so that they cross in one read: on a GPU each
// read waits for everything queued before it.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace pirl {

class DeviceNumbers {
 public:
  // Appends `t`'s values (any shape, any device, integral or floating); returns the index of the first.
  size_t add(const at::Tensor& t) {
    TORCH_CHECK(!read_, "DeviceNumbers: add after read");
    const at::Tensor flat = t.detach().reshape({-1});
    // Integers stay exact as int64, floating values travel as float64 bits in the same buffer.
    at::Tensor bits = at::isIntegralType(flat.scalar_type(), /*includeBool=*/true) ? flat.to(at::kLong)
                                                                                   : flat.to(at::kDouble).view(at::kLong);
    if (!parts_.empty()) bits = bits.to(parts_.front().device());
    const size_t first = count_;
    count_ += static_cast<size_t>(bits.numel());
    parts_.push_back(std::move(bits));
    return first;
  }

  // The one read; nothing is added after it.
  void read() {
    read_ = true;
    if (parts_.empty()) return;
    const at::Tensor host = at::cat(parts_).cpu();
    const int64_t* p = host.data_ptr<int64_t>();
    values_.assign(p, p + host.numel());
    parts_.clear();
  }

  size_t size() const { return count_; }
  int64_t integer(size_t i) const { return values_.at(i); }

  double real(size_t i) const {
    double v = 0;
    std::memcpy(&v, &values_.at(i), sizeof v);
    return v;
  }

 private:
  std::vector<at::Tensor> parts_;
  std::vector<int64_t> values_;
  size_t count_ = 0;
  bool read_ = false;
};

}  // namespace pirl
