"""Appendix E, `neuralwiki.compiled`: the compiled rungs and what they stand on.

`wide_vectors` (in a fresh process, where numba is not imported yet: 512-bit registers in the machine code exactly
when it asked for them; and the choices it must leave alone); `aligned_zeros`; the compiled rungs' refusals, with or
without numba; the module importing without numba; the loops in plain Python and compiled, against torch, on shapes
off a multiple of 8 and 4 and over more than one tile; `cpu_peak` on sample processors; the appendix's pictures,
drawn by its own cells (run here from the notebook); and the answers its flashcards claim.
"""
import importlib.util, os, re, subprocess, sys
from pathlib import Path
from unittest import mock

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

import neuralwiki.compiled as compiled_module
from neuralwiki.compiled import (COMPILED, NC, WIDE, aligned_zeros, compiled, cpu_peak, ikj_loop, matmul_tiled, tiled_loop,
                                 wide_vectors)
from neuralwiki.matmul import MATMULS, triple_loop
from _notebooks import run_cells
from test_matmul import FIXED, RANDOM, check_rung

ROOT = Path(__file__).resolve().parents[1]
APPENDIX = ROOT/'nbs'/'e_speed.ipynb'
HAS_NUMBA = importlib.util.find_spec('numba') is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason='numba is not installed')
G = torch.Generator().manual_seed(0)
X, W = torch.rand(5, 64, generator=G) * 16, torch.randn(64, 10, generator=G)


def run(code):
    "Run `code` in a fresh Python (so numba is not imported yet) and return what it printed."
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- wide_vectors ----------------------------------------------------------------------------------------------------
@needs_numba
def test_wide_vectors_asks_for_512_bits_before_numba_is_imported():
    out = run(f"""
import os, sys
import numpy as np
import llvmlite.binding as llvm
from neuralwiki.compiled import compiled, ikj_loop, wide_vectors
has_avx512 = bool(llvm.get_host_cpu_features().get('avx512f'))
wide = wide_vectors()
assert wide == has_avx512 and wide_vectors() == wide  # asking again changes nothing
if wide: assert '+avx512f' in os.environ['NUMBA_CPU_FEATURES'] and os.environ['NUMBA_CPU_FEATURES'].endswith({WIDE!r})
assert 'numba' not in sys.modules  # nothing above imported numba: the setting holds
a, c = np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)
f = compiled(ikj_loop); f(a, a, c, 4, 4, 4)
assert c[0, 0] == 4
asm = next(iter(f.inspect_asm().values()))
print(wide, 'zmm' in asm)  # 512-bit registers (zmm) in the machine code exactly when they were asked for
""")
    wide, zmm = out.split()
    assert wide == zmm, out


def test_wide_vectors_leaves_other_choices_alone():
    llvm = pytest.importorskip('llvmlite.binding')
    with mock.patch.dict(os.environ, {'NUMBA_CPU_FEATURES': '+avx2'}):
        assert wide_vectors() is False and os.environ['NUMBA_CPU_FEATURES'] == '+avx2'  # the user's own choice stays
    with mock.patch.dict(os.environ), mock.patch.dict(sys.modules, {'numba': sys}):  # numba imported first: too late
        os.environ.pop('NUMBA_CPU_FEATURES', None)
        assert wide_vectors() is False and 'NUMBA_CPU_FEATURES' not in os.environ
    no_avx512 = {'avx2': True, 'avx512f': False}
    with mock.patch.dict(os.environ), mock.patch.dict(sys.modules), \
         mock.patch.object(llvm, 'get_host_cpu_features', return_value=no_avx512):
        os.environ.pop('NUMBA_CPU_FEATURES', None); sys.modules.pop('numba', None)
        assert wide_vectors() is False and 'NUMBA_CPU_FEATURES' not in os.environ


# --- what imports, and what is refused ---------------------------------------------------------------------------------
def test_the_module_imports_without_numba():
    out = run("""
import sys
sys.modules['numba'] = None  # as if it were not installed
import numpy as np, torch
from neuralwiki.compiled import matmul_njit, tiled_loop
a, b, c = np.ones((8, 4), np.float32), np.full((4, 3), 2, np.float32), np.zeros((8, 3), np.float32)
tiled_loop(a, b, c)  # plain Python without numba
print(c[0].tolist())
try: matmul_njit(torch.ones(2, 2), torch.ones(2, 2))
except ImportError as e: print(e)
""")
    assert out.splitlines() == ['[8.0, 8.0, 8.0]', 'compiling the loops (matmul_njit, matmul_ikj, matmul_tiled) needs numba, '
                                'which is not installed: pip install numba']
    assert run("import sys, neuralwiki.compiled\nprint('numba' in sys.modules)").strip() == 'False'  # imported only when needed


