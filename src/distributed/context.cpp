#include "coe/distributed/context.h"

#include "coe/util/clock.h"
#include "coe/util/error.h"

// CMake defines COE_WITH_GLOO when Gloo's headers are reachable and COE_WITH_NCCL when nccl.h is
// (CUDA builds only). Only those decide what is compiled here: libtorch's exported USE_C10D_*
// macros (Debian's torch_cpu exports USE_C10D_GLOO) do not guarantee the headers behind them. The
// c10d headers guard their content with the USE_C10D_* macros, so they are defined when missing.
#if defined(COE_WITH_GLOO)
#define COE_DIST_GLOO 1
#if !defined(USE_C10D_GLOO)
#define USE_C10D_GLOO
#endif
#endif
#if defined(COE_WITH_CUDA) && defined(COE_WITH_NCCL)
#define COE_DIST_NCCL 1
#if !defined(USE_C10D_NCCL)
#define USE_C10D_NCCL
#endif
#endif

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
// The backends (Gloo, NCCL) are c10d::Backends, used directly without the ProcessGroup dispatcher.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#ifdef COE_DIST_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef COE_DIST_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace coe {
namespace {

using Backend = c10d::Backend;

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(std::max(seconds, 0.001) * 1000.0));
}

std::vector<uint8_t> to_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string to_string(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

std::string format_seconds(double s) { return s < 10 ? fmt::format("{:.1f}", s) : fmt::format("{:.0f}", s); }

const char* kAbortKey = "coe/abort";
// Every key of this job lives under this prefix: a store served by torchrun's agent outlives the
// workers, and a restart of them must not see the previous attempt's keys.
std::string key_prefix(const DistEnv& env) { return fmt::format("coe/attempt_{}", env.restart_count); }
std::string hb_key(int r) { return fmt::format("coe/hb/{}", r); }
std::string exit_key(int r) { return fmt::format("coe/exit/{}", r); }

}  // namespace

struct DistContext::Impl {
  DistEnv env;
  DistOptions opts;
  c10::Device comm_device{c10::kCPU};
  std::string backend_name = "none";
  c10::intrusive_ptr<c10d::Store> store;     // this rank's client (rank 0: also the server)
  c10::intrusive_ptr<c10d::Store> hb_store;  // the heartbeat thread's own connection
  std::atomic<uint64_t> seq{0};
  std::atomic<bool> failed{false};
  bool finished = false;
  uint64_t key_counter = 0;

  std::thread hb_thread;
  // Ranks other than 0: watches that the heartbeat thread's store round trips complete. A stopped
  // rank 0 (SIGSTOP, a stuck node) keeps its socket open but never answers, so every store call
  // blocks without an error; this thread, which never touches the store, names the hang.
  std::thread store_watch_thread;
  std::atomic<int64_t> hb_store_ok_ms{0};  // steady clock, ms: the heartbeat's last completed round trip
  std::mutex hb_mutex;
  std::condition_variable hb_cv;
  bool hb_stop = false;
  std::mutex verdict_mutex;
  std::string verdict;                    // a peer failure the watchdog saw (exit_on_peer_failure off)
  std::vector<int> gone;                  // ranks diagnose() found dead or exited (rank 0 does not wait for them)
  std::map<std::string, int> group_uses;  // group() calls per name: each call gets its own store keys

  double heartbeat_period() const {
    // Each beat costs a handful of store operations on rank 0's server: slow down for big jobs.
    return std::max(opts.heartbeat_s, env.world_size / 500.0);
  }

  void start_heartbeat() {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(env.master_port);
    o.isServer = false;
    o.waitWorkers = false;
    o.timeout = to_ms(opts.timeout_s);
    hb_store = c10::make_intrusive<c10d::PrefixStore>(key_prefix(env),
                                                      c10::make_intrusive<c10d::TCPStore>(env.master_addr, o));
    hb_store->set(hb_key(env.rank), to_bytes("0 0"));
    hb_store_ok_ms = now_ms();
    hb_thread = std::thread([this] { heartbeat_loop(); });
    if (env.rank != 0) store_watch_thread = std::thread([this] { store_watch_loop(); });
  }

