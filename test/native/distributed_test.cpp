// Data-parallel training on c10d's Gloo, two ranks as two threads of this process: Gloo's device bound
// to 127.0.0.1 and a file rendezvous (one test a TCPStore at 127.0.0.1): no traffic leaves loopback.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <memory>
#include <future>
#include <thread>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>

#include "core/distributed/communicator.h"
#include "core/distributed/deadline.h"
#include "core/distributed/gradient_reducer.h"
#include "core/model/batch_norm.h"
#include "core/train/train_state.h"
#include "presets.h"
#include "rendezvous.h"

namespace {

using namespace pirl;
using distributed::Communicator;

int64_t freePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// A TCPStore at 127.0.0.1:port, or with `file` a file rendezvous.
distributed::CommunicatorOptions loopback(int64_t port, int64_t rank, int64_t world, int64_t timeoutMs = 30000,
                                          const std::string& file = "") {
  return {file, "127.0.0.1", port, rank, world, "127.0.0.1", timeoutMs, "cpu"};
}

// Runs body(rank) on `world` threads, each with its own communicator (a file rendezvous, or a TCPStore
// with `tcp`); rethrows the first failure.
void onRanks(int64_t world, const std::function<void(int64_t, std::shared_ptr<Communicator>)>& body, bool tcp = false) {
  const int64_t port = tcp ? freePort() : 0;
  const std::string file = tcp ? "" : pirl::test::freshRendezvousFile();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(world);
  for (int64_t rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        body(rank, std::make_shared<Communicator>(loopback(port, rank, world, 30000, file)));
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// A two-layer perceptron as plain tensors: the reducer sees what a model's parameters are.
struct Mlp {
  std::vector<at::Tensor> params;
  explicit Mlp(uint64_t seed) {
    const at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);  // ranks build theirs at once
    params = {at::randn({16, 8}, g, at::kDouble), at::randn({16}, g, at::kDouble), at::randn({4, 16}, g, at::kDouble),
              at::randn({4}, g, at::kDouble)};
    for (auto& p : params) p.requires_grad_(true);
  }
  at::Tensor loss(const at::Tensor& x, const at::Tensor& y) const {
    const at::Tensor h = at::relu(at::linear(x, params[0], params[1]));
    return (at::linear(h, params[2], params[3]) - y).pow(2).sum(1).mean();
  }
};

// Ranks here talk Gloo, whose headers some libtorch packages lack (pip's torch 2.11 ships none): such a build
// says so at run time, and these cases skip. CI's libtorch has them (distributed.test.ts fails without).
class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!distributed::available()) GTEST_SKIP() << "this pirl was built without c10d's Gloo headers";
  }
};

// Each rank's mean loss over its half of the batch: the mean of the two ranks' gradients is the
// gradient of the whole batch's mean loss. Tiny buckets make several allreduces in flight.
TEST_F(Distributed, BucketedAllreduceGivesTheGradientOfTheGlobalBatch) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({8, 8}, at::kDouble), y = at::randn({8, 4}, at::kDouble);
  Mlp single(7);
  single.loss(x, y).backward();
  std::vector<std::vector<at::Tensor>> grads(2);
  std::vector<size_t> buckets(2);
  onRanks(2, [&](int64_t rank, std::shared_ptr<Communicator> c) {
    Mlp replica(7);
    distributed::GradientReducer reducer(replica.params, c, /*firstBucketBytes=*/64 * 8, /*bucketBytes=*/100 * 8);
    buckets[rank] = reducer.bucketCount();
    for (int repeat = 0; repeat < 2; ++repeat) {  // a second step reuses the buckets
      for (auto& p : replica.params) p.mutable_grad() = at::Tensor();
      reducer.prepare();
      replica.loss(x.narrow(0, rank * 4, 4), y.narrow(0, rank * 4, 4)).backward();
      reducer.finish();
    }
    for (auto& p : replica.params) grads[rank].push_back(p.grad().clone());
  }, /*tcp=*/true);
  EXPECT_GE(buckets[0], 3u);
  for (size_t k = 0; k < single.params.size(); ++k) {
    EXPECT_TRUE(at::allclose(grads[0][k], single.params[k].grad(), 1e-12, 1e-12)) << "parameter " << k;
    EXPECT_TRUE(at::equal(grads[0][k], grads[1][k])) << "parameter " << k;
  }
}

