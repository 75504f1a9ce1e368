// Numbers that checks or results need from the device, gathered so that they cross in one read: on a GPU each
// read waits for everything queued before it.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
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
    parts_.push_back(at::isIntegralType(flat.scalar_type(), /*includeBool=*/true) ? flat.to(at::kLong)
                                                                                  : flat.to(at::kDouble).view(at::kLong));
    starts_.push_back(count_);
    count_ += static_cast<size_t>(parts_.back().numel());
    return starts_.back();
  }

  // The one read: one transfer per device the parts live on (indices on the host and embeddings on a GPU are
  // read without moving either); nothing is added after it.
  void read() {
    read_ = true;
    values_.assign(count_, 0);
    std::vector<bool> done(parts_.size(), false);
    for (size_t i = 0; i < parts_.size(); ++i) {
      if (done[i]) continue;
      std::vector<size_t> here;
      for (size_t j = i; j < parts_.size(); ++j) {
        if (!done[j] && parts_[j].device() == parts_[i].device()) here.push_back(j);
      }
      std::vector<at::Tensor> group;
      for (const size_t j : here) group.push_back(parts_[j]);
      const at::Tensor host = at::cat(group).cpu();
      const int64_t* p = host.data_ptr<int64_t>();
      for (const size_t j : here) {
        done[j] = true;
        std::copy(p, p + parts_[j].numel(), values_.begin() + static_cast<std::ptrdiff_t>(starts_[j]));
        p += parts_[j].numel();
      }
    }
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
  std::vector<size_t> starts_;  // each part's first index
  std::vector<int64_t> values_;
  size_t count_ = 0;
  bool read_ = false;
};

}  // namespace pirl
