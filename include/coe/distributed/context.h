#pragma once
// DistContext: one process's view of a data-parallel job (docs/distributed.md).
//
// Rendezvous through c10d's TCPStore (rank 0 serves it at MASTER_ADDR:MASTER_PORT), then a c10d
// process group: Gloo for CPU tensors, NCCL for CUDA (device cuda:<local rank>). A default
// constructed DistContext is the single process: rank 0 of 1, and every collective is the identity
// without touching c10d, so single-process code paths call the same functions.
//
// Failures never hang: every collective and store wait is bounded by DistOptions::timeout_s, and a
// heartbeat thread (its own store connection) publishes this rank's liveness and watches the next
// rank's. A collective that fails (a peer's socket closed, or the timeout) is diagnosed from the
// heartbeats and rethrown as DistError naming the rank at fault, e.g.
//   "gradient all-reduce (bucket 1/3) failed: rank 1 stopped answering (dead or hung: no heartbeat for 2.5 s) (...)"
// and the message is posted in the store, where every other rank's heartbeat thread picks it up
// and exits its process (status 1) with the same line. The watchdog also ends the job when a rank
// stops heartbeating for timeout_s while nobody is inside a collective (a rank waiting for rank 0's
// checkpoint, or an NCCL wait that only its own watchdog would end).
//
// The c10d headers stay out of this header (they need USE_C10D_* macros and Gloo's headers).
#include "coe/distributed/env.h"
#include "coe/util/error.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace coe {

// A collective or rendezvous failure; the message is one line naming the rank at fault.
class DistError : public Error {
 public:
  using Error::Error;
};

struct DistOptions {
  // Rendezvous, each collective, each store operation; also how long a rank may go without a
  // heartbeat before the watchdog ends the job. trainer.dist_timeout_s.
  double timeout_s = 300;
  // The device of this rank's tensors: CPU selects Gloo, CUDA selects NCCL (whose device must
  // already be the one the model lives on, cuda:<local rank>).
  c10::Device device{c10::kCPU};
  // Heartbeat period; a dead peer is recognised after a few missed beats.
  double heartbeat_s = 0.5;
  // The watchdog ends this process (stderr line "error: ...", exit status 1) when a peer failed
  // and this rank might be blocked where no exception can reach it. Off: failures only surface as
  // DistError from the next collective (for in-process tests).
  bool exit_on_peer_failure = true;
};

// An all-reduce in flight (see all_reduce_sum_async). wait() throws DistError on failure.
class PendingOp {
 public:
  virtual ~PendingOp() = default;
  virtual void wait() = 0;
};

