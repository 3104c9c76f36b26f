// Instantiation of the sm_80 concat_linear GEMM (gemm_sm80.cuh) for dev::bf16 (torch-free), and the rule
// of which GEMMs it takes.
#include "concat_linear/cuda/gemm_sm80.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
bool sm80_takes(const GemmArgs& args) {
  const int layout = sm80::layout_of(args);
  return layout == 0 || ((layout == 2 || layout == 3) && args.act == Activation::None);
}
template dev::Error concat_linear_gemm_sm80<dev::bf16>(const GemmArgs&, dev::Stream);
MMK_BACKEND_END
}  // namespace mmkernels::cuda
