import torch, triton, foxacp, torch.nn.functional as F
from triton.testing import do_bench
from torch.nn.attention import sdpa_kernel, SDPBackend
print(torch.__version__, triton.__version__, torch.cuda.get_device_name())
H,D=24,64
for T in (4096,16384):
    B=32768//T
    q,k,v=(torch.randn(B,T,H,D,device='cuda',dtype=torch.bfloat16,requires_grad=True) for _ in range(3))
    g=F.logsigmoid(torch.linspace(-1,8,H,device='cuda')+torch.randn(B,T,H,device='cuda')).float().requires_grad_()
    do=torch.randn_like(q)
    res=[]
    for name,eps in (('exact',None),('acp',-10.0)):
        f=lambda: foxacp.forgetting_attention(q,k,v,g,log_eps=eps)
        fb=lambda: torch.autograd.grad(f(),(q,k,v,g),do)
        _,st=foxacp.forgetting_attention(q,k,v,g,log_eps=eps,return_stats=True)
        res.append((name,do_bench(f,return_mode='median'),do_bench(fb,return_mode='median'),st.flop_saving))
    qt,kt,vt=(x.transpose(1,2) for x in (q,k,v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        f=lambda: F.scaled_dot_product_attention(qt,kt,vt,is_causal=True)
        fb=lambda: torch.autograd.grad(f(),(q,k,v),do.transpose(1,2))
        res.append(('cudnn',do_bench(f,return_mode='median'),do_bench(fb,return_mode='median'),0))
    for r in res: print(f"T={T} {r[0]:6s} fwd {r[1]:.2f} ms  fwd+bwd {r[2]:.2f} ms  saving {r[3]:.2f}")
