"""The workload scripts/gpu_check.sh profiles with Nsight Compute: one bf16 forward+backward of the
benchmark's large attention case (B4 L2048 H16 D128) and of its large concat_linear case
(M8192, 256+256+128 -> 512, gelu). Needs a GPU and a CUDA build."""
import torch

import mmkernels


def main():
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, device="cuda", generator=g).bfloat16().requires_grad_()

    q, k, v = r(4, 2048, 16, 128), r(4, 2048, 16, 128), r(4, 2048, 16, 128)
    mmkernels.cross_attention(q, k, v).backward(torch.randn_like(q))
    xs, w = [r(8192, 256), r(8192, 256), r(8192, 128)], r(512, 640)
    mmkernels.concat_linear(xs, w, None, "gelu").backward(torch.randn(8192, 512, device="cuda").bfloat16())
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
