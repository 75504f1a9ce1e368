#include "tensor_file.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "../dtype.h"

namespace pirl::io {

namespace {

// Linux moves at most ~2 GiB per call: larger spans take several.
constexpr size_t kMaxPerCall = size_t{1} << 30;

// errno kept (a full disk is ENOSPC to the caller, as Node's own writes say it).
std::system_error systemError(const std::string& file, const char* doing, int64_t at) {
  return std::system_error(errno, std::generic_category(), file + ": cannot " + doing + " at byte " + std::to_string(at));
}

}  // namespace

std::vector<at::Tensor> readTensors(int fd, const std::string& file, const std::vector<TensorSpan>& spans) {
  std::vector<at::Tensor> out;
  out.reserve(spans.size());
  for (const auto& span : spans) {
    checkedNumel(span.shape);
    at::Tensor t = at::empty(span.shape, at::TensorOptions().dtype(span.dtype));
    auto* bytes = static_cast<uint8_t*>(t.data_ptr());
    const size_t total = t.nbytes();
    for (size_t done = 0; done < total;) {
      const int64_t at = span.offset + static_cast<int64_t>(done);
      const ssize_t n = ::pread(fd, bytes + done, std::min(total - done, kMaxPerCall), at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw systemError(file, "read", at);
      if (n == 0) {
        throw std::runtime_error(file + ": ended at byte " + std::to_string(at) + ", inside " + span.what +
                                 " (it shrank while being read)");
      }
      done += static_cast<size_t>(n);
    }
    out.push_back(std::move(t));
  }
  return out;
}

void writeTensors(int fd, const std::string& file, int64_t offset, const std::vector<at::Tensor>& tensors) {
  for (const auto& tensor : tensors) {
    const at::Tensor t = tensor.to(at::kCPU).contiguous();
    const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
    const size_t total = t.nbytes();
    for (size_t done = 0; done < total;) {
      const ssize_t n = ::pwrite(fd, bytes + done, std::min(total - done, kMaxPerCall), offset);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) errno = EIO;  // no progress and no error: would loop forever
      if (n <= 0) throw systemError(file, "write", offset);
      done += static_cast<size_t>(n);
      offset += n;
    }
  }
}

}  // namespace pirl::io
