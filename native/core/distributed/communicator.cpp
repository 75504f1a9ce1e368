#include "communicator.h"

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// Either process group is enough for the ranks it serves (a pip torch may ship NCCL's headers without Gloo's).
#define PIRL_WITH_C10D (PIRL_WITH_GLOO || PIRL_WITH_NCCL)
#if PIRL_WITH_C10D
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if PIRL_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if PIRL_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "../error_message.h"
#include "deadline.h"

namespace pirl::distributed {

bool available() { return PIRL_WITH_GLOO; }
bool ncclAvailable() { return PIRL_WITH_NCCL; }

#if PIRL_WITH_C10D

struct Communicator::Group {
  c10::intrusive_ptr<c10d::Store> store;
#if PIRL_WITH_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#if PIRL_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  // Runs a collective on this group's process group (one of c10d's, with one API).
  template <typename Collective>
  c10::intrusive_ptr<c10d::Work> run(Collective&& collective) {
#if PIRL_WITH_NCCL
    if (nccl) return collective(*nccl);
#endif
#if PIRL_WITH_GLOO
    return collective(*gloo);
#else
    TORCH_CHECK(false, "no process group: the constructor refuses CPU ranks without Gloo");
#endif
  }
  // Gloo's collectives are awaited on the host within the timeout; NCCL's on the device (the current stream
  // waits for them): its wait with a timeout would poll the host until the collective ends, and its watchdog
  // enforces the group's timeout instead.
  void wait(c10d::Work& work, std::chrono::milliseconds timeout) {
#if PIRL_WITH_NCCL
    if (nccl) {
      work.wait();
      return;
    }
#endif
    work.wait(timeout);
  }
};

class Communicator::Pending {
 public:
  explicit Pending(c10::intrusive_ptr<c10d::Work> work) : work(std::move(work)) {}
  c10::intrusive_ptr<c10d::Work> work;
};

namespace {

// torch >= 2.3's TCPStore has a libuv server (its default from 2.4), which a libtorch built without libuv
// (Debian's) refuses to start: it is used where the libtorch has it, and USE_LIBUV=0 turns it off, as for torchrun.
template <typename Options, typename = void>
struct HasLibUV : std::false_type {};
template <typename Options>
struct HasLibUV<Options, std::void_t<decltype(std::declval<Options&>().useLibUV)>> : std::true_type {};

// A template so that the libuv branch is not compiled where TCPStoreOptions has no useLibUV (torch < 2.3).
template <typename Options>
c10::intrusive_ptr<c10d::Store> tcpStore(const std::string& host, Options options) {
  if constexpr (HasLibUV<Options>::value) {
    const char* env = std::getenv("USE_LIBUV");
    if (env != nullptr && std::string(env) == "0") options.useLibUV = false;
    if (options.useLibUV) {
      try {
        return c10::make_intrusive<c10d::TCPStore>(host, options);
      } catch (const std::exception& e) {
        if (std::string(e.what()).find("without libuv") == std::string::npos) throw;
        options.useLibUV = false;
      }
    }
  }
  return c10::make_intrusive<c10d::TCPStore>(host, options);
}

#if PIRL_WITH_NCCL
// ProcessGroupNCCL::shutdown (torch >= 2.3): ends the communicators cleanly; a group destroyed without it
// warns and aborts them.
template <typename Group, typename = void>
struct HasShutdown : std::false_type {};
template <typename Group>
struct HasShutdown<Group, std::void_t<decltype(std::declval<Group&>().shutdown())>> : std::true_type {};

template <typename Group>
void shutdownGroup(Group& group) {
  if constexpr (HasShutdown<Group>::value) {
    try {
      group.shutdown();
    } catch (const std::exception&) {  // a destructor's work: the group is going away either way
    }
  }
}
#endif

#if PIRL_WITH_GLOO
// "eth0,eth1" → {"eth0", "eth1"} (GLOO_SOCKET_IFNAME's form); "" → {}.
std::vector<std::string> splitList(const std::string& list) {
  std::vector<std::string> items;
  for (size_t start = 0; start < list.size();) {
    const size_t end = std::min(list.find(',', start), list.size());
    if (end > start) items.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return items;
}
#endif

std::string boundTo(const CommunicatorOptions& o) {
  if (!o.bindInterface.empty()) return "interface " + o.bindInterface;
  return o.bindAddress.empty() ? std::string("this host's name") : o.bindAddress;
}

// c10d reports a dead peer or a timeout as a c10::Error deep in Gloo: say which collective, and what it means.
[[noreturn]] void fail(const Communicator& c, const char* what, const std::exception& e) {
  TORCH_CHECK(false, "distributed training: rank ", c.rank(), " of ", c.worldSize(), " failed in ", what,
              " (another rank stopped, or did not reach it within ", c.timeout().count(), " ms): ", messageOf(e));
}

// How a rank 0 whose MASTER_PORT is taken fails: before any wait, said as it is.
constexpr const char* kPortInUse = "distributed training: rank 0 cannot serve the rendezvous: MASTER_PORT ";

// How many groups this process's rank `o.rank` has joined at a launcher's store before: it outlives a group (two
// Trainers, one after the other, in one torchrun worker), and each group's keys must be its own (a store of pirl's
// own ends with its group). Keyed by rank too: the tests join a group's ranks as threads of one process.
int64_t joinsBefore(const CommunicatorOptions& o) {
  static std::mutex mutex;
  static std::map<std::string, int64_t> joins;
  const std::lock_guard<std::mutex> lock(mutex);
  return joins[o.masterAddr + ":" + std::to_string(o.masterPort) + "#" + std::to_string(o.rank)]++;
}

// The rendezvous: c10d's store where the ranks meet (keys under "pirl/", beside a launcher's own: "pirl/<join>/").
c10::intrusive_ptr<c10d::Store> openStore(const CommunicatorOptions& o, std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<c10d::Store> store;
  if (!o.storeFile.empty()) {
    store = c10::make_intrusive<c10d::FileStore>(o.storeFile, static_cast<int>(o.worldSize));
    store->setTimeout(timeout);
  } else {
    c10d::TCPStoreOptions tcp;
    tcp.port = static_cast<uint16_t>(o.masterPort);
    tcp.isServer = o.rank == 0 && !o.launcherStore;
    tcp.numWorkers = static_cast<size_t>(o.worldSize);
    // agree() waits for every rank, within one timeout. c10d's own wait for the workers added a second on rank 0
    // (libtorch 1.13's gives up silently), and a client's count-in reads a reply with no timeout: a MASTER_PORT held
    // by another program hung every rank but 0 for ever.
    tcp.waitWorkers = false;
    tcp.timeout = timeout;
    try {
      store = tcpStore<c10d::TCPStoreOptions>(o.masterAddr, tcp);
    } catch (const std::exception& e) {
      // Said as what it is: a port taken fails at once, and was said as a rendezvous not reached within the timeout.
      // c10d's words for it: "errno: 98 - Address already in use" (libtorch 1.13), "EADDRINUSE" (its libuv backend, torch 2.4+).
      std::string why = messageOf(e);
      std::transform(why.begin(), why.end(), why.begin(), [](unsigned char c) { return std::tolower(c); });
      const bool taken = why.find("address already in use") != std::string::npos || why.find("eaddrinuse") != std::string::npos;
      TORCH_CHECK(!tcp.isServer || !taken, kPortInUse, o.masterPort,
                  " is in use on this host (another run, or another program): give another MASTER_PORT");
      throw;
    }
    // The launcher's store outlives a restart of the ranks: each restart's keys apart (torch's rendezvous does this).
    if (o.launcherStore) {
      store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(o.restartCount), store);
    }
  }
  return c10::make_intrusive<c10d::PrefixStore>(o.launcherStore ? "pirl/" + std::to_string(joinsBefore(o)) : "pirl", store);
}

// A rank's entry in the agreement: its terms' values, each ended by '\0', or kCannotStart and why.
constexpr char kCannotStart = '\x01';
bool cannotStart(const std::string& entry) { return !entry.empty() && entry[0] == kCannotStart; }

std::string entryOf(const std::vector<Term>& terms) {
  std::string entry;
  for (const auto& t : terms) entry += t.value + '\0';
  return entry;
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// The first of `terms` whose value `entry` does not share: its index and the entry's value; -1 when they agree, and
// terms.size() when the entry holds other terms (another pirl).
std::pair<int64_t, std::string> firstDifference(const std::vector<Term>& terms, const std::string& entry) {
  size_t begin = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    const size_t end = entry.find('\0', begin);
    if (end == std::string::npos) return {static_cast<int64_t>(terms.size()), ""};
    std::string theirs = entry.substr(begin, end - begin);
    if (theirs != terms[i].value) return {static_cast<int64_t>(i), std::move(theirs)};
    begin = end + 1;
  }
  if (begin != entry.size()) return {static_cast<int64_t>(terms.size()), ""};
  return {-1, ""};
}

// Why the entries of rank `mine` (its `terms`) and rank `other` (`entry`) keep the run from starting ("" when they agree).
std::string judge(const std::vector<Term>& terms, int64_t mine, int64_t other, const std::string& entry) {
  const auto rank = [](int64_t r) { return "rank " + std::to_string(r); };
  if (cannotStart(entry)) return rank(other) + " could not start: " + entry.substr(1);
  const auto [i, theirs] = firstDifference(terms, entry);
  if (i < 0) return "";
  if (i == static_cast<int64_t>(terms.size())) {
    return rank(other) + " brought other terms to agree on than " + rank(mine) + " (every rank must run the same pirl)";
  }
  const Term& t = terms[i];
  return "the ranks differ in " + t.name + ": " + theirs + " on " + rank(other) + ", " + t.value + " on " + rank(mine) + " (" + t.hint + ")";
}

// The agreement, through the store: every rank posts its entry; rank 0 reads them in rank order and posts the
// verdict ("" or why the run cannot start) with its own entry, which every rank reads — a rank rank 0 did not
// read (beyond its world size) then judges itself. Rank 0 keeps the store (its TCPStore's server; a FileStore
// ends with its last user) until every rank has said it heard. Every read waits until `until`, the join's one deadline
// (c10d's reads would each take a timeout of their own).
std::string agree(c10d::Store& store, const CommunicatorOptions& o, const std::string& entry,
                  std::chrono::steady_clock::time_point until) {
  const auto waitFor = [&](const std::vector<std::string>& keys) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    store.wait(keys, std::max(left, std::chrono::milliseconds(1)));  // c10d reads 0 as no timeout
  };
  const auto read = [&](const std::string& key) {
    waitFor({key});
    return text(store.get(key));
  };
  // Two processes given one RANK (a launcher's mistake): the second to claim it is told at once, before it posts its
  // entry (it waited for Gloo's connection timeout, several times the group's, and was told nothing of the cause). A
  // rank other than 0 claims once rank 0 has opened the join: a wait within the timeout, where add's own reply has none.
  if (o.rank == 0) {
    store.set("join/open", std::vector<uint8_t>{});
  } else {
    waitFor({"join/open"});
  }
  if (store.add("join/claimed/" + std::to_string(o.rank), 1) != 1) {
    return "RANK " + std::to_string(o.rank) + " is claimed by another process too: each of the " + std::to_string(o.worldSize) +
           " processes needs its own RANK in [0, " + std::to_string(o.worldSize) + ") (WORLD_SIZE)";
  }
  if (o.rank != 0) {
    store.set("join/entry/" + std::to_string(o.rank), bytes(entry));
    std::string verdict = read("join/verdict");
    if (verdict.empty() && !cannotStart(entry)) verdict = judge(o.terms, o.rank, 0, read("join/entry/0"));
    store.set("join/heard/" + std::to_string(o.rank), std::vector<uint8_t>{});
    return verdict;
  }
  std::string verdict = judge(o.terms, 0, 0, entry);
  std::vector<std::string> heard;
  for (int64_t r = 1; r < o.worldSize; ++r) {
    if (verdict.empty()) verdict = judge(o.terms, 0, r, read("join/entry/" + std::to_string(r)));
    heard.push_back("join/heard/" + std::to_string(r));
  }
  store.set("join/entry/0", bytes(entry));
  store.set("join/verdict", bytes(verdict));
  if (!heard.empty()) waitFor(heard);
  return verdict;
}

// How much later than the join's timeout a rendezvous still unanswered is given up on (deadline.h).
constexpr std::chrono::milliseconds kUnanswered{2000};

// The rendezvous, the join's first two steps: the store reached and the agreement, within one timeout in all. The
// store and the verdict.
std::pair<c10::intrusive_ptr<c10d::Store>, std::string> rendezvous(const CommunicatorOptions& o, const std::string& entry) {
  const auto timeout = std::chrono::milliseconds(o.timeoutMs);
  return withinDeadline(
      [o, entry, timeout] {
        const auto until = std::chrono::steady_clock::now() + timeout;
        auto store = openStore(o, timeout);
        std::string verdict = agree(*store, o, entry, until);
        return std::make_pair(std::move(store), std::move(verdict));
      },
      timeout + kUnanswered,
      o.storeFile.empty() ? "no answer " + std::to_string(kUnanswered.count()) + " ms past the timeout: does another program, "
                            "not a rendezvous (a TCPStore), hold MASTER_PORT " + std::to_string(o.masterPort) + "?"
                          : "the rendezvous file " + o.storeFile + " still unanswered " + std::to_string(kUnanswered.count()) +
                            " ms past the timeout");
}

void checkOptions(const CommunicatorOptions& o, const c10::Device& device) {
  TORCH_CHECK_VALUE(o.worldSize >= 1 && o.rank >= 0 && o.rank < o.worldSize, "rank must be in [0, worldSize = ",
                    o.worldSize, "), got ", o.rank);
  TORCH_CHECK_VALUE(!o.storeFile.empty() || (o.masterPort > 0 && o.masterPort < 65536),
                    "masterPort must be in [1, 65535], got ", o.masterPort);
  TORCH_CHECK_VALUE(o.timeoutMs > 0, "timeoutMs must be > 0, got ", o.timeoutMs);
  TORCH_CHECK_VALUE(device.is_cpu() || (device.is_cuda() && device.has_index()),
                    "device must be 'cpu' or 'cuda:N' (this rank's GPU), got '", o.device, "'");
}

}  // namespace