  static int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
  }

  void store_watch_loop() {
    const auto period = std::chrono::duration<double>(heartbeat_period());
    while (true) {
      {
        std::unique_lock<std::mutex> lock(hb_mutex);
        if (hb_cv.wait_for(lock, period, [&] { return hb_stop; })) return;
      }
      if (failed.load()) return;
      const double silent_s = static_cast<double>(now_ms() - hb_store_ok_ms.load()) / 1000.0;
      if (silent_s > opts.timeout_s) {
        peer_failed(fmt::format("rank 0 did not answer within {} s (hung: its rendezvous store is not responding)",
                                format_seconds(opts.timeout_s)),
                    /*store_usable=*/false);
        return;
      }
    }
  }

  void stop_heartbeat() {
    if (!hb_thread.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(hb_mutex);
      hb_stop = true;
    }
    hb_cv.notify_all();
    hb_thread.join();
    if (store_watch_thread.joinable()) store_watch_thread.join();
  }

  bool stopping() {
    std::lock_guard<std::mutex> lock(hb_mutex);
    return hb_stop;
  }

  // The watchdog's verdict: end the process (the main thread may be blocked where no exception
  // reaches it), or record it for the next collective.
  // `store_usable` false: the store does not answer, so the abort and exit keys are not posted
  // (a call would block).
  void peer_failed(const std::string& message, bool store_usable = true) {
    if (failed.exchange(true)) return;  // this rank is already reporting a failure of its own
    if (!opts.exit_on_peer_failure) {
      std::lock_guard<std::mutex> lock(verdict_mutex);
      verdict = message;
      return;
    }
    try {
      if (store_usable && !hb_store->check({kAbortKey})) hb_store->set(kAbortKey, to_bytes(message));
      if (store_usable) hb_store->set(exit_key(env.rank), to_bytes("error"));
    } catch (...) {
    }
    std::fprintf(stderr, "error: rank %d: %s\n", env.rank, message.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }

  void heartbeat_loop() {
    const auto period = std::chrono::duration<double>(heartbeat_period());
    const int watched = (env.rank + 1) % env.world_size;
    std::string last_seen;
    auto last_change = Clock::now();
    bool watched_left = false;
    uint64_t beat = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(hb_mutex);
        if (hb_cv.wait_for(lock, period, [&] { return hb_stop; })) return;
      }
      try {
        hb_store->set(hb_key(env.rank), to_bytes(fmt::format("{} {}", ++beat, seq.load())));
        if (hb_store->check({kAbortKey})) {
          peer_failed(to_string(hb_store->get(kAbortKey)));
          return;
        }
        hb_store_ok_ms = now_ms();  // the store answered this beat
        if (watched_left) continue;
        if (hb_store->check({exit_key(watched)})) {
          if (to_string(hb_store->get(exit_key(watched))) == "error") {
            peer_failed(fmt::format("rank {} exited with an error (see its output)", watched));
            return;
          }
          watched_left = true;  // finished normally
          continue;
        }
        const std::string now_seen =
            hb_store->check({hb_key(watched)}) ? to_string(hb_store->get(hb_key(watched))) : std::string();
        if (now_seen != last_seen) {
          last_seen = now_seen;
          last_change = Clock::now();
        } else if (seconds_since(last_change) > opts.timeout_s) {
          peer_failed(fmt::format("rank {} did not answer within {} s (dead or hung: no heartbeat for {} s)", watched,
                                  format_seconds(opts.timeout_s), format_seconds(seconds_since(last_change))));
          return;
        }
      } catch (const std::exception& e) {
        if (stopping() || failed.load()) return;
        peer_failed(fmt::format("rank 0 stopped answering (dead or hung: the rendezvous store it hosts is gone) ({})",
                                first_line(e)));
        return;
      }
    }
  }

  // A Gloo (CPU) or NCCL (CUDA) communicator of `size` ranks rendezvousing under `prefix` of the
  // store; `rank` is this process's rank in it.
  c10::intrusive_ptr<Backend> make_backend(const std::string& prefix, int rank, int size, const std::string& what) {
    auto pg_store = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    const auto timeout = to_ms(opts.timeout_s);
    if (opts.device.is_cuda()) {
#ifdef COE_DIST_NCCL
      try {
        auto o = c10d::ProcessGroupNCCL::Options::create();
        o->timeout = timeout;
        backend_name = "nccl";
        comm_device = opts.device;
        return c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, rank, size, o);
      } catch (const std::exception& e) {
        throw DistError(fmt::format("creating the NCCL {} failed on rank {}: {}", what, env.rank, first_line(e)));
      }
#else
      (void)pg_store;
      (void)timeout;
      throw DistError(
          "this build has no NCCL process group (libtorch without CUDA, or nccl.h was not found at configure time: "
          "set NCCL_INCLUDE_DIR and reconfigure); data-parallel CUDA training needs it");
#endif
    }
