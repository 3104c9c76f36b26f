// concat_linear's fused element-wise passes on CPU: bias + activation over the GEMM accumulator in one
// pass (forward), and dz = dy * act'(z) in one pass (backward). Vectorised with at::vec; compiled once
// per CPU capability.
#include <ATen/Parallel.h>

#include <cmath>

#include "common/cpu_kernel_utils.h"
#include "concat_linear/params.h"

namespace mmkernels::cpu::CPU_CAPABILITY {
namespace {

template <typename A>
inline A act_fwd(A z, Activation act) {
  switch (act) {
    case Activation::ReLU: return z > A(0) ? z : A(0);
    case Activation::GELU: return A(0.5) * z * (A(1) + std::erf(z * A(M_SQRT1_2)));
    case Activation::GELUTanh: {
      const A inner = A(M_2_SQRTPI * M_SQRT1_2) * (z + A(0.044715) * z * z * z);
      return A(0.5) * z * (A(1) + std::tanh(inner));
    }
    case Activation::SiLU: return z / (A(1) + std::exp(-z));
    default: return z;
  }
}

template <typename A>
inline A act_grad(A z, Activation act) {
  switch (act) {
    case Activation::ReLU: return z > A(0) ? A(1) : A(0);
    case Activation::GELU: {
      const A cdf = A(0.5) * (A(1) + std::erf(z * A(M_SQRT1_2)));
      const A pdf = std::exp(A(-0.5) * z * z) * A(M_2_SQRTPI * M_SQRT1_2 * 0.5);
      return cdf + z * pdf;
    }
    case Activation::GELUTanh: {
      const A k = A(M_2_SQRTPI * M_SQRT1_2);
      const A inner = k * (z + A(0.044715) * z * z * z);
      const A th = std::tanh(inner);
      return A(0.5) * (A(1) + th) + A(0.5) * z * (A(1) - th * th) * k * (A(1) + A(3 * 0.044715) * z * z);
    }
    case Activation::SiLU: {
      const A s = A(1) / (A(1) + std::exp(-z));
      return s * (A(1) + z * (A(1) - s));
    }
    default: return A(1);
  }
}

// Vectorised activation for the float path (the hot one); other types use the scalar forms.
inline at::vec::Vectorized<float> act_fwd_vec(const at::vec::Vectorized<float>& z, Activation act) {
  using Vec = at::vec::Vectorized<float>;
  switch (act) {
    case Activation::ReLU: return at::vec::clamp_min(z, Vec(0.f));
    case Activation::GELU: return Vec(0.5f) * z * (Vec(1.f) + (z * Vec(float(M_SQRT1_2))).erf());
    case Activation::GELUTanh: {
      const Vec inner = Vec(float(M_2_SQRTPI * M_SQRT1_2)) * (z + Vec(0.044715f) * z * z * z);
      return Vec(0.5f) * z * (Vec(1.f) + inner.tanh());
    }
    case Activation::SiLU: return z / (Vec(1.f) + z.neg().exp());
    default: return z;
  }
}

template <typename T>
void epilogue_forward_impl(const ConcatLinearEpilogueParams& p) {
  using A = acc_type<T>;
  const A* acc = static_cast<const A*>(p.acc);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  T* z = static_cast<T*>(p.z);
  const int64_t N = p.N;
  at::parallel_for(0, p.M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t begin, int64_t end) {
    std::vector<A> zrow(N), brow(N, A(0));
    if (bias) for (int64_t j = 0; j < N; ++j) brow[j] = static_cast<A>(bias[j]);
    for (int64_t i = begin; i < end; ++i) {
      const A* a = acc + i * N;
      for (int64_t j = 0; j < N; ++j) zrow[j] = a[j] + brow[j];
      if (z) convert_row(zrow.data(), z + i * N, N);
      T* yr = y + i * N;
      int64_t j = 0;
      if constexpr (std::is_same_v<A, float>) {
        using Vec = at::vec::Vectorized<float>;
        if constexpr (std::is_same_v<T, float>) {
          for (; j + Vec::size() <= N; j += Vec::size()) act_fwd_vec(Vec::loadu(zrow.data() + j), p.act).store(yr + j);
        } else {
          for (; j + Vec::size() <= N; j += Vec::size()) act_fwd_vec(Vec::loadu(zrow.data() + j), p.act).store(zrow.data() + j);
          convert_row(zrow.data(), yr, j);
        }
      }
      for (; j < N; ++j) yr[j] = static_cast<T>(act_fwd(zrow[j], p.act));
    }
  });
}

template <typename T>
void epilogue_backward_impl(const ConcatLinearGradParams& p) {
  using A = acc_type<T>;
  const T* dy = static_cast<const T*>(p.dy);
  const T* z = static_cast<const T*>(p.z);
  T* dz = static_cast<T*>(p.dz);
  at::parallel_for(0, p.M * p.N, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      dz[i] = static_cast<T>(static_cast<A>(dy[i]) * act_grad(static_cast<A>(z[i]), p.act));
  });
}

}  // namespace

void concat_linear_epilogue_forward(const ConcatLinearEpilogueParams& p) {
  switch (p.dtype) {
    case DType::Float32: return epilogue_forward_impl<float>(p);
    case DType::Float64: return epilogue_forward_impl<double>(p);
    case DType::BFloat16: return epilogue_forward_impl<c10::BFloat16>(p);
    case DType::Float16: return epilogue_forward_impl<c10::Half>(p);
  }
}

void concat_linear_epilogue_backward(const ConcatLinearGradParams& p) {
  switch (p.dtype) {
    case DType::Float32: return epilogue_backward_impl<float>(p);
    case DType::Float64: return epilogue_backward_impl<double>(p);
    case DType::BFloat16: return epilogue_backward_impl<c10::BFloat16>(p);
    case DType::Float16: return epilogue_backward_impl<c10::Half>(p);
  }
}

}  // namespace mmkernels::cpu::CPU_CAPABILITY