void failToJoin(const CommunicatorOptions& o, const std::string& why) {
  try {
    checkOptions(o, c10::Device(o.device));
    rendezvous(o, kCannotStart + why);
  } catch (const std::exception&) {  // no peer to tell (or it did not come within the timeout): it fails either way
  }
}

Communicator::Communicator(const CommunicatorOptions& o)
    : options_(o), device_(o.device), group_(std::make_unique<Group>()) {
  checkOptions(o, device_);
  TORCH_CHECK_VALUE(device_.is_cpu() || PIRL_WITH_NCCL,
                    "data-parallel ranks on GPUs need NCCL, and this pirl was built without it (a CUDA libtorch with "
                    "NCCL and nccl.h, e.g. pip's torch with nvidia-nccl, then: node scripts/build.js)");
  TORCH_CHECK_VALUE(device_.is_cuda() || PIRL_WITH_GLOO,
                    "data-parallel ranks on the CPU need Gloo, and this pirl was built without Gloo's headers "
                    "(Debian/Ubuntu: apt-get install libgloo-dev, then rebuild: node scripts/build.js)");
  // c10d's errors (a peer that never came, a port taken) say little of where: each step of joining says it.
  const auto joining = [&](auto&& step) {
    try {
      return step();
    } catch (const std::exception& e) {
      if (messageOf(e).rfind(kPortInUse, 0) == 0) throw;
      TORCH_CHECK(false, "distributed training: rank ", o.rank, " of ", o.worldSize, " could not join the group at ",
                  o.storeFile.empty() ? o.masterAddr + ":" + std::to_string(o.masterPort) : o.storeFile, " (",
                  device_.is_cuda() ? "NCCL on " + o.device : "Gloo bound to " + boundTo(o),
                  ") within ", o.timeoutMs, " ms: ", messageOf(e));
    }
  };
  std::string verdict;
  std::tie(group_->store, verdict) = joining([&] { return rendezvous(o, entryOf(o.terms)); });
  TORCH_CHECK(verdict.empty(), "distributed training: ", verdict);
  joining([&] {
#if PIRL_WITH_NCCL
    if (device_.is_cuda()) {
      c10::cuda::set_device(device_.index());  // NCCL's communicator belongs to this rank's GPU
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = timeout();
      group_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(group_->store, static_cast<int>(o.rank),
                                                                 static_cast<int>(o.worldSize), nccl);
    }
#endif
#if PIRL_WITH_GLOO
    if (device_.is_cpu()) {
      auto gloo = c10d::ProcessGroupGloo::Options::create(timeout());
      for (const auto& interface : splitList(o.bindInterface)) {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
      }
      if (gloo->devices.empty()) {
        gloo->devices.push_back(o.bindAddress.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                                      : c10d::ProcessGroupGloo::createDeviceForHostname(o.bindAddress));
      }
      gloo->threads = 2;  // collectives in flight at once (as torch.distributed): a bucket while the next fills
      group_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, static_cast<int>(o.rank),
                                                                 static_cast<int>(o.worldSize), gloo);
    }
#endif
  });
}