class DistContext {
 public:
  // The single process.
  DistContext();
  // Joins the job described by `env` (a single-process env gives the single process). Throws
  // DistError: the store unreachable / port taken, a rank missing after timeout_s, two processes
  // with the same rank, no Gloo/NCCL in this build.
  DistContext(const DistEnv& env, const DistOptions& options);
  // Without finish(): posts that this rank exits with an error, so peers stop waiting for it.
  ~DistContext();
  DistContext(const DistContext&) = delete;
  DistContext& operator=(const DistContext&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  bool distributed() const { return env_.world_size > 1; }
  const DistEnv& env() const { return env_; }
  const DistOptions& options() const { return options_; }
  // "gloo", "nccl", or "none" for the single process.
  std::string backend() const;

  // A process group of some of the job's ranks, for collectives among them only (expert
  // parallelism, ZeRO): `ranks` are ascending global ranks including this one; every member calls
  // it with the same name and ranks, in the same order as its other group() calls, and the other
  // ranks do not. In the group, rank() is this process's position in `ranks` and world_size()
  // their count; a group of one is not distributed (its collectives are the identity). Its
  // collectives are ordered among themselves, independently of the job's and of other groups'
  // (each group has its own communicator). Failures are diagnosed as the job's, naming global
  // ranks. Only collectives are allowed on a group (not broadcast_string, main_first, finish);
  // it must not outlive the context it came from. Callable on a group too.
  std::unique_ptr<DistContext> group(const std::string& name, const std::vector<int>& ranks);
  // The job's rank of this context's rank q (q itself for the job's context).
  int global_rank(int q) const;

  // In-place sum over ranks of a dense tensor on options().device (any dtype the backend supports).
  void all_reduce_sum(at::Tensor& tensor, const std::string& what = "all-reduce");
  // Launches the sum and returns at once; the tensor must not be touched until wait() returns.
  std::unique_ptr<PendingOp> all_reduce_sum_async(at::Tensor tensor, const std::string& what);
  // Host values summed over ranks (float64 / int64 on the wire: exact for counts).
  std::vector<int64_t> all_reduce_sum(const std::vector<int64_t>& values, const std::string& what = "count all-reduce");
  std::vector<double> all_reduce_sum(const std::vector<double>& values, const std::string& what = "all-reduce");
  // In-place: every rank ends with `root`'s tensor.
  void broadcast(at::Tensor& tensor, int root = 0, const std::string& what = "broadcast");
  // Broadcasts a list of tensors (parameters) from `root` through flat buckets of ~bucket_mb MB.
  void broadcast_tensors(const std::vector<at::Tensor>& tensors, int root = 0, double bucket_mb = 25,
                         const std::string& what = "parameter broadcast");
  // Whether every rank holds bit-identical `tensors` (a float64 checksum per tensor, compared with
  // rank 0's); returns the index of the first differing tensor, or -1.
  int64_t first_mismatch(const std::vector<at::Tensor>& tensors, const std::string& what = "parameter check");
  void barrier(const std::string& what = "barrier");

  // Variable-size all-to-all along dim 0: rows [sum(send_rows[:q]), + send_rows[q]) of `input` go
  // to rank q; the result holds sum(recv_rows) rows, recv_rows[q] of them from rank q, in rank
  // order. send_rows / recv_rows have world_size() entries; recv_rows[q] must equal rank q's
  // send_rows[this rank] (exchange the counts first, e.g. with all_to_all_counts).
  at::Tensor all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& recv_rows, const std::string& what = "all-to-all");
  // counts[q] goes to rank q; returns what each rank q sent to this one.
  std::vector<int64_t> all_to_all_counts(const std::vector<int64_t>& counts,
                                         const std::string& what = "count all-to-all");
  // Every rank's `input` (the same shape and dtype everywhere), stacked: [world_size(), ...input].
  at::Tensor all_gather(const at::Tensor& input, const std::string& what = "all-gather");
  // `input` (contiguous, numel divisible by world_size()) summed over the ranks; returns this
  // rank's chunk of it, the numel / world_size() elements starting at rank() * numel / world_size().
  at::Tensor reduce_scatter_sum(const at::Tensor& input, const std::string& what = "reduce-scatter");

  // Rank 0's string, on every rank (through the store; for small values such as a path).
  std::string broadcast_string(const std::string& value, const std::string& what);
  // `main_fn` runs on rank 0 while the others wait (for as long as rank 0 keeps heartbeating: a
  // long checkpoint or data preparation is not cut off by timeout_s); then `others_fn` (if any)
  // runs on the other ranks. An exception on rank 0 is rethrown on every rank ("rank 0 failed
  // during <what>: ..."). Every rank must call it, in the same order.
  void main_first(const std::string& what, const std::function<void()>& main_fn,
                  const std::function<void()>& others_fn = {});

  // The normal end: a barrier, then the ranks leave together (rank 0, which hosts the store,
  // waits until the others have left). Collectives are not allowed afterwards.
  void finish();

  // Collectives entered so far (the sequence number heartbeats publish).
  uint64_t collectives() const;

 private:
  struct Impl;
  struct Comm;
  DistEnv env_;  // a group's: rank and world_size within the group
  DistOptions options_;
  std::shared_ptr<Impl> impl_;  // the job's rendezvous, heartbeat and failure state (shared by its groups)
  std::unique_ptr<Comm> comm_;  // this context's communicator and members
  bool is_group_ = false;
};

}  // namespace coe
