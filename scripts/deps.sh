# The build dependencies of mmkernels, pinned in this one place (sourced by the scripts; CMakeLists.txt
# reads CUTLASS_VERSION from here to check the headers it finds).
#
#   CUTLASS/CuTe: the kernel library of the CUDA kernels (headers only). The nvidia-cutlass wheel carries
#   them under cutlass_library/source/include; its Python extras pull packages we do not need: --no-deps.
#   CUDA headers for the host emulation (cuda_runtime_api.h, cuda.h, libcu++ under cccl/), which CuTe
#   includes even when compiled by the host compiler: the CUDA toolkit's when nvcc is found, otherwise
#   these two header wheels (a few MB, no GPU driver or library is used).
CUTLASS_VERSION=4.2.0.0
CUDA_HEADERS_VERSION=13.0.*
BUILD_TOOLS=(numpy "scikit-build-core>=0.10" "pybind11>=2.12" ninja "cmake>=3.26")

# install_build_deps PIP: the build tools, CUTLASS, and the CUDA headers when no toolkit is found.
install_build_deps() {
  local pip="$1"
  "$pip" install -q "${BUILD_TOOLS[@]}"
  "$pip" install -q --no-deps "nvidia-cutlass==$CUTLASS_VERSION"
  if ! command -v "${NVCC:-nvcc}" >/dev/null 2>&1 && [ -z "${CUDA_HOME:-}" ]; then
    "$pip" install -q --no-deps "nvidia-cuda-runtime==$CUDA_HEADERS_VERSION" "nvidia-cuda-cccl==$CUDA_HEADERS_VERSION"
  fi
}