Communicator::~Communicator() {
#if PIRL_WITH_NCCL
  if (group_ && group_->nccl) shutdownGroup(*group_->nccl);
#endif
}

std::shared_ptr<Communicator::Pending> Communicator::allreduceAsync(at::Tensor& tensor) {
  std::vector<at::Tensor> tensors{tensor};
  try {
    return std::make_shared<Pending>(group_->run([&](auto& pg) { return pg.allreduce(tensors); }));
  } catch (const std::exception& e) {
    fail(*this, "allreduce", e);
  }
}

void Communicator::wait(const std::shared_ptr<Pending>& pending, const char* what) {
  try {
    group_->wait(*pending->work, timeout());
  } catch (const std::exception& e) {
    fail(*this, what, e);
  }
}

void Communicator::allreduce(at::Tensor& tensor, const char* what) { wait(allreduceAsync(tensor), what); }

void Communicator::broadcast(const std::vector<at::Tensor>& tensors, const char* what, int64_t root) {
  TORCH_CHECK_VALUE(root >= 0 && root < options_.worldSize, "broadcast's root must be a rank in [0, ", options_.worldSize, "), got ", root);
  // One flat message per dtype (float weights, int64 BatchNorm counters), in the tensors' order.
  c10::NoGradGuard noGrad;
  std::map<at::ScalarType, std::vector<at::Tensor>> byType;
  for (const auto& t : tensors) byType[t.scalar_type()].push_back(t);
  for (auto& [type, group] : byType) {
    std::vector<at::Tensor> parts;
    for (const auto& t : group) parts.push_back(t.detach().reshape(-1));
    std::vector<at::Tensor> flat{at::cat(parts)};
    c10d::BroadcastOptions from;
    from.rootRank = static_cast<int>(root);
    try {
      group_->wait(*group_->run([&](auto& pg) { return pg.broadcast(flat, from); }), timeout());
    } catch (const std::exception& e) {
      fail(*this, what, e);
    }
    int64_t offset = 0;
    for (const auto& t : group) {
      t.copy_(flat[0].narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

std::vector<at::Tensor> Communicator::allGather(const std::vector<at::Tensor>& tensors, const char* what,
                                                const std::vector<int64_t>& rowCounts) {
  // Gloo's allgather wants one shape on every rank: the row counts first (once for all the tensors, unless
  // the caller knows them), then each tensor's rows padded to the most.
  const auto gather = [&](const at::Tensor& t) {
    std::vector<at::Tensor> input{t.contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int64_t r = 0; r < options_.worldSize; ++r) output[0].push_back(at::empty_like(input[0]));
    try {
      group_->wait(*group_->run([&](auto& pg) { return pg.allgather(output, input); }), timeout());
    } catch (const std::exception& e) {
      fail(*this, what, e);
    }
    return output[0];
  };
  const int64_t rows = tensors.empty() ? 0 : tensors[0].size(0);
  for (const auto& t : tensors) TORCH_CHECK_VALUE(t.size(0) == rows, "allGather's tensors must have one row count");
  std::vector<int64_t> counts = rowCounts;
  if (counts.empty()) {
    const at::Tensor gathered = at::cat(gather(at::full({1}, rows, at::TensorOptions(at::kLong).device(device_)))).cpu();
    counts.assign(gathered.data_ptr<int64_t>(), gathered.data_ptr<int64_t>() + gathered.numel());
  }
  TORCH_CHECK_VALUE(static_cast<int64_t>(counts.size()) == options_.worldSize && counts[options_.rank] == rows,
                    "allGather's rowCounts must hold every rank's row count, this rank's ", rows, ", got ", counts);
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) {
    std::vector<int64_t> padded = t.sizes().vec();
    padded[0] = most;
    at::Tensor input = at::zeros(padded, t.options());
    input.narrow(0, 0, rows).copy_(t);
    std::vector<at::Tensor> parts = gather(input);
    for (size_t r = 0; r < parts.size(); ++r) parts[r] = parts[r].narrow(0, 0, counts[r]);
    out.push_back(at::cat(parts, 0));
  }
  return out;
}

#else

struct Communicator::Group {};
class Communicator::Pending {};

void failToJoin(const CommunicatorOptions&, const std::string&) {}

Communicator::Communicator(const CommunicatorOptions& o) : options_(o), device_(at::kCPU) {
  TORCH_CHECK(false, "distributed training needs c10d with Gloo (CPU ranks) or NCCL (GPU ranks): pirl was built "
              "without either's headers (Debian/Ubuntu: apt-get install libgloo-dev, then rebuild: node scripts/build.js)");
}
Communicator::~Communicator() = default;
std::shared_ptr<Communicator::Pending> Communicator::allreduceAsync(at::Tensor&) { return nullptr; }
void Communicator::wait(const std::shared_ptr<Pending>&, const char*) {}
void Communicator::allreduce(at::Tensor&, const char*) {}
void Communicator::broadcast(const std::vector<at::Tensor>&, const char*, int64_t) {}
std::vector<at::Tensor> Communicator::allGather(const std::vector<at::Tensor>& tensors, const char*, const std::vector<int64_t>&) {
  return tensors;
}

#endif

}  // namespace pirl::distributed
