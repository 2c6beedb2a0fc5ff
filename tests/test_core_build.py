"""The extension imports, reports its build, and its ISA switch validates its argument."""
import pytest

import pyclvp
from pyclvp import _core


def test_version_matches_package():
    assert _core.version() == pyclvp.__version__


def test_build_info_fields():
    info = _core.build_info()
    assert info["isas_compiled"][0] == "scalar"
    assert "scalar" in info["isas_supported"]
    assert info["isa_active"] in info["isas_supported"]
    assert isinstance(info["cuda_compiled"], bool)
    assert info["compiler"]


def test_set_isa_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.set_isa("sse9")


def test_set_isa_roundtrip():
    before = _core.get_isa()
    try:
        for isa in _core.build_info()["isas_supported"]:
            _core.set_isa(isa)
            assert _core.get_isa() == isa
    finally:
        _core.set_isa(before)


def test_public_api_resolves():
    for name in pyclvp.__all__:
        assert getattr(pyclvp, name) is not None, name
