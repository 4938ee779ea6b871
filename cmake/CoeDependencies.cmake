# All third-party lookups in one place.
find_package(Threads REQUIRED)

# ---- torch: PyPI's wheel, found through a Python environment ------------------------------------
# A COE_FUZZ build compiles only the torch-free parsers (fuzz/): it needs no Python and no torch.
if(NOT COE_FUZZ)
  # coe builds against the libtorch inside a pip-installed torch (>= 2.8): by default the checkout's
  # .venv that tools/install-deps.sh creates, else python3 on PATH (a GPU machine's preinstalled
  # torch). That Python also runs the tests' real clients: torchrun, HF tokenizers, tensorboard.
  if(EXISTS "${CMAKE_SOURCE_DIR}/.venv/bin/python3")
    set(coe_python_default "${CMAKE_SOURCE_DIR}/.venv/bin/python3")
  else()
    find_program(coe_python_default NAMES python3 python NO_CACHE)
  endif()
  set(COE_PYTHON "${coe_python_default}" CACHE FILEPATH "The Python whose pip-installed torch coe builds against")
  if(NOT COE_PYTHON)
    message(FATAL_ERROR "coe: no Python found: run tools/install-deps.sh (it creates .venv with torch), "
                        "or pass -DCOE_PYTHON=/path/to/python with torch installed")
  endif()
  execute_process(
    COMMAND "${COE_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE coe_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE coe_torch_error RESULT_VARIABLE coe_torch_rc)
  if(NOT coe_torch_rc EQUAL 0)
    string(REGEX REPLACE ".*\n([^\n]+)\n?$" "\\1" coe_torch_error "${coe_torch_error}")
    message(FATAL_ERROR "coe: ${COE_PYTHON} cannot import torch (${coe_torch_error}): run tools/install-deps.sh, "
                        "or pass -DCOE_PYTHON=/path/to/python with torch >= 2.8 installed")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${coe_torch_prefix}")
  # coe compiles no CUDA kernels of its own; naming the architectures keeps Caffe2's CMake from
  # probing for a GPU (a CPU machine has none). A100, RTX 4090, H100/H200, B200.
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;8.9;9.0;10.0")
  endif()
  find_package(Torch REQUIRED)
  if(Torch_VERSION VERSION_LESS 2.8)
    message(FATAL_ERROR "coe: torch ${Torch_VERSION} from ${coe_torch_prefix} is too old: coe needs torch >= 2.8 "
                        "(at::_grouped_mm); tools/install-deps.sh installs the pinned one")
  endif()
  if(TORCH_CUDA_LIBRARIES OR CAFFE2_USE_CUDA)
    set(COE_TORCH_CUDA ON)
  else()
    set(COE_TORCH_CUDA OFF)
  endif()
  # CI and tools/gpu-check.sh: a torch without CUDA would silently leave the CUDA-only code out.
  option(COE_REQUIRE_CUDA "Fail unless torch has CUDA and NCCL's headers are found" OFF)
  # Torch's exported flags must reach every TU that includes torch headers; a space-separated string.
  separate_arguments(COE_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
endif()

find_package(fmt REQUIRED)
if(NOT COE_FUZZ)
  find_package(spdlog REQUIRED)
  find_package(CLI11 REQUIRED)
endif()
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)

# The system's fmt ahead of the torch wheel's copy (cmake/CoeFmtFirst.cmake).
include(CoeFmtFirst)
set(COE_FMT_FIRST_DIR "${CMAKE_BINARY_DIR}/fmt-first")
coe_fmt_first("${COE_FMT_FIRST_DIR}")
string(REPLACE "." ";" coe_fmt_parts "${fmt_VERSION}")
list(GET coe_fmt_parts 0 coe_fmt_major)
list(GET coe_fmt_parts 1 coe_fmt_minor)
list(GET coe_fmt_parts 2 coe_fmt_patch)
math(EXPR COE_FMT_VERSION "${coe_fmt_major} * 10000 + ${coe_fmt_minor} * 100 + ${coe_fmt_patch}")

# The HF tokenizer needs PCRE2 (regex engine; its Unicode tables are not used, coe carries HF's:
# src/tokenizer/generated/hf_unicode_tables.cpp). It is optional: without it coe builds with the built-in byte
# tokenizer only, and loading a tokenizer.json is an explicit error.
option(COE_HF_TOKENIZER "Build HF tokenizer.json support (needs PCRE2)" ON)
find_package(PkgConfig REQUIRED)
# XXH64, the checksums of checkpoints and prepared datasets: Debian's libxxhash (libxxhash-dev).
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
set(COE_HAVE_HF_TOKENIZER OFF)
if(COE_HF_TOKENIZER)
  pkg_check_modules(PCRE2 IMPORTED_TARGET libpcre2-8)
  if(PCRE2_FOUND)
    set(COE_HAVE_HF_TOKENIZER ON)
  endif()
endif()
if(COE_FUZZ)
  message(STATUS "coe: fuzz targets only (no torch), fmt ${fmt_VERSION}, HF tokenizer support: ${COE_HAVE_HF_TOKENIZER}")
else()
  message(STATUS "coe: torch ${Torch_VERSION} (CUDA: ${COE_TORCH_CUDA}) from ${COE_PYTHON}, fmt ${fmt_VERSION}, "
                 "HF tokenizer support: ${COE_HAVE_HF_TOKENIZER}")
endif()

if(NOT COE_FUZZ)
  # Data-parallel training (src/distributed, docs/distributed.md). c10d's ProcessGroupGloo.hpp includes
  # Gloo's own headers, which the wheel does not ship (Debian: libgloo-dev; the symbols come from
  # libtorch_cpu). ProcessGroupNCCL.hpp includes nccl.h: the nvidia-nccl wheel's beside torch first,
  # the NCCL that torch loads at run time, then the CUDA toolkit's. A backend whose headers are
  # missing is left out of the build and asking for it at run time is an error that says so.
  find_path(COE_GLOO_INCLUDE_DIR gloo/rendezvous/store.h HINTS ${TORCH_INCLUDE_DIRS})
  find_path(COE_NCCL_INCLUDE_DIR nccl.h
    HINTS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include" ENV NCCL_INCLUDE_DIR ${CUDAToolkit_INCLUDE_DIRS}
          ${CUDA_INCLUDE_DIRS})
  if(COE_REQUIRE_CUDA AND NOT (COE_TORCH_CUDA AND COE_NCCL_INCLUDE_DIR))
    message(FATAL_ERROR "coe: COE_REQUIRE_CUDA: torch ${Torch_VERSION} CUDA: ${COE_TORCH_CUDA}, nccl.h: "
                        "${COE_NCCL_INCLUDE_DIR}; the CUDA build needs both (the CUDA wheel, nvcc, nccl.h)")
  endif()
endif()
