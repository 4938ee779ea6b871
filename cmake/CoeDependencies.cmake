# All third-party lookups in one place. Torch may come from Debian (libtorch-dev 1.13, CPU)
# or from a pip wheel (pass -DCMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')).
find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)

# Torch's exported flags (e.g. -D_GLIBCXX_USE_CXX11_ABI=0 for pip wheels) must reach every TU
# that includes torch headers; TORCH_CXX_FLAGS is a space-separated string.
separate_arguments(COE_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")

# The HF tokenizer needs PCRE2 (regex engine; its Unicode tables are not used, coe carries HF's:
# src/data/hf_unicode_tables.cpp). It is optional: without it coe builds with the built-in byte
# tokenizer only, and loading a tokenizer.json is an explicit error.
option(COE_HF_TOKENIZER "Build HF tokenizer.json support (needs PCRE2)" ON)
find_package(PkgConfig)
set(COE_HAVE_HF_TOKENIZER OFF)
if(COE_HF_TOKENIZER AND PkgConfig_FOUND)
  pkg_check_modules(PCRE2 IMPORTED_TARGET libpcre2-8)
  if(PCRE2_FOUND)
    set(COE_HAVE_HF_TOKENIZER ON)
  endif()
endif()
message(STATUS "coe: torch ${Torch_VERSION}, HF tokenizer support: ${COE_HAVE_HF_TOKENIZER}")

# Data-parallel training (src/dist, docs/distributed.md). c10d's ProcessGroupGloo.hpp includes
# Gloo's own headers (Debian: libgloo-dev; libtorch's symbols come from libtorch_cpu) and
# ProcessGroupNCCL.hpp includes nccl.h (CUDA toolkit, NCCL_INCLUDE_DIR, or pip's nvidia-nccl wheel
# beside torch in site-packages). A backend whose headers are missing is left out of the build and
# asking for it at run time is an error that says so.
find_path(COE_GLOO_INCLUDE_DIR gloo/rendezvous/store.h HINTS ${TORCH_INCLUDE_DIRS})
find_path(COE_NCCL_INCLUDE_DIR nccl.h
  HINTS ENV NCCL_INCLUDE_DIR ${TORCH_INCLUDE_DIRS} "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include"
        ${CUDA_INCLUDE_DIRS} ${CUDAToolkit_INCLUDE_DIRS})
