"""ops/skinny.py's routing (takes_skinny): a weight that wants a gradient (x does not)
must go to F.linear (the kernel's custom op has no backward), and a 1-D weight (which F.linear takes) too."""

import torch
import torch.nn.functional as F

from foxacp.ops.skinny import skinny_linear, takes_skinny


def test_a_weight_that_wants_a_gradient_goes_to_f_linear():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, generator=g).half()
    w = torch.randn(32, 64, generator=g).half().requires_grad_()
    assert not takes_skinny(x, w)
    y = skinny_linear(x, w)
    y.float().sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand_as(w))
    with torch.no_grad():
        assert takes_skinny(x, w)


def test_a_one_dimensional_weight_is_f_linears():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 64, generator=g).half()
    w = torch.randn(64, generator=g).half()
    assert not takes_skinny(x, w)
    torch.testing.assert_close(skinny_linear(x, w), F.linear(x, w), rtol=0, atol=0)


def test_dependent_launch_is_on_for_hopper_only_and_never_under_the_interpreter(monkeypatch):
    # Programmatic dependent launch (experiments/069-decode-pdl) is Hopper-only inline PTX: on by default from
    # compute capability 9, FOXACP_PDL=0/1 overrides, and neither the CPU nor the interpreter can run it.
    from foxacp.ops import config

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.delenv("FOXACP_PDL", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for capability, default in (((8, 0), False), ((8, 9), False), ((9, 0), True), ((10, 0), True)):
        monkeypatch.setattr(config, "_capability", lambda index, c=capability: c)
        assert config.dependent_launch(cuda) is default
        assert not config.dependent_launch(cpu)
        monkeypatch.setenv("FOXACP_PDL", "0")
        assert not config.dependent_launch(cuda)
        monkeypatch.setenv("FOXACP_PDL", "1")
        assert config.dependent_launch(cuda) and not config.dependent_launch(cpu)
        monkeypatch.delenv("FOXACP_PDL")
    assert config.pdl_args(cuda) == {"PDL": True, "launch_pdl": True}
    assert config.pdl_args(cpu) == {"PDL": False}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FOXACP_PDL", "1")
    assert not config.dependent_launch(cuda) and config.pdl_args(cuda) == {"PDL": False}
