#pragma once
// Which process of a data-parallel job this is, read from the launcher's environment.
//
//   torchrun:  RANK, WORLD_SIZE, LOCAL_RANK (+ optional LOCAL_WORLD_SIZE), MASTER_ADDR, MASTER_PORT
//   Slurm:     SLURM_PROCID, SLURM_NTASKS (or SLURM_NPROCS), SLURM_LOCALID, with MASTER_ADDR and
//              MASTER_PORT set by the job script (Slurm does not set them)
//
// torchrun's variables win when both are present (`srun torchrun ...`). Slurm's are only used when
// MASTER_ADDR is set, because every Slurm job step carries them, also when one coe-train runs
// alone in an allocation; under `srun` with SLURM_NTASKS > 1 and no MASTER_ADDR it is an error
// instead (N independent runs writing one run directory would be worse). None of these: a single
// process, exactly as without this library. WORLD_SIZE=1 is a single process too.
//
// torchrun of torch 2.x may host the rendezvous store itself (its agent's TCPStore, at
// MASTER_ADDR:MASTER_PORT) and says so with TORCHELASTIC_USE_AGENT_STORE=True; then rank 0 must
// not serve one of its own, and each restart of the workers (TORCHELASTIC_RESTART_COUNT) uses its
// own keys in that store, as torch's env:// rendezvous does.
//
// Inconsistent or malformed values are errors whose one-line message names the variable.
// Torch-free: no libtorch header is needed to read the environment.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace coe {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 0;  // 0: not known (Slurm; torchrun without LOCAL_WORLD_SIZE)
  std::string master_addr;
  int master_port = 0;
  std::string launcher;      // "" (single process), "torchrun" or "slurm"
  bool agent_store = false;  // TORCHELASTIC_USE_AGENT_STORE=True: the launcher serves the store
  int restart_count = 0;     // TORCHELASTIC_RESTART_COUNT: keys of this attempt are kept apart

  bool distributed() const { return world_size > 1; }
  // "rank 1/4 (local 1) via torchrun, store 10.0.0.1:29500" or "single process".
  std::string describe() const;
};

// Looks a variable up; std::nullopt when unset. An empty value counts as unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// Parses the launcher variables through `lookup`. Throws coe::Error naming the variable.
DistEnv parse_dist_env(const EnvLookup& lookup);
// The same over a fixed set of variables (tests).
DistEnv parse_dist_env(const std::map<std::string, std::string>& vars);
// The same over this process's environment.
DistEnv dist_env_from_process();

}  // namespace coe