#ifdef COE_DIST_GLOO
    try {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname) {
        std::stringstream ss(ifname);
        std::string name;
        while (std::getline(ss, name, ','))
          if (!name.empty()) o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      o->threads = static_cast<int>(o->devices.size()) * 2;
      backend_name = "gloo";
      comm_device = c10::Device(c10::kCPU);
      return c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, rank, size, o);
    } catch (const std::exception& e) {
      throw DistError(fmt::format("creating the Gloo {} failed on rank {}: {} (set GLOO_SOCKET_IFNAME to the network "
                                  "interface the ranks share)",
                                  what, env.rank, first_line(e)));
    }
#else
    (void)pg_store;
    (void)timeout;
    throw DistError("this build has no Gloo process group (Gloo's headers were not found at configure time: install "
                    "libgloo-dev or use a libtorch that ships them); data-parallel CPU training needs it");
#endif
  }

  void throw_if_failed() {
    std::lock_guard<std::mutex> lock(verdict_mutex);
    if (!verdict.empty()) throw DistError(verdict);
    if (failed.load()) throw DistError("an earlier collective failed; this process group is unusable");
  }

  std::optional<std::string> try_get(const std::string& key) {
    if (!store->check({key})) return std::nullopt;
    return to_string(store->get(key));
  }

  // Which rank(s) made a collective fail, from the exit keys and heartbeats. "" if no rank looks
  // at fault (then the backend's reason stands alone).
  std::string diagnose(Clock::time_point t0) {
    const double failed_after = seconds_since(t0);
    try {
      if (auto a = try_get(kAbortKey)) return *a;
      std::vector<std::string> culprits;
      // A rank that posted its exit key: gone, and why.
      auto exited = [&](int q) {
        auto e = try_get(exit_key(q));
        if (!e) return false;
        gone.push_back(q);
        culprits.push_back(*e == "error" ? fmt::format("rank {} exited with an error (see its output)", q)
                                         : fmt::format("rank {} had already finished", q));
        return true;
      };
      for (int q = 0; q < env.world_size; ++q)
        if (q != env.rank) exited(q);
      if (!culprits.empty()) return fmt::format("{}", fmt::join(culprits, "; "));
      std::vector<std::optional<std::string>> before(env.world_size);
      for (int q = 0; q < env.world_size; ++q)
        if (q != env.rank) before[q] = try_get(hb_key(q));
      // A live rank beats several times in this window.
      const double window = std::max(2.5, 5 * heartbeat_period());
      std::this_thread::sleep_for(to_ms(window));
      const uint64_t mine = seq.load();
      for (int q = 0; q < env.world_size; ++q) {
        if (q == env.rank || exited(q)) continue;
        const auto after = try_get(hb_key(q));
        if (after == before[q]) {
          gone.push_back(q);
          // Early: a peer's socket closed (killed, crashed); at the timeout: it never answered.
          culprits.push_back(
              failed_after < 0.9 * opts.timeout_s
                  ? fmt::format("rank {} stopped answering (dead or hung: no heartbeat for {} s)", q,
                                format_seconds(window))
                  : fmt::format("rank {} did not answer within {} s (dead or hung: no heartbeat for {} s)", q,
                                format_seconds(failed_after), format_seconds(window)));
          continue;
        }
        uint64_t beat = 0, their_seq = 0;
        std::istringstream(after.value_or("0 0")) >> beat >> their_seq;
        if (their_seq < mine)
          culprits.push_back(fmt::format("rank {} is alive but did not reach collective #{} within {} s (hung or "
                                         "far behind: it is at #{})",
                                         q, mine, format_seconds(failed_after), their_seq));
      }
      return fmt::format("{}", fmt::join(culprits, "; "));
    } catch (const std::exception&) {
      if (env.rank != 0) return "rank 0 stopped answering (dead or hung: the rendezvous store it hosts is gone)";
      return "";
    }
  }

  [[noreturn]] void collective_failed(const std::string& what, const std::exception& e, Clock::time_point t0) {
    std::string pending_verdict;
    {
      std::lock_guard<std::mutex> lock(verdict_mutex);
      pending_verdict = verdict;
    }
    failed.store(true);
    const std::string reason = first_line(e);
    const std::string culprit = pending_verdict.empty() ? diagnose(t0) : pending_verdict;
    const std::string message =
        culprit.empty() ? fmt::format("{} failed after {} s: {}", what, format_seconds(seconds_since(t0)), reason)
                        : fmt::format("{} failed: {} ({})", what, culprit, reason);
    try {
      if (!store->check({kAbortKey})) store->set(kAbortKey, to_bytes(message));
    } catch (...) {
    }
    throw DistError(message);
  }

  // Runs one collective to completion; any failure becomes a DistError naming the culprit.
  void run(const std::string& what, const std::function<c10::intrusive_ptr<c10d::Work>()>& launch) {
    throw_if_failed();
    ++seq;
    const auto t0 = Clock::now();
    try {
      auto work = launch();
      work->wait();
    } catch (const std::exception& e) {
      collective_failed(what, e, t0);
    }
  }

  void check_tensor(const at::Tensor& t, const std::string& what) const {
    if (!t.defined()) fail("{}: undefined tensor", what);
    if (!t.is_contiguous()) fail("{}: the tensor must be contiguous", what);
    if (t.device() != comm_device)
      fail("{}: tensor on {}, but this process group communicates on {}", what, t.device().str(), comm_device.str());
  }

  // Polls `key` until rank 0 posts it; store trouble means rank 0 is gone.
  std::string wait_for_main(const std::string& key, const std::string& what) {
    const auto t0 = Clock::now();
    auto sleep = std::chrono::milliseconds(2);
    while (true) {
      throw_if_failed();
      try {
        if (store->check({key})) return to_string(store->get(key));
        const bool aborted = store->check({kAbortKey});
        const bool main_left = !aborted && store->check({exit_key(0)});
        // Rank 0 posts `key` (also its own failure, "error ...") before it leaves: look again, it
        // may have arrived between the first check and these.
        if ((aborted || main_left) && store->check({key})) return to_string(store->get(key));
        if (aborted) {
          failed.store(true);
          throw DistError(to_string(store->get(kAbortKey)));
        }
        if (main_left) {
          failed.store(true);
          throw DistError(fmt::format("waiting for rank 0 ({}): rank 0 exited with an error (see its output)", what));
        }
      } catch (const DistError&) {
        throw;
      } catch (const std::exception& e) {
        failed.store(true);
        throw DistError(fmt::format("waiting for rank 0 ({}): rank 0 stopped answering (dead or hung: the rendezvous "
                                    "store it hosts is gone after {} s of waiting) ({})",
                                    what, format_seconds(seconds_since(t0)), first_line(e)));
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::milliseconds(100));
    }
  }
};

