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


def test_dependent_launch_only_among_dependent_launches_on_hopper_and_never_under_the_interpreter(monkeypatch):
    # Programmatic dependent launch (experiments/069-decode-pdl) is Hopper-only inline PTX that pays only where
    # the kernels around ours use it too: available from compute capability 9, used inside
    # among_dependent_launches (the compiled decode step); FOXACP_PDL=0 turns it off, =1 on everywhere; neither
    # the CPU nor the interpreter can run it.
    from foxacp.ops import config

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.delenv("FOXACP_PDL", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for capability, hopper in (((8, 0), False), ((8, 9), False), ((9, 0), True), ((10, 0), True)):
        monkeypatch.setattr(config, "_capability", lambda index, c=capability: c)
        assert config.dependent_launch_available(cuda) is hopper and not config.dependent_launch_available(cpu)
        assert not config.dependent_launch(cuda)  # ours alone lose: not outside the scope
        with config.among_dependent_launches():
            assert config.dependent_launch(cuda) is hopper and not config.dependent_launch(cpu)
            monkeypatch.setenv("FOXACP_PDL", "0")
            assert not config.dependent_launch(cuda) and not config.dependent_launch_available(cuda)
            monkeypatch.delenv("FOXACP_PDL")
        assert not config.dependent_launch(cuda)  # the scope ends
        monkeypatch.setenv("FOXACP_PDL", "1")
        assert config.dependent_launch(cuda) and config.dependent_launch_available(cuda)
        assert not config.dependent_launch(cpu) and not config.dependent_launch_available(cpu)
        monkeypatch.delenv("FOXACP_PDL")
    assert config.pdl_args(cuda) == {"PDL": False}
    with config.among_dependent_launches():
        assert config.pdl_args(cuda) == {"PDL": True, "launch_pdl": True}
        assert config.pdl_args(cpu) == {"PDL": False}
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setenv("FOXACP_PDL", "1")
        assert not config.dependent_launch(cuda) and not config.dependent_launch_available(cuda)
        assert config.pdl_args(cuda) == {"PDL": False}
