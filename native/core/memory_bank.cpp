#include "memory_bank.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "dtype.h"
#include "negatives/negative_streams.h"
#include "splitmix.h"
#include "unit_rows.h"

namespace pirl {

namespace {

// Negatives are random rows of a bank of up to ~1 GB: with 4 KB pages nearly every row read is a
// TLB miss. Asking for transparent huge pages before the memory is first touched avoids most of them.
at::Tensor hugePageRows(int64_t size, int64_t dim) {
  at::Tensor rows = at::empty({size, dim}, at::kFloat);
  constexpr uintptr_t kHuge = 2u << 20;
  const auto begin = reinterpret_cast<uintptr_t>(rows.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + rows.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // a hint: failure is harmless
  return rows;
}
}  // namespace

MemoryBank::MemoryBank(int64_t size, int64_t dim, uint64_t seed, at::Device device)
    : generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {
  TORCH_CHECK_VALUE(size >= 1, "size must be >= 1, got ", size);
  TORCH_CHECK_VALUE(dim >= 1, "dim must be >= 1, got ", dim);
  const double bound = 1.0 / std::sqrt(static_cast<double>(dim) / 3.0);
  // In place: a bank of a million rows must not need two more copies of itself to be made.
  at::Tensor rows = hugePageRows(size, dim).uniform_(-bound, bound, generator_);
  rows.div_(rows.norm(2, 1, true).clamp_min(1e-12));
  rows_ = rows.to(device);
}

MemoryBank::MemoryBank(at::Tensor rows, const at::Tensor& generatorState, const BankStateNames& names)
    : rows_(std::move(rows)), generator_(at::make_generator<at::CPUGeneratorImpl>(0)) {
  TORCH_CHECK_VALUE(rows_.dim() == 2 && rows_.size(0) >= 1 && rows_.size(1) >= 1, names.rows,
                    " must be N×D with N, D >= 1, got ", rows_.sizes());
  TORCH_CHECK_TYPE(rows_.scalar_type() == at::kFloat || rows_.scalar_type() == at::kDouble, names.rows,
                   " must be float32 (or float64, for numerical checks), got ", dtypeName(rows_.scalar_type()));
  // As create and update keep them: a zero or unnormalised row (a file edited) gave losses of no meaning, silently.
  DeviceNumbers numbers;
  const size_t unit = addUnitRowChecks(numbers, rows_);
  numbers.read();
  checkUnitRows(numbers, unit, names.rows.c_str(), ": a NaN or infinite row would poison every loss it is drawn into");
  // libtorch's own refusal names no argument ("Expected either a CPUGeneratorImplStateLegacy of size …").
  const int64_t bytes = generator_.get_state().numel();
  TORCH_CHECK_VALUE(generatorState.scalar_type() == at::kByte && generatorState.dim() == 1 && generatorState.numel() == bytes,
                    names.generator, " must be the ", bytes, " bytes (uint8) of a bank's generator state, got ",
                    dtypeName(generatorState.scalar_type()), " of shape ", generatorState.sizes());
  try {
    generator_.set_state(generatorState);
  } catch (const c10::Error& e) {  // libtorch's words name no argument ("Invalid mt19937 state")
    TORCH_CHECK_VALUE(false, names.generator, " must be a bank's generator state (the bytes its state() gave), got bytes libtorch "
                      "refuses (", e.what_without_backtrace(), "): the state was damaged");
  }
}

void MemoryBank::checkIndices(const at::Tensor& indices, const char* name) const {
  TORCH_CHECK_VALUE(indices.dim() == 1, name, " must be one-dimensional, got ", indices.sizes());
  checkRows(indices, name, size());
}

at::Tensor MemoryBank::get(const at::Tensor& indices) const {
  checkIndices(indices, "indices");
  std::lock_guard<std::mutex> lock(mutex_);
  return rows_.index_select(0, indices.to(rows_.device()));
}

void MemoryBank::update(const at::Tensor& indices, const at::Tensor& fHat, double momentum, IndexCheck check) {
  TORCH_CHECK_VALUE(indices.dim() == 1, "indices must be one-dimensional, got ", indices.sizes());
  TORCH_CHECK_VALUE(fHat.dim() == 2 && fHat.size(0) == indices.size(0) && fHat.size(1) == dim(), "fHat must be ",
                    indices.size(0), "×", dim(), ", got ", fHat.sizes());
  TORCH_CHECK_VALUE(momentum >= 0 && momentum < 1, "momentum must be in [0, 1), got ", momentum);
  TORCH_CHECK_TYPE(at::isFloatingType(fHat.scalar_type()), "fHat must be a float tensor, got ", dtypeName(fHat.scalar_type()));
  // The training step checked its gradients (and so f) before it updates; other callers are checked here.
  if (check == IndexCheck::Check && indices.size(0) > 0) {
    DeviceNumbers numbers;
    const size_t range = addRowRange(numbers, indices, "indices"), rows = addUnitRowChecks(numbers, fHat);
    numbers.read();
    checkRowRange(numbers, range, indices, "indices", size());
    checkUnitRows(numbers, rows, "fHat", "", "f̂ as PIRL makes it: a zero row with momentum 0 left a bank row of zeros");
  }
  const int64_t B = indices.size(0);
  if (B == 0) return;
  const at::Tensor idx = indices.to(rows_.device());
  const at::Tensor f = fHat.detach().to(rows_.device(), rows_.scalar_type());
  // Group equal indices without unique() (whose output size would need a read of the device): a
  // stable sort keeps each group's rows in batch order, and a running count of the group starts
  // numbers the groups 0..U−1 in a B-long space.
  const auto [sorted, order] = at::sort(idx, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor starts = at::ones({B}, idx.options().dtype(at::kBool));
  if (B > 1) starts.narrow(0, 1, B - 1).copy_(sorted.narrow(0, 1, B - 1) != sorted.narrow(0, 0, B - 1));
  const at::Tensor groupOfSorted = starts.to(at::kLong).cumsum(0) - 1;
  const at::Tensor group = at::empty_like(groupOfSorted).index_copy_(0, order, groupOfSorted);  // batch order
  const at::Tensor sums = at::zeros({B, dim()}, f.options()).index_add_(0, group, f);
  const at::Tensor counts = at::zeros({B}, f.options()).index_add_(0, group, at::ones({B}, f.options()));
  const at::Tensor mean = (sums / counts.clamp_min(1).unsqueeze(1)).index_select(0, group);  // each sample's group mean
  std::lock_guard<std::mutex> lock(mutex_);
  const at::Tensor old = rows_.index_select(0, idx);
  const at::Tensor mixed = momentum * old + (1 - momentum) * mean;
  // An update that cancels (f̂ = −m at μ = 0.5, a repeated index's opposite f̂ at μ = 0) has no direction left
  // (float32 rounding of unit rows is ~1e-7): the row keeps its own rather than become a row of zeros.
  // A repeated index writes the same row once per repeat: equal values, so the order does not matter.
  rows_.index_copy_(0, idx, at::where(mixed.norm(2, 1, true) > 1e-6, unitRows(mixed), old));
}

at::Tensor MemoryBank::onDevice(const at::Tensor& t) const {
  if (t.device() == rows_.device()) return t;
  if (t.is_cpu() && rows_.is_cuda()) return t.pin_memory().to(rows_.device(), /*non_blocking=*/true);
  return t.to(rows_.device());
}

at::Tensor MemoryBank::sampleNegatives(int64_t batch, int64_t k, const at::Tensor& excludePositives,
                                       const NegativeStreams& streams) {
  TORCH_CHECK_VALUE(batch >= 1 && k >= 1, "batch and k must be >= 1, got ", batch, " and ", k);
  const bool exclude = excludePositives.defined();
  if (exclude) {
    TORCH_CHECK_VALUE(size() >= 2, "excluding the positive needs a bank of at least 2 rows, got ", size());
    TORCH_CHECK_VALUE(excludePositives.dim() == 1 && excludePositives.size(0) == batch,
                      "excludePositives must hold one row per sample (", batch, "), got ", excludePositives.sizes());
  }
  // On the rows' device, where the draws are stepped over them.
  const auto positives = [&] { return onDevice(excludePositives.to(at::kLong)); };
  if (streams.keys.defined()) {
    const at::Tensor& keys = streams.keys;
    TORCH_CHECK_VALUE(keys.dim() == 1 && keys.size(0) == batch && keys.scalar_type() == at::kLong,
                      "the negatives' stream keys must be ", batch, " int64 values, got ", keys.sizes(), " ", dtypeName(keys.scalar_type()));
    return negatives::drawKeyed(onDevice(keys), streams.seed, k, size(), exclude ? positives() : at::Tensor());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!exclude) return onDevice(at::randint(size(), {batch, k}, generator_, at::kLong));
  // Uniform over the N−1 other rows: draw from [0, N−1) and step over the positive.
  const at::Tensor r = onDevice(at::randint(size() - 1, {batch, k}, generator_, at::kLong));
  return r + (r >= positives().unsqueeze(1)).to(at::kLong);
}

at::Tensor MemoryBank::sampleShared(int64_t k, const NegativeStreams& streams) {
  TORCH_CHECK_VALUE(k >= 1, "k must be >= 1, got ", k);
  std::lock_guard<std::mutex> lock(mutex_);
  if (!streams.keys.defined()) return onDevice(at::randint(size(), {k}, generator_, at::kLong));
  return negatives::drawStream(splitmix64(streams.seed), k, size(), rows_.device());
}

at::Tensor MemoryBank::generatorState() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return generator_.get_state();
}

namespace {
const char* const kInUse = "the memory bank is in use by native work in flight (a training step, a PirlLoss.compute or a call on the bank): await it before ";
}  // namespace

MemoryBank::Use::Use(std::shared_ptr<MemoryBank> bank, Kind kind, const std::string& call)
    : bank_(std::move(bank)), kind_(kind) {
  const auto held = [&](Kind k) { return bank_->held_[static_cast<int>(k)].load() > 0; };
  const bool steps = held(Kind::Step), reads = held(Kind::Read), writes = held(Kind::Write);
  const bool refused = kind == Kind::Write ? steps || reads || writes : kind == Kind::Read ? steps || writes : reads || writes;
  // Uses are taken on the JavaScript thread only, so nothing comes between the check and the count.
  if (refused) throw std::logic_error(kInUse + call);
  ++bank_->held_[static_cast<int>(kind)];
}

MemoryBank::Use::~Use() { --bank_->held_[static_cast<int>(kind_)]; }

void MemoryBank::refuseWhileChanging(const std::string& call) const {
  if (held_[static_cast<int>(Use::Kind::Step)].load() > 0 || held_[static_cast<int>(Use::Kind::Write)].load() > 0) {
    throw std::logic_error(kInUse + call);
  }
}

}  // namespace pirl