// Replicas made from different seeds become rank 0's, and stay one model and one bank: every
// replica applies the same averaged gradients and every rank's bank update.
TEST_F(Distributed, ReplicasOfTheWeightsAndTheBankStayBitIdentical) {
  std::vector<std::unique_ptr<train::TrainState>> states(2);
  std::vector<std::vector<double>> losses(2);
  at::Tensor initialBank;
  {
    auto rank0 = pirl::testing::tinyTrainState(100, 64);
    initialBank = rank0.bank().rows().clone();
  }
  // Built one after the other: model initialisation draws from the global generator.
  for (int64_t rank = 0; rank < 2; ++rank) states[rank] = std::make_unique<train::TrainState>(pirl::testing::tinyTrainState(100 + rank, 64));
  onRanks(2, [&](int64_t rank, std::shared_ptr<Communicator> c) {
    states[rank]->distribute(c, /*syncBatchNorm=*/false);
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(50 + rank);
    for (int64_t step = 0; step < 4; ++step) {
      const at::Tensor images = at::randn({4, 3, 16, 16}, data), patches = at::randn({4, 9, 3, 8, 8}, data);
      const at::Tensor indices = at::arange(4, at::kLong) + rank * 4 + step * 8;  // disjoint shards
      losses[rank].push_back(states[rank]->step(images, patches, indices, 0.05).loss);
    }
  });
  // One loss reported by every rank (that it is the global batch's: TwoRanksWithSyncBatchNormFollowTheRunOfOneProcess).
  EXPECT_EQ(losses[0], losses[1]);
  auto p0 = states[0]->model()->parameters(), p1 = states[1]->model()->parameters();
  for (size_t k = 0; k < p0.size(); ++k) EXPECT_TRUE(at::equal(p0[k], p1[k])) << "parameter " << k;
  EXPECT_TRUE(at::equal(states[0]->bank().rows(), states[1]->bank().rows()));
  // BatchNorm's step counts are not sent each step: they advance alike on every replica.
  auto b0 = states[0]->model()->buffers(), b1 = states[1]->model()->buffers();
  int64_t counts = 0;
  for (size_t k = 0; k < b0.size(); ++k) {
    if (b0[k].is_floating_point()) continue;
    ++counts;
    EXPECT_TRUE(at::equal(b0[k], b1[k])) << "buffer " << k;
    EXPECT_GT(b0[k].item<int64_t>(), 0) << "buffer " << k;
  }
  EXPECT_GT(counts, 0);
  // Rank 0's initial bank, then both ranks' rows moved (0..31 were used, 32..63 not).
  const at::Tensor moved = (states[0]->bank().rows() - initialBank).abs().sum(1) > 0;
  EXPECT_TRUE(moved.narrow(0, 0, 32).all().item<bool>());
  EXPECT_FALSE(moved.narrow(0, 32, 32).any().item<bool>());
  EXPECT_EQ(states[0]->steps(), 4);
}

// A rank whose batch lost images (unreadable, left out) steps with fewer rows: every replica still applies
// every rank's rows — the step's allreduce carries each rank's batch size to the bank update's all-gather.
TEST_F(Distributed, BatchesOfDifferentSizesUpdateEveryReplicaAlike) {
  std::vector<std::unique_ptr<train::TrainState>> states(2);
  for (int64_t rank = 0; rank < 2; ++rank) states[rank] = std::make_unique<train::TrainState>(pirl::testing::tinyTrainState(100 + rank, 64));
  at::Tensor initialBank;
  onRanks(2, [&](int64_t rank, std::shared_ptr<Communicator> c) {
    states[rank]->distribute(c, /*syncBatchNorm=*/false);
    if (rank == 0) initialBank = states[0]->bank().rows().clone();
    const int64_t batch = rank == 0 ? 4 : 3;
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(50 + rank);
    const at::Tensor images = at::randn({batch, 3, 16, 16}, data), patches = at::randn({batch, 9, 3, 8, 8}, data);
    states[rank]->step(images, patches, at::arange(batch, at::kLong) + rank * 4, 0.05);
  });
  EXPECT_TRUE(at::equal(states[0]->bank().rows(), states[1]->bank().rows()));
  const at::Tensor moved = (states[0]->bank().rows() - initialBank).abs().sum(1) > 0;
  EXPECT_TRUE(moved.narrow(0, 0, 7).all().item<bool>()) << "rank 0's rows 0..3 and rank 1's 4..6";
  EXPECT_FALSE(moved.narrow(0, 7, 57).any().item<bool>());
}

