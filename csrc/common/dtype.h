// Element types the kernels are instantiated for (torch-free).
#pragma once

namespace mmkernels {

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

}  // namespace mmkernels
