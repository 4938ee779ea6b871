"""Configuration of coe's Chain-of-Experts (CoE) model for Hugging Face transformers.

coe-export writes this file and modeling_coe.py into every folder whose model transformers' own
DeepSeek classes cannot run (C > 1, coe's residual variants, ...). Load such a folder with

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

The fields are DeepSeek-V2's (transformers' DeepseekV2Config) plus the CoE ones below; coe writes
and reads the same config.json. Written for transformers 5.25 (coe's tools/requirements.txt).
"""

from huggingface_hub.dataclasses import strict
from transformers.models.deepseek_v2.configuration_deepseek_v2 import DeepseekV2Config


@strict
class CoeConfig(DeepseekV2Config):
    r"""
    inner_iter (`int`, defaults to 1):
        C: how many times an MoE layer runs its block, x(t) = MoE_t(x(t-1)) + r(t), t = 1..C.
    use_igate (`bool`, defaults to `True`):
        One router per iteration (`mlp.gate.<t>`) or one router for all iterations (`mlp.gate`).
    residual_mode (`str`, defaults to `"inner"`):
        r(t): `"inner"` x(t-1), `"addinit"` x(0), `"none"` nothing; `"outer"` adds nothing per
        iteration but the layer's input h1 to x(C); `"+outer"` adds h1 to any of the others.
    scoring_func (`str`, defaults to `"softmax"`):
        Router scores: `"softmax"` (DeepSeek-V2) or `"sigmoid"` (DeepSeek-V3).
    moe_layer_freq (`int`, defaults to 1):
        Layers from `first_k_dense_replace` on are MoE layers when their index is a multiple of it.
    """

    model_type = "coe"

    inner_iter: int = 1
    use_igate: bool = True
    residual_mode: str = "inner"
    scoring_func: str = "softmax"
    moe_layer_freq: int = 1


__all__ = ["CoeConfig"]