// One rank's batch far outside normalised images overflows its BatchNorm statistics with a finite loss: every rank
// refuses the step (the count rides in the step's allreduce), saying on how many ranks, and no replica changes.
TEST_F(Distributed, ARankWhoseStatisticsOverflowStopsEveryRank) {
  std::vector<std::unique_ptr<train::TrainState>> states(2);
  for (int64_t rank = 0; rank < 2; ++rank) states[rank] = std::make_unique<train::TrainState>(pirl::testing::tinyTrainState(100 + rank, 64));
  std::vector<std::string> errors(2);
  std::vector<at::Tensor> banks(2);
  onRanks(2, [&](int64_t rank, std::shared_ptr<Communicator> c) {
    states[rank]->distribute(c, /*syncBatchNorm=*/false);
    banks[rank] = states[rank]->bank().rows().clone();
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(60 + rank);
    const at::Tensor images = at::randn({4, 3, 16, 16}, data) * (rank == 1 ? 1e20 : 1.0), patches = at::randn({4, 9, 3, 8, 8}, data);
    try {
      states[rank]->step(images, patches, at::arange(4, at::kLong) + rank * 4, 0.05);
    } catch (const c10::Error& e) {
      errors[rank] = e.what_without_backtrace();
    }
  });
  for (int64_t rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(errors[rank].rfind("BatchNorm's running statistics overflowed float32 in this step's forward (on 1 of the 2 ranks)", 0), 0u)
        << rank << ": " << errors[rank];
    EXPECT_TRUE(at::equal(banks[rank], states[rank]->bank().rows())) << rank;
  }
  EXPECT_NE(errors[1].find("e+20: the model takes normalised images"), std::string::npos) << errors[1];  // randn·1e20's largest
}

// tinyTrainState in float64 (model, bank and loss): training amplifies rounding differences (~10⁴× over 20
// steps here), which in float32 would hide what the comparisons look at.
train::TrainState float64TrainState(int64_t bankRows, ZMode zMode) {
  train::TrainState fp32 = pirl::testing::tinyTrainState(100, bankRows);
  PirlLossOptions loss = fp32.loss().options();
  loss.zMode = zMode;
  loss.zMomentum = 0.5;  // so that the EMA moves visibly in 20 steps
  return pirl::testing::inFloat64(fp32, loss, 100);
}

// What a run reports over `steps` steps of global batches of 8: the losses and the final weights and bank.
// `world` ranks each take their share of each global batch; 0: one process alone, not distributed.
struct RunResult {
  std::vector<double> losses;
  std::vector<at::Tensor> params;
  at::Tensor bank;
  double zImage, zJigsaw;
};

RunResult runGlobalBatches(int64_t world, bool syncBatchNorm, int64_t steps, ZMode zMode = ZMode::Frozen) {
  constexpr int64_t kGlobal = 8, kBankRows = 200;
  const int64_t ranks = std::max<int64_t>(world, 1), mine = kGlobal / ranks;
  std::vector<std::unique_ptr<train::TrainState>> states(ranks);
  for (auto& state : states) state = std::make_unique<train::TrainState>(float64TrainState(kBankRows, zMode));
  RunResult result;
  const auto train = [&](int64_t rank) {
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(50);  // the same global batches on every rank
    for (int64_t step = 0; step < steps; ++step) {
      const at::Tensor images = at::randn({kGlobal, 3, 16, 16}, data, at::kDouble), patches = at::randn({kGlobal, 9, 3, 8, 8}, data, at::kDouble);
      const at::Tensor indices = at::randperm(kBankRows, data, at::kLong).narrow(0, 0, kGlobal);
      const double loss = states[rank]->step(images.narrow(0, rank * mine, mine), patches.narrow(0, rank * mine, mine),
                                             indices.narrow(0, rank * mine, mine), 0.05).loss;
      if (rank == 0) result.losses.push_back(loss);
    }
  };
  if (world == 0) {
    train(0);
  } else {
    onRanks(world, [&](int64_t rank, std::shared_ptr<Communicator> c) {
      states[rank]->distribute(c, syncBatchNorm);
      train(rank);
    });
  }
  result.params = states[0]->model()->parameters();
  result.bank = states[0]->bank().rows();
  result.zImage = states[0]->loss().zImage();
  result.zJigsaw = states[0]->loss().zJigsaw();
  return result;
}