def test_without_numba_a_compiled_rung_says_what_to_install():
    saved = dict(compiled_module._compiled)
    compiled_module._compiled.clear()  # the compiled code set aside, so that the rung must compile
    try:
        with mock.patch.dict(sys.modules, {'numba': None}):
            for f in COMPILED.values():
                with pytest.raises(ImportError, match='pip install numba'): f(X, W)
    finally: compiled_module._compiled.update(saved)


@pytest.mark.parametrize('name', list(COMPILED))
def test_compiled_rungs_refuse_bad_input(name):
    "In check_matmul's words, and anything but float32 on the CPU, with or without numba (checked before compiling)."
    f = COMPILED[name]
    ai, bi = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [7, 8]])
    for args, error, words in [((X, X), ValueError, 'a has shape (5, 64) and b has shape (5, 64)'),
                               (([[1.]], torch.ones(1, 1)), TypeError, 'torch.Tensor'),
                               ((X, W.double()), TypeError, 'torch.float64'),
                               ((X.double(), W.double()), TypeError, 'convert both with .float()'),
                               ((ai, bi), TypeError, 'float32'),
                               ((X.to('meta'), W.to('meta')), ValueError, 'run on the CPU')]:
        with pytest.raises(error, match=re.escape(words)): f(*args)


def test_aligned_zeros_start_on_a_cache_line():
    for r, c in [(1, 1), (3, 5), (64, 64)]:
        z = aligned_zeros(r, c)
        assert z.ctypes.data % 64 == 0 and z.shape == (r, c) and z.dtype == np.float32 and not z.any()


# --- the loops, plain and compiled, against torch ---------------------------------------------------------------------
def test_the_loops_in_plain_python():
    "Called directly, without numba, the loop functions are ordinary Python, and give torch's answers."
    g = torch.Generator().manual_seed(1)
    for m, k, n in [(1, 1, 1), (3, 5, 2), (0, 3, 2), (2, 0, 3)]:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        for loop in (triple_loop, ikj_loop):
            c = [[0] * n for _ in range(m)]
            loop(a.tolist(), b.tolist(), c, m, k, n)
            torch.testing.assert_close(torch.tensor(c, dtype=torch.float32).reshape(m, n), a @ b)
    a, b = torch.randn(8, 8, generator=g).numpy(), torch.randn(8, NC + 88, generator=g).numpy()  # two tiles of NC columns
    c = np.zeros((8, NC + 88), dtype=np.float32)
    tiled_loop(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)


@needs_numba
def test_compiled_rungs_match_torch():
    g = torch.Generator().manual_seed(2)
    shapes = FIXED + RANDOM + [(5, 784, 10), (130, 300, 513), (257, 5, 9), (3, 260, 1030)]  # off 8 and 4, many tiles
    for m, k, n in shapes:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        for f in COMPILED.values(): check_rung(f, a, b)
    for f in COMPILED.values(): check_rung(f, X / 16, W)
    assert matmul_tiled(X.T, X).shape == (64, 64)  # a transposed (not contiguous) input
    torch.testing.assert_close(matmul_tiled(X.T, X), X.T @ X, rtol=1e-4, atol=1e-2)
    check_rung(matmul_tiled, (X / 16).T.contiguous(), X / 16)
    assert compiled(triple_loop) is compiled(triple_loop)  # compiled once, then kept
    assert all(len(f.signatures) == 1 for f in compiled_module._compiled.values())  # one version each: float32, C order


# --- cpu_peak ----------------------------------------------------------------------------------------------------------
def cpuinfo(vendor='GenuineIntel', family=6, model=106, mhz='2600.000', flags='fma avx avx2 avx512f', cores=2):
    return '\n\n'.join(f'processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n'
                       f'model name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: {i}\n'
                       + (f'cpu MHz\t\t: {mhz}\n' if mhz else '') + f'flags\t\t: {flags}' for i in range(cores))


@pytest.mark.parametrize('info, kw, gflops, bits', [
    (cpuinfo(), {}, 2 * 2.6 * 2 * 16 * 2, 512),                                          # AVX-512 with FMA
    (cpuinfo(flags='avx avx2'), {}, 2 * 2.6 * 2 * 8 * 1, 256),                            # no FMA: one FLOP a lane
    (cpuinfo('AuthenticAMD', 25, 97), {}, 2 * 2.6 * 2 * 8 * 2, 256),                      # Zen 4: 512-bit on 256-bit units
    (cpuinfo('AuthenticAMD', 23, 1, flags='fma avx avx2'), {}, 2 * 2.6 * 2 * 4 * 2, 128),  # Zen 1: 128-bit units
    (cpuinfo(cores=4), {'ghz': 3.5, 'fma_units': 1}, 2 * 3.5 * 1 * 16 * 2, 512),         # 2 threads of 4 cores
    (cpuinfo(), {'simd_bits': 256}, 2 * 2.6 * 2 * 8 * 2, 256)])
