// Data-parallel training's collectives (docs/distributed.md) on PyTorch's c10d: a rendezvous (a file
// for the ranks of one host, or a TCPStore at the master's address across hosts) and a process group:
// Gloo on the CPU, bound to an explicit address so that nothing leaves the interface the user chose, or
// NCCL for ranks on GPUs (when pirl was built against a CUDA libtorch with NCCL).
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace pirl::distributed {

// One thing every rank of a run must agree on before the group forms (an option, the data set's size, the
// step it starts from): its name, this rank's value, and what the ranks must do when they differ.
struct Term {
  std::string name, value, hint;
};

// Set by the caller (lib/train/rendezvous.ts, from the options distributedFromEnv reads off torchrun's environment);
// the two defaults below are a store of pirl's own, for native callers (tests) that leave them out.
struct CommunicatorOptions {
  std::string storeFile;    // a fresh file every rank of one host can reach (nothing listens on the network), or
  std::string masterAddr;   // "": a TCPStore at masterAddr:masterPort, served by rank 0 (torchrun's rendezvous)
  int64_t masterPort;
  int64_t rank;
  int64_t worldSize;
  std::string bindAddress;  // the address Gloo's sockets bind to; "" = this host's name (c10d's default)
  int64_t timeoutMs;        // a collective, or the rendezvous, that takes longer fails
  std::string device;       // where the tensors of the collectives live: "cpu" (Gloo) or "cuda:N" (NCCL, this rank's GPU)
  std::string bindInterface;  // instead of bindAddress: Gloo's network interfaces, comma-separated (GLOO_SOCKET_IFNAME)
  bool launcherStore = false;  // the TCPStore is the launcher's (torchrun's agent serves it): every rank a client,
  int64_t restartCount = 0;    // its keys under the launcher's restart (TORCHELASTIC_RESTART_COUNT), as torch does
  std::vector<Term> terms;     // compared with rank 0's when joining: ranks that differ all fail, naming the first term
};

// For a rank that cannot start (bad input, a file missing on its host) while its peers set out to join: posts
// `why` where they meet, so that every rank fails when joining, saying so, instead of waiting out the
// timeout. Returns once every rank has heard (or the timeout has passed); never throws: the caller's own
// error is the one to report.
void failToJoin(const CommunicatorOptions& options, const std::string& why);

// True when this libtorch was built with c10d and pirl was compiled against Gloo's headers.
bool available();
// True when pirl was compiled against c10d's ProcessGroupNCCL (a CUDA libtorch with NCCL, nccl.h found).
bool ncclAvailable();

class Communicator {
 public:
  // Joins the group: the rendezvous, the agreement on options.terms (a c10::Error when the ranks differ,
  // or one of them could not start), then the process group.
  explicit Communicator(const CommunicatorOptions& options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int64_t rank() const { return options_.rank; }
  int64_t worldSize() const { return options_.worldSize; }
  std::chrono::milliseconds timeout() const { return std::chrono::milliseconds(options_.timeoutMs); }
  // Where the collectives' tensors must be: the CPU (Gloo) or this rank's GPU (NCCL).
  c10::Device device() const { return device_; }

  // Sum over ranks, in place; started now, finished by wait(). Collectives must be started in the
  // same order on every rank.
  class Pending;  // a collective under way
  std::shared_ptr<Pending> allreduceAsync(at::Tensor& tensor);
  void wait(const std::shared_ptr<Pending>& pending, const char* what);
  void allreduce(at::Tensor& tensor, const char* what);
  // Rank `root`'s values of `tensors` on every rank, in place (one flat message per dtype).
  void broadcast(const std::vector<at::Tensor>& tensors, const char* what, int64_t root = 0);
  // Every rank's rows of each of `tensors`, concatenated along dim 0 in rank order. A rank's tensors have
  // one row count, which may differ between ranks (a batch with unreadable images left out): `rowCounts`
  // gives every rank's where known (no exchange of them, no host read), else they are gathered first.
  std::vector<at::Tensor> allGather(const std::vector<at::Tensor>& tensors, const char* what,
                                    const std::vector<int64_t>& rowCounts = {});

 private:
  struct Group;  // c10d's store and process group, kept out of this header (Gloo's headers are optional)
  CommunicatorOptions options_;
  c10::Device device_;
  std::unique_ptr<Group> group_;
};

}  // namespace pirl::distributed