// The largest relative difference of two runs' losses, and of their weights and banks (as one vector).
struct Distance {
  double losses, state;
};

Distance distance(const RunResult& a, const RunResult& b) {
  Distance d{0, 0};
  for (size_t i = 0; i < a.losses.size(); ++i) d.losses = std::max(d.losses, std::abs(a.losses[i] / b.losses[i] - 1));
  std::vector<at::Tensor> x{a.bank.flatten()}, y{b.bank.flatten()};
  for (size_t k = 0; k < a.params.size(); ++k) {
    x.push_back(a.params[k].flatten());
    y.push_back(b.params[k].flatten());
  }
  d.state = ((at::cat(x) - at::cat(y)).norm() / at::cat(y).norm()).item<double>();
  return d;
}

// A trainer disposed while its model stays: the model's BatchNorm layers no longer sum across the ranks (a
// forward in training mode would wait on a group that is gone).
TEST_F(Distributed, ReleasingTheModelEndsItsBatchNormSumsAcrossRanks) {
  std::vector<std::unique_ptr<train::TrainState>> states(2);
  for (auto& state : states) state = std::make_unique<train::TrainState>(pirl::testing::tinyTrainState(100, 64));
  onRanks(2, [&](int64_t rank, std::shared_ptr<Communicator> c) { states[rank]->distribute(c, /*syncBatchNorm=*/true); });
  const auto summing = [](train::TrainState& state) {
    int64_t n = 0;
    for (const auto& m : state.model()->trunk->modules(/*include_self=*/false)) {
      if (auto* bn = m->as<model::BatchNorm>(); bn != nullptr && bn->sumAcrossRanks) ++n;
    }
    return n;
  };
  EXPECT_GT(summing(*states[0]), 0);
  states[0]->releaseModel();
  EXPECT_EQ(summing(*states[0]), 0);
  EXPECT_GT(summing(*states[1]), 0);
}

// SyncBatchNorm and negatives drawn per sample: 2 ranks of 4 compute the steps of one process alone
// with the 8 — in float64 the losses, weights and bank agree to 1e-10 after 20 steps (~1e-15 here). Without
// SyncBatchNorm each rank normalises its own 4 (DDP's default): another run (the control, ~4% apart).
TEST_F(Distributed, TwoRanksWithSyncBatchNormFollowTheRunOfOneProcess) {
  const RunResult alone = runGlobalBatches(0, /*syncBatchNorm=*/false, 20);
  const RunResult two = runGlobalBatches(2, /*syncBatchNorm=*/true, 20);
  const RunResult perRank = runGlobalBatches(2, /*syncBatchNorm=*/false, 20);
  ASSERT_EQ(alone.losses.size(), 20u);
  const Distance synced = distance(two, alone), unsynced = distance(perRank, alone);
  EXPECT_LT(synced.losses, 1e-10);
  EXPECT_LT(synced.state, 1e-10);
  EXPECT_GT(unsynced.losses, 1e-3);
  EXPECT_GT(unsynced.state, 1e-3);
}

// With an EMA of Z each rank's batch estimate is averaged with the losses' allreduce: the same Z, and the
// same run, as one process with the whole batch.
TEST_F(Distributed, TwoRanksKeepTheEmaOfZOfTheRunOfOneProcess) {
  const RunResult alone = runGlobalBatches(0, /*syncBatchNorm=*/false, 20, ZMode::Ema);
  const RunResult two = runGlobalBatches(2, /*syncBatchNorm=*/true, 20, ZMode::Ema);
  const RunResult frozen = runGlobalBatches(0, /*syncBatchNorm=*/false, 20, ZMode::Frozen);
  const Distance d = distance(two, alone);
  EXPECT_LT(d.losses, 1e-10);
  EXPECT_LT(d.state, 1e-10);
  EXPECT_NEAR(two.zImage, alone.zImage, 1e-10 * alone.zImage);
  EXPECT_NEAR(two.zJigsaw, alone.zJigsaw, 1e-10 * alone.zJigsaw);
  EXPECT_GT(std::abs(alone.zImage / frozen.zImage - 1), 1e-3);  // the EMA moved Z
}