def test_cpu_peak(info, kw, gflops, bits):
    with mock.patch.object(torch, 'get_num_threads', return_value=2):
        p = cpu_peak(info, **kw)
    assert p['gflops'] == pytest.approx(gflops) and p['bits'] == bits and p['cores'] == 2 and p['model'] == 'Test CPU'
    assert p['ghz_from'] == ('given' if 'ghz' in kw else "/proc/cpuinfo's cpu MHz")


def test_cpu_peak_without_a_clock_and_on_this_machine():
    assert cpu_peak(cpuinfo(mhz=None)) is None
    p = cpu_peak()
    assert p is None or 1 < p['gflops'] < 1e5, p


# --- the appendix's pictures and timings, from its own cells ----------------------------------------------------------
def appendix(*ids):
    return run_cells(APPENDIX, 'e1imports', *ids, ns=dict(COMPILED=COMPILED, torch=torch))


def test_the_strides_picture():
    fig = appendix('a93abb77')['draw_strides']()
    top, mid, bottom = fig.axes
    def walk(ax): return [a for a, p in enumerate(ax.patches) if p.get_facecolor()[:3] != to_rgb('white')]
    assert walk(mid) == [2, 8, 14, 20]  # i-j-k: column 2, every 6th place
    assert walk(bottom) == [6, 7, 8, 9, 10, 11]  # i-k-j: row 1, side by side
    assert len(top.patches) == 24 + 1  # the entries, and the outline of row 1
    assert [ax.get_title() for ax in (mid, bottom)] == ['i-j-k: k runs down column 2, stride 6', 'i-k-j: j runs along row 1, stride 1']
    assert bottom.get_xlabel() and top.get_xlabel() and fig._suptitle.get_text() and fig.get_size_inches()[0] <= 9
    plt.close('all')


def test_the_tiles_picture():
    fig = appendix('e50d6283')['draw_tiles']()
    assert [ax.get_title() for ax in fig.axes] == ['a: 12×10', 'b: 10×14', 'c: 12×14']
    assert [ax.patches[1].get_width() for ax in fig.axes] == [4, 7, 7]  # the k-range of a, the columns of b and c
    assert [ax.patches[1].get_height() for ax in fig.axes] == [4, 4, 4]  # the rows of a and c, the k-range of b
    assert all(ax.get_legend() for ax in fig.axes) and fig.get_size_inches()[0] <= 9
    plt.close('all')


@pytest.mark.parametrize('torch_gflops', [300., 400.])
def test_the_gflops_picture(torch_gflops):
    ns = appendix('53f35a01')
    speeds = {'loops': 0.04, 'rows': 0.08, 'broadcast': 3., 'einsum': 290., 'torch': torch_gflops, 'njit': 2., 'ikj': 40., 'tiled': 100.}
    ax = ns['plot_gflops'](speeds, 256, {'ghz': 2.6, 'gflops': 333.})
    order = ['loops', 'rows', 'broadcast', 'njit', 'ikj', 'tiled', 'einsum', 'torch']  # Python, compiled, BLAS
    assert [t.get_text() for t in ax.get_xticklabels()] == order and ax.get_yscale() == 'log'
    assert [p.get_height() for p in ax.patches[:8]] == [speeds[name] for name in order]
    assert ax.get_title() == '256×256 @ 256×256, float32: speed of every rung' and ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"torch's @: {torch_gflops:.0f} GFLOP/s" and 'compiled loops (numba)' in labels
    assert labels[1] == 'peak at 2.60 GHz: 333 GFLOP/s' + (' (torch beats it: the cores run faster)' if torch_gflops > 333 else '')
    assert [line.get_ydata()[0] for line in ax.lines] == [torch_gflops, 333.]
    assert ax.figure.get_size_inches()[0] <= 9
    plt.close('all')


def test_time_rungs():
    ns = appendix('53f35a01')
    rungs = {'loops': MATMULS['loops'], 'torch': MATMULS['torch']} | ({'ikj': COMPILED['ikj']} if HAS_NUMBA else {})
    for f in rungs.values(): f(torch.ones(2, 2), torch.ones(2, 2))  # compiled before it is timed
    speeds = ns['time_rungs'](rungs, 64, repeats=3, budget=0.05)
    assert list(speeds) == list(rungs) and all(s > 0 for s in speeds.values())
    if HAS_NUMBA: assert speeds['ikj'] > speeds['loops'] * 10  # compiled loops beat interpreted ones by far


def test_the_cards_answers():
    assert torch.zeros(4, 6).stride() == (6, 1)  # row-major: one step down a column is n places
    b46 = torch.arange(24.).reshape(4, 6)
    assert b46.flatten()[1*6 + 2] == b46[1, 2]  # entry [k][j] sits at position k·n + j
