// concat_linear's activations and their derivatives, written once for every place that evaluates them:
// CPU scalar and vectorised epilogues, CUDA kernels (and their host emulation). Torch-free.
//
// The math is templated on the value type A and a policy M with the few functions that differ between
// scalar float/double (libm / CUDA math) and SIMD vectors (at::vec): erf, tanh, exp, relu, step.
#pragma once

#include <cmath>

#include "common/device/backend.h"

namespace mmkernels {

enum class Activation : int { None = 0, ReLU = 1, GELU = 2, GELUTanh = 3, SiLU = 4 };
constexpr int kNumActivations = 5;
// Names in code order: the Python API's `activation` strings (exported by the extension).
constexpr const char* kActivationNames[kNumActivations] = {"none", "relu", "gelu", "gelu_tanh", "silu"};

namespace act {
constexpr double kInvSqrt2 = 0.70710678118654752440;     // gelu: Phi(z) = (1 + erf(z / sqrt 2)) / 2
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // gelu': phi(z) = exp(-z^2/2) / sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // gelu_tanh: tanh(sqrt(2/pi) (z + c z^3))
constexpr double kTanhCubic = 0.044715;
}  // namespace act

// Scalar policy (float or double): libm on the host, CUDA's math functions on the device.
template <typename A>
struct ScalarMath {
  static MMK_HOST_DEVICE A erf(A x) { return ::erf(x); }
  static MMK_HOST_DEVICE A tanh(A x) { return ::tanh(x); }
  static MMK_HOST_DEVICE A exp(A x) { return ::exp(x); }
  static MMK_HOST_DEVICE A relu(A x) { return x > A(0) ? x : A(0); }
  static MMK_HOST_DEVICE A step(A x) { return x > A(0) ? A(1) : A(0); }
};
template <>
struct ScalarMath<float> {
  static MMK_HOST_DEVICE float erf(float x) { return ::erff(x); }
  static MMK_HOST_DEVICE float tanh(float x) { return ::tanhf(x); }
  static MMK_HOST_DEVICE float exp(float x) { return ::expf(x); }
  static MMK_HOST_DEVICE float relu(float x) { return x > 0.f ? x : 0.f; }
  static MMK_HOST_DEVICE float step(float x) { return x > 0.f ? 1.f : 0.f; }
};

// y = act(z)
template <typename A, typename M = ScalarMath<A>>
MMK_HOST_DEVICE A activation_forward(A z, Activation a) {
  switch (a) {
    case Activation::ReLU: return M::relu(z);
    case Activation::GELU: return A(0.5) * z * (A(1) + M::erf(z * A(act::kInvSqrt2)));
    case Activation::GELUTanh:
      return A(0.5) * z * (A(1) + M::tanh(A(act::kSqrt2OverPi) * (z + A(act::kTanhCubic) * z * z * z)));
    case Activation::SiLU: return z / (A(1) + M::exp(A(0) - z));
    default: return z;
  }
}

// act'(z)
template <typename A, typename M = ScalarMath<A>>
MMK_HOST_DEVICE A activation_grad(A z, Activation a) {
  switch (a) {
    case Activation::ReLU: return M::step(z);
    case Activation::GELU: {
      const A cdf = A(0.5) * (A(1) + M::erf(z * A(act::kInvSqrt2)));
      return cdf + z * M::exp(A(-0.5) * z * z) * A(act::kInvSqrt2Pi);
    }
    case Activation::GELUTanh: {
      const A k = A(act::kSqrt2OverPi);
      const A th = M::tanh(k * (z + A(act::kTanhCubic) * z * z * z));
      return A(0.5) * (A(1) + th) + A(0.5) * z * (A(1) - th * th) * k * (A(1) + A(3 * act::kTanhCubic) * z * z);
    }
    case Activation::SiLU: {
      const A s = A(1) / (A(1) + M::exp(A(0) - z));
      return s * (A(1) + z * (A(1) - s));
    }
    default: return A(1);
  }
}

}  // namespace mmkernels
