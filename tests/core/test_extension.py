"""The compiled core galvatron._C: imports, reports its version, maps C++ errors to ValueError."""

import importlib.metadata

import numpy as np
import pytest

import galvatron
from galvatron import _C


def test_extension_reports_the_package_version():
    assert _C.__version__ == importlib.metadata.version("galvatron") == galvatron.__version__
    assert isinstance(_C.with_cuda, bool)


def test_dp_degree_divides_world_by_pp_tp_sp():
    assert _C.dp_degree(8, 2, 2, 1) == 2
    assert _C.dp_degree(16, 1, 2, 4) == 2
    assert _C.dp_degree(1, 1, 1, 1) == 1


@pytest.mark.parametrize(
    "args, field",
    [((8, 3, 1, 1), "pp=3"), ((8, 2, 8, 1), "tp\\*sp=8"), ((0, 1, 1, 1), "world_size"),
     ((8, 1, 0, 1), "tp"), ((8, 1, 1, -2), "sp")],
)
def test_cpp_invalid_argument_surfaces_as_value_error_naming_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        _C.dp_degree(*args)


def test_swap_outer_parts_matches_numpy_transpose_and_rejects_bad_sizes():
    src = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    dst = np.empty_like(src)
    _C.swap_outer_parts(src, dst, 3, 4, 5)
    np.testing.assert_array_equal(dst.reshape(4, 3, 5), src.transpose(1, 0, 2))
    with pytest.raises(ValueError, match="outer\\*parts\\*inner"):
        _C.swap_outer_parts(src, dst, 3, 4, 6)
