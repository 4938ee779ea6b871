#include "coe/distributed/rank_device.h"

#include "coe/util/error.h"

#ifdef COE_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace coe {

c10::Device rank_device(const DistEnv& env, const c10::Device& configured, const std::string& source) {
  if (!env.distributed() || !configured.is_cuda()) return configured;
  if (configured.has_index())
    fail("{}: trainer.device '{}': with {} ranks each rank uses cuda:LOCAL_RANK; set trainer.device: cuda", source,
         configured.str(), env.world_size);
#ifdef COE_WITH_CUDA
  const int count = static_cast<int>(c10::cuda::device_count());
  int index = env.local_rank;
  if (count == 1) index = 0;  // one visible GPU per process (CUDA_VISIBLE_DEVICES / --gpus-per-task)
  else if (index >= count)
    fail("LOCAL_RANK={} but this process sees only {} CUDA devices (one rank per GPU: launch at most {} per node)",
         env.local_rank, count, count);
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
#else
  fail("{}: trainer.device is '{}' but this libtorch has no CUDA", source, configured.str());
#endif
}

}  // namespace coe
