// The launcher environment (torchrun / Slurm variables) -> DistEnv, and its one-line errors.
#include "coe/distributed/env.h"
#include "coe/util/error.h"

#include "support/expect_error.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace {

using Vars = std::map<std::string, std::string>;
using coe::parse_dist_env;

// The message of the coe::Error parse_dist_env throws ("" if none).
std::string error_of(const Vars& vars) {
  return coe::test::error_of([&] { parse_dist_env(vars); });
}

Vars torchrun(int rank, int world, int local) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(local)},
          {"MASTER_ADDR", "10.1.2.3"},
          {"MASTER_PORT", "29500"}};
}

TEST(DistEnv, NoVariablesIsASingleProcess) {
  const auto env = parse_dist_env(Vars{});
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.launcher, "");
  EXPECT_EQ(env.describe(), "single process");
  // MASTER_* alone change nothing.
  EXPECT_FALSE(parse_dist_env(Vars{{"MASTER_ADDR", "x"}, {"MASTER_PORT", "1"}}).distributed());
  // Empty values count as unset.
  EXPECT_FALSE(parse_dist_env(Vars{{"RANK", ""}, {"WORLD_SIZE", ""}}).distributed());
}

TEST(DistEnv, Torchrun) {
  Vars v = torchrun(3, 4, 1);
  v["LOCAL_WORLD_SIZE"] = "2";
  const auto env = parse_dist_env(v);
  EXPECT_TRUE(env.distributed());
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "10.1.2.3");
  EXPECT_EQ(env.master_port, 29500);
  EXPECT_EQ(env.launcher, "torchrun");
  EXPECT_EQ(env.describe(), "rank 3/4 (local rank 1) via torchrun, store 10.1.2.3:29500");
  EXPECT_FALSE(env.agent_store);
  EXPECT_EQ(env.restart_count, 0);
}

