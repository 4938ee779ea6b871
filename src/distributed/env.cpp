#include "coe/distributed/env.h"

#include "coe/util/error.h"

#include <cerrno>
#include <cstdlib>
#include <limits>

namespace coe {
namespace {

// A non-negative decimal integer (leading/trailing blanks tolerated), else an error naming `name`.
int parse_int(const std::string& name, const std::string& value, const std::string& hint = "") {
  size_t b = value.find_first_not_of(" \t"), e = value.find_last_not_of(" \t");
  const std::string v = b == std::string::npos ? std::string() : value.substr(b, e - b + 1);
  bool ok = !v.empty();
  for (char c : v) ok = ok && c >= '0' && c <= '9';
  long long n = 0;
  if (ok) {
    errno = 0;
    n = std::strtoll(v.c_str(), nullptr, 10);
    ok = errno == 0 && n <= std::numeric_limits<int>::max();
  }
  if (!ok) fail("{}='{}' is not a non-negative integer{}", name, value, hint);
  return static_cast<int>(n);
}

}  // namespace

std::string DistEnv::describe() const {
  if (!distributed()) return "single process";
  return fmt::format("rank {}/{} (local rank {}) via {}, store {}:{}{}", rank, world_size, local_rank, launcher,
                     master_addr, master_port, agent_store ? " (served by the launcher)" : "");
}

DistEnv parse_dist_env(const EnvLookup& lookup) {
  auto get = [&](const char* name) { return lookup(name); };
  const auto rank = get("RANK"), world = get("WORLD_SIZE");
  const auto slurm_rank = get("SLURM_PROCID");
  auto slurm_world = get("SLURM_NTASKS");
  if (!slurm_world) slurm_world = get("SLURM_NPROCS");
  const auto master_addr = get("MASTER_ADDR"), master_port = get("MASTER_PORT");

  DistEnv env;
  std::string rank_var, world_var, local_var;
  std::optional<std::string> local;
  if (rank || world) {
    if (!rank)
      fail("WORLD_SIZE is set but RANK is not (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
    if (!world)
      fail("RANK is set but WORLD_SIZE is not (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
    env.launcher = "torchrun";
    rank_var = "RANK";
    world_var = "WORLD_SIZE";
    local_var = "LOCAL_RANK";
    env.rank = parse_int("RANK", *rank);
    env.world_size = parse_int("WORLD_SIZE", *world);
    local = get("LOCAL_RANK");
    if (const auto lws = get("LOCAL_WORLD_SIZE")) env.local_world_size = parse_int("LOCAL_WORLD_SIZE", *lws);
    if (const auto agent = get("TORCHELASTIC_USE_AGENT_STORE")) {
      // torchrun writes Python's str(bool).
      if (*agent == "True" || *agent == "true" || *agent == "1") env.agent_store = true;
      else if (*agent != "False" && *agent != "false" && *agent != "0")
        fail("TORCHELASTIC_USE_AGENT_STORE='{}' is not True or False", *agent);
    }
    if (const auto restarts = get("TORCHELASTIC_RESTART_COUNT"))
      env.restart_count = parse_int("TORCHELASTIC_RESTART_COUNT", *restarts);
  } else if (slurm_rank && slurm_world) {
    const int ntasks = parse_int(get("SLURM_NTASKS") ? "SLURM_NTASKS" : "SLURM_NPROCS", *slurm_world);
    if (!master_addr) {
      // Every Slurm step carries these variables; only a multi-task srun step means data parallelism.
      if (ntasks > 1 && (get("SLURM_STEP_ID") || get("SLURM_STEPID")))
        fail("MASTER_ADDR is not set: this is task {} of a {}-task srun step; set MASTER_ADDR and MASTER_PORT in the "
             "job script to run data-parallel (docs/distributed.md), or launch a single task",
             *slurm_rank, ntasks);
      return env;  // a single coe-train inside an allocation
    }
    env.launcher = "slurm";
    rank_var = "SLURM_PROCID";
    world_var = get("SLURM_NTASKS") ? "SLURM_NTASKS" : "SLURM_NPROCS";
    local_var = "SLURM_LOCALID";
    env.rank = parse_int("SLURM_PROCID", *slurm_rank);
    env.world_size = ntasks;
    local = get("SLURM_LOCALID");
  } else {
    return env;  // no launcher: single process
  }

  if (env.world_size < 1) fail("{}={} must be at least 1", world_var, env.world_size);
  if (env.rank >= env.world_size)
    fail("{}={} is not below {}={} (ranks are 0 .. {})", rank_var, env.rank, world_var, env.world_size,
         env.world_size - 1);
  if (env.world_size == 1) {
    // One process: exactly the single-process path (no store, no process group).
    return DistEnv{};
  }
  if (!local)
    fail("{} is not set ({} launches {}={} processes; each needs its local rank to pick its GPU)", local_var,
         env.launcher, world_var, env.world_size);
  env.local_rank = parse_int(local_var, *local);
  if (env.local_rank > env.rank)
    fail("{}={} is larger than {}={} (a local rank counts the processes of one node)", local_var, env.local_rank,
         rank_var, env.rank);
  if (env.local_world_size > 0 && env.local_rank >= env.local_world_size)
    fail("{}={} is not below LOCAL_WORLD_SIZE={}", local_var, env.local_rank, env.local_world_size);
  if (env.local_world_size > env.world_size)
    fail("LOCAL_WORLD_SIZE={} is larger than {}={}", env.local_world_size, world_var, env.world_size);

  const std::string how = env.launcher == "slurm" ? " (under Slurm set it in the job script, see docs/distributed.md)"
                                                  : " (torchrun sets it; launching by hand, export it for every rank)";
  if (!master_addr) fail("MASTER_ADDR is not set{}", how);
  if (!master_port) fail("MASTER_PORT is not set{}", how);
  env.master_addr = *master_addr;
  env.master_port = parse_int("MASTER_PORT", *master_port, " (a TCP port, 1-65535)");
  if (env.master_port < 1 || env.master_port > 65535)
    fail("MASTER_PORT={} is not a TCP port (1-65535)", env.master_port);
  return env;
}

DistEnv parse_dist_env(const std::map<std::string, std::string>& vars) {
  return parse_dist_env([&](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  });
}

DistEnv dist_env_from_process() {
  return parse_dist_env([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace coe
