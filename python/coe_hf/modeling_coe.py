"""coe's Chain-of-Experts (CoE) model for Hugging Face transformers.

A decoder layer is DeepSeek-V2's MLA attention followed by CoE's feed-forward, which runs the MoE
block C times, each iteration with its own router (or one shared router) over one expert pool:

    h1   = h + attention(input_layernorm(h))
    x(0) = post_attention_layernorm(h1)
    x(t) = MoE_t(x(t-1)) + r(t)               t = 1..C   (r: residual_mode)
    out  = x(C) (+ h1 with the outer residual)

Attention (with its compressed KV cache), norms, rotary embedding, dense MLPs, the model's forward
and generation are transformers' DeepSeek-V2 code; this file adds the router, the C iterations and
the residual wiring. It computes what coe computes (coe's src/model/router.cpp, coe_layer.cpp);
coe's tests hold its logits and greedy generations to coe's.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.deepseek_v2.modeling_deepseek_v2 import (
    DeepseekV2Attention,
    DeepseekV2ForCausalLM,
    DeepseekV2MLP,
    DeepseekV2Model,
    DeepseekV2PreTrainedModel,
    DeepseekV2RMSNorm,
    DeepseekV2RotaryEmbedding,
)

from .configuration_coe import CoeConfig

# residual_mode -> (what each iteration adds back, whether h1 is added to x(C))
_RESIDUALS = {"inner": ("previous", False), "addinit": ("input", False), "none": ("none", False), "outer": ("none", True)}


def parse_residual_mode(mode):
    outer = mode.endswith("+outer")
    base = mode[: -len("+outer")] if outer else mode
    if base not in _RESIDUALS:
        raise ValueError(f"residual_mode: unknown mode {mode!r} ({' | '.join(_RESIDUALS)}, optionally +outer)")
    inner, base_outer = _RESIDUALS[base]
    return inner, outer or base_outer


class CoeRouter(nn.Module):
    """Scores the experts of each token and picks `num_experts_per_tok` of them.

    topk_method: greedy (the best scores), group_limited_greedy (the best within the `topk_group`
    groups whose best score is highest) or noaux_tc (DeepSeek-V3: the choice adds
    `e_score_correction_bias`, groups rank by the sum of their two best biased scores, and the
    weights are the unbiased scores). Softmax weights are normalised (norm_topk_prob) or scaled by
    routed_scaling_factor; sigmoid weights are normalised (norm_topk_prob) and then scaled.
    """

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.n_routed_experts
        self.method = config.topk_method
        self.sigmoid = config.scoring_func == "sigmoid"
        self.num_group = config.n_group or 1
        self.topk_group = config.topk_group or 1
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        if self.method not in ("greedy", "group_limited_greedy", "noaux_tc"):
            raise ValueError(f"topk_method: unknown method {self.method!r}")
        if config.scoring_func not in ("softmax", "sigmoid"):
            raise ValueError(f"scoring_func: unknown function {config.scoring_func!r}")
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size))
        if self.method == "noaux_tc":
            self.register_buffer("e_score_correction_bias", torch.zeros(self.num_experts))

    def best_groups(self, group_scores):
        """[T, E] bool: the experts of each token's `topk_group` best groups."""
        tokens = group_scores.shape[0]
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, group_idx, True)
        per_group = self.num_experts // self.num_group
        return group_mask.unsqueeze(-1).expand(tokens, self.num_group, per_group).reshape(tokens, -1)

    def forward(self, x):
        """x [T, H] -> the chosen experts' weights [T, K] (float32) and indices [T, K]."""
        tokens = x.shape[0]
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
        if self.method == "greedy":
            weights, indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        elif self.method == "group_limited_greedy":
            group_scores = scores.view(tokens, self.num_group, -1).max(dim=-1).values
            masked = scores.masked_fill(~self.best_groups(group_scores), 0.0)
            weights, indices = torch.topk(masked, k=self.top_k, dim=-1, sorted=False)
        else:  # noaux_tc
            choice = scores + self.e_score_correction_bias.float().unsqueeze(0)
            if self.num_group > 1:
                group_scores = choice.view(tokens, self.num_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
                choice = choice.masked_fill(~self.best_groups(group_scores), float("-inf"))
            indices = torch.topk(choice, k=self.top_k, dim=-1, sorted=False)[1]
            weights = scores.gather(1, indices)
        normalise = self.top_k > 1 and self.norm_topk_prob
        if normalise:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        if self.sigmoid or not normalise:
            weights = weights * self.routed_scaling_factor
        return weights, indices


class CoeMoe(nn.Module):
    """One CoE iteration's block: route, run the chosen experts of the shared pool, add the shared experts."""

    def __init__(self, config):
        super().__init__()
        if config.use_igate:
            self.gate = nn.ModuleList([CoeRouter(config) for _ in range(config.inner_iter)])
        else:
            self.gate = CoeRouter(config)
        self.experts = nn.ModuleList(
            [DeepseekV2MLP(config, intermediate_size=config.moe_intermediate_size) for _ in range(config.n_routed_experts)]
        )
        self.shared_experts = (
            DeepseekV2MLP(config, intermediate_size=config.moe_intermediate_size * config.n_shared_experts)
            if config.n_shared_experts
            else None
        )

    def forward(self, x, iteration):
        router = self.gate[iteration] if isinstance(self.gate, nn.ModuleList) else self.gate
        flat = x.reshape(-1, x.shape[-1])
        weights, indices = router(flat)
        y = torch.zeros_like(flat)
        for expert in indices.unique().tolist():
            token, slot = (indices == expert).nonzero(as_tuple=True)
            out = self.experts[expert](flat[token]) * weights[token, slot, None].to(flat.dtype)
            y.index_add_(0, token, out)
        y = y.view_as(x)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y


class CoeDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: CoeConfig, layer_idx: int):
        super().__init__()
        self.self_attn = DeepseekV2Attention(config=config, layer_idx=layer_idx)
        self.is_moe = (
            config.n_routed_experts > 0
            and layer_idx >= config.first_k_dense_replace
            and layer_idx % config.moe_layer_freq == 0
        )
        # Dense layers run their MLP once, with the same residual wiring.
        self.mlp = CoeMoe(config) if self.is_moe else DeepseekV2MLP(config)
        self.iterations = config.inner_iter if self.is_moe else 1
        self.inner_residual, self.outer_residual = parse_residual_mode(config.residual_mode)
        self.input_layernorm = DeepseekV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = DeepseekV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        position_ids=None,
        cache=None,
        use_cache=False,
        position_embeddings=None,
        **kwargs,
    ):
        attention, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        attended = hidden_states + attention
        x0 = self.post_attention_layernorm(attended)
        x = x0
        for t in range(self.iterations):
            f = self.mlp(x, t) if self.is_moe else self.mlp(x)
            if self.inner_residual == "previous":
                x = f + x
            elif self.inner_residual == "input":
                x = f + x0
            else:
                x = f
        return attended + x if self.outer_residual else x


class CoePreTrainedModel(DeepseekV2PreTrainedModel):
    config_class = CoeConfig
    _no_split_modules = ["CoeDecoderLayer"]
    _can_record_outputs = {"hidden_states": CoeDecoderLayer, "attentions": DeepseekV2Attention}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CoeRouter):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if hasattr(module, "e_score_correction_bias"):
                init.zeros_(module.e_score_correction_bias)


class CoeModel(CoePreTrainedModel, DeepseekV2Model):
    """DeepSeek-V2's model (its forward: embeddings, causal mask, rotary tables, layers, norm) with CoE layers."""

    def __init__(self, config: CoeConfig):
        DeepseekV2PreTrainedModel.__init__(self, config)  # not DeepseekV2Model's: it would build DeepSeek-V2 layers
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([CoeDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = DeepseekV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = DeepseekV2RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class CoeForCausalLM(CoePreTrainedModel, DeepseekV2ForCausalLM):
    """The causal LM (DeepSeek-V2's forward, loss and GenerationMixin) over CoeModel."""

    def __init__(self, config: CoeConfig):
        DeepseekV2PreTrainedModel.__init__(self, config)
        self.model = CoeModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


__all__ = ["CoeForCausalLM", "CoeModel", "CoePreTrainedModel"]
