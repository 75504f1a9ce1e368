// The trunk's BatchNorm against ATen's batch_norm: the same function alone, and across "ranks" (threads
// summing through an in-process allreduce) the function of their whole batch, forward and backward, in float64.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/model/batch_norm.h"

namespace {

using pirl::model::BatchNorm;
using pirl::model::syncBatchNorm;

// Sums a tensor over `n` threads, like an allreduce: each caller blocks until all have given theirs.
class ThreadSum {
 public:
  explicit ThreadSum(int n) : n_(n) {}
  void operator()(at::Tensor& t) {
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t generation = generation_;
    total_ = arrived_ == 0 ? t.clone() : total_ + t;
    if (++arrived_ == n_) {
      result_ = total_;
      arrived_ = 0;
      ++generation_;
      done_.notify_all();
    } else {
      done_.wait(lock, [&] { return generation_ != generation; });
    }
    t.copy_(result_);
  }

 private:
  const int n_;
  std::mutex mutex_;
  std::condition_variable done_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  at::Tensor total_, result_;
};

struct Reference {
  at::Tensor y, dx, dw, db, runningMean, runningVar;
};

// ATen's batch_norm of x in training mode, and the gradients of sum(y·r).
Reference aten(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& r, double momentum) {
  Reference out{{}, {}, {}, {}, at::zeros({x.size(1)}, x.options()), at::ones({x.size(1)}, x.options())};
  const at::Tensor xv = x.clone().requires_grad_(), wv = w.clone().requires_grad_(), bv = b.clone().requires_grad_();
  out.y = at::batch_norm(xv, wv, bv, out.runningMean, out.runningVar, true, momentum, 1e-5, false);
  (out.y * r).sum().backward();
  out.dx = xv.grad();
  out.dw = wv.grad();
  out.db = bv.grad();
  out.y = out.y.detach();
  return out;
}

struct Inputs {
  at::Tensor x, w, b, r;
};

Inputs inputs(int64_t n) {
  at::manual_seed(5);
  // A mean far from 0 next to a small spread: Σx² − n·mean² would cancel in float.
  return {at::randn({n, 3, 5, 4}, at::kDouble) * 0.5 + 3, at::randn({3}, at::kDouble), at::randn({3}, at::kDouble),
          at::randn({n, 3, 5, 4}, at::kDouble)};
}

TEST(SyncBatchNorm, OneRankIsAtensBatchNorm) {
  const Inputs in = inputs(6);
  const Reference ref = aten(in.x, in.w, in.b, in.r, 0.1);
  at::Tensor rm = at::zeros({3}, at::kDouble), rv = at::ones({3}, at::kDouble);
  const at::Tensor x = in.x.clone().requires_grad_(), w = in.w.clone().requires_grad_(), b = in.b.clone().requires_grad_();
  ThreadSum alone(1);
  const at::Tensor y = syncBatchNorm(x, w, b, rm, rv, 0.1, 1e-5, std::ref(alone));
  (y * in.r).sum().backward();
  EXPECT_TRUE(at::allclose(y, ref.y, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(x.grad(), ref.dx, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(w.grad(), ref.dw, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(b.grad(), ref.db, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(rm, ref.runningMean, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(rv, ref.runningVar, 1e-10, 1e-12));
}

// Three ranks of 2, 2 and 4 samples (unequal shares): each rank's y and x-gradient are its rows of the
// whole batch's, weight and bias get shares that sum to the whole batch's gradient, and every rank's
// running statistics are the whole batch's.
TEST(SyncBatchNorm, RanksTogetherAreTheWholeBatch) {
  const Inputs in = inputs(8);
  const Reference ref = aten(in.x, in.w, in.b, in.r, 0.1);
  const std::vector<int64_t> starts{0, 2, 4, 8};
  ThreadSum sum(3);
  std::vector<at::Tensor> ys(3), dxs(3), dws(3), dbs(3), rms(3), rvs(3);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 3; ++rank) {
    ranks.emplace_back([&, rank] {
      const int64_t from = starts[rank], rows = starts[rank + 1] - from;
      const at::Tensor x = in.x.narrow(0, from, rows).clone().requires_grad_();
      const at::Tensor w = in.w.clone().requires_grad_(), b = in.b.clone().requires_grad_();
      rms[rank] = at::zeros({3}, at::kDouble);
      rvs[rank] = at::ones({3}, at::kDouble);
      ys[rank] = syncBatchNorm(x, w, b, rms[rank], rvs[rank], 0.1, 1e-5, std::ref(sum));
      (ys[rank] * in.r.narrow(0, from, rows)).sum().backward();
      dxs[rank] = x.grad();
      dws[rank] = w.grad();
      dbs[rank] = b.grad();
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_TRUE(at::allclose(at::cat(ys).detach(), ref.y, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(at::cat(dxs), ref.dx, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(dws[0] + dws[1] + dws[2], ref.dw, 1e-10, 1e-12));
  EXPECT_TRUE(at::allclose(dbs[0] + dbs[1] + dbs[2], ref.db, 1e-10, 1e-12));
  EXPECT_FALSE(at::allclose(dws[0], ref.dw, 1e-3, 1e-3)) << "a rank's weight gradient is its share only";
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_TRUE(at::allclose(rms[rank], ref.runningMean, 1e-10, 1e-12)) << rank;
    EXPECT_TRUE(at::allclose(rvs[rank], ref.runningVar, 1e-10, 1e-12)) << rank;
  }
}

// The module: ATen's batch_norm unless a sum across ranks is set; eval mode uses the running statistics.
TEST(SyncBatchNorm, TheModuleNormalisesLikeTorchsBatchNorm2d) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({4, 3, 6, 6}) * 2 + 1;
  BatchNorm bn(3);
  const at::Tensor plain = bn->forward(x);
  at::Tensor rm = at::zeros({3}), rv = at::ones({3});
  EXPECT_TRUE(at::allclose(plain, at::batch_norm(x, at::ones({3}), at::zeros({3}), rm, rv, true, 0.1, 1e-5, false), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(bn->running_mean, rm));
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1);
  ThreadSum alone(1);
  bn->sumAcrossRanks = std::ref(alone);
  EXPECT_TRUE(at::allclose(bn->forward(x), plain, 1e-4, 1e-5));
  bn->eval();
  EXPECT_TRUE(at::allclose(bn->forward(x), at::batch_norm(x, bn->weight, bn->bias, bn->running_mean, bn->running_var,
                                                           false, 0.1, 1e-5, false)));
  EXPECT_THROW(bn->forward(at::randn({4, 2, 6, 6})), c10::ValueError);
  // One value per channel in training (one image, a 1×1 map): said, with what to do.
  bn->train();
  try {
    bn->forward(at::randn({1, 3, 1, 1}));
    ADD_FAILURE() << "a batch of one 1×1 map was normalised";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("train on batches of 2 or more (or larger images)"), std::string::npos) << e.what();
  }
}

}  // namespace