struct DistContext::Comm {
  c10::intrusive_ptr<Backend> pg;
  std::vector<int> members;  // global ranks, ascending
};

namespace {

class CompletedOp : public PendingOp {
 public:
  void wait() override {}
};

}  // namespace

namespace {

class AsyncAllReduce : public PendingOp {
 public:
  using OnFailure = std::function<void(const std::exception&)>;
  AsyncAllReduce(c10::intrusive_ptr<c10d::Work> work, at::Tensor tensor, OnFailure on_failure)
      : work_(std::move(work)), tensor_(std::move(tensor)), on_failure_(std::move(on_failure)) {}
  void wait() override {
    if (!work_) return;
    auto work = std::move(work_);
    try {
      work->wait();
    } catch (const std::exception& e) {
      on_failure_(e);  // throws DistError
    }
    tensor_ = at::Tensor();
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  at::Tensor tensor_;  // kept alive while the backend works on it
  OnFailure on_failure_;
};

}  // namespace

DistContext::DistContext() : impl_(std::make_shared<Impl>()), comm_(std::make_unique<Comm>()) { comm_->members = {0}; }

DistContext::DistContext(const DistEnv& env, const DistOptions& options)
    : env_(env), options_(options), impl_(std::make_shared<Impl>()), comm_(std::make_unique<Comm>()) {
  Impl& I = *impl_;
  I.env = env;
  I.opts = options;
  if (!env.distributed()) {
    env_ = DistEnv{};
    I.env = env_;
    comm_->members = {0};
    return;
  }
  if (options.timeout_s <= 0) fail("trainer.dist_timeout_s must be positive, got {}", options.timeout_s);
  // A peer killed while this rank sends to it (Gloo's pair sockets, the store's) must become an
  // error naming that peer: with SIGPIPE at its default action the send would kill this rank too,
  // silently (exit 141; Python, torchrun's usual host, ignores SIGPIPE for the same reason).
  ::signal(SIGPIPE, SIG_IGN);
  const auto timeout = to_ms(options.timeout_s);
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);

