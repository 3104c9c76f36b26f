// Dynamic shared memory of every tensor-core attention kernel, from its traits (see flash_info.h).
#include "cross_attention/cuda/flash_info.h"
#include "cross_attention/cuda/flash_kernels.cuh"
#include "cross_attention/cuda/flash_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace {

template <typename T, int kD>
void add(std::vector<std::pair<std::string, int64_t>>& out, const char* type) {
  using F = flash::FwdTraits<T, kD>;
  using Bw = flash::BwdTraits<T, kD>;
  const std::string args = std::string("<") + type + ", " + std::to_string(kD);
  out.emplace_back("cuda::flash::flash_fwd_kernel" + args + ">", int64_t(F::kSmemBytes));
  if (!Bw::kFusedDq) out.emplace_back("cuda::flash::flash_dq_kernel" + args + ">", int64_t(Bw::kDqSmemBytes));
  for (int pass : Bw::kSplitDkDv ? std::vector<int>{1, 2} : std::vector<int>{0})
    out.emplace_back("cuda::flash::flash_dkdv_kernel" + args + ", " + std::to_string(pass) + ">",
                     int64_t(Bw::kDkDvSmemBytes));
}

template <typename T, size_t... I>
void add_all(std::vector<std::pair<std::string, int64_t>>& out, const char* type, std::index_sequence<I...>) {
  (add<T, flash::kHeadDims[I]>(out, type), ...);
}

}  // namespace

std::vector<std::pair<std::string, int64_t>> flash_dynamic_smem() {
  std::vector<std::pair<std::string, int64_t>> out;
  add_all<dev::bf16>(out, "bf16", std::make_index_sequence<flash::kNumHeadDims>{});
  add_all<dev::half>(out, "half", std::make_index_sequence<flash::kNumHeadDims>{});
  return out;
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
