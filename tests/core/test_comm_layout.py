"""Layout kernels of csrc/comm through galvatron.parallel.packing: bit-exact against torch
references for every dtype, error cases, round trips, and a one-process Ulysses simulation."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from galvatron import _C
from galvatron.parallel import packing

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]
INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.int64}


def random_bits(shape, dtype, gen=None) -> torch.Tensor:
    """Random bit patterns (NaNs, infs, denormals included) so equality is bit-exactness."""
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    esize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * esize
    raw = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).view(shape)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def assert_bit_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert torch.equal(bits(a), bits(b))


# ---- Ulysses pack / unpack against the references -------------------------------------------


def qkv_cases(world: int):
    # (b, s_local, Hq, Hkv, d, dv): 1-sized dims, odd head sizes, b=3, GQA, v with its own d.
    return [
        (3, 5, 2 * world, world, 7, 7),
        (1, 1, world, world, 1, 1),
        (2, 3, 4 * world, world, 5, 3),
    ]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ulysses_qkv_pack_unpack_bit_exact_vs_reference(world, dtype):
    gen = torch.Generator().manual_seed(world)
    for b, sl, hq, hkv, d, dv in qkv_cases(world):
        q = random_bits((b, sl, hq, d), dtype, gen)
        k = random_bits((b, sl, hkv, d), dtype, gen)
        v = random_bits((b, sl, hkv, dv), dtype, gen)
        buf = packing.ulysses_pack_qkv(q, k, v, world)
        assert buf.shape == (world, (q.numel() + k.numel() + v.numel()) // world)
        assert_bit_equal(buf, packing.reference_ulysses_pack_qkv(q, k, v, world))
        # Unpack treats the buffer as received: row i = sequence chunk i.
        shapes = [(b, sl * world, h // world, dd) for h, dd in ((hq, d), (hkv, d), (hkv, dv))]
        got = packing.ulysses_unpack_qkv(buf, world, *shapes)
        want = packing.reference_ulysses_unpack_qkv(buf, world, *shapes)
        for g, w, s in zip(got, want, shapes, strict=True):
            assert tuple(g.shape) == s
            assert_bit_equal(g, w)


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ulysses_out_pack_unpack_bit_exact_vs_reference(world, dtype):
    gen = torch.Generator().manual_seed(100 + world)
    for b, sl, h_local, d in [(3, 3, 2, 5), (1, 1, 1, 1), (2, 2, 3, 128)]:
        out = random_bits((b, sl * world, h_local, d), dtype, gen)
        buf = packing.ulysses_pack_out(out, world)
        assert_bit_equal(buf, packing.reference_ulysses_pack_out(out, world))
        shape = (b, sl, h_local * world, d)
        assert_bit_equal(
            packing.ulysses_unpack_out(buf, world, shape),
            packing.reference_ulysses_unpack_out(buf, world, shape),
        )


def test_ulysses_seq_first_layout_via_dims():
    # [s, b, H, d] activations: pass seq_dim=0 / head_dim=2.
    world, s, b, h, d = 4, 8, 3, 8, 6
    x = torch.randn(s // world, b, h, d)
    buf = packing.ulysses_pack_qkv(x, x, x, world, head_dim=2)
    assert torch.equal(buf, packing.reference_pack_dim_chunks([x, x, x], 2, world))
    shape = (s, b, h // world, d)
    got = packing.ulysses_unpack_qkv(buf, world, shape, shape, shape, seq_dim=0)
    want = packing.reference_ulysses_unpack_qkv(buf, world, shape, shape, shape, seq_dim=0)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    assert torch.equal(got[2][:2], x[:, :, :2])  # rank 0's sequence chunk, head group 0


# ---- generic primitives -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_split_dim_to_chunks_matches_stack_of_chunks_every_dim(dtype):
    gen = torch.Generator().manual_seed(7)
    t = random_bits((2, 6, 1, 4, 3), dtype, gen)
    for dim in range(-t.ndim, t.ndim):
        for n in (1, 2, 3, 6):
            if t.shape[dim] % n:
                continue
            got = packing.split_dim_to_chunks(t, dim, n)
            assert_bit_equal(got, packing.reference_split_dim_to_chunks(t, dim, n))
            assert_bit_equal(packing.chunks_to_dim(got, dim, n), t)
            assert_bit_equal(packing.chunks_to_dim(got, dim, n), packing.reference_chunks_to_dim(got, dim, n))


def test_multithreaded_kernel_equals_single_threaded_and_reference():
    # 4 MiB per tensor: above the 1 MiB-per-thread threshold, so 2..8 threads really run.
    q = torch.randn(2, 256, 16, 128)
    k = torch.randn(2, 256, 8, 128)
    want = packing.reference_pack_dim_chunks([q, k], 2, 8)
    for threads in (1, 2, 3, 8):
        buf = packing.pack_dim_chunks([q, k], 2, 8, num_threads=threads)
        assert torch.equal(buf, want)
        shapes = [(2, 2048, 2, 128), (2, 2048, 1, 128)]
        outs = packing.unpack_dim_chunks(buf, 1, 8, shapes, num_threads=threads)
        for o, r in zip(outs, packing.reference_unpack_dim_chunks(buf, 1, 8, shapes), strict=True):
            assert torch.equal(o, r)


def test_long_rows_are_split_across_memcpy_calls_and_threads():
    # 300 kB rows (> the 256 KiB per-memcpy cap), 3 of them per chunk, odd byte counts.
    t = random_bits((3, 2, 300_001), torch.uint8)
    for threads in (1, 2, 5):
        got = packing.split_dim_to_chunks(t, 1, 2, num_threads=threads)
        assert torch.equal(got, packing.reference_split_dim_to_chunks(t, 1, 2))
        assert torch.equal(packing.chunks_to_dim(got, 1, 2, num_threads=threads), t)


def test_concurrent_callers_share_the_thread_pool_safely():
    xs = [torch.randn(4, 512, 8, 64) for _ in range(4)]  # 4 MiB each: multi-threaded kernel
    want = [packing.reference_split_dim_to_chunks(x, 2, 4) for x in xs]
    results: dict[int, bool] = {}

    def work(i: int) -> None:
        results[i] = all(
            torch.equal(packing.split_dim_to_chunks(xs[i], 2, 4, num_threads=2), want[i])
            for _ in range(5)
        )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert results == {0: True, 1: True, 2: True, 3: True}


def test_thread_pool_works_in_a_forked_child():
    # The child only runs our kernel (numpy buffers): torch's own OpenMP pool is not fork-safe.
    a = np.arange(4 * 1024 * 1024, dtype=np.int32)
    want = a.reshape(4, 2, -1).transpose(1, 0, 2).ravel()
    got = np.empty_like(a)
    _C.split_dim_to_chunks([a], got, [[4, 1024, 1024]], 1, 2, 2)  # the pool exists now
    pid = os.fork()
    if pid == 0:  # child
        out = np.empty_like(a)
        _C.split_dim_to_chunks([a], out, [[4, 1024, 1024]], 1, 2, 2)
        os._exit(0 if np.array_equal(out, want) else 1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("forked child hung in the threaded kernel")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert np.array_equal(got, want)


def test_preallocated_outputs_are_filled_and_returned():
    q, k = torch.randn(2, 4, 8, 3), torch.randn(2, 4, 4, 3)
    dst = torch.full((q.numel() + 2 * k.numel(),), float("nan"))
    buf = packing.ulysses_pack_qkv(q, k, k, 4, dst=dst)
    assert buf.data_ptr() == dst.data_ptr() and buf.shape == (4, dst.numel() // 4)
    assert torch.equal(buf, packing.reference_ulysses_pack_qkv(q, k, k, 4))
    shapes = [(2, 16, 2, 3), (2, 16, 1, 3), (2, 16, 1, 3)]
    dsts = [torch.empty(s) for s in shapes]
    outs = packing.ulysses_unpack_qkv(buf, 4, *shapes, dsts=dsts)
    for o, d, r in zip(outs, dsts, packing.reference_ulysses_unpack_qkv(buf, 4, *shapes), strict=True):
        assert o.data_ptr() == d.data_ptr() and torch.equal(o, r)
    with pytest.raises(ValueError, match="dst holds 3 elements"):
        packing.ulysses_pack_out(q, 2, dst=torch.empty(3))
    with pytest.raises(ValueError, match="dst has dtype torch.float16"):
        packing.ulysses_pack_out(q, 2, dst=torch.empty(q.numel(), dtype=torch.float16))
    with pytest.raises(ValueError, match=r"dsts\[0\] must be contiguous"):
        packing.ulysses_unpack_out(
            torch.zeros(96), 2, (2, 2, 8, 3), dst=torch.empty(3, 2, 8, 2).transpose(0, 3)
        )


def test_element_sizes_without_int_view_fall_back_to_reference():
    t = torch.randn(2, 4, 3, dtype=torch.complex128)  # 16-byte elements: torch path
    assert torch.equal(packing.split_dim_to_chunks(t, 1, 2), packing.reference_split_dim_to_chunks(t, 1, 2))


def test_swap_outer_parts_still_matches_transpose():
    a = np.arange(2 * 3 * 5, dtype=np.int16)
    out = np.empty_like(a)
    _C.swap_outer_parts(a, out, 2, 3, 5, 2)
    assert np.array_equal(out, a.reshape(2, 3, 5).transpose(1, 0, 2).ravel())


# ---- the CUDA kernel's indexing, emulated on the CPU --------------------------------------------


@pytest.mark.parametrize("offset_bytes", [0, 1, 2, 4, 8])
@pytest.mark.parametrize("inner", [1, 3, 8, 4096 + 8])
def test_cuda_tiling_emulated_on_cpu_equals_cpu_kernel(offset_bytes, inner):
    # Buffers at an odd byte offset force 1/2/4/8-byte vectors; inner=4104 int8 rows > one tile.
    raw = np.random.default_rng(inner).integers(0, 256, 3 * 4 * inner + 64, dtype=np.uint8)
    src = raw[offset_bytes : offset_bytes + 3 * 4 * inner]
    shapes = [[3, 4, inner]]
    want = np.empty(src.size, np.uint8)
    _C.split_dim_to_chunks([src], want, shapes, 1, 4)
    dst_raw = np.zeros(src.size + 16, np.uint8)
    got = dst_raw[offset_bytes : offset_bytes + src.size]
    _C.split_dim_to_chunks([src], got, shapes, 1, 4, emulate_cuda=True)
    assert np.array_equal(got, want)
    back = np.empty_like(src)
    _C.chunks_to_dim(got, [back], shapes, 1, 4, emulate_cuda=True)
    assert np.array_equal(back, src)


def test_cuda_entry_points_say_when_not_built():
    if _C.with_cuda:
        pytest.skip("built with CUDA")
    with pytest.raises(ValueError, match="without GALVATRON_CUDA"):
        _C.cuda_split_dim_to_chunks([1], 2, [[4]], 0, 2, 4, 0)


# ---- errors -------------------------------------------------------------------------------------


def test_errors_name_the_bad_argument():
    q = torch.randn(2, 4, 8, 16)
    k = torch.randn(2, 4, 4, 16)
    with pytest.raises(ValueError, match=r"k has shape .* not divisible by world=8"):
        packing.ulysses_pack_qkv(q, k, k, 8)
    with pytest.raises(ValueError, match=r"q_shape .* not divisible by world=3"):
        packing.ulysses_unpack_qkv(
            torch.zeros(3 * 4 * 8 * 16), 3, (2, 4, 8, 16), (2, 12, 8, 16), (2, 12, 8, 16)
        )
    with pytest.raises(ValueError, match="k must be contiguous"):
        packing.ulysses_pack_qkv(q, k.transpose(1, 2), k, 2)
    with pytest.raises(ValueError, match="v has dtype torch.float16"):
        packing.ulysses_pack_qkv(q, k, k.half(), 2)
    with pytest.raises(ValueError, match="buf holds"):
        packing.ulysses_unpack_out(torch.zeros(10), 2, (2, 2, 8, 16))
    with pytest.raises(ValueError, match="buf must be contiguous"):
        packing.ulysses_unpack_out(torch.zeros(16, 8).t(), 2, (2, 2, 4, 8))
    with pytest.raises(ValueError, match="world must be a positive int"):
        packing.ulysses_pack_out(q, 0)
    with pytest.raises(ValueError, match="dim=4 is out of range for t"):
        packing.split_dim_to_chunks(q, 4, 2)
    with pytest.raises(
        ValueError, match=r"t has shape \(2, 4, 8, 16\): size 4 of dim 1 is not divisible by n=3"
    ):
        packing.split_dim_to_chunks(q, 1, 3)
    with pytest.raises(ValueError, match=r"t must have shape \[n=3"):
        packing.chunks_to_dim(q, 1, 3)


def test_cpp_core_validates_too():
    a = np.zeros(12, np.float32)
    with pytest.raises(
        ValueError, match=r"srcs\[0\] of shape \[3, 4\]: size 3 of dim 0 is not divisible"
    ):
        _C.split_dim_to_chunks([a], np.zeros(12, np.float32), [[3, 4]], 0, 2)
    with pytest.raises(ValueError, match="element size"):
        _C.split_dim_to_chunks([a], np.zeros(12, np.float64), [[3, 4]], 0, 1)
    with pytest.raises(ValueError, match=r"dst holds 11 elements"):
        _C.split_dim_to_chunks([a], np.zeros(11, np.float32), [[3, 4]], 1, 2)
    with pytest.raises(ValueError, match="num_chunks must be >= 1"):
        _C.chunks_to_dim(a, [np.zeros(12, np.float32)], [[3, 4]], 1, 0)
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        _C.chunks_to_dim(a, [np.zeros(12, np.float32)], [[3, 4]], 2, 1)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        _C.chunks_to_dim(np.zeros((4, 6), np.float32)[:, ::2], [a], [[3, 4]], 1, 2)


# ---- round trips (hypothesis) -----------------------------------------------------------------


@st.composite
def tensors_and_split(draw):
    ndim = draw(st.integers(1, 4))
    n = draw(st.sampled_from([1, 2, 3, 4, 8]))
    dim = draw(st.integers(-ndim, ndim - 1))
    shapes = []
    for _ in range(draw(st.integers(1, 3))):
        shape = [draw(st.integers(0, 4)) for _ in range(ndim)]
        shape[dim] = n * draw(st.integers(0, 3))
        shapes.append(shape)
    dtype = draw(st.sampled_from(DTYPES))
    return shapes, dim, n, dtype


@settings(max_examples=60, deadline=None)
@given(tensors_and_split())
def test_roundtrip_pack_then_unpack_is_identity(case):
    shapes, dim, n, dtype = case
    xs = [random_bits(tuple(s), dtype) for s in shapes]
    buf = packing.pack_dim_chunks(xs, dim, n)
    assert_bit_equal(buf, packing.reference_pack_dim_chunks(xs, dim, n))
    for x, y in zip(xs, packing.unpack_dim_chunks(buf, dim, n, shapes), strict=True):
        assert_bit_equal(x, y)
    t = xs[0]
    assert_bit_equal(packing.chunks_to_dim(packing.split_dim_to_chunks(t, dim, n), dim, n), t)


# ---- the whole Ulysses data movement, P ranks simulated in one process ------------------------


def all_to_all(sends: list[torch.Tensor]) -> list[torch.Tensor]:
    """Equal-split all_to_all_single: rank j receives row j of every rank's send buffer."""
    world = len(sends)
    return [torch.stack([sends[i][j] for i in range(world)]) for j in range(world)]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_ulysses_simulated_all_to_all_gives_full_sequence_local_heads(world):
    b, s, hq, hkv, d = 3, 2 * world, 2 * world, world, 5
    gen = torch.Generator().manual_seed(world)
    q, k, v = (torch.randn(b, s, h, d, generator=gen) for h in (hq, hkv, hkv))
    sl = s // world
    sends = [
        packing.ulysses_pack_qkv(*(x[:, r * sl : (r + 1) * sl].contiguous() for x in (q, k, v)), world)
        for r in range(world)
    ]
    shapes = [(b, s, h // world, d) for h in (hq, hkv, hkv)]
    outs = []
    for j, recv in enumerate(all_to_all(sends)):
        got = packing.ulysses_unpack_qkv(recv, world, *shapes)
        for x, y in zip((q, k, v), got, strict=True):
            h = x.shape[2] // world
            assert torch.equal(y, x[:, :, j * h : (j + 1) * h])  # full sequence, heads of rank j
        outs.append(got[0] * 2.0)  # stand-in for attention: any per-head function
    # Back: each rank's [b, s, H/P, d] output -> [b, s/P, H, d] on the rank owning that chunk.
    sends = [packing.ulysses_pack_out(o, world) for o in outs]
    for r, recv in enumerate(all_to_all(sends)):
        got = packing.ulysses_unpack_out(recv, world, (b, sl, hq, d))
        assert torch.equal(got, q[:, r * sl : (r + 1) * sl] * 2.0)


# ---- autograd wrappers: backward of pack is unpack and vice versa -----------------------------


def test_autograd_pair_gradients_equal_reference_autograd():
    world, gen = 4, torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, h, 5, generator=gen, requires_grad=True) for h in (8, 4, 4))
    weight = torch.randn(world, (q.numel() + 2 * k.numel()) // world, generator=gen)
    ours = packing.pack_dim_chunks_autograd([q, k, v], 2, world)
    ref = packing.reference_pack_dim_chunks([q, k, v], 2, world)
    assert torch.equal(ours, ref)
    g_ours = torch.autograd.grad((ours * weight).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref * weight).sum(), (q, k, v))
    for a, b in zip(g_ours, g_ref, strict=True):
        assert torch.equal(a, b)

    buf = torch.randn(world, weight.shape[1], generator=gen, requires_grad=True)
    shapes = [(2, 3 * world, h // world, 5) for h in (8, 4, 4)]
    outs = packing.unpack_dim_chunks_autograd(buf, 1, world, shapes)
    refs = packing.reference_unpack_dim_chunks(buf, 1, world, shapes)
    ws = [torch.randn(s, generator=gen) for s in shapes]
    # Only q and v feed the loss: k's gradient slot is None and must count as zeros.
    loss_ours = (outs[0] * ws[0]).sum() + (outs[2] * ws[2]).sum()
    loss_ref = (refs[0] * ws[0]).sum() + (refs[2] * ws[2]).sum()
    (g_buf,) = torch.autograd.grad(loss_ours, buf)
    (g_buf_ref,) = torch.autograd.grad(loss_ref, buf)
    assert torch.equal(g_buf, g_buf_ref)


def test_redistribution_recipes_gather_and_reshard():
    world, full = 4, torch.randn(3, 8, 12, 5)
    shards = list(full.chunk(world, dim=1))  # sharded on dim 1
    gathered = torch.cat([s.reshape(-1) for s in shards])  # all_gather_into_tensor: [P][x]
    assert torch.equal(packing.unpack_dim_chunks(gathered, 1, world, [full.shape])[0], full)
    # dim 1-sharded -> dim 2-sharded through one all-to-all.
    sends = [packing.pack_dim_chunks([s.contiguous()], 2, world) for s in shards]
    y_shape = (3, 8, 12 // world, 5)
    for j, recv in enumerate(all_to_all(sends)):
        y = packing.unpack_dim_chunks(recv, 1, world, [y_shape])[0]
        assert torch.equal(y, full.chunk(world, dim=2)[j])
    # reduce-scatter along dim 2 = sum over ranks of row j of each packed buffer.
    xs = [torch.randn(3, 8, 12, 5) for _ in range(world)]
    packed = [packing.pack_dim_chunks([x], 2, world) for x in xs]
    for j in range(world):
        got = sum(p[j] for p in packed).view(3, 8, 12 // world, 5)
        assert torch.allclose(got, sum(xs).chunk(world, dim=2)[j])


# ---- GPU (skipped without one) ----------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and _C.with_cuda), reason="needs CUDA build + GPU"
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_kernel_bit_exact_vs_reference(dtype):
    gen = torch.Generator().manual_seed(3)
    for world in (1, 2, 4, 8):
        for b, sl, hq, hkv, d, dv in qkv_cases(world):
            q, k, v = (
                random_bits(sh, dtype, gen).cuda()
                for sh in ((b, sl, hq, d), (b, sl, hkv, d), (b, sl, hkv, dv))
            )
            buf = packing.ulysses_pack_qkv(q, k, v, world)
            assert_bit_equal(buf, packing.reference_ulysses_pack_qkv(q, k, v, world))
            shapes = [(b, sl * world, h // world, dd) for h, dd in ((hq, d), (hkv, d), (hkv, dv))]
            for g, w in zip(
                packing.ulysses_unpack_qkv(buf, world, *shapes),
                packing.reference_ulysses_unpack_qkv(buf, world, *shapes),
                strict=True,
            ):
                assert_bit_equal(g, w)