  // The store: rank 0 serves it (unless torchrun's agent does); everyone (rank 0 too) talks to it
  // as a client.
  const bool serve = env.rank == 0 && !env.agent_store;
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(env.master_port);
    o.isServer = serve;
    o.waitWorkers = false;  // the join below is ours, with a precise error
    o.timeout = timeout;
    I.store = c10::make_intrusive<c10d::PrefixStore>(key_prefix(env),
                                                     c10::make_intrusive<c10d::TCPStore>(env.master_addr, o));
  } catch (const std::exception& e) {
    if (serve)
      throw DistError(fmt::format("rank 0 cannot serve the rendezvous store on MASTER_PORT={} ({}); is the port in use "
                                  "by another job (or by a launcher that serves it: then it sets "
                                  "TORCHELASTIC_USE_AGENT_STORE=True)?",
                                  env.master_port, first_line(e)));
    if (env.agent_store)
      throw DistError(fmt::format("rank {} cannot reach the launcher's rendezvous store at MASTER_ADDR:MASTER_PORT={} "
                                  "within {} s ({}); TORCHELASTIC_USE_AGENT_STORE=True says torchrun serves it",
                                  env.rank, where, format_seconds(options.timeout_s), first_line(e)));
    throw DistError(fmt::format("rank {} cannot reach the rendezvous store at MASTER_ADDR:MASTER_PORT={} within {} s "
                                "({}); is rank 0 running, with the same MASTER_ADDR/MASTER_PORT?",
                                env.rank, where, format_seconds(options.timeout_s), first_line(e)));
  }

  // Join: the same world size everywhere, each rank exactly once, everybody present.
  const auto t0 = Clock::now();
  try {
    if (env.rank == 0) I.store->set("coe/world_size", to_bytes(std::to_string(env.world_size)));
    const std::string theirs = to_string(I.store->get("coe/world_size"));
    if (theirs != std::to_string(env.world_size))
      throw DistError(fmt::format("{}={} on rank {} but rank 0 has {} (every rank must be launched with the same world "
                                  "size)",
                                  env.launcher == "slurm" ? "SLURM_NTASKS" : "WORLD_SIZE", env.world_size, env.rank,
                                  theirs));
    if (I.store->add(fmt::format("coe/rank/{}", env.rank), 1) != 1)
      throw DistError(fmt::format("two processes have {}={} (ranks must be unique)",
                                  env.launcher == "slurm" ? "SLURM_PROCID" : "RANK", env.rank));
    I.store->add("coe/joined", 1);
    while (true) {
      const int64_t joined = I.store->add("coe/joined", 0);
      if (joined >= env.world_size) break;
      if (seconds_since(t0) > options.timeout_s) {
        std::vector<int> missing;
        for (int q = 0; q < env.world_size; ++q)
          if (!I.store->check({fmt::format("coe/rank/{}", q)})) missing.push_back(q);
        throw DistError(fmt::format("only {} of {} ranks joined within {} s (missing: rank {})", joined, env.world_size,
                                    format_seconds(options.timeout_s), fmt::join(missing, ", ")));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistError(fmt::format("rendezvous at {} failed on rank {} after {} s: {}", where, env.rank,
                                format_seconds(seconds_since(t0)), first_line(e)));
  }

  // The process group, on its own key prefix of the store.
  comm_->pg = I.make_backend("coe/pg", env.rank, env.world_size, "process group");
  for (int q = 0; q < env.world_size; ++q) comm_->members.push_back(q);
  I.start_heartbeat();
}

DistContext::~DistContext() {
  if (is_group_) {
    if (!comm_ || !comm_->pg) return;
    if (impl_->failed.load()) {
      (void)comm_->pg.release();  // see below: work of a failed group may block its destructor
    } else {
      try {
        comm_->pg->shutdown();
      } catch (...) {
      }
    }
    return;
  }
  if (!impl_ || !distributed()) return;
  Impl& I = *impl_;
  I.stop_heartbeat();
  if (!I.finished) {
    // Leaving with an error: collectives still in flight cannot finish, so the communicators are
    // aborted rather than shut down (NCCL would otherwise wait for them).
    try {
      if (comm_->pg) comm_->pg->abort();
    } catch (...) {
    }
    // Tell the peers, so they stop waiting for this rank at once.
    try {
      I.store->set(exit_key(env_.rank), to_bytes("error"));
    } catch (...) {
    }
  }
  if (I.failed.load() && env_.rank == 0) {
    // This process hosts the store: give the others a moment to read the abort message (their
    // watchdogs post an exit key before they end) instead of seeing the store vanish.
    const auto t0 = Clock::now();
    const double linger = 2 * I.heartbeat_period() + 1.0;
    try {
      for (int q = 1; q < env_.world_size; ++q)
        while (std::find(I.gone.begin(), I.gone.end(), q) == I.gone.end() && !I.store->check({exit_key(q)}) &&
               seconds_since(t0) < linger)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } catch (...) {
    }
  }
  if (I.failed.load() && comm_->pg) {
    // A failed group may hold work that would block its destructor until each times out; the
    // process is about to end anyway.
    (void)comm_->pg.release();
  }
}

std::string DistContext::backend() const { return impl_->backend_name; }

uint64_t DistContext::collectives() const { return impl_->seq.load(); }

void DistContext::all_reduce_sum(at::Tensor& tensor, const std::string& what) {
  if (!distributed()) return;
  impl_->check_tensor(tensor, what);
  impl_->run(what, [&] {
    std::vector<at::Tensor> v{tensor};
    return comm_->pg->allreduce(v, c10d::AllreduceOptions());
  });
}

std::unique_ptr<PendingOp> DistContext::all_reduce_sum_async(at::Tensor tensor, const std::string& what) {
  if (!distributed()) return std::make_unique<CompletedOp>();
  Impl& I = *impl_;
  I.check_tensor(tensor, what);
  I.throw_if_failed();
  ++I.seq;
  const auto t0 = Clock::now();
  c10::intrusive_ptr<c10d::Work> work;
  try {
    std::vector<at::Tensor> v{tensor};
    work = comm_->pg->allreduce(v, c10d::AllreduceOptions());
  } catch (const std::exception& e) {
    I.collective_failed(what, e, t0);
  }
  Impl* impl = impl_.get();
  return std::make_unique<AsyncAllReduce>(
      std::move(work), std::move(tensor),
      [impl, what, t0](const std::exception& e) { impl->collective_failed(what, e, t0); });
}

namespace {

// Host values through a device tensor: copied in, summed by `reduce`, copied back.
template <typename T>
std::vector<T> sum_host_values(const std::vector<T>& values, const c10::Device& device,
                               const std::function<void(at::Tensor&)>& reduce) {
  const auto dtype = c10::CppTypeToScalarType<T>::value;
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::TensorOptions().dtype(dtype));
  std::copy(values.begin(), values.end(), t.data_ptr<T>());
  at::Tensor d = t.to(device);
  reduce(d);
  at::Tensor h = d.to(at::kCPU).contiguous();
  return std::vector<T>(h.data_ptr<T>(), h.data_ptr<T>() + h.numel());
}

}  // namespace