// torch 2.x's torchrun may serve the store from its agent and restart the workers.
TEST(DistEnv, TorchrunAgentStore) {
  Vars v = torchrun(0, 2, 0);
  v["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  v["TORCHELASTIC_RESTART_COUNT"] = "2";
  const auto env = parse_dist_env(v);
  EXPECT_TRUE(env.agent_store);
  EXPECT_EQ(env.restart_count, 2);
  EXPECT_EQ(env.describe(), "rank 0/2 (local rank 0) via torchrun, store 10.1.2.3:29500 (served by the launcher)");
  v["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  EXPECT_FALSE(parse_dist_env(v).agent_store);
  v["TORCHELASTIC_USE_AGENT_STORE"] = "yes please";
  EXPECT_EQ(error_of(v), "TORCHELASTIC_USE_AGENT_STORE='yes please' is not True or False");
  v["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  v["TORCHELASTIC_RESTART_COUNT"] = "-1";
  EXPECT_EQ(error_of(v), "TORCHELASTIC_RESTART_COUNT='-1' is not a non-negative integer");
}

TEST(DistEnv, WorldSizeOneIsASingleProcess) {
  // torchrun --nproc_per_node=1: no store, no group, exactly as before.
  Vars v{{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "0"}};
  const auto env = parse_dist_env(v);
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(env.launcher, "");
}

TEST(DistEnv, TorchrunErrorsNameTheVariable) {
  EXPECT_EQ(error_of({{"RANK", "0"}}),
            "RANK is set but WORLD_SIZE is not (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
  EXPECT_EQ(error_of({{"WORLD_SIZE", "2"}}),
            "WORLD_SIZE is set but RANK is not (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
  Vars v = torchrun(0, 2, 0);
  v["RANK"] = "one";
  EXPECT_EQ(error_of(v), "RANK='one' is not a non-negative integer");
  v = torchrun(0, 2, 0);
  v["RANK"] = "-1";
  EXPECT_EQ(error_of(v), "RANK='-1' is not a non-negative integer");
  v = torchrun(0, 2, 0);
  v["WORLD_SIZE"] = "0";
  EXPECT_EQ(error_of(v), "WORLD_SIZE=0 must be at least 1");
  EXPECT_EQ(error_of(torchrun(2, 2, 0)), "RANK=2 is not below WORLD_SIZE=2 (ranks are 0 .. 1)");
  v = torchrun(1, 2, 0);
  v.erase("LOCAL_RANK");
  EXPECT_EQ(
      error_of(v),
      "LOCAL_RANK is not set (torchrun launches WORLD_SIZE=2 processes; each needs its local rank to pick its GPU)");
  EXPECT_EQ(error_of(torchrun(0, 2, 1)),
            "LOCAL_RANK=1 is larger than RANK=0 (a local rank counts the processes of one node)");
  v = torchrun(3, 4, 2);
  v["LOCAL_WORLD_SIZE"] = "2";
  EXPECT_EQ(error_of(v), "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2");
  v = torchrun(1, 2, 1);
  v.erase("MASTER_ADDR");
  EXPECT_EQ(error_of(v), "MASTER_ADDR is not set (torchrun sets it; launching by hand, export it for every rank)");
  v = torchrun(1, 2, 1);
  v.erase("MASTER_PORT");
  EXPECT_EQ(error_of(v), "MASTER_PORT is not set (torchrun sets it; launching by hand, export it for every rank)");
  v = torchrun(1, 2, 1);
  v["MASTER_PORT"] = "70000";
  EXPECT_EQ(error_of(v), "MASTER_PORT=70000 is not a TCP port (1-65535)");
  v["MASTER_PORT"] = "http";
  EXPECT_EQ(error_of(v), "MASTER_PORT='http' is not a non-negative integer (a TCP port, 1-65535)");
}

TEST(DistEnv, Slurm) {
  Vars v{{"SLURM_PROCID", "5"},  {"SLURM_NTASKS", "8"},      {"SLURM_LOCALID", "1"},
         {"SLURM_STEP_ID", "0"}, {"MASTER_ADDR", "node001"}, {"MASTER_PORT", "29400"}};
  const auto env = parse_dist_env(v);
  EXPECT_TRUE(env.distributed());
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.launcher, "slurm");
  EXPECT_EQ(env.master_addr, "node001");

  // torchrun's variables win under `srun torchrun`.
  Vars both = v;
  for (const auto& [k, val] : torchrun(1, 2, 1)) both[k] = val;
  EXPECT_EQ(parse_dist_env(both).launcher, "torchrun");
  EXPECT_EQ(parse_dist_env(both).world_size, 2);

  // SLURM_NPROCS is the older name of SLURM_NTASKS.
  Vars old = v;
  old.erase("SLURM_NTASKS");
  old["SLURM_NPROCS"] = "8";
  EXPECT_EQ(parse_dist_env(old).world_size, 8);
}

TEST(DistEnv, SlurmWithoutMasterAddr) {
  // The batch script of an allocation, or a one-task step: a single process.
  Vars v{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}};
  EXPECT_FALSE(parse_dist_env(v).distributed());
  v["SLURM_NTASKS"] = "1";
  v["SLURM_STEP_ID"] = "0";
  EXPECT_FALSE(parse_dist_env(v).distributed());
  // A multi-task srun step without MASTER_ADDR: N runs would share one run directory.
  v["SLURM_NTASKS"] = "4";
  v["SLURM_PROCID"] = "2";
  EXPECT_EQ(error_of(v),
            "MASTER_ADDR is not set: this is task 2 of a 4-task srun step; set MASTER_ADDR and MASTER_PORT in the job "
            "script to run data-parallel (docs/distributed.md), or launch a single task");
}

TEST(DistEnv, SlurmErrorsNameTheVariable) {
  Vars v{{"SLURM_PROCID", "4"},
         {"SLURM_NTASKS", "4"},
         {"SLURM_LOCALID", "0"},
         {"MASTER_ADDR", "n1"},
         {"MASTER_PORT", "29400"}};
  EXPECT_EQ(error_of(v), "SLURM_PROCID=4 is not below SLURM_NTASKS=4 (ranks are 0 .. 3)");
  v["SLURM_PROCID"] = "1";
  v.erase("SLURM_LOCALID");
  EXPECT_EQ(error_of(v),
            "SLURM_LOCALID is not set (slurm launches SLURM_NTASKS=4 processes; each needs its local rank to pick its "
            "GPU)");
  v["SLURM_LOCALID"] = "x";
  EXPECT_EQ(error_of(v), "SLURM_LOCALID='x' is not a non-negative integer");
  v["SLURM_LOCALID"] = "0";
  v.erase("MASTER_PORT");
  EXPECT_EQ(error_of(v), "MASTER_PORT is not set (under Slurm set it in the job script, see docs/distributed.md)");
}

}  // namespace