// Rank 0 of two, rank 1 being `peer` (a thread waiting on `release`): if joining fails, `release` is set and the peer
// joined before the failure is thrown (a thread left joinable ends the process).
std::shared_ptr<Communicator> joinBeside(std::thread& peer, std::promise<void>& release, const distributed::CommunicatorOptions& o) {
  try {
    return std::make_shared<Communicator>(o);
  } catch (...) {
    release.set_value();
    peer.join();
    throw;
  }
}

// A rank that goes away: the others' next collective fails with what happened, within the timeout.
TEST_F(Distributed, ARankThatStopsMakesTheOthersFailWithinTheTimeout) {
  const std::string file = pirl::test::freshRendezvousFile();
  // Rank 1 leaves only once rank 0 has joined too (leaving earlier can fail rank 0's own joining).
  std::promise<void> joined;
  std::thread peer([&, rank0Joined = joined.get_future()]() mutable {
    Communicator leaving(loopback(0, 1, 2, 5000, file));
    rank0Joined.wait();
  });
  const std::shared_ptr<Communicator> survivor = joinBeside(peer, joined, loopback(0, 0, 2, 5000, file));
  joined.set_value();
  peer.join();  // rank 1 joined the group, then its process group was destroyed
  at::Tensor t = at::ones({4});
  const auto start = std::chrono::steady_clock::now();
  try {
    survivor->allreduce(t, "the test's allreduce");
    FAIL() << "an allreduce without its peer returned";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 of 2 failed in the test's allreduce"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
}

// A rank that hangs (joined, never reaching the collective): the others fail at the timeout, c10d's own error told
// without its C++ backtrace (a user read 13 frames of it).
TEST_F(Distributed, ARankThatHangsMakesTheOthersFailAtTheTimeoutWithoutABacktrace) {
  const std::string file = pirl::test::freshRendezvousFile();
  std::promise<void> failed;  // rank 1 stays in the group until rank 0's allreduce has failed
  std::thread peer([&, rank0Failed = failed.get_future()]() mutable {
    Communicator hanging(loopback(0, 1, 2, 3000, file));
    rank0Failed.wait();
  });
  // 3 s: the timeout covers joining too, which a loaded CI machine (ctest's parallel processes) slows.
  const std::shared_ptr<Communicator> waiting = joinBeside(peer, failed, loopback(0, 0, 2, 3000, file));
  at::Tensor t = at::ones({4});
  std::string message = "no error";
  try {
    waiting->allreduce(t, "the test's allreduce");
  } catch (const c10::Error& e) {
    message = e.what_without_backtrace();
  }
  failed.set_value();
  peer.join();
  EXPECT_NE(message.find("rank 0 of 2 failed in the test's allreduce (another rank stopped, or did not reach it within 3000 ms)"),
            std::string::npos) << message;
  EXPECT_EQ(message.find("Exception raised from"), std::string::npos) << message;
}

// A rank whose batch lost unreadable images gathers fewer rows (of its indices and its embeddings alike):
// the others still get every row, in rank order.
TEST_F(Distributed, AllGatherTakesDifferentRowCountsInRankOrder) {
  std::vector<std::vector<at::Tensor>> gathered(3);
  onRanks(3, [&](int64_t rank, std::shared_ptr<Communicator> c) {
    const at::Tensor mine = at::full({rank + 1, 2}, static_cast<double>(rank), at::kDouble);  // 1, 2 and 3 rows
    gathered[rank] = c->allGather({mine, mine * 2}, "the test's all-gather");
    // Counts known beforehand (a step's, from its allreduce): the same rows, without their exchange.
    EXPECT_TRUE(at::equal(c->allGather({mine}, "the test's all-gather", {1, 2, 3})[0], gathered[rank][0]));
    EXPECT_THROW(c->allGather({mine}, "the test's all-gather", {1, 2}), c10::ValueError);  // refused before any collective
  });
  const at::Tensor expected = at::tensor({0.0, 1.0, 1.0, 2.0, 2.0, 2.0}, at::kDouble).unsqueeze(1).expand({6, 2});
  for (const auto& g : gathered) {
    EXPECT_TRUE(at::equal(g[0], expected));
    EXPECT_TRUE(at::equal(g[1], expected * 2));  // each tensor of a rank has that rank's row count
  }
}

// bankInit 'features' over ranks: each rank fills its own shard (here with its rank number); after the
// exchange every replica holds each shard as its rank filled it. Shards tile the bank in rank order, and a
// bank of fewer rows than ranks leaves some ranks an empty one.
TEST_F(Distributed, BankShardsTileTheBankAndReachEveryReplica) {
  for (const int64_t rows : {10, 2}) {
    std::vector<std::unique_ptr<train::TrainState>> states(3);
    for (int64_t rank = 0; rank < 3; ++rank) states[rank] = std::make_unique<train::TrainState>(pirl::testing::tinyTrainState(100 + rank, rows));
    std::vector<std::pair<int64_t, int64_t>> shards(3);
    onRanks(3, [&](int64_t rank, std::shared_ptr<Communicator> c) {
      states[rank]->distribute(c, /*syncBatchNorm=*/false);
      shards[rank] = states[rank]->bankShard();
      const auto [begin, end] = shards[rank];
      states[rank]->bank().rows().narrow(0, begin, end - begin).fill_(static_cast<double>(rank));
      states[rank]->shareBankShards();
    });
    at::Tensor owner = at::full({rows}, -1.0);
    int64_t next = 0;
    for (int64_t rank = 0; rank < 3; ++rank) {
      EXPECT_EQ(shards[rank].first, next) << rows << " rows, rank " << rank;
      EXPECT_LE(shards[rank].second - shards[rank].first, rows / 3 + 1);
      owner.narrow(0, shards[rank].first, shards[rank].second - shards[rank].first).fill_(static_cast<double>(rank));
      next = shards[rank].second;
    }
    EXPECT_EQ(next, rows);
    const at::Tensor expected = owner.unsqueeze(1).expand_as(states[0]->bank().rows());
    for (int64_t rank = 0; rank < 3; ++rank) EXPECT_TRUE(at::equal(states[rank]->bank().rows(), expected)) << rows << " rows, rank " << rank;
  }
}

// Runs join(rank) on `world` threads: what each rank failed with ("" when it joined). The groups joined are let go
// once every rank is done: one let go sooner closed connections a slower peer was still making (seen in CI).
std::vector<std::string> joinErrors(int64_t world, const std::function<std::shared_ptr<Communicator>(int64_t)>& join) {
  std::vector<std::string> errors(world);
  std::vector<std::shared_ptr<Communicator>> joined(world);
  std::vector<std::thread> threads;
  for (int64_t rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        joined[rank] = join(rank);
      } catch (const c10::Error& e) {
        errors[rank] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

// The ranks agree on their terms before the group forms: a rank that differs makes every rank fail, naming the term.
TEST_F(Distributed, RanksThatDifferInATermAreAllRefusedNamingIt) {
  for (const bool differ : {false, true}) {
    const std::string file = pirl::test::freshRendezvousFile();
    const auto errors = joinErrors(3, [&](int64_t rank) {
      auto o = loopback(0, rank, 3, 30000, file);
      o.terms = {{"config.seed", "7", "the same command"}, {"the data set's size", differ && rank == 2 ? "40" : "48", "the same data"}};
      return std::make_shared<Communicator>(o);
    });
    for (int64_t rank = 0; rank < 3; ++rank) {
      if (!differ) {
        EXPECT_EQ(errors[rank], "") << "rank " << rank;
        continue;
      }
      EXPECT_NE(errors[rank].find("distributed training: the ranks differ in the data set's size: 40 on rank 2, 48 on rank 0 (the same data)"),
                std::string::npos) << "rank " << rank << ": " << errors[rank];
    }
  }
}

// A rank started with a larger world than rank 0's is one rank 0 does not wait for: it judges itself against rank 0's
// terms and fails, while rank 0's world forms.
TEST_F(Distributed, ARankBeyondTheWorldOfRankZeroIsRefused) {
  const std::string file = pirl::test::freshRendezvousFile();
  const auto errors = joinErrors(3, [&](int64_t rank) {
    const int64_t world = rank == 2 ? 3 : 2;
    auto o = loopback(0, rank, world, 30000, file);
    o.terms = {{"the world size", std::to_string(world), "the same WORLD_SIZE"}};
    return std::make_shared<Communicator>(o);
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  EXPECT_NE(errors[2].find("distributed training: the ranks differ in the world size: 2 on rank 0, 3 on rank 2 (the same WORLD_SIZE)"),
            std::string::npos) << errors[2];
}

// A rank that cannot start tells the others where they meet: each fails when joining, with its reason, long
// before the timeout — rank 0 too, whose TCPStore the others must still reach.
TEST_F(Distributed, ARankThatCannotStartIsHeardByEveryRankWhenJoining) {
  for (const int64_t failing : {0, 1}) {
    const bool tcp = failing == 0;
    const int64_t port = tcp ? freePort() : 0;
    const std::string file = tcp ? "" : pirl::test::freshRendezvousFile();
    const auto start = std::chrono::steady_clock::now();
    const auto errors = joinErrors(3, [&](int64_t rank) {
      const auto o = loopback(port, rank, 3, 30000, file);
      if (rank == failing) {
        distributed::failToJoin(o, "no images in /data on this host");
        return std::shared_ptr<Communicator>();
      }
      return std::make_shared<Communicator>(o);
    });
    for (int64_t rank = 0; rank < 3; ++rank) {
      if (rank == failing) continue;
      EXPECT_NE(errors[rank].find("distributed training: rank " + std::to_string(failing) + " could not start: no images in /data on this host"),
                std::string::npos) << "rank " << rank << ": " << errors[rank];
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0) << (tcp ? "TCPStore" : "file");
  }
}

TEST_F(Distributed, BadOptionsAreRefused) {
  EXPECT_THROW(Communicator(loopback(freePort(), 2, 2)), c10::ValueError);
  EXPECT_THROW(Communicator(loopback(0, 0, 1)), c10::ValueError);
  EXPECT_THROW(Communicator(loopback(freePort(), 0, 1, 0)), c10::ValueError);
}

// Within one timeout, on a file rendezvous and on rank 0's TCPStore (which waited two: c10d's wait for its workers,
// which libtorch 1.13 ends silently, then the agreement's).
TEST_F(Distributed, ARankAloneFailsToJoinWithinTheTimeout) {
  for (const bool tcp : {false, true}) {
    const auto start = std::chrono::steady_clock::now();
    try {
      Communicator alone(loopback(tcp ? freePort() : 0, 0, 2, 3000, tcp ? "" : pirl::test::freshRendezvousFile()));
      FAIL() << "joined a group of 2 alone";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(tcp ? "rank 0 of 2 could not join the group at 127.0.0.1:" : "rank 0 of 2 could not join the group at /tmp/pirl-rendezvous-"),
                std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.5) << (tcp ? "TCPStore" : "file");
  }
}

// A socket listening on loopback that never answers (another program's port): its fd and port.
std::pair<int, int64_t> silentListener() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(listen(fd, 4), 0);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return {fd, ntohs(address.sin_port)};
}

// A rank other than 0 whose MASTER_PORT another program holds connects (the kernel queues it) and is never answered:
// it fails at the timeout (it waited for ever, on a reply c10d reads without one: 1.13's count-in), or on libtorch 2.x,
// whose reads of the rendezvous's first answers have no timeout, 2 s past it (deadline.h). Outside the Gloo fixture: on
// a GPU host whose libtorch (pip's 2.x, the one it tells of) has no Gloo headers, the rank joins for NCCL.
TEST(DistributedJoin, ARankWhoseMasterPortAnotherProgramHoldsFailsAtTheTimeout) {
  const bool nccl = !distributed::available() && distributed::ncclAvailable() && at::hasCUDA();
  if (!distributed::available() && !nccl) GTEST_SKIP() << "this pirl was built without c10d's Gloo headers, and NCCL or a GPU is missing";
  const auto [fd, port] = silentListener();
  auto options = loopback(port, 1, 2, 2000);
  if (nccl) options.device = "cuda:0";
  auto outcome = std::make_shared<std::promise<std::string>>();
  const auto start = std::chrono::steady_clock::now();
  std::thread([outcome, options] {
    try {
      Communicator joined(options);
      outcome->set_value("joined");
    } catch (const c10::Error& e) {
      outcome->set_value(e.what_without_backtrace());
    }
  }).detach();  // a hang would keep it: the socket's close below ends its read
  auto answer = outcome->get_future();
  const bool ended = answer.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close(fd);
  ASSERT_TRUE(ended) << "rank 1 still waiting 20 s into a timeout of 2 s";
  const std::string error = answer.get();
  std::cout << "libtorch " << TORCH_VERSION << ", " << options.device << ": failed in " << took << " s: " << error << "\n";
  EXPECT_NE(error.find("rank 1 of 2 could not join the group at 127.0.0.1:" + std::to_string(port)), std::string::npos) << error;
  EXPECT_LT(took, 2.0 + 2.0 + 3.0) << "the timeout, the deadline's 2 s more, and a margin";
}

// Work given up on at its deadline: the error, in time, and its thread, left blocked, ends when what it waits for comes.
TEST(Deadline, GivesUpOnWorkThatOutlastsIt) {
  std::promise<void> release;
  auto ended = std::make_shared<std::promise<void>>();
  const auto start = std::chrono::steady_clock::now();
  try {
    distributed::withinDeadline([gate = release.get_future().share(), ended] {
      gate.wait();
      ended->set_value();
      return 1;
    }, std::chrono::milliseconds(300), "late");
    FAIL() << "returned before its work ended";
  } catch (const c10::Error& e) {
    EXPECT_EQ(std::string(e.what_without_backtrace()), "late");
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(took, 0.3);
  EXPECT_LT(took, 5.0);
  release.set_value();
  EXPECT_EQ(ended->get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

// Within its deadline the work's result, or what it threw, as it threw it.
TEST(Deadline, GivesTheWorksResultOrError) {
  EXPECT_EQ(distributed::withinDeadline([] { return std::string("joined"); }, std::chrono::seconds(5), "late"), "joined");
  EXPECT_THROW(distributed::withinDeadline([]() -> int { throw std::invalid_argument("bad rank"); }, std::chrono::seconds(5), "late"),
               std::invalid_argument);
}

// Two processes given one RANK (a launcher's mistake): the second to claim it fails at once, saying so; the world of
// the others forms.
TEST_F(Distributed, TwoRanksOfOneNumberAreToldWhenJoining) {
  const std::string file = pirl::test::freshRendezvousFile();
  const auto start = std::chrono::steady_clock::now();
  const auto errors = joinErrors(3, [&](int64_t i) { return std::make_shared<Communicator>(loopback(0, i == 2 ? 1 : i, 2, 30000, file)); });
  EXPECT_EQ(errors[0], "");
  const std::string taken = "distributed training: RANK 1 is claimed by another process too: each of the 2 processes needs its own RANK in [0, 2) (WORLD_SIZE)";
  EXPECT_EQ((errors[1].find(taken) != std::string::npos) + (errors[2].find(taken) != std::string::npos), 1) << errors[1] << "\n" << errors[2];
  EXPECT_EQ(errors[1].empty() + errors[2].empty(), 1);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20.0);
}

// A launcher's store (torchrun's agent serves it) outlives a group: a second group joined at it, one after the other in
// the same processes, has keys of its own (it read the first's verdict and claims, "RANK 0 is claimed … too").
TEST_F(Distributed, GroupsOneAfterAnotherAtALaunchersStoreEachJoin) {
  c10d::TCPStoreOptions agent;
  agent.port = 0;
  agent.isServer = true;
  agent.waitWorkers = false;
  agent.timeout = std::chrono::milliseconds(30000);
  const auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", agent);
  for (int group = 0; group < 2; ++group) {
    const auto errors = joinErrors(2, [&](int64_t rank) {
      auto o = loopback(store->getPort(), rank, 2, 30000);
      o.launcherStore = true;
      return std::make_shared<Communicator>(o);
    });
    EXPECT_EQ(errors, std::vector<std::string>({"", ""})) << "group " << group;
  }
}

// A MASTER_PORT taken by another program fails rank 0 at once, saying so (it was said as a rendezvous not reached within
// the timeout, after c10d's log lines).
TEST_F(Distributed, APortInUseIsSaidAtOnce) {
  const auto [fd, port] = silentListener();
  const auto start = std::chrono::steady_clock::now();
  try {
    Communicator taken(loopback(port, 0, 2, 60000));
    FAIL() << "served a rendezvous on a port in use";
  } catch (const c10::Error& e) {
    EXPECT_EQ(std::string(e.what_without_backtrace()).rfind("distributed training: rank 0 cannot serve the rendezvous: MASTER_PORT " +
                                                               std::to_string(port) + " is in use on this host (another run, or another program): give another MASTER_PORT", 0),
              0u)
        << e.what_without_backtrace();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
  close(fd);
}

}  // namespace
