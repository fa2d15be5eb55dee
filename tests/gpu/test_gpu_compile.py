"""Every kernel of the table compiles, on machines without a GPU.

The module's source and the list of instantiations both come from
``sparsecode.gpu._module`` (``KERNELS`` x ``DTYPES``, and ``GRAM_TYPES`` for the kernels
reading Gram rows), the same table CuPy compiles from.
Two compilers: ``nvcc`` (explicit instantiations, ptxas included, warnings are errors,
no register spills) and NVRTC through cuda-python (what CuPy runs: name expressions,
no system headers).  Each skips when its compiler is missing.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from sparsecode import _rules
from sparsecode.gpu import _module

#: GPU architectures every CUDA 12/13 toolkit compiles for: A100 (the oldest with the
#: shared memory sizes the kernels plan for) and H100.
ARCHS = ("sm_80", "sm_90")
ARCH = ARCHS[0]


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


#: A kernel template's declaration: one float type, or one and the Gram rows' type.
_TEMPLATE = r"template <typename T(?:, typename GT)?>\s*__global__ void (\w+)\("
#: How the Itanium ABI spells each template argument of the table.
_ABI = {"float": "f", "double": "d", "sc_half": "t"}  # sc_half is an unsigned short


def _mangled(expr):
    """The part of the mangled symbol that names one instantiation, e.g.
    ``mp_gram<float, sc_half>`` -> ``7mp_gramIftE``."""
    name, *types = re.fullmatch(r"(\w+)<(\w+)(?:, (\w+))?>", expr).groups()
    return f"{len(name)}{name}I{''.join(_ABI[t] for t in types if t)}E"


def test_table_names_every_kernel_of_the_sources():
    # a kernel template in the .cu files but not in the table would never be compiled
    templates = re.findall(_TEMPLATE, _module.source())
    assert sorted(templates) == sorted(_module.KERNELS)
    gram_kernels = {"mp_gram", "gp_gram", "omp_gram"}
    assert {k for k in _module.KERNELS if _module.takes_gram(k)} == gram_kernels
    per_dtype = len(_module.KERNELS) + len(gram_kernels) * len(_module.GRAM_TYPES)
    assert len(set(_module.name_expressions())) == per_dtype * len(_module.DTYPES)
    assert "mp_gram<float, sc_half>" in _module.name_expressions()
    assert _module.name_expression("mp_gram", np.float64, np.float64) == "mp_gram<double, double>"
    assert _module.name_expression("omp_gram", np.float32, np.float16) == \
        "omp_gram<float, sc_half>"
    assert _module.name_expression("mp_nogram_step", np.float32) == "mp_nogram_step<float>"


def _cuda_signatures(source):
    """``{kernel: ((name, ctype, is_pointer), ...)}`` parsed from the ``template
    <typename T> __global__ void name(...)`` declarations of ``source``."""
    out = {}
    for m in re.finditer(_TEMPLATE + r"([^)]*)\)", source):
        params = []
        for p in m.group(2).split(","):
            p = re.sub(r"\b(const|__restrict__)\b", " ", p)
            p = re.sub(r"\s+", " ", p.replace("*", " * ")).strip()
            ctype, name = p.rsplit(" ", 1)
            pointer = ctype.endswith("*")
            params.append((name, ctype.rstrip("* ").strip(), pointer))
        out[m.group(1)] = tuple(params)
    return out


def test_table_parameters_match_the_cuda_signatures():
    # the launches are assembled from the table: it must say what the kernels take
    cuda = _cuda_signatures(_module.source())
    assert sorted(cuda) == sorted(_module.KERNELS)
    for kernel, params in cuda.items():
        assert _module.parameters(kernel) == params, kernel
        assert {c for _, c, _ in params} <= {"T", "GT", *_module.CTYPES}, kernel


def test_constants_come_from_rules():
    src = _module.source()
    for cname, name in _module.CONSTANTS.items():
        assert f"#define {cname} {getattr(_rules, name)}\n" in src
        assert src.count(f"#define {cname} ") == 1  # defined once, from _rules.py
    used = set(re.findall(r"\bSC_(?:ABS|POSITIVE|SIGNED|RUNNING|DONE|DEPENDENT)\b", src))
    assert used == set(_module.CONSTANTS)
    assert set(_module.CONSTANTS.values()) == {"ABS", "POSITIVE", "SIGNED", "RUNNING", "DONE",
                                               "DEPENDENT"}


def test_committed_rules_header_is_generated_from_rules():
    # kernels/rules.cuh is committed so each .cu file compiles alone; it must say what
    # sparsecode/_rules.py says (rewrite it with _module.write_rules_header())
    committed = (_module._KERNEL_DIR / _module.RULES_HEADER).read_text()
    assert committed == _module.rules_header()
    for cname, name in _module.CONSTANTS.items():
        assert f"#define {cname} {int(getattr(_rules, name))}\n" in committed


def test_arguments_are_ordered_converted_and_checked():
    n = 3
    args = {"out": np.zeros(n), "m": 5, "A": np.zeros((n, 5), np.float32), "n": n}
    a, nn, m, out = _module.arguments("row_norms2", np.float32, args)
    assert a is args["A"] and out is args["out"]
    assert type(nn) is np.int64 and nn == n and type(m) is np.int32 and m == 5
    with pytest.raises(TypeError, match=r"missing arguments \['m'\]"):
        _module.arguments("row_norms2", np.float32, {k: v for k, v in args.items() if k != "m"})
    with pytest.raises(TypeError, match=r"unknown arguments \['x'\]"):
        _module.arguments("row_norms2", np.float32, {**args, "x": 1})
    with pytest.raises(TypeError, match=r"A must be an array of float64 \(T\*\); got float32"):
        _module.arguments("row_norms2", np.float64, args)
    with pytest.raises(TypeError, match=r"out must be an array of float64"):
        _module.arguments("row_norms2", np.float32, {**args, "out": 1.0})
    with pytest.raises(TypeError, match=r"m is a int, not an array"):
        _module.arguments("row_norms2", np.float32, {**args, "m": np.zeros(2)})


def test_gram_rows_arguments_take_their_own_dtype():
    names = [name for name, _, _ in _module.parameters("mp_gram")]
    args = {name: 1 for name in names}
    args.update(C=np.zeros((2, 3), np.float32), G=np.zeros((3, 3), np.float16),
                xnorm2=np.zeros(2), tol2=np.zeros(2), thr=np.zeros(2),
                I=np.zeros((2, 1), np.int32), Z=np.zeros((2, 1)), queue=np.zeros(1, np.int32))
    out = _module.arguments("mp_gram", np.float32, args, np.float16)
    assert out[names.index("G")] is args["G"]
    with pytest.raises(TypeError, match=r"G must be an array of float32 \(GT\*\); got float16"):
        _module.arguments("mp_gram", np.float32, args)


def _require_nvcc():
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_PATH, CUDA_HOME, /usr/local/cuda)")
    return nvcc


@pytest.mark.parametrize("name", _module.SOURCES)
@pytest.mark.parametrize("arch", ARCHS)
def test_each_kernel_file_compiles_on_its_own(name, arch, tmp_path):
    # what an editor or a reader running plain nvcc on one file sees: it must include
    # what it uses (the rule constants come from the committed rules.cuh)
    src = _module._KERNEL_DIR / name
    cmd = [_require_nvcc(), "-std=c++17", "-cubin", f"-arch={arch}", "-Werror",
           "all-warnings", "-o", str(tmp_path / "out.cubin"), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"nvcc {name} failed:\n{res.stdout}\n{res.stderr}"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_with_nvcc(arch, tmp_path):
    nvcc = _require_nvcc()
    src = tmp_path / "sparsecode_kernels.cu"
    src.write_text(_module.instantiation_source())
    out = tmp_path / "sparsecode_kernels.cubin"
    cmd = [nvcc, "-std=c++17", "-cubin", f"-arch={arch}", "-Werror", "all-warnings",
           "-Xptxas", "-v,-warn-spills,-warn-lmem-usage", "-o", str(out), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"nvcc failed:\n{res.stdout}\n{res.stderr}"
    binary = out.read_bytes()
    for expr in _module.name_expressions():
        assert _mangled(expr).encode() in binary, f"{expr} missing from the cubin"
    # static shared memory stays within what the launcher reserves
    from sparsecode.gpu._driver import STATIC_SMEM

    smem = [int(m) for m in re.findall(r"(\d+) bytes smem", res.stdout + res.stderr)]
    assert smem and max(smem) <= STATIC_SMEM


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc
        except ImportError:
            return None
    return nvrtc


def test_every_kernel_compiles_with_nvrtc():
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("cuda-python (NVRTC bindings) not installed")

    def check(result):
        err, *rest = result
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
        return rest[0] if rest else None

    prog = check(nvrtc.nvrtcCreateProgram(_module.source().encode(), b"sparsecode.cu", 0, [], []))
    for expr in _module.name_expressions():
        check(nvrtc.nvrtcAddNameExpression(prog, expr.encode()))
    opts = [o.encode() for o in (*_module.OPTIONS, f"--gpu-architecture=compute_{ARCH[3:]}")]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    size = check(nvrtc.nvrtcGetProgramLogSize(prog))
    log = b" " * size
    check(nvrtc.nvrtcGetProgramLog(prog, log))
    log = log.decode(errors="replace").strip("\x00 \n")
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log
    assert "warning" not in log.lower(), log
    for expr in _module.name_expressions():
        lowered = check(nvrtc.nvrtcGetLoweredName(prog, expr.encode()))
        assert _mangled(expr).encode() in lowered