std::vector<int64_t> DistContext::all_reduce_sum(const std::vector<int64_t>& values, const std::string& what) {
  if (!distributed() || values.empty()) return values;
  return sum_host_values(values, impl_->comm_device, [&](at::Tensor& d) { all_reduce_sum(d, what); });
}

std::vector<double> DistContext::all_reduce_sum(const std::vector<double>& values, const std::string& what) {
  if (!distributed() || values.empty()) return values;
  return sum_host_values(values, impl_->comm_device, [&](at::Tensor& d) { all_reduce_sum(d, what); });
}

void DistContext::broadcast(at::Tensor& tensor, int root, const std::string& what) {
  if (!distributed()) return;
  if (root < 0 || root >= world_size()) fail("{}: root rank {} outside 0 .. {}", what, root, world_size() - 1);
  impl_->check_tensor(tensor, what);
  impl_->run(what, [&] {
    std::vector<at::Tensor> v{tensor};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    return comm_->pg->broadcast(v, o);
  });
}

void DistContext::broadcast_tensors(const std::vector<at::Tensor>& tensors, int root, double bucket_mb,
                                    const std::string& what) {
  if (!distributed() || tensors.empty()) return;
  at::NoGradGuard no_grad;
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024));
  size_t begin = 0;
  int bucket = 0;
  while (begin < tensors.size()) {
    // A bucket: consecutive tensors of one dtype, up to `cap` bytes (at least one tensor).
    size_t end = begin;
    int64_t bytes = 0;
    const auto dtype = tensors[begin].scalar_type();
    while (end < tensors.size() && tensors[end].scalar_type() == dtype &&
           (end == begin || bytes + tensors[end].numel() * static_cast<int64_t>(tensors[end].element_size()) <= cap)) {
      bytes += tensors[end].numel() * static_cast<int64_t>(tensors[end].element_size());
      ++end;
    }
    std::vector<at::Tensor> flat_parts;
    for (size_t i = begin; i < end; ++i) flat_parts.push_back(tensors[i].detach().reshape({-1}).to(impl_->comm_device));
    at::Tensor flat = at::cat(flat_parts);
    broadcast(flat, root, fmt::format("{} (bucket {})", what, ++bucket));
    if (rank() != root) {
      int64_t offset = 0;
      for (size_t i = begin; i < end; ++i) {
        at::Tensor t = tensors[i];
        t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
    begin = end;
  }
}

int64_t DistContext::first_mismatch(const std::vector<at::Tensor>& tensors, const std::string& what) {
  if (!distributed() || tensors.empty()) return -1;
  at::NoGradGuard no_grad;
  // Two float64 checksums per tensor: the sum and a position-weighted sum (catches permutations).
  std::vector<at::Tensor> sums;
  for (const auto& t : tensors) {
    at::Tensor d = t.detach().reshape({-1}).to(at::kDouble);
    at::Tensor w = at::arange(1, d.numel() + 1, d.options()).remainder(1021.0);
    sums.push_back(d.sum());
    sums.push_back((d * w).sum());
  }
  at::Tensor local = at::stack(sums).to(impl_->comm_device).contiguous();
  at::Tensor reference = local.clone();
  broadcast(reference, 0, what);
  at::Tensor differs = local.ne(reference).view({-1, 2}).any(1).to(at::kLong).contiguous();
  all_reduce_sum(differs, what);
  at::Tensor host = differs.to(at::kCPU);
  const int64_t* d = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < host.numel(); ++i)
    if (d[i] != 0) return i;
  return -1;
}

