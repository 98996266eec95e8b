"""Multi-task text: a shared transformer encoder with three task heads of very different cost.

The trunk (token embedding and six GPT-style blocks, hidden 512, 256 tokens) feeds a language-
modelling head (a 32,000-token vocabulary projection: the heaviest head), a sequence-
classification head (mean-pooled features into 3 classes: nearly free) and a token-tagging head
(two more transformer blocks of its own and a projection onto 17 tags).
"""

from __future__ import annotations

import torch
from torch import nn

from simplan.nets.transformer import Block, Embedding, Head
from simplan.transformer_shape import TransformerSpec

DESCRIPTION = "shared transformer trunk + LM head + classification head + tagging head (2 blocks)"
SPEC = TransformerSpec(
    name="mtl-text",
    hidden_size=512,
    num_layers=6,
    num_heads=8,
    seq_len=256,
    vocab_size=32000,
    tie_embeddings=False,
)
CLASSES = 3
TAGS = 17
TAG_BLOCKS = 2
# task declarations (simplan/tasks.py): outputs in the order forward returns them
OUTPUTS = ["lm_head", "cls_head", "tag_out"]
TASKS = [
    {"name": "lm", "outputs": ["lm_head"], "loss": "cross_entropy"},
    {"name": "classify", "outputs": ["cls_head"], "loss": "cross_entropy", "weight": 0.5},
    {"name": "tag", "outputs": ["tag_out"], "loss": "cross_entropy", "batch_share": 0.5},
]


class PooledClassifier(nn.Module):
    simplan_kind = "pooled_classifier"

    def __init__(self, hidden: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x).mean(dim=1))


class TokenTagger(nn.Module):
    simplan_kind = "token_tagger"

    def __init__(self, hidden: int, tags: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x))


class MultiTaskText(nn.Module):
    def __init__(self, spec: TransformerSpec = SPEC) -> None:
        super().__init__()
        self.embed = Embedding(spec)
        self.blocks = nn.ModuleList(Block(spec, i) for i in range(spec.num_layers))
        self.lm_head = Head(spec)
        self.cls_head = PooledClassifier(spec.hidden_size, CLASSES)
        self.tag_blocks = nn.ModuleList(Block(spec, i) for i in range(TAG_BLOCKS))
        self.tag_out = TokenTagger(spec.hidden_size, TAGS)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        tagged = x
        for block in self.tag_blocks:
            tagged = block(tagged)
        return self.lm_head(x), self.cls_head(x), self.tag_out(tagged)


def build(batch: int = 1) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = MultiTaskText()
    ids = torch.randint(0, SPEC.vocab_size, (batch, SPEC.seq_len))
    return model, (ids,)
