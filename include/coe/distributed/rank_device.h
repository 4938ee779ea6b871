#pragma once
// Which GPU a rank of a data-parallel job computes on.
#include "coe/distributed/env.h"

#include <c10/core/Device.h>

#include <string>

namespace coe {

// The device of this rank. CPU stays CPU. CUDA in a distributed job: cuda:LOCAL_RANK (made the
// current device), or cuda:0 when the process sees a single GPU (Slurm's --gpus-per-task=1);
// `configured` must then not name an index (`source`: the config file, for the message).
// A single process gets `configured` back unchanged.
c10::Device rank_device(const DistEnv& env, const c10::Device& configured, const std::string& source);

}  // namespace coe
