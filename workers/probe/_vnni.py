"""TVM's ``dot_16x4_vnni`` tensor intrinsic with operands typed as the shipped LLVM declares them.

``vpdpbusd`` (AVX-512 VNNI): 16 int32 lanes += the dot products of 4 unsigned bytes of ``A``
(broadcast) with 4 signed bytes of each of 16 rows of ``B``. LLVM (the version in the
apache-tvm 0.27 wheel) declares ``llvm.x86.avx512.vpdpbusd.512`` as
``(<16 x i32>, <64 x i8>, <64 x i8>) -> <16 x i32>``; TVM's own implementation passes
``<16 x i32>`` for the byte operands and the module fails LLVM's verifier.
"""

from __future__ import annotations

from typing import Any

_done = False


def _impl() -> Any:
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)  # type: ignore[untyped-decorator]
    def dot_16x4_u8i8i32_vnni(
        A: T.Buffer((4,), "uint8", offset_factor=1),  # type: ignore[valid-type]
        B: T.Buffer((16, 4), "int8", offset_factor=1),  # type: ignore[valid-type]
        C: T.Buffer((16,), "int32", offset_factor=1),  # type: ignore[valid-type]
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
            b_i8x64 = B.vload([0, 0], dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                a_u8x64,
                b_i8x64,
                dtype="int32x16",
            )

    return dot_16x4_u8i8i32_vnni


def register() -> None:
    """Replace the registered ``dot_16x4_vnni`` implementation (idempotent)."""
    global _done
    if _done:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin.x86 import VNNI_DOT_16x4_INTRIN, dot_product_16x4_u8i8i32_desc

    TensorIntrin.register(
        VNNI_DOT_16x4_INTRIN, dot_product_16x4_u8i8i32_desc, _impl(), override=True
    )
    _done = True