void DistContext::barrier(const std::string& what) {
  if (!distributed()) return;
  at::Tensor t = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(impl_->comm_device));
  all_reduce_sum(t, what);
}

std::string DistContext::broadcast_string(const std::string& value, const std::string& what) {
  if (is_group_) fail("{}: broadcast_string is only for the job's context, not a group", what);
  if (!distributed()) return value;
  Impl& I = *impl_;
  const std::string key = fmt::format("coe/string/{}", I.key_counter++);
  if (is_main()) {
    I.store->set(key, to_bytes(value));
    return value;
  }
  return I.wait_for_main(key, what);
}

void DistContext::main_first(const std::string& what, const std::function<void()>& main_fn,
                             const std::function<void()>& others_fn) {
  if (is_group_) fail("{}: main_first is only for the job's context, not a group", what);
  if (!distributed()) {
    if (main_fn) main_fn();
    return;
  }
  Impl& I = *impl_;
  I.throw_if_failed();
  const std::string key = fmt::format("coe/main_first/{}", I.key_counter++);
  if (is_main()) {
    try {
      if (main_fn) main_fn();
    } catch (const std::exception& e) {
      try {
        I.store->set(key, to_bytes("error " + first_line(e)));
      } catch (...) {
      }
      throw;
    }
    I.store->set(key, to_bytes("ok"));
    return;
  }
  const std::string result = I.wait_for_main(key, what);
  if (result.rfind("error ", 0) == 0)
    throw DistError(fmt::format("rank 0 failed during {}: {}", what, result.substr(6)));
  if (others_fn) others_fn();
}

