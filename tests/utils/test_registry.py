"""Registry: registration, lookup, and the error for unknown names."""

import pytest

from detbench.utils.registry import Registry


def test_register_and_get():
    reg = Registry("HEADS")

    @reg.register()
    def single_conv():
        return 1

    reg.register("R-50-C4")(lambda: 2)
    assert reg.get("single_conv") is single_conv
    assert reg.get("R-50-C4")() == 2
    assert list(reg) == ["R-50-C4", "single_conv"] and len(reg) == 2 and "R-50-C4" in reg


def test_duplicate_registration_fails():
    reg = Registry("HEADS")
    reg.register("a")(int)
    with pytest.raises(KeyError, match="'a' is registered twice"):
        reg.register("a")(float)


def test_unknown_name_lists_nearest_and_config_key():
    reg = Registry("BACKBONES")
    for name in ("R-50-FPN", "R-101-FPN", "R-50-C4"):
        reg.register(name)(int)
    with pytest.raises(KeyError) as info:
        reg.get("R-50-FNP", config_key="MODEL.BACKBONE.CONV_BODY")
    message = str(info.value)
    assert "MODEL.BACKBONE.CONV_BODY" in message and "Did you mean 'R-50-FPN'" in message
    assert "Known: R-101-FPN, R-50-C4, R-50-FPN" in message