void DistContext::finish() {
  if (is_group_) fail("finish() is only for the job's context, not a group");
  if (!distributed() || impl_->finished) return;
  Impl& I = *impl_;
  barrier("final barrier");
  // ProcessGroupNCCL destroyed without shutdown() warns and may leave its watchdog and
  // communicators behind; shutting down after the barrier is the clean end (a no-op for Gloo).
  comm_->pg->shutdown();
  I.stop_heartbeat();
  I.store->set(exit_key(rank()), to_bytes("ok"));
  if (is_main()) {
    // The store lives in this process: keep it up until every rank has left.
    const auto t0 = Clock::now();
    for (int q = 1; q < world_size(); ++q) {
      while (!I.store->check({exit_key(q)}) && seconds_since(t0) < options_.timeout_s)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  I.finished = true;
}

std::unique_ptr<DistContext> DistContext::group(const std::string& name, const std::vector<int>& ranks) {
  const int me = global_rank(rank());
  auto it = std::find(ranks.begin(), ranks.end(), me);
  if (it == ranks.end()) fail("group '{}': rank {} is not one of its ranks [{}]", name, me, fmt::join(ranks, ", "));
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] < 0 || ranks[i] >= impl_->env.world_size || (i > 0 && ranks[i] <= ranks[i - 1]))
      fail("group '{}': ranks [{}] must be ascending job ranks in 0 .. {}", name, fmt::join(ranks, ", "),
           impl_->env.world_size - 1);
  auto g = std::make_unique<DistContext>();  // the single process, made a group below
  g->options_ = options_;
  g->impl_ = impl_;
  g->is_group_ = true;
  g->env_ = impl_->env;
  g->env_.rank = static_cast<int>(it - ranks.begin());
  g->env_.world_size = static_cast<int>(ranks.size());
  g->comm_->members = ranks;
  if (ranks.size() > 1) {
    Impl& I = *impl_;
    I.throw_if_failed();
    // Keys of their own: the name, its use, and the members (groups of one name are disjoint sets).
    const int use = I.group_uses[name]++;
    g->comm_->pg = I.make_backend(fmt::format("coe/group/{}/{}/{}", name, use, fmt::join(ranks, ",")), g->env_.rank,
                                  g->env_.world_size, fmt::format("process group '{}'", name));
  }
  return g;
}

int DistContext::global_rank(int q) const {
  if (q < 0 || q >= static_cast<int>(comm_->members.size())) fail("rank {} outside 0 .. {}", q, world_size() - 1);
  return comm_->members[static_cast<size_t>(q)];
}

at::Tensor DistContext::all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                                   const std::vector<int64_t>& recv_rows, const std::string& what) {
  const size_t w = static_cast<size_t>(world_size());
  if (send_rows.size() != w || recv_rows.size() != w)
    fail("{}: {} send and {} receive counts for {} ranks", what, send_rows.size(), recv_rows.size(), w);
  int64_t sent = 0, received = 0;
  for (size_t q = 0; q < w; ++q) {
    sent += send_rows[q];
    received += recv_rows[q];
  }
  if (input.dim() < 1 || input.size(0) != sent)
    fail("{}: the input has {} rows, the send counts add up to {}", what, input.dim() < 1 ? 0 : input.size(0), sent);
  if (!distributed()) return input;
  std::vector<int64_t> out_shape = input.sizes().vec();
  out_shape[0] = received;
  at::Tensor output = at::empty(out_shape, input.options());
  at::Tensor in = input.contiguous();
  impl_->check_tensor(in, what);
  impl_->run(what, [&] {
    c10d::AllToAllOptions o;
    return comm_->pg->alltoall_base(output, in, const_cast<std::vector<int64_t>&>(recv_rows),
                                    const_cast<std::vector<int64_t>&>(send_rows), o);
  });
  return output;
}

std::vector<int64_t> DistContext::all_to_all_counts(const std::vector<int64_t>& counts, const std::string& what) {
  if (counts.size() != static_cast<size_t>(world_size()))
    fail("{}: {} counts for {} ranks", what, counts.size(), world_size());
  if (!distributed()) return counts;
  at::Tensor t = at::tensor(counts, at::TensorOptions().dtype(at::kLong)).to(impl_->comm_device);
  const std::vector<int64_t> ones(counts.size(), 1);
  at::Tensor r = all_to_all(t, ones, ones, what).to(at::kCPU).contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

at::Tensor DistContext::all_gather(const at::Tensor& input, const std::string& what) {
  std::vector<int64_t> shape = input.sizes().vec();
  shape.insert(shape.begin(), world_size());
  if (!distributed()) return input.reshape(shape);
  at::Tensor in = input.contiguous().view({-1});
  impl_->check_tensor(in, what);
  at::Tensor output = at::empty({world_size() * in.numel()}, in.options());
  impl_->run(what, [&] { return comm_->pg->_allgather_base(output, in, c10d::AllgatherOptions()); });
  return output.view(shape);
}

at::Tensor DistContext::reduce_scatter_sum(const at::Tensor& input, const std::string& what) {
  const int64_t w = world_size();
  if (input.numel() % w != 0) fail("{}: {} elements do not split over {} ranks", what, input.numel(), w);
  if (!distributed()) return input.reshape({-1});
  impl_->check_tensor(input, what);
  at::Tensor output = at::empty({input.numel() / w}, input.options());
  at::Tensor flat = input.reshape({-1});
  impl_->run(what, [&] {
    c10d::ReduceScatterOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    return comm_->pg->_reduce_scatter_base(output, flat, o);
  });
  return output;
}

}  // namespace coe
